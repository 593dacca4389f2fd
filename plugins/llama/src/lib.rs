//! A LLaMA-like decoder as a cotune plugin.
//!
//! Follows "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023) with
//! grouped-query attention ("GQA", Ainslie et al., 2023), as the Hugging Face `LlamaForCausalLM`
//! implements it: a token embedding, pre-norm blocks of RMSNorm, causal attention with rotary
//! position embeddings (RoPE, `rotate_half` over the two halves of each head) and
//! `num_key_value_heads` key/value heads shared by groups of query heads, RMSNorm and a SwiGLU
//! MLP, a final RMSNorm, and a language-model head tied to the embedding or not. No biases.
//!
//! Configuration keys mirror `LlamaConfig`; parameter names mirror the checkpoint without its
//! `model.` prefix (`embed_tokens`, `layers.N.self_attn.q_proj`, `layers.N.mlp.gate_proj`,
//! `layers.N.input_layernorm`, `norm`, `lm_head`). Linear weights are stored `[in, out]` (burn's
//! layout), the transpose of PyTorch's `nn.Linear`: loading a Hugging Face checkpoint transposes
//! every `*_proj.weight` and `lm_head.weight`; embedding and norm weights load as they are.

use cotune_sdk::attention::multi_head_attention;
use cotune_sdk::burn;
use cotune_sdk::burn::module::{Initializer, Module};
use cotune_sdk::burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use cotune_sdk::burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use cotune_sdk::config::{divisible, positive, positive_numbers};
use cotune_sdk::nn::{causal_mask, split_heads, KvCache};
use cotune_sdk::norm::RmsNorm;
use cotune_sdk::ops::linear;
use cotune_sdk::{Decoder, LanguageModel, Memory, Structure};
use serde::Deserialize;

pub mod hf;

/// The model's configuration, with `LlamaConfig`'s key names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: usize,
    /// Key/value heads per layer (grouped-query attention); `num_attention_heads` when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon; 1e-6 when absent, as in `LlamaConfig`.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base period; 10000 when absent.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest sequence (prompt plus answer).
    pub max_position_embeddings: usize,
    /// Share the token embedding with the language-model head; false when absent.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation; 0.02 when absent.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// Key/value heads per layer.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// RoPE's cosine and sine tables for a run of consecutive positions, built once per forward
/// pass and shared by every layer.
#[derive(Debug, Clone)]
struct Rotary {
    /// `[n, dh]`
    cos: Tensor<2>,
    /// `[n, dh]`
    sin: Tensor<2>,
}

impl Rotary {
    /// Tables for positions `offset..offset + n`: frequency `i` of `dh / 2` is
    /// `theta^(-2i / dh)`, repeated over both halves of the head, as Hugging Face lays it out.
    fn new(head_dim: usize, theta: f64, offset: usize, n: usize, device: &Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(n * head_dim);
        let mut sin = Vec::with_capacity(n * head_dim);
        for p in offset..offset + n {
            for _ in 0..2 {
                for f in &inv_freq {
                    let angle = p as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let table = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [n, head_dim]), device);
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// Rotates each head's halves: `x * cos + rotate_half(x) * sin`, where
    /// `rotate_half([x1, x2]) = [-x2, x1]`, in one fused operation
    /// ([`cotune_sdk::rope::rotary`]).
    ///
    /// # Shapes
    /// - x: `[b, h, n, dh]` (the heads may be a transposed view)
    /// - output: `[b, h, n, dh]`
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        cotune_sdk::rope::rotary(x, &self.cos, &self.sin)
    }
}

#[derive(Module, Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
}

impl Attention {
    /// # Shapes
    /// - x: `[b, n, d]`, mask: `[1, 1, n, cached + n]` (true above the diagonal)
    /// - output: `[b, n, d]`
    fn forward(
        &self,
        x: Tensor<3>,
        rotary: &Rotary,
        mask: &Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [_, _, d] = x.dims();
        let q = rotary.apply(split_heads(linear(&self.q_proj, x.clone()), self.num_heads));
        let k = rotary.apply(split_heads(
            linear(&self.k_proj, x.clone()),
            self.num_kv_heads,
        ));
        let v = split_heads(linear(&self.v_proj, x), self.num_kv_heads);
        // The cache keeps the un-repeated (and already rotated) keys and values.
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        // Query head `i` reads key/value head `i / (num_heads / num_kv_heads)`, as Hugging
        // Face's `repeat_kv` arranges it, without repeating them in memory.
        let scale = 1.0 / ((d / self.num_heads) as f32).sqrt();
        let out = multi_head_attention(q, k, v, scale, None, Some(mask.clone()));
        linear(&self.o_proj, out)
    }
}

#[derive(Module, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = linear(&self.gate_proj, x.clone());
        let up = linear(&self.up_proj, x);
        linear(&self.down_proj, cotune_sdk::ops::swiglu(gate, up))
    }
}

