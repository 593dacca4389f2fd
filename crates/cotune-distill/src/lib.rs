//! The server's preparation steps of Co-PLMs, and the training loops every phase shares.
//!
//! * [`pretrain_cached`]: the server LLM (or a device SLM that starts "pre-trained") is trained
//!   on the public corpus with early stopping on `public_valid`, a stand-in for the pre-training
//!   a real LLM has had. The best checkpoint is cached on disk, keyed by a hash of the model's
//!   config text, the data description, the seed, the plugin's name, version and architecture
//!   and the training settings, so a rerun reuses it.
//! * [`distill`]: the distilled proxy model (DPM) learns from the LLM on the public corpus:
//!   `(1 - w) * CE + w * T² * KL(teacher || student)` over the answer tokens (the SDK's
//!   `train_step` computes this when given soft targets).
//! * [`train_epoch`] and [`mutual_learning_epoch`]: one pass of supervised or distillation
//!   training, and one pass of deep mutual learning between two models (each trained on CE plus
//!   KL to the other's answer logits, both computed before either update), which the protocol's
//!   DST and SAML phases are made of.

#![warn(missing_docs)]

pub mod align;
mod gate;

use std::path::{Path, PathBuf};

use cotune_data::length_bucketed_batches;
use cotune_host::{DeviceChoice, Example, HostError, Logits, Model, Plugin, TrainOptions};
use serde::{Deserialize, Serialize};

pub use align::{alignment_seconds, Alignment, Bridge};
pub use gate::{mix_targets, Gate, GateSignal, SamlVariant};

/// What can go wrong while pre-training, distilling or training.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// A model call failed.
    #[error("{what}: {cause}")]
    Host {
        /// What was being done.
        what: String,
        /// The host's error.
        cause: HostError,
    },
    /// A model could not be built; the host's message names the model.
    #[error("{0}")]
    Build(HostError),
    /// A cache file could not be read or written.
    #[error("cache file {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        cause: std::io::Error,
    },
    /// A phase was given no examples.
    #[error("{0} has no examples")]
    NoExamples(String),
    /// A setting is out of range.
    #[error("setting {key} = {value}: {reason}")]
    InvalidSetting {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// A host error with what was being done. The host's message already names the model
/// (`gpt2/gpt2: ...`), so `what` names only the activity.
fn host(what: impl Into<String>) -> impl FnOnce(HostError) -> DistillError {
    let what = what.into();
    move |cause| DistillError::Host { what, cause }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DistillError + '_ {
    move |cause| DistillError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Optimiser and loss settings of one training phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Peak learning rate (constant after warm-up unless `total_steps` is set).
    pub learning_rate: f32,
    /// Steps of linear warm-up, counted over the whole life of the model in this phase.
    pub warmup_steps: u32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Per-tensor gradient-norm clip (see `cotune_abi::TrainOptions`); 0 disables it.
    pub grad_clip_norm: f32,
    /// Examples per step.
    pub batch_size: usize,
    /// Distillation temperature `T`.
    pub temperature: f32,
    /// Weight `w` of the `T²`-scaled KL term; `1 - w` weighs the cross-entropy.
    pub kl_weight: f32,
    /// Step at which a cosine decay after warm-up reaches 10% of the peak; 0 keeps the rate
    /// constant. Pre-training sets it from `max_epochs` when `cosine` is on.
    pub total_steps: u32,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            warmup_steps: 10,
            weight_decay: 0.01,
            grad_clip_norm: 1.0,
            batch_size: 16,
            temperature: 2.0,
            kl_weight: 0.5,
            total_steps: 0,
        }
    }
}

impl TrainSettings {
    /// The step options of step `step`.
    pub fn options(&self, step: u32) -> TrainOptions {
        TrainOptions {
            learning_rate: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.total_steps,
            step,
            min_lr_ratio: 0.1,
            weight_decay: self.weight_decay,
            grad_clip_norm: self.grad_clip_norm,
            temperature: self.temperature,
            kl_weight: self.kl_weight,
        }
    }

