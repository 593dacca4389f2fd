//! A recurrent language model as a cotune plugin: no attention, no positions, and a cache that
//! is the recurrent state rather than keys and values.
//!
//! ```text
//! x_t      = embed[token_t]
//! h_t^l    = gru_l(h_t^(l-1), h_(t-1)^l)       h_t^0 = x_t, h_(-1)^l = 0
//! logits_t = head(norm(h_t^L))                 (the norm is optional)
//! ```
//!
//! Each layer is a gated recurrent unit (Cho et al., 2014) as PyTorch's `nn.GRU` computes it,
//! with the gates in PyTorch's order (reset, update, new):
//!
//! ```text
//! r   = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//! z   = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//! n   = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//! h'  = (1 - z) * n + z * h
//! ```
//!
//! The three input projections of a layer are one `[in, 3 * hidden]` matrix applied to every
//! time step in one product; the three recurrent projections are one `[hidden, 3 * hidden]`
//! matrix, one product per step. Tokens only ever reach later positions through the state, so
//! the model is causal by construction and right padding never reaches a real token.

// `#[derive(Module)]` expands to paths that start with `burn::`.
use cotune_sdk::burn;
use cotune_sdk::burn::module::{Initializer, Module};
use cotune_sdk::burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use cotune_sdk::burn::tensor::activation::sigmoid;
use cotune_sdk::burn::tensor::{Device, Int, Tensor};
use cotune_sdk::config::{positive, positive_numbers};
use cotune_sdk::norm::layer_norm;
use cotune_sdk::ops::{linear, matmul};
use cotune_sdk::{Decoder, LanguageModel, Memory, Structure};
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// The model's configuration (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GruConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest prompt plus answer the host may pass. A recurrent model has no position table,
    /// so this is a limit of use, not of the parameters.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Width of the token embedding (the first layer's input).
    #[serde(default = "default_width")]
    pub embed_dim: usize,
    /// Width of every layer's hidden state.
    #[serde(default = "default_width")]
    pub hidden_size: usize,
    /// Number of stacked GRU layers.
    #[serde(default = "default_num_layers")]
    pub num_layers: usize,
    /// A LayerNorm between the last layer and the head.
    #[serde(default = "default_true")]
    pub layer_norm: bool,
    /// The LayerNorm's epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_max_len() -> usize {
    256
}
fn default_width() -> usize {
    64
}
fn default_num_layers() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}

/// One GRU layer: the input and recurrent projections of the three gates, each fused into one
/// matrix (`[in, 3 * hidden]` and `[hidden, 3 * hidden]`, gates side by side: reset, update,
/// new).
#[derive(Module, Debug)]
pub struct GruLayer {
    input: Linear,
    recurrent: Linear,
}

impl GruLayer {
    /// Runs the layer over a time-major sequence from the state `h`; returns every step's
    /// state and the last one.
    ///
    /// # Shapes
    /// - x: `[t, b, in]`, h: `[b, hidden]`
    /// - output: `[t, b, hidden]` and `[b, hidden]`
    fn forward(&self, x: Tensor<3>, mut h: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let [t, b, _] = x.dims();
        let hidden = h.dims()[1];
        // The input side of every step in one product: `[t, b, 3 * hidden]`.
        let gx = linear(&self.input, x);
        // The recurrent weight is read once per pass: with LoRA, `val()` is the adapted weight
        // `W + scale * A B`, which is then computed once, not once per step.
        let w = self.recurrent.weight.val();
        let bias = self
            .recurrent
            .bias
            .as_ref()
            .map(|b| b.val().unsqueeze::<2>());
        let mut states = Vec::with_capacity(t);
        for step in 0..t {
            // Time-major, so one step's rows are contiguous.
            let gx = gx.clone().narrow(0, step, 1).reshape([b, 3 * hidden]);
            // One fused product for the three recurrent gates.
            let mut gh = matmul(h.clone(), w.clone());
            if let Some(bias) = &bias {
                gh = gh + bias.clone();
            }
            let rz =
                sigmoid(gx.clone().narrow(1, 0, 2 * hidden) + gh.clone().narrow(1, 0, 2 * hidden));
            let r = rz.clone().narrow(1, 0, hidden);
            let z = rz.narrow(1, hidden, hidden);
            let n =
                (gx.narrow(1, 2 * hidden, hidden) + r * gh.narrow(1, 2 * hidden, hidden)).tanh();
            // (1 - z) * n + z * h, with one operation fewer.
            h = n.clone() + z * (h - n);
            states.push(h.clone());
        }
        (Tensor::stack(states, 0), h)
    }
}

