//! The cotune SDK: everything a model plugin needs except its model code.
//!
//! A plugin author implements [`LanguageModel`] on a burn module (its config type, its forward
//! passes to hidden states and logits, a key/value cache for generation) and calls
//! [`export_plugin!`]. The SDK supplies the rest, identically for every architecture:
//!
//! - [`Trainer`]: AdamW with decoupled weight decay, warm-up plus cosine learning rate,
//!   gradient-norm clipping per parameter tensor (burn's clipping, which scales each tensor's
//!   gradient to the configured L2 norm on its own, not the global norm), cross-entropy over
//!   answer tokens with a padding mask, and temperature-scaled KL to soft targets (scaled by
//!   `T²`);
//! - the CPU kernels' operations ([`ops`], [`attention`], [`rope`], [`sgemm`]), re-exported from
//!   the `cotune-kernels` crate;
//! - greedy generation with the model's key/value cache;
//! - parameter export and import by name, and checkpoints that include the optimiser state;
//! - the `abi_stable` glue, with `catch_unwind` around every exported call so a panic becomes a
//!   [`PluginError`](cotune_abi::PluginError) instead of aborting the host.
//!
//! [`testing`] is the kit a plugin's own tests share: tiny batches, comparisons, and in-process
//! checks of cached decoding, generation, padding and learning.
//!
//! See `docs/plugin-authoring.md` for a walk-through.

pub mod config;
pub mod decoder;
pub mod hf;
pub mod nn;
pub mod norm;
pub mod params;
pub mod plugin;
pub mod schedule;
// Models for tests are built on the CPU backend, as the conformance suite builds them.
#[cfg(feature = "flex")]
pub mod testing;
mod trainer;
mod unwind;

// The CPU kernels and the operations built on them live in the `cotune-kernels` crate; their
// modules are re-exported here under the names plugins have always used.
/// The packed single-precision matrix product (from `cotune-kernels`).
pub use cotune_kernels::cpu::sgemm;
pub use cotune_kernels::{attention, ops, rope};

pub use trainer::{LoraConfig, Memory, Trainer};

pub use decoder::Decoder;
pub use hf::HfMapping;

pub use burn;
pub use cotune_abi as abi;
pub use cotune_abi::Structure;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

/// A language model a plugin offers, implemented on a burn module.
///
/// Shapes use `b` for batch, `t` for tokens, `d` for the model width and `v` for the vocabulary.
/// Sequences are right-padded: a decoder's causal mask already keeps padding after a token from
/// reaching it, so decoders need no padding mask; encoders get one.
pub trait LanguageModel: Module + Sized + 'static {
    /// The model's configuration, parsed from TOML. Use `#[serde(deny_unknown_fields)]` so a
    /// misspelt key is refused with its name.
    type Config: serde::de::DeserializeOwned + Clone + Send + Sync + 'static;
    /// The key/value cache used by [`decode_cached`](Self::decode_cached).
    type Cache: Send;

    /// The architecture's name (e.g. `gpt2`).
    const ARCHITECTURE: &'static str;
    /// Decoder-only or encoder-decoder.
    const STRUCTURE: Structure;

    /// Module names that get LoRA adapters when the config has a `[lora]` table without
    /// `target_modules` (attention query and value by convention). Empty: every matrix.
    const LORA_TARGETS: &'static [&'static str] = &[];

    /// A small configuration (TOML) that builds quickly, used by the conformance suite and as
    /// a starting point for users.
    const EXAMPLE_CONFIG: &'static str;

    /// Checks the configuration; the error names the key and the value.
    fn validate(config: &Self::Config) -> Result<(), String>;
    /// Builds the model (parameters may initialise lazily).
    fn init(config: &Self::Config, device: &Device) -> Self;
    /// The vocabulary size.
    fn vocab_size(config: &Self::Config) -> usize;
    /// Decoder-only: the longest prompt + answer; encoder-decoder: the longest side.
    fn context_len(config: &Self::Config) -> usize;
    /// Encoder-decoder only: the token that starts decoding.
    fn decoder_start_token(_config: &Self::Config) -> u32 {
        0
    }

    /// Encoder-decoder only: encodes the prompt.
    ///
    /// # Shapes
    /// - tokens: `[b, t]`, pad_mask: `[b, t]` (true at padding)
    /// - output: `[b, t, d]`
    fn encode(&self, tokens: Tensor<2, Int>, pad_mask: Tensor<2, Bool>) -> Tensor<3> {
        let _ = (tokens, pad_mask);
        panic!("{} is decoder-only and has no encoder", Self::ARCHITECTURE)
    }

    /// The (decoder) stack's hidden states for `tokens` at positions `0..t`, causally masked.
    ///
    /// # Shapes
    /// - tokens: `[b, t]`
    /// - output: `[b, t, d]`
    fn decode(&self, tokens: Tensor<2, Int>, memory: Option<&Memory>) -> Tensor<3>;

    /// The same for `tokens` that follow the ones already in `cache`, which it extends.
    ///
    /// # Shapes
    /// - tokens: `[b, n]` at positions `cache_len..cache_len + n`
    /// - output: `[b, n, d]`
    fn decode_cached(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<&Memory>,
        cache: &mut Self::Cache,
    ) -> Tensor<3>;

    /// An empty cache.
    fn new_cache(&self) -> Self::Cache;

    /// The language-model head.
    ///
    /// # Shapes
    /// - hidden: `[b, t, d]`
    /// - output: `[b, t, v]`
    fn logits(&self, hidden: Tensor<3>) -> Tensor<3>;

    /// The Hugging Face class whose checkpoints this architecture reads and writes, as
    /// `config.json`'s `architectures` names it (e.g. `GPT2LMHeadModel`). `None` (the default):
    /// the architecture has no Hugging Face mapping, and the `hf_*` items are never called.
    const HF_ARCHITECTURE: Option<&'static str> = None;

    /// Translates a Hugging Face `config.json` into this model's configuration keys (a TOML
    /// table, validated like any other config). Takes the keys it needs and refuses values the
    /// model cannot honour (an activation it does not implement, ...), naming key and value.
    fn config_from_hf(hf: &serde_json::Value) -> Result<toml::Table, String> {
        let _ = hf;
        Err(hf::no_mapping(Self::ARCHITECTURE))
    }

    /// The Hugging Face `config.json` of a model of this configuration, with every key
    /// `transformers` writes for its class.
    fn config_to_hf(config: &Self::Config) -> Result<serde_json::Value, String> {
        let _ = config;
        Err(hf::no_mapping(Self::ARCHITECTURE))
    }

    /// Every tensor `transformers` saves for a model of this configuration, paired with the
    /// parameter it holds; together they must cover every (non-adapter) parameter.
    fn hf_tensors(config: &Self::Config) -> Vec<hf::HfTensor> {
        let _ = config;
        Vec::new()
    }

    /// Tensors a Hugging Face file may hold that have no parameter here and are skipped on load
    /// (buffers, copies of tied weights); any other unmapped tensor is refused.
    fn hf_ignored(name: &str) -> bool {
        let _ = name;
        false
    }
}
