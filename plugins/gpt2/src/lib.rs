//! A GPT-2-like decoder as a cotune plugin.
//!
//! Follows "Language Models are Unsupervised Multitask Learners" (Radford et al., 2019) as the
//! Hugging Face `GPT2LMHeadModel` implements it: token plus learned position embeddings,
//! pre-LayerNorm blocks of causal multi-head attention (fused query/key/value projection) and a
//! GELU MLP, a final LayerNorm, and a language-model head tied to the token embedding or not.
//! Configuration keys and parameter names mirror `GPT2Config` and the checkpoint (`wte`, `wpe`,
//! `h.N.attn.c_attn`, ...); linear weights are stored `[in, out]`, as GPT-2's Conv1D stores them.

use cotune_sdk::attention::multi_head_attention;
use cotune_sdk::burn;
use cotune_sdk::burn::module::{Initializer, Module};
use cotune_sdk::burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use cotune_sdk::burn::tensor::activation::gelu;
use cotune_sdk::burn::tensor::{Bool, Device, Int, Tensor};
use cotune_sdk::config::{divisible, one_of, positive};
use cotune_sdk::nn::{causal_mask, gelu_new, split_heads, KvCache};
use cotune_sdk::norm::layer_norm;
use cotune_sdk::ops::{linear, matmul};
use cotune_sdk::{Decoder, LanguageModel, Memory, Structure};
use serde::Deserialize;

pub mod hf;

/// The model's configuration, with `GPT2Config`'s key names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (learned positions).
    #[serde(default = "default_n_positions")]
    pub n_positions: usize,
    /// Model width.
    #[serde(default = "default_n_embd")]
    pub n_embd: usize,
    /// Number of blocks.
    #[serde(default = "default_n_layer")]
    pub n_layer: usize,
    /// Attention heads per block.
    #[serde(default = "default_n_head")]
    pub n_head: usize,
    /// MLP width; `4 * n_embd` when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// `gelu_new` (tanh approximation, GPT-2's) or `gelu` (exact).
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Standard deviation of the normal initialisation.
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    /// Share the token embedding with the language-model head.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_n_positions() -> usize {
    256
}
fn default_n_embd() -> usize {
    128
}
fn default_n_layer() -> usize {
    4
}
fn default_n_head() -> usize {
    4
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_init() -> f64 {
    0.02
}
fn default_true() -> bool {
    true
}

#[derive(Module, Debug)]
struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
}

impl Attention {
    /// # Shapes
    /// - x: `[b, n, d]`, mask: `[1, 1, n, cached + n]` (true above the diagonal)
    /// - output: `[b, n, d]`
    fn forward(
        &self,
        x: Tensor<3>,
        mask: &Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, n, d] = x.dims();
        // `c_attn` projects to queries, keys and values side by side; each is computed from its
        // own columns of the weight, so each comes out contiguous and splits into heads as a view
        // (slicing the fused output instead would copy it forward and backward).
        let x = x.reshape([b * n, d]);
        let weight = self.c_attn.weight.val();
        let bias = self.c_attn.bias.as_ref().map(|bias| bias.val());
        let project = |part: usize| {
            let y = matmul(x.clone(), weight.clone().narrow(1, part * d, d));
            let y = match &bias {
                Some(bias) => y + bias.clone().narrow(0, part * d, d).unsqueeze::<2>(),
                None => y,
            };
            split_heads(y.reshape([b, n, d]), self.n_head)
        };
        let (q, k, v) = (project(0), project(1), project(2));
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let scale = 1.0 / ((d / self.n_head) as f32).sqrt();
        let out = multi_head_attention(q, k, v, scale, None, Some(mask.clone()));
        linear(&self.c_proj, out)
    }
}

#[derive(Module, Debug)]
struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    exact_gelu: bool,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear(&self.c_fc, x);
        let h = if self.exact_gelu {
            gelu(h)
        } else {
            gelu_new(h)
        };
        linear(&self.c_proj, h)
    }
}

#[derive(Module, Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
    /// The LayerNorms' epsilon (burn's `LayerNorm` keeps its own private).
    eps: f64,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: &Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .attn
                .forward(layer_norm(&self.ln_1, x, self.eps), mask, cache);
        x.clone() + self.mlp.forward(layer_norm(&self.ln_2, x, self.eps))
    }
}

/// A GPT-2-like decoder-only language model.
#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Option<Linear>,
    /// The LayerNorms' epsilon.
    eps: f64,
}

