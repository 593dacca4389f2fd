//! The FedMKT baseline's knowledge messages: top-k answer distributions on shared public
//! examples, and training on them.
//!
//! In FedMKT the server LLM and the edge SLMs never exchange parameters. Each round every
//! device tunes its SLM on its own data, computes its answer distributions on a sample of the
//! public corpus chosen by the server, and uploads their top-k; the server keeps, per example,
//! the device distribution with the lowest cross-entropy against the reference answer
//! ("min-CE" selection), and the LLM learns from those plus its own cross-entropy; the LLM's
//! top-k on the same sample goes down and each SLM learns from it. With one shared tokenizer
//! no token alignment is needed.
//!
//! A message holds, per example and per answer position, the `k` largest logits with their
//! token ids and the log-sum-exp of all the other logits. A receiver rebuilds a dense logit row
//! by spreading that remaining mass evenly over the other tokens, so the distribution it
//! learns from keeps the sender's top-k probabilities exactly (at temperature 1).

use cotune_distill::{batch_indices, EpochReport, TrainSettings};
use cotune_host::{Example, Logits, Model};

use crate::message::{DecodeError, Reader};

const TOPK_MAGIC: &[u8; 8] = b"CTTOPK01";
const EXAMPLES_MAGIC: &[u8; 8] = b"CTEXMP01";

/// One example's top-k answer distributions.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleTopK {
    /// `answer_len * k` token ids, position-major.
    pub ids: Vec<u32>,
    /// The matching logits.
    pub logits: Vec<f32>,
    /// Per position, the log-sum-exp of every logit outside the top k.
    pub rest: Vec<f32>,
}

impl ExampleTopK {
    /// Answer positions covered.
    pub fn positions(&self) -> usize {
        self.rest.len()
    }

    /// Writes position `t`'s dense logit row for a vocabulary of `vocab` tokens into `row`.
    /// Ids the receiver's vocabulary does not have join the remaining mass.
    pub fn fill_row(&self, t: usize, row: &mut [f32]) {
        let k = self.ids.len() / self.positions().max(1);
        let vocab = row.len();
        let ids = &self.ids[t * k..(t + 1) * k];
        let logits = &self.logits[t * k..(t + 1) * k];
        let mut rest = f64::from(self.rest[t]);
        let mut kept = 0usize;
        for (&id, &l) in ids.iter().zip(logits) {
            if (id as usize) < vocab {
                kept += 1;
            } else {
                rest = log_add_exp(rest, f64::from(l));
            }
        }
        let others = vocab.saturating_sub(kept).max(1) as f64;
        let fill = if rest.is_finite() {
            (rest - others.ln()) as f32
        } else {
            // Nothing outside the top k: the others get a probability of about e^-30 relative.
            logits.iter().copied().fold(f32::INFINITY, f32::min) - 30.0
        };
        row.fill(fill);
        for (&id, &l) in ids.iter().zip(logits) {
            if (id as usize) < vocab {
                row[id as usize] = l;
            }
        }
    }

