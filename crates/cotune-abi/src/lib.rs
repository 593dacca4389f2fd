//! The stable interface between the cotune host and its model plugins.
//!
//! Burn's tensors and generic modules cannot cross a dynamic-library boundary safely, so each
//! plugin owns its whole burn runtime and this boundary carries plain data only: token ids,
//! flat `f32` buffers with explicit shapes, strings and small `#[repr(C)]` structs, all from
//! `abi_stable`.
//!
//! A plugin exports two things:
//!
//! - a raw symbol [`ABI_VERSION_SYMBOL`] (`extern "C" fn() -> u32`), which the host probes before
//!   anything else so that a mismatch is reported as "plugin ABI N, host ABI M" rather than as a
//!   layout error;
//! - the root module [`PluginModule`] (a prefix type, so fields can be appended later without
//!   breaking plugins built against an older layout), whose constructor returns a [`ModelBox`].
//!
//! Plugin authors never implement this by hand: `cotune-sdk` provides a model trait and the
//! `export_plugin!` macro that produce both.

// The `sabi_trait` and `StableAbi` expansions define items the compiler lints on; the lints are
// cosmetic and limited to this module's generated code.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr, RString, RVec},
    StableAbi,
};

/// The version of this interface. Bumped on every change that is not an appended prefix field.
///
/// Version 2 added Hugging Face checkpoints: [`PluginModule::hf_architecture`],
/// [`PluginModule::new_model_from_hf`] and [`ModelObject::export_hf`].
pub const ABI_VERSION: u32 = 2;

/// The raw symbol every plugin exports: `extern "C" fn() -> u32` returning its [`ABI_VERSION`].
pub const ABI_VERSION_SYMBOL: &str = "cotune_abi_version";

/// The type of the raw ABI version probe.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// What went wrong inside a plugin, as a stable enum; the message says the thing and the value.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The model configuration could not be parsed or has an invalid value.
    InvalidConfig,
    /// The plugin does not offer the architecture asked for.
    UnknownArchitecture,
    /// A batch, option or token id was out of range or malformed.
    InvalidInput,
    /// A parameter name is not one the model has.
    UnknownParameter,
    /// A tensor had a shape other than the one expected.
    ShapeMismatch,
    /// A value was NaN or infinite.
    NonFinite,
    /// Reading or writing a file failed.
    Io,
    /// The requested device or feature is not available in this build.
    Unsupported,
    /// The plugin panicked; the panic was caught inside the plugin.
    Panic,
    /// Anything else.
    Internal,
}

/// An error returned by a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The category of the failure.
    pub kind: ErrorKind,
    /// A message naming the thing and the value that was wrong.
    pub message: RString,
}

impl PluginError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }
}

impl ErrorKind {
    /// The kind in words, as error messages show it ("invalid config").
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::UnknownArchitecture => "unknown architecture",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::UnknownParameter => "unknown parameter",
            ErrorKind::ShapeMismatch => "shape mismatch",
            ErrorKind::NonFinite => "non-finite value",
            ErrorKind::Io => "I/O error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Panic => "panic",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}

/// The result type of every plugin call.
pub type PluginResult<T> = RResult<T, PluginError>;

/// Which compute backend a model should run on.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend (the default).
    Flex,
    /// burn's `ndarray` CPU backend.
    NdArray,
    /// burn's CUDA backend (only in builds with the `cuda` feature).
    Cuda,
}

/// A device choice: a backend and, for GPUs, its index.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChoice {
    /// The backend.
    pub kind: DeviceKind,
    /// The device index (GPUs); ignored on CPU backends.
    pub index: u32,
}

impl DeviceChoice {
    /// The default CPU device.
    pub const FLEX: DeviceChoice = DeviceChoice {
        kind: DeviceKind::Flex,
        index: 0,
    };
}

/// How a model turns a prompt and an answer into answer logits.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// One causal stack over prompt followed by answer (GPT-2, LLaMA).
    DecoderOnly,
    /// The prompt is encoded; the answer is decoded (T5).
    EncoderDecoder,
}

