//! Learning across tokenizers: how one model's answer distributions become soft targets for a
//! model with another vocabulary (`[train] alignment`).
//!
//! Every model of a run may have a tokenizer of its own. Text is what the two sides share: each
//! side encodes the same prompt and answer with its own tokenizer, so the teacher's logits are
//! rows over *its* vocabulary at *its* answer positions, and the student needs rows over its
//! own vocabulary at its own positions. Three ways ([`Alignment`]):
//!
//! * `shared`: the two vocabularies must be the same tokenizer (equal
//!   [`fingerprint`](cotune_data::Tokenizer::fingerprint)); the logits pass unchanged. Two
//!   different tokenizers are refused ([`Bridge::new`]).
//! * `mined` (FedMKT's, after FuseLLM): every token of the teacher's vocabulary is mapped once to
//!   the student's token of minimum edit distance between their surfaces (the text bytes a
//!   token stands for, [`cotune_data::Tokenizer::surfaces`]; an identical surface wins at
//!   distance 0, ties go to the longer common prefix, then the lower id; special tokens map to
//!   their counterparts). At each aligned position the teacher's top-k probabilities (at the
//!   distillation temperature) are carried to the mapped ids and renormalised.
//! * `uld` (Universal Logit Distillation, Boizard et al. 2024): no vocabulary map. At an aligned
//!   position both distributions are sorted in descending order and compared rank by rank. The
//!   plugins' `train_step` minimises `KL(target || student)`, so the ULD comparison becomes a
//!   target: the student's token of rank `r` (by its own distribution before the step) gets the
//!   teacher's `r`-th largest probability (the shorter vocabulary's tail padded with zeros, then
//!   renormalised). That target is minimised exactly when the student's sorted distribution
//!   equals the teacher's, which is ULD's optimum; [`uld_distance`] measures ULD's own L1
//!   distance between the sorted vectors.
//!
//! ## Positions
//!
//! Answer position `t` of a model predicts its answer token `t` from the prompt and the answer
//! text before that token. Each token's byte offset in the answer text is the sum of the
//! surfaces before it. When both sides' surfaces spell the same text (always for byte-level
//! tokenizers; after trimming leading spaces for SentencePiece ones, which add a space of their
//! own), a student position is aligned to the teacher position whose token **starts at the same
//! byte**: both models then condition on exactly the same text, so these positions are exact
//! (the end-of-sequence positions always are). A student token that starts inside a teacher
//! token has no teacher distribution conditioned on its prefix: there the target is FedMKT's
//! fallback, the one-hot of the student's own reference token (the distillation term becomes
//! cross-entropy at temperature `T`). When the two spellings differ (a normaliser changed the
//! text), positions are aligned by dynamic time warping over the token surfaces with
//! edit-distance cost, FedMKT's way, and every student position takes its warped partner.
//!
//! Vocabulary maps and token tables are computed once per tokenizer (pair) and kept for the
//! process. The time spent here is counted ([`alignment_seconds`]) so the run log can show the
//! alignment's share of a round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cotune_data::Tokenizer;
use cotune_host::{Example, Logits};
use serde::{Deserialize, Serialize};

/// How two models with different tokenizers learn from each other (`[train] alignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alignment {
    /// One tokenizer for both; differing tokenizers are refused.
    #[default]
    Shared,
    /// FedMKT's minimum-edit-distance vocabulary map, top-k carried across.
    Mined,
    /// Universal Logit Distillation: sorted distributions compared rank by rank.
    Uld,
}

impl Alignment {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Mined => "mined",
            Self::Uld => "uld",
        }
    }
}

/// Two models' tokenizers that cannot be bridged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{teacher} has a tokenizer of {teacher_size} tokens and {student} one of {student_size}: \
     alignment \"shared\" needs one tokenizer for both; set [train] alignment = \"mined\" or \
     \"uld\", or give both the same tokenizer"
)]
pub struct SharedMismatch {
    /// The teaching model.
    pub teacher: String,
    /// Its tokenizer's size.
    pub teacher_size: usize,
    /// The learning model.
    pub student: String,
    /// Its tokenizer's size.
    pub student_size: usize,
}