    fn check(&self) -> Result<(), DistillError> {
        if self.batch_size == 0 {
            return Err(DistillError::InvalidSetting {
                key: "batch_size",
                value: "0".into(),
                reason: "expected at least 1",
            });
        }
        Ok(())
    }
}

/// Means over one pass of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Optimiser steps taken.
    pub steps: u32,
    /// Mean optimised loss.
    pub loss: f32,
    /// Mean cross-entropy to the reference answers.
    pub cross_entropy: f32,
    /// Mean KL to the soft targets (0 without them).
    pub kl: f32,
    /// Gated mutual learning: the mean weight the gate gave the other side's teaching, over
    /// the pass's examples (see the `gate` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<f32>,
}

#[derive(Default)]
struct Means {
    n: u32,
    loss: f64,
    ce: f64,
    kl: f64,
    gated: u64,
    gate: f64,
}

impl Means {
    fn add(&mut self, r: &cotune_host::StepReport) {
        self.n += 1;
        self.loss += f64::from(r.loss);
        self.ce += f64::from(r.cross_entropy);
        self.kl += f64::from(r.kl);
    }
    fn add_gate(&mut self, weights: &[f32]) {
        self.gated += weights.len() as u64;
        self.gate += weights.iter().map(|&w| f64::from(w)).sum::<f64>();
    }
    fn report(&self) -> EpochReport {
        let n = f64::from(self.n.max(1));
        EpochReport {
            steps: self.n,
            loss: (self.loss / n) as f32,
            cross_entropy: (self.ce / n) as f32,
            kl: (self.kl / n) as f32,
            gate: (self.gated > 0).then(|| (self.gate / self.gated as f64) as f32),
        }
    }
}

static STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Training steps taken by this process so far (for progress display).
pub fn steps_taken() -> u64 {
    STEPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one training step taken outside this crate's loops.
pub fn count_step() {
    STEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Length-bucketed batches of `examples` in a seeded order, as indices.
pub fn batch_indices(examples: &[Example], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    length_bucketed_batches(examples, batch_size, seed)
}

/// Length-bucketed batches of `examples` in a seeded order.
pub fn batches(examples: &[Example], batch_size: usize, seed: u64) -> Vec<Vec<Example>> {
    batch_indices(examples, batch_size, seed)
        .into_iter()
        .map(|idx| idx.into_iter().map(|i| examples[i].clone()).collect())
        .collect()
}

/// One pass over `examples`: `student` is trained on cross-entropy, plus KL to `teacher`'s answer
/// logits when a teacher is given. `step` is the student's schedule counter, advanced per step.
pub fn train_epoch(
    student: &mut Model,
    teacher: Option<&Model>,
    examples: &[Example],
    settings: &TrainSettings,
    seed: u64,
    step: &mut u32,
) -> Result<EpochReport, DistillError> {
    settings.check()?;
    let mut means = Means::default();
    for batch in batches(examples, settings.batch_size, seed) {
        let soft = match teacher {
            Some(t) => Some(
                t.answer_logits(&batch)
                    .map_err(host("the teacher's answer logits"))?,
            ),
            None => None,
        };
        let report = student
            .train_step(&batch, soft, &settings.options(*step))
            .map_err(host("a training step"))?;
        *step += 1;
        count_step();
        means.add(&report);
    }
    Ok(means.report())
}

/// A teacher whose tokenizer may differ from the student's.
pub struct Teacher<'a> {
    /// The teaching model.
    pub model: &'a Model,
    /// The same texts as the student's examples, in the teacher's tokens (same order).
    pub examples: &'a [Example],
    /// The way to the student's vocabulary; `None` when both share one tokenizer.
    pub bridge: Option<&'a Bridge>,
}

/// [`train_epoch`] with a teacher that may speak another vocabulary: its logits on its own
/// encoding of each batch become the student's targets through the bridge
/// ([`align`]). Without a bridge it is `train_epoch` with that teacher.
pub fn train_epoch_from(
    student: &mut Model,
    teacher: &Teacher<'_>,
    examples: &[Example],
    settings: &TrainSettings,
    seed: u64,
    step: &mut u32,
) -> Result<EpochReport, DistillError> {
    let Some(bridge) = teacher.bridge else {
        return train_epoch(student, Some(teacher.model), examples, settings, seed, step);
    };
    settings.check()?;
    let mut means = Means::default();
    for idx in batch_indices(examples, settings.batch_size, seed) {
        let batch: Vec<Example> = idx.iter().map(|&i| examples[i].clone()).collect();
        let theirs: Vec<Example> = idx.iter().map(|&i| teacher.examples[i].clone()).collect();
        let logits = teacher
            .model
            .answer_logits(&theirs)
            .map_err(host("the teacher's answer logits"))?;
        let own = match bridge.needs_own() {
            true => Some(
                student
                    .answer_logits(&batch)
                    .map_err(host("the student's answer logits"))?,
            ),
            false => None,
        };
        let vocab = student.spec().vocab_size as usize;
        let soft = bridge.carry(
            &logits,
            &theirs,
            &batch,
            own.as_ref(),
            vocab,
            settings.temperature,
        );
        let report = student
            .train_step(&batch, Some(soft), &settings.options(*step))
            .map_err(host("a training step"))?;
        *step += 1;
        count_step();
        means.add(&report);
    }
    Ok(means.report())
}

/// One side of deep mutual learning.
pub struct Learner<'a> {
    /// The model trained.
    pub model: &'a mut Model,
    /// The model whose logits the other side learns from; `None` means `model` itself. (A
    /// distilled proxy teaches with its domain adapters on but trains its shared part.)
    pub teacher_view: Option<&'a Model>,
    /// Its settings.
    pub settings: &'a TrainSettings,
    /// Its schedule counter.
    pub step: &'a mut u32,
    /// Its examples, in its own tokens: the same texts, in the same order, on both sides.
    pub examples: &'a [Example],
}

