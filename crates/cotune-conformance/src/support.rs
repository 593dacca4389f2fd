//! What the checks share: deterministic tokens, small batches, training and metrics.

use cotune_host::{Example, HostError, Logits, Model, TrainOptions};

pub(crate) fn e(err: HostError) -> String {
    err.to_string()
}

/// A deterministic token stream (SplitMix64), so checks never depend on luck.
pub(crate) struct Tokens(pub(crate) u64);

impl Tokens {
    pub(crate) fn next(&mut self, below: u32) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % below as u64) as u32
    }
    pub(crate) fn seq(&mut self, len: usize, vocab: u32) -> Vec<u32> {
        (0..len).map(|_| self.next(vocab)).collect()
    }
    pub(crate) fn float(&mut self) -> f32 {
        self.next(1 << 24) as f32 / (1 << 24) as f32
    }
}

pub(crate) fn vocab(model: &Model) -> u32 {
    model.spec().vocab_size
}

pub(crate) fn example(t: &mut Tokens, prompt: usize, answer: usize, vocab: u32) -> Example {
    Example::new(t.seq(prompt, vocab), t.seq(answer, vocab))
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mean cross-entropy of the answers under `logits`, computed on the host.
pub(crate) fn cross_entropy(batch: &[Example], logits: &Logits) -> f32 {
    let mut total = 0.0f64;
    let mut n = 0usize;
    for (b, ex) in batch.iter().enumerate() {
        for (t, &target) in ex.answer.iter().enumerate() {
            let row = logits.row(b, t);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&v| ((v - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[target as usize] as f64;
            n += 1;
        }
    }
    (total / n as f64) as f32
}

pub(crate) fn options(lr: f32) -> TrainOptions {
    TrainOptions {
        learning_rate: lr,
        warmup_steps: 0,
        total_steps: 0,
        step: 0,
        min_lr_ratio: 1.0,
        weight_decay: 0.0,
        grad_clip_norm: 1.0,
        temperature: 1.0,
        kl_weight: 0.0,
    }
}

/// `steps` training steps on one batch, the schedule position counting from zero.
pub(crate) fn train(
    model: &mut Model,
    batch: &[Example],
    soft: Option<&Logits>,
    steps: u32,
    opts: TrainOptions,
) -> Result<(), String> {
    for step in 0..steps {
        model
            .train_step(batch, soft.cloned(), &TrainOptions { step, ..opts })
            .map_err(e)?;
    }
    Ok(())
}

pub(crate) fn small_batch(model: &Model, seed: u64) -> Vec<Example> {
    let v = vocab(model);
    let mut t = Tokens(seed);
    vec![
        example(&mut t, 5, 4, v),
        example(&mut t, 7, 3, v),
        example(&mut t, 4, 5, v),
        example(&mut t, 6, 4, v),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks
