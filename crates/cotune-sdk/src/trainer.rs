//! The trainer every plugin shares: answer logits, training steps, generation, checkpoints.

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::module::{Lora, ModuleVisitor, Param, ParamGroup};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bool, Bytes, Device, Int, Tensor, TensorData};
use cotune_abi::{
    AnswerExample, ErrorKind, GenerateOptions, Logits, ModelSpec, NamedTensor, ParamSelection,
    PluginError, StepReport, Structure, TrainOptions,
};

use crate::{params, schedule, LanguageModel};

/// The encoder's output, passed to an encoder-decoder model's decoder.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Encoder hidden states `[b, s, d]`.
    pub states: Tensor<3>,
    /// `[b, s]`, true at padding.
    pub pad_mask: Tensor<2, Bool>,
}

/// Low-rank adapters (LoRA, Hu et al. 2021), from the `[lora]` table of a model's config.
///
/// With adapters on, every base parameter is frozen and each targeted weight `W` becomes
/// `W + (alpha / rank) * A B`, with `A` drawn from a normal of standard deviation `1 / rank` and
/// `B` zero, so attaching adapters leaves the model's output unchanged. The adapter tensors are
/// the domain-specific parameters (`export_params(DomainSpecific)`); everything else is shared.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the adapters.
    pub rank: usize,
    /// Scale numerator; the update is scaled by `alpha / rank`. Defaults to `2 * rank`.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Dropout on the adapter input. Only 0 is supported: burn's LoRA has no dropout.
    #[serde(default)]
    pub dropout: f64,
    /// Module names (path segments) whose 2-D weights get adapters; defaults to the
    /// architecture's `LORA_TARGETS`.
    #[serde(default)]
    pub target_modules: Option<Vec<String>>,
}

/// Serialises seeding and parameter initialisation: burn's CPU backends keep one global random
/// generator, so two models initialised at once on two threads would interleave its draws.
static INIT_LOCK: Mutex<()> = Mutex::new(());

const CHECKPOINT_MAGIC: &[u8; 8] = b"COTUNE01";

fn err(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError::new(kind, message)
}

/// Forces every lazily initialised parameter to materialise, in traversal order.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// A model of architecture `M` with its optimiser and schedule position.
pub struct Trainer<M: LanguageModel> {
    config: M::Config,
    device: Device,
    model: M,
    optim: ModuleOptimizer,
    optim_settings: (u32, u32),
}

/// A batch laid out as tensors.
struct Encoded {
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    answer_lens: Vec<usize>,
    answer_len: usize,
}

fn new_optimizer(weight_decay: f32, clip: f32) -> ModuleOptimizer {
    let mut config = AdamWConfig::new().with_weight_decay(weight_decay);
    if clip > 0.0 {
        config = config.with_grad_clipping(Some(GradientClippingConfig::Norm(clip)));
    }
    config.init()
}

fn int_tensor(rows: &[Vec<u32>], width: usize, pad: u32, device: &Device) -> Tensor<2, Int> {
    let mut data = Vec::with_capacity(rows.len() * width);
    for row in rows {
        data.extend(row.iter().map(|&t| t as i64));
        data.extend(std::iter::repeat_n(pad as i64, width - row.len()));
    }
    Tensor::from_data(TensorData::new(data, [rows.len(), width]), device)
}

fn pad_mask(lens: &[usize], width: usize, device: &Device) -> Tensor<2, Bool> {
    let data: Vec<bool> = lens
        .iter()
        .flat_map(|&n| (0..width).map(move |i| i >= n))
        .collect();
    Tensor::from_data(TensorData::new(data, [lens.len(), width]), device)
}

impl<M: LanguageModel> Trainer<M> {
    /// Parses the TOML configuration (the model's keys plus an optional `[lora]` table) and
    /// builds a model, seeding its initialisation.
    pub fn from_toml(config_toml: &str, seed: u64, device: Device) -> Result<Self, PluginError> {
        let bad = |e: String| {
            err(
                ErrorKind::InvalidConfig,
                format!("{} config: {}", M::ARCHITECTURE, e.trim()),
            )
        };
        let mut table: toml::Table = toml::from_str(config_toml).map_err(|e| bad(e.to_string()))?;
        let lora = match table.remove("lora") {
            Some(value) => Some(
                value
                    .try_into::<LoraConfig>()
                    .map_err(|e| bad(format!("[lora]: {e}")))?,
            ),
            None => None,
        };
        let config: M::Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        Self::new(config, lora, seed, device)
    }

    /// Builds a model from a parsed configuration, seeding its initialisation.
    pub fn new(
        config: M::Config,
        lora: Option<LoraConfig>,
        seed: u64,
        device: Device,
    ) -> Result<Self, PluginError> {
        crate::ops::keep_freed_memory();
        M::validate(&config).map_err(|e| {
            err(
                ErrorKind::InvalidConfig,
                format!("{} config: {e}", M::ARCHITECTURE),
            )
        })?;
        if let Some(l) = &lora {
            if l.rank == 0 {
                return Err(err(
                    ErrorKind::InvalidConfig,
                    "lora.rank must be positive, got 0",
                ));
            }
            if l.dropout != 0.0 {
                return Err(err(
                    ErrorKind::InvalidConfig,
                    format!("lora.dropout = {} is not supported (only 0)", l.dropout),
                ));
            }
            if let Some(a) = l.alpha.filter(|a| !(a.is_finite() && *a > 0.0)) {
                return Err(err(
                    ErrorKind::InvalidConfig,
                    format!("lora.alpha must be positive, got {a}"),
                ));
            }
        }
        let device = device.autodiff();
        let model = {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            device.seed(seed);
            let model = M::init(&config, &device);
            model.visit(&mut Materialize);
            match &lora {
                Some(l) => {
                    let model = Self::attach_lora(model, l)?;
                    model.visit(&mut Materialize);
                    model
                }
                None => model,
            }
        };
        let defaults = TrainOptions::default();
        Ok(Self {
            config,
            device,
            model,
            optim: new_optimizer(defaults.weight_decay, defaults.grad_clip_norm),
            optim_settings: (
                defaults.weight_decay.to_bits(),
                defaults.grad_clip_norm.to_bits(),
            ),
        })
    }

    /// Freezes the base and attaches adapters to the targeted 2-D weights.
    fn attach_lora(model: M, lora: &LoraConfig) -> Result<M, PluginError> {
        let targets: Vec<String> = match &lora.target_modules {
            Some(t) => t.clone(),
            None => M::LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
        };
        let paths: Vec<String> = params::list(&model)
            .into_iter()
            .filter(|p| p.shape.len() == 2)
            .filter(|p| {
                let parts: Vec<&str> = p.name.split('.').collect();
                targets.is_empty()
                    || parts[..parts.len() - 1]
                        .iter()
                        .any(|seg| targets.iter().any(|t| t == seg))
            })
            .map(|p| p.name)
            .collect();
        if paths.is_empty() {
            return Err(err(
                ErrorKind::InvalidConfig,
                format!(
                    "lora.target_modules {targets:?} match no 2-D weight of {}",
                    M::ARCHITECTURE
                ),
            ));
        }
        let alpha = lora.alpha.unwrap_or(2.0 * lora.rank as f64);
        Ok(model
            .apply_lora(Lora::new(lora.rank, alpha).set_param_group(ParamGroup::from_paths(paths))))
    }

    /// The parsed configuration.
    pub fn config(&self) -> &M::Config {
        &self.config
    }

    /// The model (on the autodiff device).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model's metadata.
    pub fn spec(&self) -> ModelSpec {
        let infos = params::list(&self.model);
        let count = |adapter: Option<bool>| -> u64 {
            infos
                .iter()
                .filter(|p| adapter.is_none_or(|a| p.adapter == a))
                .map(|p| p.shape.iter().product::<usize>() as u64)
                .sum()
        };
        let adapters = count(Some(true));
        ModelSpec {
            architecture: M::ARCHITECTURE.into(),
            vocab_size: M::vocab_size(&self.config) as u32,
            num_params: count(None),
            num_trainable_params: if adapters > 0 { adapters } else { count(None) },
            context_len: M::context_len(&self.config) as u32,
            structure: M::STRUCTURE,
        }
    }

    fn check_batch(&self, batch: &[AnswerExample]) -> Result<(), PluginError> {
        if batch.is_empty() {
            return Err(err(ErrorKind::InvalidInput, "the batch is empty"));
        }
        let vocab = M::vocab_size(&self.config) as u32;
        let ctx = M::context_len(&self.config);
        for (i, ex) in batch.iter().enumerate() {
            for (what, ids) in [("prompt", &ex.prompt), ("answer", &ex.answer)] {
                if ids.is_empty() {
                    return Err(err(
                        ErrorKind::InvalidInput,
                        format!("the {what} of example {i} is empty"),
                    ));
                }
                if let Some(&id) = ids.iter().find(|&&id| id >= vocab) {
                    return Err(err(
                        ErrorKind::InvalidInput,
                        format!("token id {id} in the {what} of example {i} is out of range (vocab_size {vocab})"),
                    ));
                }
            }
            let too_long = match M::STRUCTURE {
                Structure::DecoderOnly => ex.prompt.len() + ex.answer.len() > ctx,
                Structure::EncoderDecoder => ex.prompt.len() > ctx || ex.answer.len() > ctx,
            };
            if too_long {
                return Err(err(
                    ErrorKind::InvalidInput,
                    format!(
                        "example {i} (prompt {} + answer {} tokens) exceeds the context length {ctx}",
                        ex.prompt.len(),
                        ex.answer.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs `model` on the batch and returns the answer-position logits with targets and mask.
    fn encode(model: &M, config: &M::Config, batch: &[AnswerExample], device: &Device) -> Encoded {
        let b = batch.len();
        let answer_lens: Vec<usize> = batch.iter().map(|e| e.answer.len()).collect();
        let answer_len = answer_lens.iter().copied().max().unwrap_or(0);
        let answers: Vec<Vec<u32>> = batch.iter().map(|e| e.answer.to_vec()).collect();
        let targets = int_tensor(&answers, answer_len, 0, device);
        let mask = pad_mask(&answer_lens, answer_len, device)
            .bool_not()
            .float();
        let logits = match M::STRUCTURE {
            Structure::DecoderOnly => {
                let seqs: Vec<Vec<u32>> = batch
                    .iter()
                    .map(|e| {
                        // The last answer token is only ever a target, never an input.
                        let mut s = e.prompt.to_vec();
                        s.extend_from_slice(&e.answer[..e.answer.len() - 1]);
                        s
                    })
                    .collect();
                let width = seqs.iter().map(Vec::len).max().unwrap_or(1);
                let tokens = int_tensor(&seqs, width, 0, device);
                let hidden = model.decode(tokens, None);
                let [_, t, d] = hidden.dims();
                // Position p's output predicts token p + 1, so answer token j of example i is
                // predicted at row i * t + prompt_len - 1 + j of the flattened hidden states;
                // padded answer positions reuse the last real one. Selecting whole rows keeps
                // the index (and the backward pass's scatter) one entry per row, not per value.
                let mut index = Vec::with_capacity(b * answer_len);
                for (i, e) in batch.iter().enumerate() {
                    for j in 0..answer_len {
                        let j = j.min(e.answer.len() - 1);
                        index.push((i * t + e.prompt.len() - 1 + j) as i64);
                    }
                }
                let index: Tensor<1, Int> =
                    Tensor::from_data(TensorData::new(index, [b * answer_len]), device);
                let rows = hidden
                    .reshape([b * t, d])
                    .select(0, index)
                    .reshape([b, answer_len, d]);
                model.logits(rows)
            }
            Structure::EncoderDecoder => {
                let prompts: Vec<Vec<u32>> = batch.iter().map(|e| e.prompt.to_vec()).collect();
                let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
                let width = prompt_lens.iter().copied().max().unwrap_or(1);
                let source = int_tensor(&prompts, width, 0, device);
                let source_pad = pad_mask(&prompt_lens, width, device);
                let states = model.encode(source, source_pad.clone());
                let memory = Memory {
                    states,
                    pad_mask: source_pad,
                };
                let start = M::decoder_start_token(config);
                let inputs: Vec<Vec<u32>> = batch
                    .iter()
                    .map(|e| {
                        let mut s = vec![start];
                        s.extend_from_slice(&e.answer[..e.answer.len() - 1]);
                        s
                    })
                    .collect();
                let tokens = int_tensor(&inputs, answer_len, 0, device);
                model.logits(model.decode(tokens, Some(&memory)))
            }
        };
        Encoded {
            logits,
            targets,
            mask,
            answer_lens,
            answer_len,
        }
    }

    /// The next-token logits at every answer position, zero past each example's answer.
    pub fn answer_logits(&self, batch: &[AnswerExample]) -> Result<Logits, PluginError> {
        self.check_batch(batch)?;
        let device = self.device.clone().without_autodiff();
        let model = self.model.valid();
        let enc = Self::encode(&model, &self.config, batch, &device);
        let vocab = M::vocab_size(&self.config);
        let mut data = enc
            .logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| err(ErrorKind::Internal, format!("reading logits: {e:?}")))?;
        for (b, &len) in enc.answer_lens.iter().enumerate() {
            let start = (b * enc.answer_len + len) * vocab;
            let end = (b + 1) * enc.answer_len * vocab;
            data[start..end].fill(0.0);
        }
        Ok(Logits {
            batch: batch.len() as u32,
            answer_len: enc.answer_len as u32,
            vocab: vocab as u32,
            data: data.into(),
        })
    }

    fn ensure_optimizer(&mut self, weight_decay: f32, clip: f32) {
        let key = (weight_decay.to_bits(), clip.to_bits());
        if key != self.optim_settings {
            // AdamW's decay and clipping are fixed at construction; keep the moments across a
            // change of either.
            let record = self.optim.to_record();
            self.optim = new_optimizer(weight_decay, clip).load_record(record);
            self.optim_settings = key;
        }
    }

    /// Refuses a step's inputs before anything runs: the batch, the options' ranges, and the
    /// soft targets' shape and values.
    fn check_step_inputs(
        &self,
        batch: &[AnswerExample],
        soft_targets: Option<&Logits>,
        options: &TrainOptions,
    ) -> Result<(), PluginError> {
        self.check_batch(batch)?;
        let t = options.temperature;
        let alpha = options.kl_weight;
        if !(t.is_finite() && t > 0.0) {
            return Err(err(
                ErrorKind::InvalidInput,
                format!("temperature {t} must be positive"),
            ));
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(err(
                ErrorKind::InvalidInput,
                format!("kl_weight {alpha} must lie in [0, 1]"),
            ));
        }
        if !(options.learning_rate.is_finite() && options.learning_rate >= 0.0) {
            return Err(err(
                ErrorKind::InvalidInput,
                format!(
                    "learning_rate {} must be a non-negative number",
                    options.learning_rate
                ),
            ));
        }
        let vocab = M::vocab_size(&self.config);
        let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
        if let Some(soft) = soft_targets {
            let expected = [batch.len(), answer_len, vocab];
            let got = [
                soft.batch as usize,
                soft.answer_len as usize,
                soft.vocab as usize,
            ];
            if got != expected || soft.data.len() != expected.iter().product::<usize>() {
                return Err(err(
                    ErrorKind::ShapeMismatch,
                    format!(
                        "soft targets have shape {got:?} with {} values, expected {expected:?}",
                        soft.data.len()
                    ),
                ));
            }
            if let Some((i, v)) = soft.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(err(
                    ErrorKind::NonFinite,
                    format!("soft target value {v} at flat index {i}"),
                ));
            }
        }
        Ok(())
    }

    /// One AdamW step on cross-entropy plus, with soft targets, temperature-scaled KL.
    pub fn train_step(
        &mut self,
        batch: &[AnswerExample],
        soft_targets: Option<&Logits>,
        options: &TrainOptions,
    ) -> Result<StepReport, PluginError> {
        self.check_step_inputs(batch, soft_targets, options)?;
        let (t, alpha) = (options.temperature, options.kl_weight);
        self.ensure_optimizer(options.weight_decay, options.grad_clip_norm);

        let device = self.device.clone();
        let enc = Self::encode(&self.model, &self.config, batch, &device);
        let [b, a, v] = enc.logits.dims();
        let n_tokens: usize = enc.answer_lens.iter().sum();
        let inv_n = 1.0 / n_tokens as f32;
        let log_probs = crate::ops::log_softmax(enc.logits.clone());
        let nll = log_probs
            .clone()
            .gather(2, enc.targets.unsqueeze_dim::<3>(2))
            .reshape([b, a])
            .neg();
        let ce = (nll * enc.mask.clone()).sum().mul_scalar(inv_n);
        let (loss, kl) = match soft_targets {
            Some(soft) => {
                let teacher: Tensor<3> =
                    Tensor::from_data(TensorData::new(soft.data.to_vec(), [b, a, v]), &device);
                let log_p = crate::ops::log_softmax(teacher.div_scalar(t));
                let log_q = if t == 1.0 {
                    log_probs
                } else {
                    crate::ops::log_softmax(enc.logits.div_scalar(t))
                };
                let kl_pos = (log_p.clone().exp() * (log_p - log_q))
                    .sum_dim(2)
                    .reshape([b, a]);
                let kl = (kl_pos * enc.mask).sum().mul_scalar(inv_n);
                let loss =
                    ce.clone().mul_scalar(1.0 - alpha) + kl.clone().mul_scalar(alpha * t * t);
                (loss, Some(kl))
            }
            None => (ce.clone(), None),
        };
        // One read from the device for all three values.
        let mut parts = vec![loss.clone().detach().reshape([1]), ce.detach().reshape([1])];
        parts.extend(kl.map(|k| k.detach().reshape([1])));
        let values = Tensor::cat(parts, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| err(ErrorKind::Internal, format!("reading the loss: {e:?}")))?;
        let (loss_value, ce_value) = (values[0], values[1]);
        let kl_value = values.get(2).copied().unwrap_or(0.0);
        if !loss_value.is_finite() {
            return Err(err(
                ErrorKind::NonFinite,
                format!("the loss is {loss_value} (cross-entropy {ce_value}, kl {kl_value}); the step was not applied"),
            ));
        }
        let lr = schedule::learning_rate(
            options.learning_rate,
            options.warmup_steps,
            options.total_steps,
            options.step,
            options.min_lr_ratio,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self.optim.step(lr as f64, self.model.clone(), grads);
        Ok(StepReport {
            loss: loss_value,
            cross_entropy: ce_value,
            kl: kl_value,
            learning_rate: lr,
        })
    }

    /// Greedy continuations of `prompts`, without the prompt and the end-of-sequence id.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>, PluginError> {
        let vocab = M::vocab_size(&self.config) as u32;
        let ctx = M::context_len(&self.config);
        if prompts.is_empty() {
            return Err(err(ErrorKind::InvalidInput, "no prompts to generate from"));
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(err(ErrorKind::InvalidInput, format!("prompt {i} is empty")));
            }
            if let Some(&id) = p.iter().find(|&&id| id >= vocab) {
                return Err(err(
                    ErrorKind::InvalidInput,
                    format!("token id {id} in prompt {i} is out of range (vocab_size {vocab})"),
                ));
            }
            if p.len() > ctx {
                return Err(err(
                    ErrorKind::InvalidInput,
                    format!(
                        "prompt {i} has {} tokens, above the context length {ctx}",
                        p.len()
                    ),
                ));
            }
        }
        if options.eos_id >= vocab {
            return Err(err(
                ErrorKind::InvalidInput,
                format!(
                    "eos_id {} is out of range (vocab_size {vocab})",
                    options.eos_id
                ),
            ));
        }
        let device = self.device.clone().without_autodiff();
        let model = self.model.valid();
        let mut out = vec![Vec::new(); prompts.len()];
        // Decoder-only prompts of one length share a batch, so no padding enters the cache;
        // an encoder takes padded prompts with a mask, so one batch holds them all.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, p) in prompts.iter().enumerate() {
            let key = match M::STRUCTURE {
                Structure::DecoderOnly => p.len(),
                Structure::EncoderDecoder => 0,
            };
            groups.entry(key).or_default().push(i);
        }
        for members in groups.values() {
            let rows: Vec<Vec<u32>> = members.iter().map(|&i| prompts[i].clone()).collect();
            let results = self.generate_group(&model, &rows, options, &device);
            for (&i, r) in members.iter().zip(results) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn generate_group(
        &self,
        model: &M,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
        device: &Device,
    ) -> Vec<Vec<u32>> {
        let g = prompts.len();
        let ctx = M::context_len(&self.config);
        let mut cache = model.new_cache();
        let (memory, first, mut used, limit) = match M::STRUCTURE {
            Structure::DecoderOnly => {
                let len = prompts[0].len();
                (None, int_tensor(prompts, len, 0, device), len, ctx)
            }
            Structure::EncoderDecoder => {
                let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
                let width = lens.iter().copied().max().unwrap_or(1);
                let source = int_tensor(prompts, width, 0, device);
                let pad = pad_mask(&lens, width, device);
                let memory = Memory {
                    states: model.encode(source, pad.clone()),
                    pad_mask: pad,
                };
                let start = vec![vec![M::decoder_start_token(&self.config)]; g];
                (Some(memory), int_tensor(&start, 1, 0, device), 1, ctx + 1)
            }
        };
        let mut out = vec![Vec::new(); g];
        let mut done = vec![false; g];
        let mut input = first;
        for _ in 0..options.max_new_tokens {
            let hidden = model.decode_cached(input, memory.as_ref(), &mut cache);
            let [_, n, d] = hidden.dims();
            let last = hidden.slice([0..g, n - 1..n, 0..d]);
            let next = model.logits(last).argmax(2).reshape([g]);
            let ids: Vec<i64> = next
                .clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .unwrap_or_default();
            for (k, &id) in ids.iter().enumerate() {
                if done[k] {
                    continue;
                }
                if id as u32 == options.eos_id {
                    done[k] = true;
                } else {
                    out[k].push(id as u32);
                }
            }
            used += 1;
            if done.iter().all(|&d| d) || used >= limit {
                break;
            }
            input = next.reshape([g, 1]);
        }
        out
    }

    /// The selected parameters by name.
    pub fn export_params(
        &self,
        selection: ParamSelection,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        params::export(&self.model, selection)
    }

    /// Overwrites the named parameters (all or nothing).
    pub fn import_params(&mut self, values: &[NamedTensor]) -> Result<(), PluginError> {
        self.model = params::import(self.model.clone(), values)?;
        Ok(())
    }

    /// Writes parameters (with their ids) and optimiser state to one file.
    pub fn save(&self, path: &str) -> Result<(), PluginError> {
        let io = |e: String| err(ErrorKind::Io, format!("writing checkpoint {path}: {e}"));
        let module = self
            .model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| io(format!("{e:?}")))?;
        let optim = self.optim.into_bytes().map_err(|e| io(format!("{e:?}")))?;
        let arch = M::ARCHITECTURE.as_bytes();
        let mut buf = Vec::with_capacity(module.len() + optim.len() + 64);
        buf.extend_from_slice(CHECKPOINT_MAGIC);
        for part in [arch, &module[..], &optim[..]] {
            buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
            buf.extend_from_slice(part);
        }
        buf.extend_from_slice(&self.optim_settings.0.to_le_bytes());
        buf.extend_from_slice(&self.optim_settings.1.to_le_bytes());
        // Write beside the target and rename, so a failed save never destroys the old file.
        let tmp = format!("{path}.partial");
        std::fs::write(&tmp, &buf).map_err(|e| io(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| io(e.to_string()))
    }

    /// Reads a checkpoint written by [`save`](Self::save) into this model; nothing changes
    /// unless the whole file is valid.
    pub fn load(&mut self, path: &str) -> Result<(), PluginError> {
        let bad = |e: String| err(ErrorKind::Io, format!("reading checkpoint {path}: {e}"));
        let buf = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if buf.len() < 8 || &buf[..8] != CHECKPOINT_MAGIC {
            return Err(bad("not a cotune checkpoint (bad magic bytes)".into()));
        }
        let mut pos = 8;
        let mut parts = Vec::new();
        for _ in 0..3 {
            let len_bytes = buf
                .get(pos..pos + 8)
                .ok_or_else(|| bad("truncated file".into()))?;
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
            pos += 8;
            let part = buf
                .get(pos..pos + len)
                .ok_or_else(|| bad("truncated file".into()))?;
            parts.push(part);
            pos += len;
        }
        let settings = buf
            .get(pos..pos + 8)
            .ok_or_else(|| bad("truncated file".into()))?;
        let arch = String::from_utf8_lossy(parts[0]);
        if arch != M::ARCHITECTURE {
            return Err(bad(format!(
                "it holds a `{arch}` model, this is `{}`",
                M::ARCHITECTURE
            )));
        }
        let wd = u32::from_le_bytes(settings[..4].try_into().expect("4 bytes"));
        let clip = u32::from_le_bytes(settings[4..].try_into().expect("4 bytes"));
        // burn's readers panic on some malformed records (an optimiser tensor without a
        // parameter id) rather than failing: such a panic is this file's error too.
        let decode = || {
            let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(parts[1].to_vec()))
                .map_err(|e| bad(format!("{e:?}")))?;
            let model = self
                .model
                .clone()
                .try_load_record(record)
                .map_err(|e| bad(format!("parameters do not fit this model: {e:?}")))?;
            let optim = new_optimizer(f32::from_bits(wd), f32::from_bits(clip))
                .from_bytes(Bytes::from_bytes_vec(parts[2].to_vec()))
                .map_err(|e| bad(format!("optimiser state: {e:?}")))?;
            Ok((model, optim))
        };
        let (model, optim) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
            .map_err(|panic| {
                bad(format!(
                    "malformed parameters or optimiser state: {}",
                    crate::unwind::panic_message(&*panic)
                ))
            })??;
        self.model = model;
        self.optim = optim;
        self.optim_settings = (wd, clip);
        Ok(())
    }
}