impl Learner<'_> {
    fn logits(&self, batch: &[Example]) -> Result<Logits, DistillError> {
        let view: &Model = self.teacher_view.unwrap_or(self.model);
        view.answer_logits(batch).map_err(host("answer logits"))
    }

    /// The trained model's own logits: `taught` when it teaches through itself, else computed.
    fn own_logits(&self, batch: &[Example], taught: &Logits) -> Result<Logits, DistillError> {
        match self.teacher_view {
            None => Ok(taught.clone()),
            Some(_) => self
                .model
                .answer_logits(batch)
                .map_err(host("answer logits")),
        }
    }
}

/// The soft targets of `student` on `batch` from `teacher` logits computed on `theirs` (the
/// same texts in the teacher's tokens): carried through `bridge` when the tokenizers differ,
/// then, with a gate, mixed with the student's own distribution (see the `gate` module); `view`
/// is the student's teaching logits, reused when it teaches through itself.
#[allow(clippy::too_many_arguments)]
fn targets_for(
    gate: Option<Gate>,
    bridge: Option<&Bridge>,
    batch: &[Example],
    theirs: &[Example],
    teacher: Logits,
    student: &Learner<'_>,
    view: &Logits,
    means: &mut Means,
) -> Result<Logits, DistillError> {
    let needs_own = gate.is_some() || bridge.is_some_and(Bridge::needs_own);
    let own = match needs_own {
        true => Some(student.own_logits(batch, view)?),
        false => None,
    };
    let carried = bridge.map(|b| {
        b.carry(
            &teacher,
            theirs,
            batch,
            own.as_ref(),
            view.vocab as usize,
            student.settings.temperature,
        )
    });
    let Some(gate) = gate else {
        return Ok(carried.unwrap_or(teacher));
    };
    let own = own.expect("computed for the gate");
    let weights = gate.weights(&gate.scores(theirs, &teacher), &gate.scores(batch, &own));
    means.add_gate(&weights);
    Ok(mix_targets(
        batch,
        carried.as_ref().unwrap_or(&teacher),
        &own,
        &weights,
        student.settings.temperature,
    ))
}

/// The bridges of one mutual-learning pass between models with different tokenizers:
/// `to_left` carries the right side's logits to the left side's vocabulary, `to_right` the
/// reverse. `None` (or a `None` inside) where both sides share a tokenizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridges<'a> {
    /// Right to left.
    pub to_left: Option<&'a Bridge>,
    /// Left to right.
    pub to_right: Option<&'a Bridge>,
}

/// One pass of deep mutual learning over the two sides' examples (the same texts, each side in
/// its own tokens): on every batch both sides' answer logits are computed first, then each side
/// takes a step on CE plus KL to the other's logits, carried across `bridges` when their
/// tokenizers differ ([`align`]). With a `gate`, each example's KL term is weighted by how much
/// better the teaching side knows it (the `gate` module: [`Gate`]); without, every example
/// weighs the same (the paper's).
pub fn mutual_learning_epoch(
    left: Learner<'_>,
    right: Learner<'_>,
    seed: u64,
    gate: Option<Gate>,
    bridges: Bridges<'_>,
) -> Result<(EpochReport, EpochReport), DistillError> {
    left.settings.check()?;
    if left.examples.len() != right.examples.len() {
        return Err(DistillError::InvalidSetting {
            key: "examples",
            value: format!("{} and {}", left.examples.len(), right.examples.len()),
            reason: "both sides of mutual learning need the same texts",
        });
    }
    let (mut ml, mut mr) = (Means::default(), Means::default());
    for idx in batch_indices(left.examples, left.settings.batch_size, seed) {
        let lb: Vec<Example> = idx.iter().map(|&i| left.examples[i].clone()).collect();
        let rb: Vec<Example> = match bridges.to_left.is_some() || bridges.to_right.is_some() {
            true => idx.iter().map(|&i| right.examples[i].clone()).collect(),
            false => lb.clone(),
        };
        let left_view = left.logits(&lb)?;
        let right_view = right.logits(&rb)?;
        let from_right = targets_for(
            gate,
            bridges.to_left,
            &lb,
            &rb,
            right_view.clone(),
            &left,
            &left_view,
            &mut ml,
        )?;
        let from_left = targets_for(
            gate,
            bridges.to_right,
            &rb,
            &lb,
            left_view,
            &right,
            &right_view,
            &mut mr,
        )?;
        let rl = left
            .model
            .train_step(&lb, Some(from_right), &left.settings.options(*left.step))
            .map_err(host("a mutual-learning step"))?;
        *left.step += 1;
        count_step();
        let rr = right
            .model
            .train_step(&rb, Some(from_left), &right.settings.options(*right.step))
            .map_err(host("a mutual-learning step"))?;
        *right.step += 1;
        count_step();
        ml.add(&rl);
        mr.add(&rr);
    }
    Ok((ml.report(), mr.report()))
}

/// Mean cross-entropy per answer token of `model` on `examples`.
pub fn mean_cross_entropy(
    model: &Model,
    examples: &[Example],
    batch_size: usize,
) -> Result<f64, DistillError> {
    if examples.is_empty() {
        return Err(DistillError::NoExamples("the validation set".into()));
    }
    let (mut total, mut count) = (0.0f64, 0usize);
    for batch in examples.chunks(batch_size.max(1)) {
        let logits = model.answer_logits(batch).map_err(host("validation"))?;
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
                count += 1;
            }
        }
    }
    Ok(total / count.max(1) as f64)
}

/// Settings of pre-training on the public corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// The most passes over the public training set.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation cross-entropy.
    pub patience: usize,
    /// Optimiser settings (the KL fields are unused).
    pub train: TrainSettings,
    /// Decay the learning rate along a cosine over `max_epochs` (to 10% of the peak).
    pub cosine: bool,
    /// Pre-train the server LLM on the public corpus; `false` for an LLM that starts from a real
    /// pre-trained checkpoint as it is.
    #[serde(skip_serializing_if = "is_true")]
    pub llm: bool,
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            max_epochs: 10,
            patience: 2,
            train: TrainSettings::default(),
            cosine: true,
            llm: true,
        }
    }
}