    /// Cross-entropy (nats per answer token) of `answer` under the rebuilt distribution.
    pub fn cross_entropy(&self, answer: &[u32], vocab: usize) -> f64 {
        let n = answer.len().min(self.positions());
        if n == 0 {
            return f64::INFINITY;
        }
        let mut row = vec![0f32; vocab];
        let mut total = 0.0;
        for (t, &target) in answer.iter().take(n).enumerate() {
            self.fill_row(t, &mut row);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(max)
                + row
                    .iter()
                    .map(|&v| f64::from(v - max).exp())
                    .sum::<f64>()
                    .ln();
            let target = row
                .get(target as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            total += lse - f64::from(target);
        }
        total / n as f64
    }
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// `model`'s top-`k` answer distributions on `examples`, in `batch_size` batches.
pub fn top_k(
    model: &Model,
    examples: &[Example],
    k: usize,
    batch_size: usize,
) -> anyhow::Result<Vec<ExampleTopK>> {
    let mut out = Vec::with_capacity(examples.len());
    for batch in examples.chunks(batch_size.max(1)) {
        let logits = model.answer_logits(batch)?;
        out.extend(top_k_of(&logits, batch, k));
    }
    Ok(out)
}

/// The top-`k` entries of dense answer `logits` on `batch`.
pub fn top_k_of(logits: &Logits, batch: &[Example], k: usize) -> Vec<ExampleTopK> {
    let vocab = logits.vocab as usize;
    let k = k.clamp(1, vocab);
    let mut out = Vec::with_capacity(batch.len());
    for (b, ex) in batch.iter().enumerate() {
        let mut entry = ExampleTopK {
            ids: Vec::with_capacity(ex.answer.len() * k),
            logits: Vec::with_capacity(ex.answer.len() * k),
            rest: Vec::with_capacity(ex.answer.len()),
        };
        for t in 0..ex.answer.len() {
            let row = logits.row(b, t);
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            // Largest first; ties by id, so the message is deterministic.
            order.sort_by(|&x, &y| row[y as usize].total_cmp(&row[x as usize]).then(x.cmp(&y)));
            let max = row[order[0] as usize];
            let rest: f64 = order[k..]
                .iter()
                .map(|&i| f64::from(row[i as usize] - max).exp())
                .sum();
            entry.ids.extend_from_slice(&order[..k]);
            entry
                .logits
                .extend(order[..k].iter().map(|&i| row[i as usize]));
            entry.rest.push(if rest > 0.0 {
                (f64::from(max) + rest.ln()) as f32
            } else {
                f32::NEG_INFINITY
            });
        }
        out.push(entry);
    }
    out
}

/// Knowledge in one vocabulary carried to another: `entries` (one per example of `theirs`, the
/// sender's tokens, over `their_vocab` ids) become top-`k` entries over the receiver's
/// vocabulary at the positions of `ours` (the same texts in the receiver's tokens), through
/// `bridge` (`cotune_distill::align`, at temperature 1 like the messages). `own` gives the
/// receiver's logits where the alignment ranks by them (`uld`).
#[allow(clippy::too_many_arguments)]
pub fn carry_top_k(
    entries: &[ExampleTopK],
    theirs: &[Example],
    their_vocab: usize,
    ours: &[Example],
    our_vocab: usize,
    bridge: &cotune_distill::Bridge,
    own: Option<&Model>,
    k: usize,
    batch_size: usize,
) -> anyhow::Result<Vec<ExampleTopK>> {
    let mut out = Vec::with_capacity(entries.len());
    let step = batch_size.max(1);
    for start in (0..entries.len()).step_by(step) {
        let end = (start + step).min(entries.len());
        let (t_batch, s_batch) = (&theirs[start..end], &ours[start..end]);
        let a = t_batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
        let mut data = vec![0f32; t_batch.len() * a * their_vocab];
        for (b, (entry, ex)) in entries[start..end].iter().zip(t_batch).enumerate() {
            for t in 0..ex.answer.len().min(entry.positions()) {
                let at = (b * a + t) * their_vocab;
                entry.fill_row(t, &mut data[at..at + their_vocab]);
            }
        }
        let teacher = Logits::new(t_batch.len() as u32, a as u32, their_vocab as u32, data);
        let own = match (bridge.needs_own(), own) {
            (true, Some(model)) => Some(model.answer_logits(s_batch)?),
            (true, None) => anyhow::bail!("this alignment needs the receiver's own logits"),
            (false, _) => None,
        };
        let carried = bridge.carry(&teacher, t_batch, s_batch, own.as_ref(), our_vocab, 1.0);
        out.extend(top_k_of(&carried, s_batch, k));
    }
    Ok(out)
}

/// Serialises top-k distributions (what crosses the network).
pub fn encode_topk(entries: &[ExampleTopK]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(TOPK_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        let k = e.ids.len() / e.positions().max(1);
        out.extend_from_slice(&(e.positions() as u32).to_le_bytes());
        out.extend_from_slice(&(k as u32).to_le_bytes());
        for &id in &e.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for &l in &e.logits {
            out.extend_from_slice(&l.to_le_bytes());
        }
        for &r in &e.rest {
            out.extend_from_slice(&r.to_le_bytes());
        }
    }
    out
}

/// Reads a buffer written by [`encode_topk`].
pub fn decode_topk(bytes: &[u8]) -> Result<Vec<ExampleTopK>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.magic(TOPK_MAGIC, "top-k")?;
    let count = r.u64()? as usize;
    // Every entry takes at least its 8-byte head: never reserve more than the bytes can hold.
    let mut out = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let head = r.u32s(2)?;
        let (positions, k) = (head[0] as usize, head[1] as usize);
        let n = positions.saturating_mul(k);
        let ids = r.u32s(n)?;
        let logits = r.f32s(n)?;
        let rest = r.f32s(positions)?;
        out.push(ExampleTopK { ids, logits, rest });
    }
    r.end()?;
    Ok(out)
}