/// What a model is: enough for the host to validate inputs without knowing the architecture.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The architecture name, as offered by the plugin (e.g. `gpt2`).
    pub architecture: RString,
    /// The number of token ids the model accepts and predicts.
    pub vocab_size: u32,
    /// The total number of parameters (base and adapters).
    pub num_params: u64,
    /// The number of parameters that are trained (all, or the adapters when LoRA is on).
    pub num_trainable_params: u64,
    /// Decoder-only: the longest prompt + answer. Encoder-decoder: the longest prompt, and
    /// separately the longest answer.
    pub context_len: u32,
    /// Decoder-only or encoder-decoder.
    pub structure: Structure,
}

/// One example: a prompt and the answer that follows it, as token ids.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct AnswerExample {
    /// The prompt's token ids (non-empty).
    pub prompt: RVec<u32>,
    /// The answer's token ids (non-empty), usually ending with the end-of-sequence id.
    pub answer: RVec<u32>,
}

/// A dense 3-D `f32` tensor in row-major order, used for answer logits and soft targets.
///
/// Shape `[batch, answer_len, vocab]`, where `answer_len` is the longest answer in the batch.
/// Positions past an example's own answer length are zero and carry no meaning.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Logits {
    /// Number of examples.
    pub batch: u32,
    /// Longest answer length in the batch.
    pub answer_len: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// `batch * answer_len * vocab` values, row-major.
    pub data: RVec<f32>,
}

impl Logits {
    /// Logits of shape `[batch, answer_len, vocab]` from row-major values (no copy), so callers
    /// need no `abi_stable` type to build soft targets.
    pub fn new(batch: u32, answer_len: u32, vocab: u32, data: Vec<f32>) -> Self {
        Self {
            batch,
            answer_len,
            vocab,
            data: RVec::from(data),
        }
    }

    /// The logits at example `b`, answer position `t`.
    pub fn row(&self, b: usize, t: usize) -> &[f32] {
        let v = self.vocab as usize;
        let start = (b * self.answer_len as usize + t) * v;
        &self.data[start..start + v]
    }
}

/// Options of one training step.
///
/// The loss is `(1 - kl_weight) * CE(answer) + kl_weight * T² * KL(softmax(soft / T) ||
/// softmax(logits / T))`; without soft targets it is the cross-entropy alone.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Peak learning rate of the warm-up plus cosine schedule.
    pub learning_rate: f32,
    /// Steps of linear warm-up from zero to `learning_rate`.
    pub warmup_steps: u32,
    /// Length of the schedule; the cosine decays to `min_lr_ratio * learning_rate` at this step.
    /// Zero keeps the rate constant after warm-up.
    pub total_steps: u32,
    /// Index of this step within the schedule (the caller's counter).
    pub step: u32,
    /// Floor of the cosine, as a fraction of the peak rate.
    pub min_lr_ratio: f32,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Clip each parameter tensor's gradient to this L2 norm (burn's clipping works tensor by
    /// tensor, not over the global norm); zero disables clipping.
    pub grad_clip_norm: f32,
    /// Distillation temperature `T` (> 0).
    pub temperature: f32,
    /// Weight of the KL term in `[0, 1]`; ignored without soft targets.
    pub kl_weight: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            warmup_steps: 0,
            total_steps: 0,
            step: 0,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip_norm: 1.0,
            temperature: 1.0,
            kl_weight: 0.5,
        }
    }
}

/// What a training step measured (before the update).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The optimised loss.
    pub loss: f32,
    /// Mean cross-entropy over answer tokens.
    pub cross_entropy: f32,
    /// Mean KL divergence to the soft targets at the temperature (zero without them), not
    /// scaled by `T²`.
    pub kl: f32,
    /// The learning rate used for this step.
    pub learning_rate: f32,
}

/// Options of greedy generation.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// The most new tokens per prompt.
    pub max_new_tokens: u32,
    /// Generation of a prompt stops when this id is produced; it is not returned.
    pub eos_id: u32,
}

/// Which parameters to export.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSelection {
    /// Every parameter.
    All,
    /// Everything but the domain-specific (adapter) parameters: what travels to the server.
    Shared,
    /// Only the domain-specific (adapter) parameters: what stays on the device.
    DomainSpecific,
}

/// A named `f32` tensor.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The parameter's path in the model (e.g. `blocks.0.attn.c_attn.weight`).
    pub name: RString,
    /// Its shape.
    pub shape: RVec<u64>,
    /// Its values, row-major.
    pub data: RVec<f32>,
}