/// The recurrent state of generation: each layer's last hidden state `[b, hidden]`. It is empty
/// until the first [`decode_cached`](LanguageModel::decode_cached) call, which learns the batch
/// size from its tokens and starts every layer from zeros.
#[derive(Debug, Default)]
pub struct GruState {
    layers: Vec<Tensor<2>>,
    tokens: usize,
}

impl GruState {
    /// The number of tokens the state has consumed.
    pub fn len(&self) -> usize {
        self.tokens
    }

    /// Whether no token has been consumed yet.
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }
}

/// A GRU language model: embedding, stacked GRU layers, an optional LayerNorm, a linear head.
#[derive(Module, Debug)]
pub struct Gru {
    embed: Embedding,
    layers: Vec<GruLayer>,
    norm: Option<LayerNorm>,
    head: Linear,
    /// The LayerNorm's epsilon (burn's `LayerNorm` keeps its own private).
    eps: f64,
    hidden_size: usize,
}

impl Decoder for Gru {
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        _memory: Option<&Memory>,
        cache: Option<&mut GruState>,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        // Time-major `[t, b, embed_dim]`: the recurrence steps over the first dimension.
        let mut x = self.embed.forward(tokens.swap_dims(0, 1));
        let device = x.device();
        let mut last = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            // The state the cache holds, or zeros: a full pass and a first cached call both
            // start from zeros, later calls where the previous one stopped.
            let h = match cache.as_ref().and_then(|c| c.layers.get(l)) {
                Some(h) => h.clone(),
                None => Tensor::zeros([b, self.hidden_size], &device),
            };
            let (states, h) = layer.forward(x, h);
            last.push(h);
            x = states;
        }
        if let Some(cache) = cache {
            cache.layers = last;
            cache.tokens += t;
        }
        let x = x.swap_dims(0, 1);
        match &self.norm {
            Some(norm) => layer_norm(norm, x, self.eps),
            None => x,
        }
    }

    fn empty_cache(&self) -> GruState {
        GruState::default()
    }
}

impl LanguageModel for Gru {
    type Config = GruConfig;
    type Cache = GruState;
    const ARCHITECTURE: &'static str = "gru";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    // Both fused gate matrices of every layer (`layers.N.input.weight`,
    // `layers.N.recurrent.weight`).
    const LORA_TARGETS: &'static [&'static str] = &["input", "recurrent"];
    const EXAMPLE_CONFIG: &'static str =
        "vocab_size = 96\nmax_len = 64\nembed_dim = 32\nhidden_size = 32\nnum_layers = 2\n";

    cotune_sdk::decoder_methods!();

    fn validate(c: &GruConfig) -> Result<(), String> {
        positive(&[
            ("vocab_size", c.vocab_size),
            ("max_len", c.max_len),
            ("embed_dim", c.embed_dim),
            ("hidden_size", c.hidden_size),
            ("num_layers", c.num_layers),
        ])?;
        positive_numbers(&[("layer_norm_eps", c.layer_norm_eps)])
    }

    fn init(c: &GruConfig, device: &Device) -> Self {
        // PyTorch's GRU initialisation: every weight and bias uniform in ±1/sqrt(hidden).
        let k = 1.0 / (c.hidden_size as f64).sqrt();
        let uniform = Initializer::Uniform { min: -k, max: k };
        let gates = |d_in: usize| {
            LinearConfig::new(d_in, 3 * c.hidden_size)
                .with_initializer(uniform.clone())
                .init(device)
        };
        let layers = (0..c.num_layers)
            .map(|l| GruLayer {
                input: gates(if l == 0 { c.embed_dim } else { c.hidden_size }),
                recurrent: gates(c.hidden_size),
            })
            .collect();
        Gru {
            embed: EmbeddingConfig::new(c.vocab_size, c.embed_dim).init(device),
            layers,
            norm: c.layer_norm.then(|| {
                LayerNormConfig::new(c.hidden_size)
                    .with_epsilon(c.layer_norm_eps)
                    .init(device)
            }),
            head: LinearConfig::new(c.hidden_size, c.vocab_size).init(device),
            eps: c.layer_norm_eps,
            hidden_size: c.hidden_size,
        }
    }

    fn vocab_size(c: &GruConfig) -> usize {
        c.vocab_size
    }

    fn context_len(c: &GruConfig) -> usize {
        c.max_len
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        linear(&self.head, hidden)
    }
}

cotune_sdk::export_plugin! {
    name: "gru",
    models: [Gru],
}