/// What pre-training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainReport {
    /// The cache key (hex).
    pub key: String,
    /// Validation cross-entropy after each epoch.
    pub valid_cross_entropy: Vec<f64>,
    /// Training means of each epoch.
    pub epochs: Vec<EpochReport>,
    /// The 1-based epoch whose checkpoint was kept.
    pub best_epoch: usize,
    /// Whether this run loaded the cache instead of training (not stored in the cache).
    #[serde(default)]
    pub from_cache: bool,
}

/// A model pre-trained on the public corpus.
pub struct Pretrained {
    /// The model at its best validation epoch.
    pub model: Model,
    /// What was done.
    pub report: PretrainReport,
}

/// What identifies a model to build: the plugin, the architecture, its config text and seed.
#[derive(Debug, Clone, Copy)]
pub struct ModelRecipe<'a> {
    /// The loaded plugin.
    pub plugin: &'a Plugin,
    /// The architecture.
    pub architecture: &'a str,
    /// The model's TOML config text (with `checkpoint`: keys added to the checkpoint's).
    pub config: &'a str,
    /// The initialisation seed.
    pub seed: u64,
    /// A Hugging Face model folder to start from instead of random weights.
    pub checkpoint: Option<&'a Path>,
}

impl ModelRecipe<'_> {
    /// Builds the model, freshly initialised.
    pub fn build(&self) -> Result<Model, DistillError> {
        match self.checkpoint {
            None => self.plugin.new_model(
                self.architecture,
                self.config,
                self.seed,
                DeviceChoice::FLEX,
            ),
            Some(folder) => self.plugin.new_model_from_hf(
                self.architecture,
                folder,
                self.config,
                self.seed,
                DeviceChoice::FLEX,
            ),
        }
        .map_err(|cause| match self.checkpoint {
            None => DistillError::Build(cause),
            Some(folder) => DistillError::Host {
                what: format!("loading {}", folder.display()),
                cause,
            },
        })
    }

    /// What identifies the starting weights in cache keys: the checkpoint (a folder, or a GGUF
    /// file) and the size and modification time of its weights file, or nothing for a fresh
    /// model.
    pub fn checkpoint_key(&self) -> String {
        match self.checkpoint {
            None => String::new(),
            Some(folder) => {
                // A GGUF checkpoint is one file; a Hugging Face folder has its weights file.
                let weights = match folder.is_file() {
                    true => folder.to_path_buf(),
                    false => folder.join("model.safetensors"),
                };
                let stamp = std::fs::metadata(&weights)
                    .map(|m| {
                        let modified = m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        format!("{}:{modified}", m.len())
                    })
                    .unwrap_or_default();
                format!("{}|{stamp}", folder.display())
            }
        }
    }
}

/// A stable 64-bit FNV-1a hash of `parts` (length-prefixed, so part boundaries matter), as 16
/// hex digits. Stable across Rust versions, unlike the standard library's hasher.
pub fn stable_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for part in parts {
        eat(&(part.len() as u64).to_le_bytes());
        eat(part.as_bytes());
    }
    format!("{h:016x}")
}