impl Decoder for Gpt2 {
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        _memory: Option<&Memory>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [_, n] = tokens.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let device = tokens.device();
        let positions =
            Tensor::<1, Int>::arange(offset as i64..(offset + n) as i64, &device).reshape([1, n]);
        // One causal mask per forward pass, shared by every block.
        let mask = causal_mask(n, offset + n, &device).reshape([1, 1, n, offset + n]);
        let mut x = self.wte.forward(tokens) + self.wpe.forward(positions);
        for (i, block) in self.h.iter().enumerate() {
            x = block.forward(x, &mask, cache.as_deref_mut().map(|c| (c, i)));
        }
        layer_norm(&self.ln_f, x, self.eps)
    }

    fn empty_cache(&self) -> KvCache {
        KvCache::new(self.h.len())
    }
}

impl LanguageModel for Gpt2 {
    type Config = Gpt2Config;
    type Cache = KvCache;
    const ARCHITECTURE: &'static str = "gpt2";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    // GPT-2 fuses query, key and value into `c_attn`; adapting it is PEFT's GPT-2 default.
    const LORA_TARGETS: &'static [&'static str] = &["c_attn"];
    const EXAMPLE_CONFIG: &'static str =
        "vocab_size = 96\nn_positions = 64\nn_embd = 32\nn_layer = 2\nn_head = 4\n";

    cotune_sdk::hf_methods!();
    cotune_sdk::decoder_methods!();

    fn validate(c: &Gpt2Config) -> Result<(), String> {
        positive(&[
            ("vocab_size", c.vocab_size),
            ("n_positions", c.n_positions),
            ("n_embd", c.n_embd),
            ("n_layer", c.n_layer),
            ("n_head", c.n_head),
        ])?;
        divisible(("n_embd", c.n_embd), ("n_head", c.n_head))?;
        if let Some(inner) = c.n_inner {
            positive(&[("n_inner", inner)])?;
        }
        one_of(
            "activation_function",
            &c.activation_function,
            &["gelu_new", "gelu"],
        )?;
        // GPT-2's own message names both reals.
        if !(c.layer_norm_epsilon > 0.0 && c.initializer_range > 0.0) {
            return Err(format!(
                "`layer_norm_epsilon` ({}) and `initializer_range` ({}) must be positive",
                c.layer_norm_epsilon, c.initializer_range
            ));
        }
        Ok(())
    }

    fn init(c: &Gpt2Config, device: &Device) -> Self {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: c.initializer_range,
        };
        // GPT-2 scales the residual projections by 1/sqrt(2 * n_layer).
        let proj = Initializer::Normal {
            mean: 0.0,
            std: c.initializer_range / (2.0 * c.n_layer as f64).sqrt(),
        };
        let linear = |i: usize, o: usize, init: &Initializer| {
            LinearConfig::new(i, o)
                .with_initializer(init.clone())
                .init(device)
        };
        let norm = || {
            LayerNormConfig::new(c.n_embd)
                .with_epsilon(c.layer_norm_epsilon)
                .init(device)
        };
        let d = c.n_embd;
        let inner = c.n_inner.unwrap_or(4 * d);
        let h = (0..c.n_layer)
            .map(|_| Block {
                ln_1: norm(),
                attn: Attention {
                    c_attn: linear(d, 3 * d, &normal),
                    c_proj: linear(d, d, &proj),
                    n_head: c.n_head,
                },
                ln_2: norm(),
                mlp: Mlp {
                    c_fc: linear(d, inner, &normal),
                    c_proj: linear(inner, d, &proj),
                    exact_gelu: c.activation_function == "gelu",
                },
                eps: c.layer_norm_epsilon,
            })
            .collect();
        Gpt2 {
            wte: EmbeddingConfig::new(c.vocab_size, d)
                .with_initializer(normal.clone())
                .init(device),
            wpe: EmbeddingConfig::new(c.n_positions, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.01,
                })
                .init(device),
            h,
            ln_f: norm(),
            eps: c.layer_norm_epsilon,
            lm_head: (!c.tie_word_embeddings).then(|| {
                LinearConfig::new(d, c.vocab_size)
                    .with_bias(false)
                    .with_initializer(normal)
                    .init(device)
            }),
        }
    }

    fn vocab_size(c: &Gpt2Config) -> usize {
        c.vocab_size
    }

    fn context_len(c: &Gpt2Config) -> usize {
        c.n_positions
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        cotune_sdk::decoder::logits(hidden, self.lm_head.as_ref(), &self.wte)
    }
}

cotune_sdk::export_plugin! {
    name: "gpt2",
    models: [Gpt2],
}
