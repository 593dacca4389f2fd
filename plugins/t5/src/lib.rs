//! A T5-like encoder-decoder as a cotune plugin.
//!
//! Follows "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer"
//! (Raffel et al., 2020) as the Hugging Face `T5ForConditionalGeneration` implements it: one token
//! embedding shared by encoder, decoder and (when tied) the language-model head; encoder and
//! decoder stacks of pre-norm blocks with T5's RMS layer norm (no mean subtraction, no bias);
//! bucketed relative position biases learned in the first block's self-attention of each stack
//! and shared by the stack's later blocks (bidirectional in the encoder, causal in the decoder);
//! attention without the `1/sqrt(d_kv)` score scaling (T5 folds it into the initialisation);
//! decoder cross-attention over the encoder output, masked at the prompt's padding; a ReLU or
//! gated-GELU feed-forward; final layer norms; and a head tied to `shared`
//! (`tie_word_embeddings`, the default) or a separate `lm_head`. The decoder output is scaled by
//! `d_model^-0.5` before the head when `scale_decoder_outputs` is true, which it is by default
//! exactly when the head is tied (the original T5 ties and scales, T5 v1.1 does neither, and
//! `transformers` 5 saves v1.1 and Flan-T5 models tied without scaling). Dropout is left out, as
//! in the other cotune plugins.
//!
//! Configuration keys mirror `T5Config`, plus `max_length`, our own context limit: T5's relative
//! positions put no bound on sequence length, so `max_length` (default 256) is what
//! [`LanguageModel::context_len`] reports, the longest prompt and the longest answer accepted.
//!
//! # Parameter names
//!
//! burn module fields cannot contain dots or start with digits, so each of Hugging Face's
//! `layer.M` sublayers is a named field holding its own `layer_norm`. `N` is the block index.
//! Linear weights are stored `[in, out]` (burn's layout), the transpose of the checkpoint's
//! `[out, in]`; embeddings have the same layout in both.
//!
//! | cotune name | Hugging Face name | layout |
//! |---|---|---|
//! | `shared.weight` | `shared.weight` (also `{encoder,decoder}.embed_tokens.weight`) | same |
//! | `encoder.block.N.self_attention.layer_norm.gamma` | `encoder.block.N.layer.0.layer_norm.weight` | same |
//! | `encoder.block.N.self_attention.{q,k,v,o}.weight` | `encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight` | transposed |
//! | `encoder.block.0.self_attention.relative_attention_bias.weight` | `encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight` | same |
//! | `encoder.block.N.feed_forward.layer_norm.gamma` | `encoder.block.N.layer.1.layer_norm.weight` | same |
//! | `encoder.block.N.feed_forward.{wi,wi_0,wi_1,wo}.weight` | `encoder.block.N.layer.1.DenseReluDense.{wi,wi_0,wi_1,wo}.weight` | transposed |
//! | `encoder.final_layer_norm.gamma` | `encoder.final_layer_norm.weight` | same |
//! | `decoder.block.N.self_attention.layer_norm.gamma` | `decoder.block.N.layer.0.layer_norm.weight` | same |
//! | `decoder.block.N.self_attention.{q,k,v,o}.weight` | `decoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight` | transposed |
//! | `decoder.block.0.self_attention.relative_attention_bias.weight` | `decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight` | same |
//! | `decoder.block.N.cross_attention.layer_norm.gamma` | `decoder.block.N.layer.1.layer_norm.weight` | same |
//! | `decoder.block.N.cross_attention.{q,k,v,o}.weight` | `decoder.block.N.layer.1.EncDecAttention.{q,k,v,o}.weight` | transposed |
//! | `decoder.block.N.feed_forward.layer_norm.gamma` | `decoder.block.N.layer.2.layer_norm.weight` | same |
//! | `decoder.block.N.feed_forward.{wi,wi_0,wi_1,wo}.weight` | `decoder.block.N.layer.2.DenseReluDense.{wi,wi_0,wi_1,wo}.weight` | transposed |
//! | `decoder.final_layer_norm.gamma` | `decoder.final_layer_norm.weight` | same |
//! | `lm_head.weight` (only when `tie_word_embeddings = false`) | `lm_head.weight` | transposed |
//!
//! `wi` exists with `feed_forward_proj = "relu"`, `wi_0` and `wi_1` with `"gated-gelu"`. Tied
//! Hugging Face checkpoints may also store `lm_head.weight` (a copy of `shared.weight`); it has
//! no counterpart here and is skipped on load.