static NANOS: AtomicU64 = AtomicU64::new(0);

/// Seconds this process has spent aligning (maps, positions, carried targets).
pub fn alignment_seconds() -> f64 {
    NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

fn count(since: Instant) {
    NANOS.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// What the alignment needs of one tokenizer: each id's surface and the special ids.
#[derive(Debug)]
pub struct TokenTable {
    /// Surface bytes per id (empty for special tokens).
    pub surfaces: Vec<Vec<u8>>,
    /// End of sequence.
    pub eos: u32,
    /// Beginning of sequence.
    pub bos: u32,
    /// Padding.
    pub pad: u32,
    fingerprint: String,
}

impl TokenTable {
    /// The table of `tokenizer`, computed once per process per tokenizer.
    pub fn of(tokenizer: &Tokenizer) -> Arc<TokenTable> {
        static TABLES: OnceLock<Mutex<HashMap<String, Arc<TokenTable>>>> = OnceLock::new();
        let tables = TABLES.get_or_init(Default::default);
        let key = tokenizer.fingerprint().to_string();
        if let Some(t) = tables.lock().expect("table cache").get(&key) {
            return t.clone();
        }
        let t0 = Instant::now();
        let table = Arc::new(TokenTable {
            surfaces: tokenizer.surfaces(),
            eos: tokenizer.eos_id(),
            bos: tokenizer.bos_id(),
            pad: tokenizer.pad_id(),
            fingerprint: key.clone(),
        });
        count(t0);
        tables
            .lock()
            .expect("table cache")
            .entry(key)
            .or_insert(table)
            .clone()
    }

    /// A table from hand-given surfaces (tests, and tokenizers built elsewhere); `name` keys
    /// its vocabulary maps, so two different tables need two names.
    pub fn from_surfaces(name: &str, surfaces: Vec<Vec<u8>>, eos: u32, bos: u32, pad: u32) -> Self {
        TokenTable {
            surfaces,
            eos,
            bos,
            pad,
            fingerprint: name.to_string(),
        }
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.surfaces.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.surfaces.is_empty()
    }

    fn special_counterpart(&self, id: u32, to: &TokenTable) -> Option<u32> {
        if id == self.eos {
            Some(to.eos)
        } else if id == self.bos {
            Some(to.bos)
        } else if id == self.pad {
            Some(to.pad)
        } else {
            None
        }
    }
}

/// Levenshtein distance between `a` and `b`, or any value above `bound` once it must exceed it.
pub fn edit_distance(a: &[u8], b: &[u8], bound: usize) -> usize {
    if a.len().abs_diff(b.len()) > bound {
        return bound + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0usize; b.len() + 1];
    for (i, &x) in a.iter().enumerate() {
        row[0] = i + 1;
        let mut low = row[0];
        for (j, &y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            row[j + 1] = sub.min(prev[j + 1] + 1).min(row[j] + 1);
            low = low.min(row[j + 1]);
        }
        if low > bound {
            return bound + 1;
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The process's vocabulary maps, by the pair of tokenizer fingerprints.
type PairMaps = HashMap<(String, String), Arc<VocabMap>>;

/// FedMKT's vocabulary map: each id of one vocabulary to the other's closest token.
#[derive(Debug)]
pub struct VocabMap {
    /// Per source id, the target id (`u32::MAX`: none, for an empty surface).
    pub to: Vec<u32>,
}

impl VocabMap {
    /// The map from `from`'s ids to `to`'s, computed once per process per pair.
    pub fn between(from: &TokenTable, to: &TokenTable) -> Arc<VocabMap> {
        static MAPS: OnceLock<Mutex<PairMaps>> = OnceLock::new();
        let maps = MAPS.get_or_init(Default::default);
        let key = (from.fingerprint.clone(), to.fingerprint.clone());
        if let Some(m) = maps.lock().expect("map cache").get(&key) {
            return m.clone();
        }
        let t0 = Instant::now();
        let map = Arc::new(VocabMap::compute(from, to));
        count(t0);
        maps.lock()
            .expect("map cache")
            .entry(key)
            .or_insert(map)
            .clone()
    }

    /// The map, computed on all available cores.
    pub fn compute(from: &TokenTable, to: &TokenTable) -> VocabMap {
        let exact: HashMap<&[u8], u32> = to
            .surfaces
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, s)| !s.is_empty())
            .map(|(id, s)| (s.as_slice(), id as u32))
            .collect();
        // Candidates by length, so a search stops once lengths alone rule out a closer one.
        let longest = to.surfaces.iter().map(Vec::len).max().unwrap_or(0);
        let mut by_len: Vec<Vec<u32>> = vec![Vec::new(); longest + 1];
        for (id, s) in to.surfaces.iter().enumerate() {
            if !s.is_empty() {
                by_len[s.len()].push(id as u32);
            }
        }
        let one = |id: usize| -> u32 {
            let s = &from.surfaces[id];
            if let Some(t) = from.special_counterpart(id as u32, to) {
                if s.is_empty() {
                    return t;
                }
            }
            if s.is_empty() {
                return u32::MAX;
            }
            if let Some(&t) = exact.get(s.as_slice()) {
                return t;
            }
            let mut best = (usize::MAX, 0usize, u32::MAX);
            for gap in 0..=longest {
                if gap > best.0 {
                    break;
                }
                let lens = [s.len().checked_sub(gap), Some(s.len() + gap)];
                for len in lens
                    .into_iter()
                    .flatten()
                    .take(if gap == 0 { 1 } else { 2 })
                {
                    let Some(ids) = by_len.get(len) else { continue };
                    for &t in ids {
                        let cand = &to.surfaces[t as usize];
                        let bound = if best.0 == usize::MAX {
                            usize::MAX - 1
                        } else {
                            best.0
                        };
                        let d = edit_distance(s, cand, bound);
                        if d > best.0 {
                            continue;
                        }
                        let prefix = common_prefix(s, cand);
                        let better = d < best.0
                            || (d == best.0 && prefix > best.1)
                            || (d == best.0 && prefix == best.1 && t < best.2);
                        if better {
                            best = (d, prefix, t);
                        }
                    }
                }
            }
            best.2
        };
        let n = from.surfaces.len();
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(8);
        let chunk = n.div_ceil(threads.max(1)).max(1);
        let mut to_ids = vec![u32::MAX; n];
        std::thread::scope(|s| {
            for (c, out) in to_ids.chunks_mut(chunk).enumerate() {
                let one = &one;
                s.spawn(move || {
                    for (k, slot) in out.iter_mut().enumerate() {
                        *slot = one(c * chunk + k);
                    }
                });
            }
        });
        VocabMap { to: to_ids }
    }
}

/// Where a student answer position finds its teacher position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partner {
    /// The teacher token starting at the same byte of the same text.
    Exact(usize),
    /// Paired by dynamic time warping (the two spellings of the text differ).
    Warped(usize),
    /// No teacher position speaks to it (it starts inside a teacher token).
    None,
}

/// Start offsets of `ids`' tokens in their concatenated surfaces, and that text.
fn spell(table: &TokenTable, ids: &[u32]) -> (Vec<usize>, Vec<u8>) {
    let mut text = Vec::new();
    let mut starts = Vec::with_capacity(ids.len());
    for &id in ids {
        starts.push(text.len());
        if let Some(s) = table.surfaces.get(id as usize) {
            text.extend_from_slice(s);
        }
    }
    (starts, text)
}

fn leading_spaces(text: &[u8]) -> usize {
    text.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

/// For each of the student's answer tokens, its teacher partner (see the module docs).
pub fn align_positions(
    teacher: &TokenTable,
    teacher_answer: &[u32],
    student: &TokenTable,
    student_answer: &[u32],
) -> Vec<Partner> {
    let (t_starts, t_text) = spell(teacher, teacher_answer);
    let (s_starts, s_text) = spell(student, student_answer);
    // The same text: offsets as they are. Spelled alike but for leading spaces (a
    // SentencePiece tokenizer adds one of its own): offsets past them.
    let (tl, sl) = if t_text == s_text {
        (0, 0)
    } else {
        (leading_spaces(&t_text), leading_spaces(&s_text))
    };
    if t_text[tl..] == s_text[sl..] {
        let empty =
            |table: &TokenTable, id: u32| table.surfaces.get(id as usize).is_none_or(Vec::is_empty);
        // A token wholly inside the trimmed spaces predicts only spacing: no offset.
        let shift = |starts: &[usize], lead: usize, ids: &[u32], table: &TokenTable| {
            starts
                .iter()
                .zip(ids)
                .map(|(&s, &id)| {
                    let end = s + table.surfaces.get(id as usize).map_or(0, Vec::len);
                    (lead == 0 || end > lead).then(|| s.saturating_sub(lead))
                })
                .collect::<Vec<_>>()
        };
        let t_off = shift(&t_starts, tl, teacher_answer, teacher);
        let s_off = shift(&s_starts, sl, student_answer, student);
        let mut first: HashMap<usize, usize> = HashMap::new();
        for (i, o) in t_off.iter().enumerate() {
            if let (Some(o), false) = (o, empty(teacher, teacher_answer[i])) {
                first.entry(*o).or_insert(i);
            }
        }
        let teacher_eos = teacher_answer.iter().rposition(|&id| id == teacher.eos);
        return s_off
            .iter()
            .zip(student_answer)
            .map(|(o, &id)| {
                if id == student.eos {
                    // Both answers end at the end of the same text.
                    return teacher_eos.map_or(Partner::None, Partner::Exact);
                }
                match o {
                    Some(o) if !empty(student, id) => {
                        first.get(o).map_or(Partner::None, |&i| Partner::Exact(i))
                    }
                    _ => Partner::None,
                }
            })
            .collect();
    }
    dtw(teacher, teacher_answer, student, student_answer)
        .into_iter()
        .map(|i| i.map_or(Partner::None, Partner::Warped))
        .collect()
}

/// Dynamic time warping of the two token sequences with edit-distance cost; for each student
/// position, the first teacher position on the path.
fn dtw(
    teacher: &TokenTable,
    teacher_answer: &[u32],
    student: &TokenTable,
    student_answer: &[u32],
) -> Vec<Option<usize>> {
    let (n, m) = (teacher_answer.len(), student_answer.len());
    if n == 0 || m == 0 {
        return vec![None; m];
    }
    let surface =
        |t: &TokenTable, id: u32| t.surfaces.get(id as usize).cloned().unwrap_or_default();
    let ts: Vec<Vec<u8>> = teacher_answer
        .iter()
        .map(|&i| surface(teacher, i))
        .collect();
    let ss: Vec<Vec<u8>> = student_answer
        .iter()
        .map(|&i| surface(student, i))
        .collect();
    let inf = usize::MAX / 4;
    let mut d = vec![inf; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    d[at(0, 0)] = 0;
    for i in 1..=n {
        for j in 1..=m {
            // A special token (empty surface) pairs only with a special token.
            let cost = match (ts[i - 1].is_empty(), ss[j - 1].is_empty()) {
                (false, false) | (true, true) => {
                    edit_distance(&ts[i - 1], &ss[j - 1], usize::MAX - 1)
                }
                _ => 1 << 20,
            };
            let best = d[at(i - 1, j - 1)]
                .min(d[at(i - 1, j)])
                .min(d[at(i, j - 1)]);
            d[at(i, j)] = best.saturating_add(cost);
        }
    }
    let mut partner = vec![None; m];
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        partner[j - 1] = Some(i - 1);
        let diag = d[at(i - 1, j - 1)];
        let up = d[at(i - 1, j)];
        let left = d[at(i, j - 1)];
        if diag <= up && diag <= left {
            i -= 1;
            j -= 1;
        } else if up <= left {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    partner
}

fn softmax(row: &[f32], t: f32) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = row
        .iter()
        .map(|&z| f64::from((z - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The way from one model's tokenizer to another's: builds the student's soft targets from the
/// teacher's logits.
#[derive(Debug, Clone)]
pub struct Bridge {
    alignment: Alignment,
    from: Arc<TokenTable>,
    to: Arc<TokenTable>,
    map: Option<Arc<VocabMap>>,
    top_k: usize,
}

impl Bridge {
    /// The bridge from `teacher`'s tokenizer to `student`'s (`who` names the two models in
    /// errors): `None` when they are the same tokenizer (nothing to align), an error under
    /// `shared` when they differ.
    pub fn new(
        alignment: Alignment,
        teacher: (&str, &Tokenizer),
        student: (&str, &Tokenizer),
        top_k: usize,
    ) -> Result<Option<Bridge>, SharedMismatch> {
        if teacher.1.fingerprint() == student.1.fingerprint() {
            return Ok(None);
        }
        if alignment == Alignment::Shared {
            return Err(SharedMismatch {
                teacher: teacher.0.to_string(),
                teacher_size: teacher.1.vocab_size(),
                student: student.0.to_string(),
                student_size: student.1.vocab_size(),
            });
        }
        let from = TokenTable::of(teacher.1);
        let to = TokenTable::of(student.1);
        let map = (alignment == Alignment::Mined).then(|| VocabMap::between(&from, &to));
        Ok(Some(Bridge {
            alignment,
            from,
            to,
            map,
            top_k: top_k.max(1),
        }))
    }

    /// The alignment it uses.
    pub fn alignment(&self) -> Alignment {
        self.alignment
    }

    /// Whether [`carry`](Self::carry) needs the student's own logits (`uld` ranks by them).
    pub fn needs_own(&self) -> bool {
        self.alignment == Alignment::Uld
    }

    /// The student's soft targets (logits over `student_vocab` at its answer positions, at
    /// temperature `t`) from `teacher` logits on `teacher_batch`; `student_batch` is the same
    /// texts in the student's tokens; `own` the student's logits (needed by `uld`).
    ///
    /// # Panics
    /// If the batches differ in length, or `uld` is given no `own` logits.
    pub fn carry(
        &self,
        teacher: &Logits,
        teacher_batch: &[Example],
        student_batch: &[Example],
        own: Option<&Logits>,
        student_vocab: usize,
        t: f32,
    ) -> Logits {
        let t0 = Instant::now();
        assert_eq!(teacher_batch.len(), student_batch.len(), "paired batches");
        let a = student_batch
            .iter()
            .map(|e| e.answer.len())
            .max()
            .unwrap_or(0);
        let v = student_vocab;
        let mut data = vec![0f32; student_batch.len() * a * v];
        let t_vocab = (teacher.vocab as usize).min(self.from.len().max(1));
        let s_vocab = v.min(self.to.len().max(1));
        // Zero probability, as a logit at temperature t.
        let floor = (f64::from(t) * 1e-30f64.ln()) as f32;
        let mut scratch = Scratch::default();
        for (b, (te, se)) in teacher_batch.iter().zip(student_batch).enumerate() {
            let partners = align_positions(&self.from, &te.answer, &self.to, &se.answer);
            for (j, partner) in partners.into_iter().enumerate() {
                let out = &mut data[(b * a + j) * v..(b * a + j + 1) * v];
                out.fill(floor);
                let i = match partner {
                    Partner::Exact(i) | Partner::Warped(i) if i < teacher.answer_len as usize => {
                        Some(i)
                    }
                    _ => None,
                };
                let filled = match i {
                    Some(i) => {
                        let row = &teacher.row(b, i)[..t_vocab];
                        match self.alignment {
                            Alignment::Mined => self.mined(row, t, &mut scratch, out),
                            _ => {
                                let own = own.expect("uld ranks by the student's own logits");
                                uld_row(row, &own.row(b, j)[..s_vocab], t, &mut scratch, out)
                            }
                        }
                    }
                    None => false,
                };
                if !filled {
                    // FedMKT's fallback: the student's own reference token.
                    out.fill(floor);
                    out[(se.answer[j] as usize).min(v - 1)] = 0.0;
                }
            }
        }
        count(t0);
        Logits::new(student_batch.len() as u32, a as u32, v as u32, data)
    }

    /// The teacher's top-k probabilities (of logit row `z` at temperature `t`) carried through
    /// the map and renormalised, written as logits into `out` (already at the floor).
    fn mined(&self, z: &[f32], t: f32, scratch: &mut Scratch, out: &mut [f32]) -> bool {
        let map = self.map.as_ref().expect("mined bridges have a map");
        let k = self.top_k.min(z.len());
        if k == 0 {
            return false;
        }
        // The top k by logit are the top k by probability; ties by id.
        let order = &mut scratch.order;
        order.clear();
        order.extend(0..z.len() as u32);
        order.select_nth_unstable_by(k - 1, |&x, &y| {
            z[y as usize].total_cmp(&z[x as usize]).then(x.cmp(&y))
        });
        let top = &order[..k];
        let max = top
            .iter()
            .map(|&i| z[i as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let kept = &mut scratch.kept;
        kept.clear();
        let mut total = 0.0f64;
        for &id in top {
            let to = map.to.get(id as usize).copied().unwrap_or(u32::MAX) as usize;
            if to >= out.len() {
                continue;
            }
            let p = f64::from((z[id as usize] - max) / t).exp();
            total += p;
            match kept.iter_mut().find(|(i, _)| *i == to) {
                Some((_, q)) => *q += p,
                None => kept.push((to, p)),
            }
        }
        if total <= 0.0 || !total.is_finite() {
            return false;
        }
        for &(to, p) in kept.iter() {
            out[to] = (f64::from(t) * (p / total).max(1e-30).ln()) as f32;
        }
        true
    }
}

/// Buffers reused across the positions of a batch.
#[derive(Default)]
struct Scratch {
    order: Vec<u32>,
    kept: Vec<(usize, f64)>,
    probs: Vec<u32>,
    ranks: Vec<u64>,
    spare32: Vec<u32>,
    spare64: Vec<u64>,
}

/// Unsigned keys the radix sort handles.
trait RadixKey: Copy + Default {
    const BYTES: usize;
    fn byte(self, i: usize) -> usize;
}

impl RadixKey for u32 {
    const BYTES: usize = 4;
    fn byte(self, i: usize) -> usize {
        ((self >> (8 * i)) & 0xff) as usize
    }
}

impl RadixKey for u64 {
    const BYTES: usize = 8;
    fn byte(self, i: usize) -> usize {
        ((self >> (8 * i)) & 0xff) as usize
    }
}

/// Sorts `keys` ascending: least-significant-byte radix sort, skipping bytes all keys share
/// (a vocabulary's worth of keys sorts in a few linear passes instead of `n log n`
/// comparisons). Stable, so equal keys keep their order.
fn radix_sort<K: RadixKey>(keys: &mut Vec<K>, spare: &mut Vec<K>) {
    spare.clear();
    spare.resize(keys.len(), K::default());
    for i in 0..K::BYTES {
        let mut counts = [0usize; 256];
        for &k in keys.iter() {
            counts[k.byte(i)] += 1;
        }
        if counts.contains(&keys.len()) {
            continue;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for &k in keys.iter() {
            let b = k.byte(i);
            spare[counts[b]] = k;
            counts[b] += 1;
        }
        std::mem::swap(keys, spare);
    }
}

/// ULD's target for one position, written as logits into `out` (already at the floor): the
/// student's token of rank `r` (by its own logits `mine`, ties to the lower id) gets the
/// teacher's `r`-th largest probability (of logit row `z` at temperature `t`), renormalised over
/// the shorter vocabulary. Both orders are sorts of integer keys (a positive `f32`'s bits order
/// like the number), the hot loop of this alignment.
fn uld_row(z: &[f32], mine: &[f32], t: f32, scratch: &mut Scratch, out: &mut [f32]) -> bool {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sorted = &mut scratch.probs;
    sorted.clear();
    // Descending probability: ascending complement of the bits.
    sorted.extend(z.iter().map(|&x| !(((x - max) / t).exp()).to_bits()));
    radix_sort(sorted, &mut scratch.spare32);
    sorted.iter_mut().for_each(|b| *b = !*b);
    let ranks = &mut scratch.ranks;
    ranks.clear();
    ranks.extend(mine.iter().enumerate().map(|(i, &m)| {
        // Descending logit, then ascending id: the complement of the order-preserving bits.
        let bits = m.to_bits();
        let ordered = if bits >> 31 == 1 {
            !bits
        } else {
            bits | 0x8000_0000
        };
        (u64::from(!ordered) << 32) | i as u64
    }));
    radix_sort(ranks, &mut scratch.spare64);
    let n = ranks.len().min(sorted.len());
    let total: f64 = sorted[..n]
        .iter()
        .map(|&b| f64::from(f32::from_bits(b)))
        .sum();
    if total <= 0.0 || !total.is_finite() {
        return false;
    }
    let tt = f64::from(t);
    for r in 0..n {
        let p = f64::from(f32::from_bits(sorted[r])) / total;
        out[(ranks[r] & 0xffff_ffff) as usize] = (tt * p.max(1e-30).ln()) as f32;
    }
    true
}

/// ULD's target on probabilities (the reference [`uld_row`] is tested against): the student's
/// token of rank `r` (by `mine`) gets the teacher's `r`-th largest probability; renormalised
/// over the shorter vocabulary.
#[cfg(test)]
fn uld_target(teacher: &[f64], mine: &[f64], q: &mut [f64]) -> bool {
    let mut p_sorted = teacher.to_vec();
    p_sorted.sort_by(|x, y| y.total_cmp(x));
    let mut rank: Vec<usize> = (0..mine.len()).collect();
    rank.sort_by(|&x, &y| mine[y].total_cmp(&mine[x]).then(x.cmp(&y)));
    let n = rank.len().min(p_sorted.len());
    let total: f64 = p_sorted[..n].iter().sum();
    if total <= 0.0 {
        return false;
    }
    for r in 0..n {
        q[rank[r]] = p_sorted[r] / total;
    }
    true
}

/// ULD's distance at one position: the L1 distance between the two distributions sorted in
/// descending order, the shorter padded with zeros.
pub fn uld_distance(teacher: &[f64], student: &[f64]) -> f64 {
    let mut a = teacher.to_vec();
    let mut b = student.to_vec();
    a.sort_by(|x, y| y.total_cmp(x));
    b.sort_by(|x, y| y.total_cmp(x));
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| (a.get(i).copied().unwrap_or(0.0) - b.get(i).copied().unwrap_or(0.0)).abs())
        .sum()
}

/// Mean over the batch's answer positions of `KL(softmax(target/t) || softmax(student/t))`:
/// how far the student is from its (carried) soft targets.
pub fn mean_kl(target: &Logits, student: &Logits, batch: &[Example], t: f32) -> f64 {
    let (mut total, mut n) = (0.0, 0usize);
    for (b, ex) in batch.iter().enumerate() {
        for j in 0..ex.answer.len().min(target.answer_len as usize) {
            let p = softmax(target.row(b, j), t);
            let q = softmax(student.row(b, j), t);
            total += p
                .iter()
                .zip(&q)
                .filter(|(p, _)| **p > 1e-12)
                .map(|(p, q)| p * (p / q.max(1e-300)).ln())
                .sum::<f64>();
            n += 1;
        }
    }
    total / n.max(1) as f64
}

#[cfg(test)]
mod tests;