#[derive(Module, Debug)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        rotary: &Rotary,
        mask: &Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rotary, mask, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// A LLaMA-like decoder-only language model.
#[derive(Module, Debug)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    head_dim: usize,
    rope_theta: f64,
}

impl Decoder for Llama {
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        _memory: Option<&Memory>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [_, n] = tokens.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let device = tokens.device();
        // The rotary tables and the causal mask are built once per forward pass and shared by
        // every layer.
        let rotary = Rotary::new(self.head_dim, self.rope_theta, offset, n, &device);
        let mask = causal_mask(n, offset + n, &device).reshape([1, 1, n, offset + n]);
        let mut x = self.embed_tokens.forward(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &rotary, &mask, cache.as_deref_mut().map(|c| (c, i)));
        }
        self.norm.forward(x)
    }

    fn empty_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }
}

impl LanguageModel for Llama {
    type Config = LlamaConfig;
    type Cache = KvCache;
    const ARCHITECTURE: &'static str = "llama";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    // PEFT's default for LLaMA: adapters on the query and value projections.
    const LORA_TARGETS: &'static [&'static str] = &["q_proj", "v_proj"];
    const EXAMPLE_CONFIG: &'static str = "vocab_size = 96\nhidden_size = 32\nintermediate_size = 64\nnum_hidden_layers = 2\nnum_attention_heads = 4\nnum_key_value_heads = 2\nmax_position_embeddings = 64\n";

    cotune_sdk::hf_methods!();
    cotune_sdk::decoder_methods!();

    fn validate(c: &LlamaConfig) -> Result<(), String> {
        positive(&[
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
            ("num_key_value_heads", c.kv_heads()),
            ("max_position_embeddings", c.max_position_embeddings),
        ])?;
        let heads = ("num_attention_heads", c.num_attention_heads);
        divisible(("hidden_size", c.hidden_size), heads)?;
        divisible(heads, ("num_key_value_heads", c.kv_heads()))?;
        if !c.head_dim().is_multiple_of(2) {
            return Err(format!(
                "the head width `hidden_size / num_attention_heads` ({} / {} = {}) must be even for rotary embeddings",
                c.hidden_size,
                c.num_attention_heads,
                c.head_dim()
            ));
        }
        positive_numbers(&[
            ("rms_norm_eps", c.rms_norm_eps),
            ("rope_theta", c.rope_theta),
            ("initializer_range", c.initializer_range),
        ])
    }

    fn init(c: &LlamaConfig, device: &Device) -> Self {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: c.initializer_range,
        };
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(normal.clone())
                .init(device)
        };
        let d = c.hidden_size;
        let kv = c.kv_heads() * c.head_dim();
        let ff = c.intermediate_size;
        let layers = (0..c.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: Attention {
                    q_proj: linear(d, d),
                    k_proj: linear(d, kv),
                    v_proj: linear(d, kv),
                    o_proj: linear(d, d),
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.kv_heads(),
                },
                mlp: Mlp {
                    gate_proj: linear(d, ff),
                    up_proj: linear(d, ff),
                    down_proj: linear(ff, d),
                },
                input_layernorm: RmsNorm::new(d, c.rms_norm_eps, device),
                post_attention_layernorm: RmsNorm::new(d, c.rms_norm_eps, device),
            })
            .collect();
        Llama {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, d)
                .with_initializer(normal.clone())
                .init(device),
            layers,
            norm: RmsNorm::new(d, c.rms_norm_eps, device),
            lm_head: (!c.tie_word_embeddings).then(|| linear(d, c.vocab_size)),
            head_dim: c.head_dim(),
            rope_theta: c.rope_theta,
        }
    }

    fn vocab_size(c: &LlamaConfig) -> usize {
        c.vocab_size
    }

    fn context_len(c: &LlamaConfig) -> usize {
        c.max_position_embeddings
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        cotune_sdk::decoder::logits(hidden, self.lm_head.as_ref(), &self.embed_tokens)
    }
}