/// Serialises examples (the public questions and reference answers the server picks).
pub fn encode_examples(examples: &[Example]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(EXAMPLES_MAGIC);
    out.extend_from_slice(&(examples.len() as u64).to_le_bytes());
    for e in examples {
        out.extend_from_slice(&(e.prompt.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.answer.len() as u32).to_le_bytes());
        for &id in e.prompt.iter().chain(&e.answer) {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out
}

/// Reads a buffer written by [`encode_examples`].
pub fn decode_examples(bytes: &[u8]) -> Result<Vec<Example>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.magic(EXAMPLES_MAGIC, "examples")?;
    let count = r.u64()? as usize;
    // Every example takes at least its 8-byte head.
    let mut out = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let head = r.u32s(2)?;
        let prompt = r.u32s(head[0] as usize)?;
        let answer = r.u32s(head[1] as usize)?;
        out.push(Example::new(prompt, answer));
    }
    r.end()?;
    Ok(out)
}

/// Per example, the candidate whose distribution gives the reference answer the lowest
/// cross-entropy (FedMKT's min-CE selection). `candidates[c][e]` is candidate `c`'s entry for
/// example `e`.
pub fn select_min_ce(
    examples: &[Example],
    candidates: &[Vec<ExampleTopK>],
    vocab: usize,
) -> anyhow::Result<Vec<ExampleTopK>> {
    for (c, set) in candidates.iter().enumerate() {
        if set.len() != examples.len() {
            anyhow::bail!(
                "knowledge upload {c} covers {} examples, the public sample has {}",
                set.len(),
                examples.len()
            );
        }
    }
    if candidates.is_empty() {
        anyhow::bail!("no knowledge uploads to select from");
    }
    Ok(examples
        .iter()
        .enumerate()
        .map(|(e, ex)| {
            let best = (0..candidates.len())
                .min_by(|&a, &b| {
                    let ca = candidates[a][e].cross_entropy(&ex.answer, vocab);
                    let cb = candidates[b][e].cross_entropy(&ex.answer, vocab);
                    ca.total_cmp(&cb).then(a.cmp(&b))
                })
                .expect("at least one candidate");
            candidates[best][e].clone()
        })
        .collect())
}