impl NamedTensor {
    /// A tensor from plain values (no copy), so callers need no `abi_stable` type.
    pub fn new(name: impl Into<String>, shape: Vec<u64>, data: Vec<f32>) -> Self {
        Self {
            name: RString::from(name.into()),
            shape: RVec::from(shape),
            data: RVec::from(data),
        }
    }
}

/// A model living inside a plugin. Every method returns an error rather than panicking.
#[sabi_trait]
pub trait ModelObject: Send + Sync {
    /// The model's metadata.
    fn spec(&self) -> ModelSpec;

    /// The next-token logits at every answer position, `[batch, answer_len, vocab]`: position
    /// `j` of example `b` predicts `answer[j]` from the prompt and `answer[..j]`.
    fn answer_logits(&self, batch: &RVec<AnswerExample>) -> PluginResult<Logits>;

    /// One optimiser step on the batch; soft targets, when given, are teacher logits with the
    /// shape of `answer_logits` for the same batch.
    fn train_step(
        &mut self,
        batch: &RVec<AnswerExample>,
        soft_targets: &ROption<Logits>,
        options: &TrainOptions,
    ) -> PluginResult<StepReport>;

    /// Greedy continuation of each prompt (a key/value cache is used), without the prompt and
    /// without the end-of-sequence id.
    fn generate(
        &self,
        prompts: &RVec<RVec<u32>>,
        options: &GenerateOptions,
    ) -> PluginResult<RVec<RVec<u32>>>;

    /// The selected parameters by name.
    fn export_params(&self, selection: ParamSelection) -> PluginResult<RVec<NamedTensor>>;

    /// Overwrites the named parameters; any unknown name or wrong shape refuses the whole import.
    fn import_params(&mut self, params: &RVec<NamedTensor>) -> PluginResult<()>;

    /// Writes a checkpoint (parameters, optimiser state) to the file at `path`.
    fn save(&self, path: RStr<'_>) -> PluginResult<()>;

    /// Reads a checkpoint written by `save` from a model of the same configuration.
    fn load(&mut self, path: RStr<'_>) -> PluginResult<()>;

    /// Writes the model as a Hugging Face folder (`config.json` and `model.safetensors`) at
    /// `folder`, creating it; low-rank adapters are merged into the weights they adapt.
    #[sabi(last_prefix_field)]
    fn export_hf(&self, folder: RStr<'_>) -> PluginResult<()>;
}

/// An owned model object from a plugin.
pub type ModelBox = ModelObject_TO<'static, RBox<()>>;

/// The root module a plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The [`ABI_VERSION`] the plugin was built against.
    pub abi_version: extern "C" fn() -> u32,
    /// The plugin's name (e.g. `gpt2`).
    pub name: extern "C" fn() -> RString,
    /// The plugin's own version.
    pub version: extern "C" fn() -> RString,
    /// The architectures this plugin can construct.
    pub architectures: extern "C" fn() -> RVec<RString>,
    /// A small configuration of `architecture` (TOML), fast enough for the conformance suite;
    /// empty when the architecture is unknown.
    pub example_config: extern "C" fn(architecture: RStr<'_>) -> RString,
    /// Builds a model of `architecture` from its TOML configuration text, a seed and a device.
    pub new_model: extern "C" fn(
        architecture: RStr<'_>,
        config_toml: RStr<'_>,
        seed: u64,
        device: DeviceChoice,
    ) -> PluginResult<ModelBox>,
    /// The Hugging Face class name (`config.json`'s `architectures`, e.g. `GPT2LMHeadModel`)
    /// whose checkpoints `architecture` loads; empty when it has no Hugging Face mapping.
    pub hf_architecture: extern "C" fn(architecture: RStr<'_>) -> RString,
    /// Builds a model of `architecture` from a Hugging Face folder (`config.json`,
    /// `model.safetensors`). `extra_toml` holds keys of the plugin's own configuration that
    /// Hugging Face's lacks or that override it (e.g. a `[lora]` table); it may be empty. The
    /// seed initialises what the checkpoint does not hold (adapters).
    #[sabi(last_prefix_field)]
    pub new_model_from_hf: extern "C" fn(
        architecture: RStr<'_>,
        folder: RStr<'_>,
        extra_toml: RStr<'_>,
        seed: u64,
        device: DeviceChoice,
    ) -> PluginResult<ModelBox>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "cotune_plugin";
    const NAME: &'static str = "cotune_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

pub use abi_stable;