use cotune_sdk::attention::multi_head_attention;
use cotune_sdk::burn;
use cotune_sdk::burn::module::{Initializer, Module};
use cotune_sdk::burn::nn::{
    Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig,
};
use cotune_sdk::burn::tensor::activation::relu;
use cotune_sdk::burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use cotune_sdk::config::{below, one_of, positive, positive_numbers};
use cotune_sdk::decoder::{tied_logits, Decoder};
use cotune_sdk::nn::{causal_mask, gelu_new, key_padding_mask, split_heads, KvCache};
use cotune_sdk::norm::rms_norm;
use cotune_sdk::ops::linear;
use cotune_sdk::{LanguageModel, Memory, Structure};
use serde::Deserialize;

pub mod hf;

/// The model's configuration, with `T5Config`'s key names (plus `max_length`).
///
/// The sizes have no defaults: Hugging Face's are t5-small's, and a config that leaves them out
/// should fail loudly rather than build a model of some other size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width (embeddings and residual stream).
    pub d_model: usize,
    /// Width of one attention head's keys, queries and values.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks; `num_layers` when absent.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads per attention layer.
    pub num_heads: usize,
    /// Relative position buckets (split between the two directions in the encoder).
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance at which the logarithmic buckets end; longer distances share the last bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (`wi`, `wo`) or `gated-gelu` (`wi_0`, `wi_1`, `wo`, with the tanh GELU).
    #[serde(default = "default_feed_forward_proj")]
    pub feed_forward_proj: String,
    /// Share `shared` with the language-model head (no `lm_head` parameter).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Scale the decoder output by `d_model^-0.5` before the head; `tie_word_embeddings` when
    /// absent (use [`T5Config::scales_decoder_outputs`]).
    #[serde(default, deserialize_with = "optional_bool")]
    pub scale_decoder_outputs: Option<bool>,
    /// The token the decoder starts from (T5 uses its padding id, 0).
    #[serde(default)]
    pub decoder_start_token_id: u32,
    /// Multiplies every initialisation standard deviation.
    #[serde(default = "default_initializer_factor")]
    pub initializer_factor: f64,
    /// Our own key: the longest prompt and the longest answer, in tokens.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
}

fn default_num_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_feed_forward_proj() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_initializer_factor() -> f64 {
    1.0
}
fn default_max_length() -> usize {
    256
}

/// `scale_decoder_outputs`: a boolean, with an error naming the key and the value otherwise.
fn optional_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use cotune_sdk::hf::toml::Value;
    match Value::deserialize(d)? {
        Value::Boolean(b) => Ok(Some(b)),
        v => Err(serde::de::Error::custom(format!(
            "`scale_decoder_outputs` must be true or false, got {v}"
        ))),
    }
}

impl T5Config {
    fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Whether the decoder output is scaled by `d_model^-0.5` before the head:
    /// `scale_decoder_outputs`, or `tie_word_embeddings` when that is absent (the original T5
    /// ties and scales, T5 v1.1 in `transformers` 4 does neither).
    pub fn scales_decoder_outputs(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }
}

/// The bucket of a relative position `key - query`, exactly as Hugging Face's
/// `T5Attention._relative_position_bucket` computes it.
///
/// Bidirectional (encoder): half the buckets for keys after the query, half for the rest.
/// Unidirectional (decoder): keys after the query all fall in bucket 0. In each half, the first
/// half of the buckets hold distances exactly; the rest grow logarithmically up to
/// `max_distance`, beyond which everything shares the last bucket.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    // In f32 as PyTorch computes it (the divisor is a Python float); `as` truncates toward zero
    // like `.to(torch.long)`.
    let log_ratio = (distance as f32 / max_exact as f32).ln()
        / (max_distance as f64 / max_exact as f64).ln() as f32
        * (num_buckets - max_exact) as f32;
    (bucket + (max_exact + log_ratio as i64).min(num_buckets - 1)) as usize
}

/// A pre-norm residual attention sublayer (Hugging Face's `T5LayerSelfAttention` or
/// `T5LayerCrossAttention` with its `T5Attention`).
#[derive(Module, Debug)]
struct AttentionLayer {
    layer_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Only in the first block's self-attention; the stack shares it.
    relative_attention_bias: Option<Embedding>,
    num_heads: usize,
}