/// One pass of `student` over `examples`, learning from cross-entropy plus KL to `targets`
/// (one per example, same order). Batches are length-bucketed in a seeded order.
pub fn train_on_targets(
    student: &mut Model,
    examples: &[Example],
    targets: &[ExampleTopK],
    settings: &TrainSettings,
    seed: u64,
    step: &mut u32,
) -> anyhow::Result<EpochReport> {
    if examples.len() != targets.len() {
        anyhow::bail!(
            "{} examples but {} soft targets",
            examples.len(),
            targets.len()
        );
    }
    if settings.batch_size == 0 {
        anyhow::bail!("batch_size must be at least 1");
    }
    for (i, (ex, t)) in examples.iter().zip(targets).enumerate() {
        if t.positions() != ex.answer.len() {
            anyhow::bail!(
                "soft target {i} covers {} answer positions, the example has {}",
                t.positions(),
                ex.answer.len()
            );
        }
    }
    let vocab = student.spec().vocab_size as usize;
    let (mut n, mut loss, mut ce, mut kl) = (0u32, 0f64, 0f64, 0f64);
    for idx in batch_indices(examples, settings.batch_size, seed) {
        let batch: Vec<Example> = idx.iter().map(|&i| examples[i].clone()).collect();
        let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
        let mut data = vec![0f32; idx.len() * answer_len * vocab];
        for (b, &i) in idx.iter().enumerate() {
            for t in 0..examples[i].answer.len() {
                let start = (b * answer_len + t) * vocab;
                targets[i].fill_row(t, &mut data[start..start + vocab]);
            }
        }
        let soft = Logits::new(idx.len() as u32, answer_len as u32, vocab as u32, data);
        let r = student.train_step(&batch, Some(soft), &settings.options(*step))?;
        *step += 1;
        cotune_distill::count_step();
        n += 1;
        loss += f64::from(r.loss);
        ce += f64::from(r.cross_entropy);
        kl += f64::from(r.kl);
    }
    let d = f64::from(n.max(1));
    Ok(EpochReport {
        steps: n,
        loss: (loss / d) as f32,
        cross_entropy: (ce / d) as f32,
        kl: (kl / d) as f32,
        gate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ExampleTopK {
        ExampleTopK {
            ids: vec![3, 1, 0, 2],
            logits: vec![2.0, 1.0, 0.5, 0.25],
            rest: vec![-1.0, 0.0],
        }
    }

    #[test]
    fn topk_and_examples_round_trip_and_reject_truncation() {
        let e = vec![entry(), entry()];
        let bytes = encode_topk(&e);
        assert_eq!(decode_topk(&bytes).unwrap(), e);
        assert!(decode_topk(&bytes[..bytes.len() - 2]).is_err());
        let err = decode_topk(b"CTPARAM1\0\0\0\0\0\0\0\0").unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let ex = vec![
            Example::new(vec![5, 6], vec![7, 2]),
            Example::new(vec![], vec![2]),
        ];
        let bytes = encode_examples(&ex);
        assert_eq!(decode_examples(&bytes).unwrap(), ex);
        assert!(decode_examples(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rebuilt_rows_keep_top_k_probabilities() {
        // Logits over 6 tokens; k = 2.
        let row = [0.3f32, 2.0, -1.0, 1.5, 0.0, -0.5];
        let max = 2.0f64;
        let rest: f64 = [0.3f64, -1.0, 0.0, -0.5]
            .iter()
            .map(|v| (v - max).exp())
            .sum();
        let e = ExampleTopK {
            ids: vec![1, 3],
            logits: vec![2.0, 1.5],
            rest: vec![(max + rest.ln()) as f32],
        };
        let mut dense = [0f32; 6];
        e.fill_row(0, &mut dense);
        let softmax = |r: &[f32]| {
            let z: f64 = r.iter().map(|&v| f64::from(v).exp()).sum();
            r.iter()
                .map(|&v| f64::from(v).exp() / z)
                .collect::<Vec<_>>()
        };
        let (p, q) = (softmax(&row), softmax(&dense));
        for i in [1, 3] {
            assert!(
                (p[i] - q[i]).abs() < 1e-6,
                "token {i}: {} vs {}",
                p[i],
                q[i]
            );
        }
        let other: f64 = [0, 2, 4, 5].iter().map(|&i| q[i]).sum();
        let true_other: f64 = [0, 2, 4, 5].iter().map(|&i| p[i]).sum();
        assert!((other - true_other).abs() < 1e-6);
        // The reference answer's cross-entropy follows the distribution.
        assert!(e.cross_entropy(&[1], 6) < e.cross_entropy(&[0], 6));
    }

    #[test]
    fn min_ce_selection_picks_the_candidate_that_knows_the_answer() {
        let ex = vec![Example::new(vec![1], vec![4])];
        let knows = vec![ExampleTopK {
            ids: vec![4],
            logits: vec![5.0],
            rest: vec![0.0],
        }];
        let guesses = vec![ExampleTopK {
            ids: vec![2],
            logits: vec![5.0],
            rest: vec![0.0],
        }];
        let chosen = select_min_ce(&ex, &[guesses.clone(), knows.clone()], 8).unwrap();
        assert_eq!(chosen, knows);
        assert!(select_min_ce(&ex, &[vec![]], 8).is_err());
    }
}