/// Pre-trains `recipe`'s model on `train` with early stopping on `valid`, or loads the cached
/// result from `cache_dir`. `data_key` must describe the data exactly (e.g. the serialised data
/// config and the tokenizer), since it is part of the cache key.
pub fn pretrain_cached(
    recipe: ModelRecipe<'_>,
    data_key: &str,
    train: &[Example],
    valid: &[Example],
    config: &PretrainConfig,
    cache_dir: &Path,
) -> Result<Pretrained, DistillError> {
    let settings = serde_json::to_string(config).expect("settings serialise");
    let seed = recipe.seed.to_string();
    let key = stable_hash(&[
        "pretrain-v1",
        recipe.plugin.name(),
        recipe.plugin.version(),
        recipe.architecture,
        recipe.config,
        &seed,
        &recipe.checkpoint_key(),
        data_key,
        &settings,
    ]);
    let dir = cache_dir.join(format!(
        "pretrain-{}-{}-{key}",
        recipe.plugin.name(),
        recipe.architecture
    ));
    let checkpoint = dir.join("model.ckpt");
    let report_path = dir.join("report.json");
    let mut model = recipe.build()?;
    if report_path.is_file() && checkpoint.is_file() {
        let text = std::fs::read_to_string(&report_path).map_err(io(&report_path))?;
        if let Ok(mut report) = serde_json::from_str::<PretrainReport>(&text) {
            model
                .load(&checkpoint)
                .map_err(host(format!("loading {}", checkpoint.display())))?;
            report.from_cache = true;
            return Ok(Pretrained { model, report });
        }
    }
    if train.is_empty() {
        return Err(DistillError::NoExamples("the public training set".into()));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let best_path = dir.join("best.ckpt.partial");
    let mut report = PretrainReport {
        key,
        valid_cross_entropy: Vec::new(),
        epochs: Vec::new(),
        best_epoch: 0,
        from_cache: false,
    };
    let mut best = f64::INFINITY;
    let mut step = 0u32;
    let mut settings = config.train;
    if config.cosine && settings.total_steps == 0 {
        let per_epoch = batch_indices(train, settings.batch_size.max(1), 0).len();
        settings.total_steps = (per_epoch * config.max_epochs.max(1)) as u32;
    }
    for epoch in 0..config.max_epochs.max(1) {
        let seed = recipe.seed.wrapping_mul(1000).wrapping_add(epoch as u64);
        let r = train_epoch(&mut model, None, train, &settings, seed, &mut step)?;
        let ce = mean_cross_entropy(&model, valid, config.train.batch_size)?;
        eprintln!(
            "  pretrain {}/{} epoch {}: train CE {:.3}, valid CE {ce:.3}",
            recipe.plugin.name(),
            recipe.architecture,
            epoch + 1,
            r.cross_entropy
        );
        report.epochs.push(r);
        report.valid_cross_entropy.push(ce);
        if ce < best {
            best = ce;
            report.best_epoch = epoch + 1;
            model
                .save(&best_path)
                .map_err(host(format!("saving {}", best_path.display())))?;
        } else if epoch + 1 - report.best_epoch >= config.patience.max(1) {
            break;
        }
    }
    model
        .load(&best_path)
        .map_err(host(format!("loading {}", best_path.display())))?;
    std::fs::rename(&best_path, &checkpoint).map_err(io(&checkpoint))?;
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    std::fs::write(&report_path, text).map_err(io(&report_path))?;
    Ok(Pretrained { model, report })
}

/// Settings of DPM distillation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Passes over the public training set.
    pub epochs: usize,
    /// Optimiser settings; `kl_weight` and `temperature` shape the distillation loss.
    pub train: TrainSettings,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            train: TrainSettings {
                kl_weight: 0.7,
                ..TrainSettings::default()
            },
        }
    }
}

/// Distils `teacher` (the LLM) into `student` (the DPM) on `examples`: each step minimises
/// `(1 - w) * CE + w * T² * KL` to the teacher's answer logits, carried across its bridge when
/// the two tokenizers differ.
pub fn distill(
    teacher: &Teacher<'_>,
    student: &mut Model,
    examples: &[Example],
    config: &DistillConfig,
    seed: u64,
) -> Result<Vec<EpochReport>, DistillError> {
    if examples.is_empty() {
        return Err(DistillError::NoExamples("the distillation set".into()));
    }
    let mut step = 0u32;
    let mut reports = Vec::new();
    for epoch in 0..config.epochs {
        let r = train_epoch_from(
            student,
            teacher,
            examples,
            &config.train,
            seed.wrapping_mul(1000).wrapping_add(epoch as u64),
            &mut step,
        )?;
        eprintln!(
            "  distill {} <- {} epoch {}: CE {:.3}, KL {:.3}",
            student.label(),
            teacher.model.label(),
            epoch + 1,
            r.cross_entropy,
            r.kl
        );
        reports.push(r);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_stable_and_boundary_aware() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&[]), "cbf29ce484222325");
    }
}