impl AttentionLayer {
    fn keys_values(&self, source: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            split_heads(linear(&self.k, source.clone()), self.num_heads),
            split_heads(linear(&self.v, source), self.num_heads),
        )
    }

    /// `x` plus attention from `normed` (the normalised `x`) to `k`, `v`, unscaled as in T5.
    fn attend(
        &self,
        x: Tensor<3>,
        normed: Tensor<3>,
        (k, v): (Tensor<4>, Tensor<4>),
        bias: Option<Tensor<4>>,
        mask: Tensor<4, Bool>,
    ) -> Tensor<3> {
        let q = split_heads(linear(&self.q, normed), self.num_heads);
        let out = multi_head_attention(q, k, v, 1.0, bias, Some(mask));
        x + linear(&self.o, out)
    }

    /// Self-attention with the stack's position bias; with a cache, this step's keys and values
    /// are appended to the earlier ones.
    ///
    /// # Shapes
    /// - x: `[b, n, d]`, bias: `[1, h, n, tk]`, mask: broadcastable to `[b, h, n, tk]`
    fn self_attend(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        mask: Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let normed = rms_norm(&self.layer_norm, x.clone());
        let (k, v) = self.keys_values(normed.clone());
        let kv = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        self.attend(x, normed, kv, Some(bias), mask)
    }

    /// Cross-attention over the encoder output, masked at the prompt's padding; with a cache,
    /// the encoder's keys and values are projected once.
    fn cross_attend(
        &self,
        x: Tensor<3>,
        memory: &Memory,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let normed = rms_norm(&self.layer_norm, x.clone());
        let project = || self.keys_values(memory.states.clone());
        let kv = match cache {
            Some((cache, layer)) => cache.get_or_insert(layer, project),
            None => project(),
        };
        let mask = key_padding_mask(memory.pad_mask.clone());
        self.attend(x, normed, kv, None, mask)
    }
}

/// A pre-norm residual feed-forward sublayer (Hugging Face's `T5LayerFF`): `wi` with ReLU, or
/// the gated GELU `gelu_new(wi_0 x) * wi_1 x`.
#[derive(Module, Debug)]
struct FeedForwardLayer {
    layer_norm: RmsNorm,
    wi: Option<Linear>,
    wi_0: Option<Linear>,
    wi_1: Option<Linear>,
    wo: Linear,
}

impl FeedForwardLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let normed = rms_norm(&self.layer_norm, x.clone());
        let hidden = match (&self.wi, &self.wi_0, &self.wi_1) {
            (Some(wi), _, _) => relu(linear(wi, normed)),
            (None, Some(wi_0), Some(wi_1)) => {
                gelu_new(linear(wi_0, normed.clone())) * linear(wi_1, normed)
            }
            _ => unreachable!("a feed-forward layer is built with `wi` or `wi_0` and `wi_1`"),
        };
        x + linear(&self.wo, hidden)
    }
}

/// One encoder block (self-attention, feed-forward) or decoder block (self-attention,
/// cross-attention, feed-forward).
#[derive(Module, Debug)]
struct Block {
    self_attention: AttentionLayer,
    cross_attention: Option<AttentionLayer>,
    feed_forward: FeedForwardLayer,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        mask: Tensor<4, Bool>,
        memory: Option<&Memory>,
        cache: Option<(&mut T5Cache, usize)>,
    ) -> Tensor<3> {
        let (self_cache, cross_cache) = match cache {
            Some((cache, layer)) => (
                Some((&mut cache.self_attention, layer)),
                Some((&mut cache.cross_attention, layer)),
            ),
            None => (None, None),
        };
        let mut x = self.self_attention.self_attend(x, bias, mask, self_cache);
        if let Some(cross) = &self.cross_attention {
            let memory =
                memory.expect("t5's decoder needs the encoder output (memory) to attend to");
            x = cross.cross_attend(x, memory, cross_cache);
        }
        self.feed_forward.forward(x)
    }
}