cotune_sdk::export_plugin! {
    name: "llama",
    models: [Llama],
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_sdk::abi::{GenerateOptions, NamedTensor, ParamSelection, TrainOptions};
    use cotune_sdk::params;
    use cotune_sdk::testing::{
        assert_cached_decoding_matches, assert_generation_matches_argmax, assert_loss_falls,
        config_with, example, max_abs_diff, refusal, trainer, values,
    };

    /// The example config with `num_key_value_heads` replaced.
    fn with_kv_heads(kv: usize) -> String {
        config_with::<Llama>(&[("num_key_value_heads", &kv.to_string())], "")
    }

    #[test]
    fn rotary_matches_hand_derived_values() {
        // head_dim 4, theta 10000: frequencies theta^(-0/4) = 1 and theta^(-2/4) = 0.01, each
        // used for both halves. For x = [x0, x1, x2, x3], rotate_half(x) = [-x2, -x3, x0, x1], so
        // at position p: [x0 cos p - x2 sin p, x1 cos(p/100) - x3 sin(p/100),
        //                 x2 cos p + x0 sin p, x3 cos(p/100) + x1 sin(p/100)].
        let device = Device::flex();
        let x = [0.5f32, -1.0, 0.25, 0.75];
        let input: Tensor<4> =
            Tensor::from_data(TensorData::new(x.repeat(4), [1, 1, 4, 4]), &device);
        // Rows are positions 0..4; the table rows are [cos p, cos(p/100), sin p, sin(p/100)].
        let table: [[f64; 4]; 4] = [
            [1.0, 1.0, 0.0, 0.0],
            [0.540302306, 0.999950000, 0.841470985, 0.009999833],
            [-0.416146837, 0.999800007, 0.909297427, 0.019998667],
            [-0.989992497, 0.999550034, 0.141120008, 0.029995500],
        ];
        let expected: [[f64; 4]; 4] = [
            [0.5, -1.0, 0.25, 0.75],
            [0.059783407, -1.007449875, 0.555811069, 0.739962667],
            [-0.435397775, -1.014799007, 0.350612004, 0.729851338],
            [-0.530276250, -1.022046659, -0.176938120, 0.719667025],
        ];
        let close = |got: &[f32], want: &[[f64; 4]]| {
            let want: Vec<f64> = want.iter().flatten().copied().collect();
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-6, "got {got:?}, want {want:?}");
        };

        let rotary = Rotary::new(4, 10_000.0, 0, 4, &device);
        let (cos, sin) = (values(rotary.cos.clone()), values(rotary.sin.clone()));
        for (p, row) in table.iter().enumerate() {
            let (c, s) = (
                [row[0], row[1], row[0], row[1]],
                [row[2], row[3], row[2], row[3]],
            );
            close(&cos[4 * p..4 * p + 4], &[c]);
            close(&sin[4 * p..4 * p + 4], &[s]);
        }
        close(&values(rotary.apply(input.clone())), &expected);

        // With an offset (cached decoding), positions 2..4 give the last two rows.
        let head = input.narrow(2, 0, 2);
        let got = values(Rotary::new(4, 10_000.0, 2, 2, &device).apply(head));
        close(&got, &expected[2..]);
    }

    #[test]
    fn parameter_names_mirror_the_checkpoint() {
        let t = trainer::<Llama>(Llama::EXAMPLE_CONFIG, 0);
        let got: Vec<(String, Vec<usize>)> = params::list(t.model())
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        let mut expected = vec![("embed_tokens.weight".to_string(), vec![96, 32])];
        for n in 0..2 {
            for (name, shape) in [
                ("self_attn.q_proj.weight", vec![32, 32]),
                ("self_attn.k_proj.weight", vec![32, 16]),
                ("self_attn.v_proj.weight", vec![32, 16]),
                ("self_attn.o_proj.weight", vec![32, 32]),
                ("mlp.gate_proj.weight", vec![32, 64]),
                ("mlp.up_proj.weight", vec![32, 64]),
                ("mlp.down_proj.weight", vec![64, 32]),
                ("input_layernorm.weight", vec![32]),
                ("post_attention_layernorm.weight", vec![32]),
            ] {
                expected.push((format!("layers.{n}.{name}"), shape));
            }
        }
        expected.push(("norm.weight".into(), vec![32]));
        expected.push(("lm_head.weight".into(), vec![32, 96]));
        assert_eq!(got, expected);

        let tied = trainer::<Llama>(
            &config_with::<Llama>(&[("tie_word_embeddings", "true")], ""),
            0,
        );
        let names: Vec<String> = params::list(tied.model())
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names.len(), expected.len() - 1);
        assert!(!names.iter().any(|n| n.starts_with("lm_head")));
        let logits = tied.answer_logits(&[example(&[1, 2], &[3])]).unwrap();
        assert_eq!(logits.vocab, 96);
    }

    #[test]
    fn lora_adapts_query_and_value_projections_by_default() {
        let t = trainer::<Llama>(&config_with::<Llama>(&[], "[lora]\nrank = 2\n"), 0);
        let adapters = t.export_params(ParamSelection::DomainSpecific).unwrap();
        // Adapter tensors are named `<weight>.lora.a` and `<weight>.lora.b`.
        let mut adapted: Vec<&str> = adapters
            .iter()
            .map(|p| p.name.rsplitn(3, '.').nth(2).unwrap())
            .collect();
        adapted.dedup();
        assert_eq!(adapters.len(), 2 * adapted.len());
        assert_eq!(
            adapted,
            [
                "layers.0.self_attn.q_proj.weight",
                "layers.0.self_attn.v_proj.weight",
                "layers.1.self_attn.q_proj.weight",
                "layers.1.self_attn.v_proj.weight",
            ]
        );
    }

    #[test]
    fn grouped_query_attention_equals_repeated_heads() {
        let batch = [example(&[5, 6, 7], &[8, 9]), example(&[1, 2], &[3, 4, 10])];
        let grouped = trainer::<Llama>(&with_kv_heads(2), 3);
        let mut full = trainer::<Llama>(&with_kv_heads(4), 4);
        // A 2-kv-head model is a 4-kv-head model whose kv head h copies kv head h / 2.
        let head_dim = 8;
        let widened: Vec<NamedTensor> = grouped
            .export_params(ParamSelection::All)
            .unwrap()
            .into_iter()
            .map(|p| {
                if !(p.name.ends_with("k_proj.weight") || p.name.ends_with("v_proj.weight")) {
                    return p;
                }
                let (rows, cols) = (p.shape[0] as usize, p.shape[1] as usize);
                let data = (0..rows)
                    .flat_map(|r| (0..2 * cols).map(move |c| (r, c)))
                    .map(|(r, c)| {
                        let (head, within) = (c / head_dim, c % head_dim);
                        p.data[r * cols + (head / 2) * head_dim + within]
                    })
                    .collect::<Vec<f32>>();
                NamedTensor {
                    name: p.name,
                    shape: vec![rows as u64, 2 * cols as u64].into(),
                    data: data.into(),
                }
            })
            .collect();
        full.import_params(&widened).unwrap();
        let a = grouped.answer_logits(&batch).unwrap();
        let b = full.answer_logits(&batch).unwrap();
        assert!(max_abs_diff(&a.data, &b.data) < 1e-5);

        let options = TrainOptions::default();
        // Equal heads, grouped heads and a single key/value head all train.
        for kv in [4, 2, 1] {
            let report = trainer::<Llama>(&with_kv_heads(kv), 5)
                .train_step(&batch, None, &options)
                .unwrap();
            assert!(report.loss.is_finite(), "num_key_value_heads = {kv}");
        }
    }

    #[test]
    fn cached_decoding_equals_uncached() {
        let t = trainer::<Llama>(Llama::EXAMPLE_CONFIG, 7);
        let model = t.model().valid();
        let tokens = cotune_sdk::testing::tokens(&[
            &[3, 14, 15, 92, 65, 35, 89],
            &[79, 32, 38, 46, 26, 43, 38],
        ]);
        assert_cached_decoding_matches(&model, tokens, None, &[4, 1, 2], 1e-5, KvCache::len);
    }

    #[test]
    fn cached_generation_equals_uncached_argmax() {
        let t = trainer::<Llama>(Llama::EXAMPLE_CONFIG, 11);
        let prompts = vec![vec![4, 8, 15], vec![16, 23, 42], vec![1, 2, 3, 5, 8]];
        let options = GenerateOptions {
            max_new_tokens: 6,
            eos_id: 95,
        };
        assert_generation_matches_argmax(&t, &prompts, &options);
    }

    #[test]
    fn bad_configs_are_refused_by_key_and_value() {
        let refused =
            |key: &str, value: &str| refusal::<Llama>(&config_with::<Llama>(&[(key, value)], ""));
        let msg = refused("hidden_sise", "32");
        assert!(msg.contains("hidden_sise"), "{msg}");
        for (key, value, needles) in [
            ("hidden_size", "0", &["`hidden_size`", "0"][..]),
            (
                "num_attention_heads",
                "3",
                &["`hidden_size` (32)", "`num_attention_heads` (3)"],
            ),
            ("num_key_value_heads", "3", &["`num_key_value_heads` (3)"]),
            ("num_key_value_heads", "0", &["`num_key_value_heads`", "0"]),
            ("hidden_size", "12", &["12 / 4 = 3", "even"]),
            ("rms_norm_eps", "0.0", &["`rms_norm_eps`"]),
            ("rope_theta", "-1.0", &["`rope_theta`"]),
            ("initializer_range", "nan", &["`initializer_range`"]),
        ] {
            let msg = refused(key, value);
            for needle in needles {
                assert!(msg.contains(needle), "{key} = {value}: {msg}");
            }
        }
    }

    #[test]
    fn loss_falls_when_overfitting_one_batch() {
        let mut t = trainer::<Llama>(Llama::EXAMPLE_CONFIG, 1);
        let batch = [
            example(&[10, 11, 12, 13], &[20, 21, 22, 2]),
            example(&[30, 31, 32], &[40, 41, 2]),
        ];
        let losses = assert_loss_falls(&mut t, &batch, 40, 0.1);
        assert!(losses[0] > 4.0, "{losses:?}");
    }
}
