//! The Hugging Face mapping of the GPT-2 plugin: `GPT2LMHeadModel` checkpoints.
//!
//! | cotune name | Hugging Face name | layout |
//! |---|---|---|
//! | `wte.weight`, `wpe.weight` | `transformer.wte.weight`, `transformer.wpe.weight` | same |
//! | `h.N.ln_1.gamma` / `.beta` (also `ln_2`) | `transformer.h.N.ln_1.weight` / `.bias` | same |
//! | `h.N.attn.c_attn.weight` / `.bias` (also `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`) | `transformer.h.N.attn.c_attn.weight` / `.bias` | same (GPT-2's `Conv1D` stores `[in, out]`, as burn does) |
//! | `ln_f.gamma` / `.beta` | `transformer.ln_f.weight` / `.bias` | same |
//! | `lm_head.weight` (only when `tie_word_embeddings = false`) | `lm_head.weight` | transposed |
//!
//! Tied checkpoints leave `lm_head.weight` out (or hold a copy of `wte`, which is skipped), and
//! older ones hold the attention-mask buffers `h.N.attn.bias` and `h.N.attn.masked_bias`, which
//! are skipped too.

use cotune_sdk::hf::serde_json::{json, Value};
use cotune_sdk::hf::{set, toml, HfConfig, HfMapping, HfTensor, TRANSFORMERS_VERSION};

use crate::{Gpt2, Gpt2Config};

impl HfMapping for Gpt2 {
    const CLASS: &'static str = "GPT2LMHeadModel";

    /// `config.json` to this plugin's configuration keys.
    fn from_hf_config(hf: &Value) -> Result<toml::Table, String> {
        let c = HfConfig(hf);
        c.only("add_cross_attention", &json!(false))?;
        c.only("scale_attn_weights", &json!(true))?;
        c.only("scale_attn_by_inverse_layer_idx", &json!(false))?;
        let mut t = toml::Table::new();
        set(&mut t, "vocab_size", c.required_usize("vocab_size")? as i64);
        for key in ["n_positions", "n_embd", "n_layer", "n_head", "n_inner"] {
            if let Some(v) = c.usize(key)? {
                set(&mut t, key, v as i64);
            }
        }
        if let Some(act) = c.str("activation_function")? {
            // `gelu_pytorch_tanh` is PyTorch's own tanh approximation: the same function.
            let ours = match act {
                "gelu_new" | "gelu_pytorch_tanh" => "gelu_new",
                "gelu" => "gelu",
                other => {
                    return Err(format!(
                        "`activation_function` = {other:?} is not supported (gelu_new, gelu_pytorch_tanh or gelu)"
                    ))
                }
            };
            set(&mut t, "activation_function", ours);
        }
        for key in ["layer_norm_epsilon", "initializer_range"] {
            if let Some(v) = c.f64(key)? {
                set(&mut t, key, v);
            }
        }
        if let Some(tied) = c.bool("tie_word_embeddings")? {
            set(&mut t, "tie_word_embeddings", tied);
        }
        Ok(t)
    }

    /// This configuration as `transformers`' `GPT2Config` writes it. Training-only keys cotune does
    /// not model (dropouts, the sequence-summary head) get `GPT2Config`'s defaults; the token ids
    /// are unknown to a model built here and written as `null`.
    fn to_hf_config(c: &Gpt2Config) -> Result<Value, String> {
        Ok(json!({
            "activation_function": c.activation_function,
            "add_cross_attention": false,
            "attn_pdrop": 0.1,
            "bos_token_id": null,
            "dtype": "float32",
            "embd_pdrop": 0.1,
            "eos_token_id": null,
            "initializer_range": c.initializer_range,
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "model_type": "gpt2",
            "n_embd": c.n_embd,
            "n_head": c.n_head,
            "n_inner": c.n_inner,
            "n_layer": c.n_layer,
            "n_positions": c.n_positions,
            "pad_token_id": null,
            "reorder_and_upcast_attn": false,
            "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": false,
            "scale_attn_weights": true,
            "summary_activation": null,
            "summary_first_dropout": 0.1,
            "summary_proj_to_labels": true,
            "summary_type": "cls_index",
            "summary_use_proj": true,
            "tie_word_embeddings": c.tie_word_embeddings,
            "transformers_version": TRANSFORMERS_VERSION,
            "use_cache": true,
            "vocab_size": c.vocab_size,
        }))
    }

    /// Every tensor of a `GPT2LMHeadModel` file with its parameter.
    fn tensors(c: &Gpt2Config) -> Vec<HfTensor> {
        let mut out = vec![
            HfTensor::same("transformer.wte.weight", "wte.weight"),
            HfTensor::same("transformer.wpe.weight", "wpe.weight"),
        ];
        let norm = |out: &mut Vec<HfTensor>, hf: &str, ours: &str| {
            out.push(HfTensor::same(
                format!("transformer.{hf}.weight"),
                format!("{ours}.gamma"),
            ));
            out.push(HfTensor::same(
                format!("transformer.{hf}.bias"),
                format!("{ours}.beta"),
            ));
        };
        for n in 0..c.n_layer {
            norm(&mut out, &format!("h.{n}.ln_1"), &format!("h.{n}.ln_1"));
            norm(&mut out, &format!("h.{n}.ln_2"), &format!("h.{n}.ln_2"));
            for layer in ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
                for p in ["weight", "bias"] {
                    out.push(HfTensor::same(
                        format!("transformer.h.{n}.{layer}.{p}"),
                        format!("h.{n}.{layer}.{p}"),
                    ));
                }
            }
        }
        norm(&mut out, "ln_f", "ln_f");
        if !c.tie_word_embeddings {
            out.push(HfTensor::transposed("lm_head.weight", "lm_head.weight"));
        }
        out
    }

    /// Buffers of older checkpoints and the tied head's copy.
    fn ignored(name: &str) -> bool {
        name == "lm_head.weight"
            || name.ends_with(".attn.bias")
            || name.ends_with(".attn.masked_bias")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"vocab_size": 50, "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16})
    }

    #[test]
    fn activations_translate_or_are_refused_by_name() {
        let mut hf = base();
        hf["activation_function"] = json!("gelu_pytorch_tanh");
        let t = Gpt2::from_hf_config(&hf).unwrap();
        assert_eq!(t["activation_function"].as_str(), Some("gelu_new"));
        hf["activation_function"] = json!("relu");
        let e = Gpt2::from_hf_config(&hf).unwrap_err();
        assert!(
            e.contains("`activation_function`") && e.contains("relu"),
            "{e}"
        );
    }

    #[test]
    fn attention_variants_it_does_not_compute_are_refused() {
        for (key, value) in [
            ("scale_attn_weights", json!(false)),
            ("scale_attn_by_inverse_layer_idx", json!(true)),
            ("add_cross_attention", json!(true)),
        ] {
            let mut hf = base();
            hf[key] = value;
            let e = Gpt2::from_hf_config(&hf).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        let e = Gpt2::from_hf_config(&json!({"n_embd": 8})).unwrap_err();
        assert!(e.contains("`vocab_size` is missing"), "{e}");
    }
}