/// The encoder or the decoder: blocks sharing one relative position bias, then a final norm.
#[derive(Module, Debug)]
struct Stack {
    block: Vec<Block>,
    final_layer_norm: RmsNorm,
    is_decoder: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl Stack {
    /// The relative position bias of queries at positions `offset..offset + queries` against
    /// keys at `0..keys`.
    ///
    /// # Shapes
    /// - output: `[1, h, queries, keys]`
    fn position_bias(
        &self,
        offset: usize,
        queries: usize,
        keys: usize,
        device: &Device,
    ) -> Tensor<4> {
        let table = self.block[0]
            .self_attention
            .relative_attention_bias
            .as_ref()
            .expect("the first block's self-attention holds the relative attention bias");
        let (bidirectional, num_buckets, max_distance) =
            (!self.is_decoder, self.num_buckets, self.max_distance);
        let buckets: Vec<i64> = (offset..offset + queries)
            .flat_map(|q| {
                (0..keys).map(move |k| {
                    relative_position_bucket(
                        k as i64 - q as i64,
                        bidirectional,
                        num_buckets,
                        max_distance,
                    ) as i64
                })
            })
            .collect();
        let buckets: Tensor<2, Int> =
            Tensor::from_data(TensorData::new(buckets, [1, queries * keys]), device);
        let values = table.forward(buckets);
        let heads = values.dims()[2];
        values
            .reshape([queries, keys, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    /// Runs the blocks on embedded tokens at positions `offset..offset + n`.
    ///
    /// # Shapes
    /// - x: `[b, n, d]`, mask: broadcastable to `[b, h, n, offset + n]`
    /// - output: `[b, n, d]`
    fn forward(
        &self,
        mut x: Tensor<3>,
        offset: usize,
        mask: Tensor<4, Bool>,
        memory: Option<&Memory>,
        mut cache: Option<&mut T5Cache>,
    ) -> Tensor<3> {
        let n = x.dims()[1];
        let bias = self.position_bias(offset, n, offset + n, &x.device());
        for (i, block) in self.block.iter().enumerate() {
            let cache = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(x, bias.clone(), mask.clone(), memory, cache);
        }
        rms_norm(&self.final_layer_norm, x)
    }
}

/// The decoder's key/value cache for generation.
#[derive(Debug)]
pub struct T5Cache {
    /// Self-attention keys and values of the tokens decoded so far, per decoder block.
    self_attention: KvCache,
    /// Cross-attention keys and values of the encoder output, per decoder block, computed once.
    cross_attention: KvCache,
}

/// A T5-like encoder-decoder language model.
#[derive(Module, Debug)]
pub struct T5 {
    shared: Embedding,
    encoder: Stack,
    decoder: Stack,
    lm_head: Option<Linear>,
    /// Whether [`LanguageModel::logits`] scales the decoder output by `d_model^-0.5` first.
    scale_decoder_outputs: bool,
}

impl Decoder for T5 {
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<&Memory>,
        cache: Option<&mut T5Cache>,
    ) -> Tensor<3> {
        let n = tokens.dims()[1];
        let offset = cache.as_ref().map_or(0, |c| c.self_attention.len());
        let mask = causal_mask(n, offset + n, &tokens.device()).reshape([1, 1, n, offset + n]);
        self.decoder
            .forward(self.shared.forward(tokens), offset, mask, memory, cache)
    }

    fn empty_cache(&self) -> T5Cache {
        let layers = self.decoder.block.len();
        T5Cache {
            self_attention: KvCache::new(layers),
            cross_attention: KvCache::new(layers),
        }
    }
}

impl LanguageModel for T5 {
    type Config = T5Config;
    type Cache = T5Cache;
    const ARCHITECTURE: &'static str = "t5";
    const STRUCTURE: Structure = Structure::EncoderDecoder;
    // PEFT's T5 default: every `q` and `v`, so self- and cross-attention in both stacks.
    const LORA_TARGETS: &'static [&'static str] = &["q", "v"];
    const EXAMPLE_CONFIG: &'static str = "vocab_size = 96\nd_model = 32\nd_kv = 8\nd_ff = 64\nnum_layers = 2\nnum_heads = 4\nrelative_attention_num_buckets = 8\nrelative_attention_max_distance = 20\n";

    cotune_sdk::hf_methods!();
    cotune_sdk::decoder_methods!();

    fn validate(c: &T5Config) -> Result<(), String> {
        positive(&[
            ("vocab_size", c.vocab_size),
            ("d_model", c.d_model),
            ("d_kv", c.d_kv),
            ("d_ff", c.d_ff),
            ("num_layers", c.num_layers),
            ("num_decoder_layers", c.decoder_layers()),
            ("num_heads", c.num_heads),
            ("max_length", c.max_length),
        ])?;
        let buckets = c.relative_attention_num_buckets;
        if buckets < 4 {
            // Fewer leave the encoder no exactly-bucketed distance, and HF's formula divides by 0.
            return Err(format!(
                "`relative_attention_num_buckets` must be at least 4, got {buckets}"
            ));
        }
        // The decoder's exact buckets reach distance buckets / 2; the logarithmic ones must
        // start below max_distance.
        if c.relative_attention_max_distance <= buckets / 2 {
            return Err(format!(
                "`relative_attention_max_distance` ({}) must exceed half of `relative_attention_num_buckets` ({buckets})",
                c.relative_attention_max_distance
            ));
        }
        one_of(
            "feed_forward_proj",
            &c.feed_forward_proj,
            &["relu", "gated-gelu"],
        )?;
        positive_numbers(&[
            ("layer_norm_epsilon", c.layer_norm_epsilon),
            ("initializer_factor", c.initializer_factor),
        ])?;
        below(
            ("decoder_start_token_id", c.decoder_start_token_id as usize),
            ("vocab_size", c.vocab_size),
        )
    }

    fn init(c: &T5Config, device: &Device) -> Self {
        // Hugging Face's `T5PreTrainedModel._init_weights`.
        let f = c.initializer_factor;
        let normal = |std: f64| Initializer::Normal {
            mean: 0.0,
            std: f * std,
        };
        let linear = |i: usize, o: usize, std: f64| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(normal(std))
                .init(device)
        };
        let norm = || {
            RmsNormConfig::new(c.d_model)
                .with_epsilon(c.layer_norm_epsilon)
                .init(device)
        };
        let (d, inner) = (c.d_model, c.num_heads * c.d_kv);
        let d_scale = (d as f64).powf(-0.5);
        let attention_layer = |relative_bias: bool| AttentionLayer {
            layer_norm: norm(),
            q: linear(d, inner, ((d * c.d_kv) as f64).powf(-0.5)),
            k: linear(d, inner, d_scale),
            v: linear(d, inner, d_scale),
            o: linear(inner, d, (inner as f64).powf(-0.5)),
            relative_attention_bias: relative_bias.then(|| {
                EmbeddingConfig::new(c.relative_attention_num_buckets, c.num_heads)
                    .with_initializer(normal(d_scale))
                    .init(device)
            }),
            num_heads: c.num_heads,
        };
        let gated = c.feed_forward_proj == "gated-gelu";
        let ff_in = || linear(d, c.d_ff, d_scale);
        let feed_forward = || FeedForwardLayer {
            layer_norm: norm(),
            wi: (!gated).then(ff_in),
            wi_0: gated.then(ff_in),
            wi_1: gated.then(ff_in),
            wo: linear(c.d_ff, d, (c.d_ff as f64).powf(-0.5)),
        };
        let stack = |layers: usize, is_decoder: bool| Stack {
            block: (0..layers)
                .map(|i| Block {
                    self_attention: attention_layer(i == 0),
                    cross_attention: is_decoder.then(|| attention_layer(false)),
                    feed_forward: feed_forward(),
                })
                .collect(),
            final_layer_norm: norm(),
            is_decoder,
            num_buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
        };
        T5 {
            shared: EmbeddingConfig::new(c.vocab_size, d)
                .with_initializer(normal(1.0))
                .init(device),
            encoder: stack(c.num_layers, false),
            decoder: stack(c.decoder_layers(), true),
            lm_head: (!c.tie_word_embeddings).then(|| linear(d, c.vocab_size, 1.0)),
            scale_decoder_outputs: c.scales_decoder_outputs(),
        }
    }

    fn vocab_size(c: &T5Config) -> usize {
        c.vocab_size
    }

    fn context_len(c: &T5Config) -> usize {
        c.max_length
    }

    fn decoder_start_token(c: &T5Config) -> u32 {
        c.decoder_start_token_id
    }

    fn encode(&self, tokens: Tensor<2, Int>, pad_mask: Tensor<2, Bool>) -> Tensor<3> {
        self.encoder.forward(
            self.shared.forward(tokens),
            0,
            key_padding_mask(pad_mask),
            None,
            None,
        )
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = if self.scale_decoder_outputs {
            let d = hidden.dims()[2];
            hidden.mul_scalar((d as f64).powf(-0.5))
        } else {
            hidden
        };
        match &self.lm_head {
            Some(head) => linear(head, hidden),
            None => tied_logits(hidden, &self.shared),
        }
    }
}

cotune_sdk::export_plugin! {
    name: "t5",
    models: [T5],
}

#[cfg(test)]
mod tests;
