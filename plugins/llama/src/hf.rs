//! The Hugging Face mapping of the LLaMA plugin: `LlamaForCausalLM` checkpoints.
//!
//! | cotune name | Hugging Face name | layout |
//! |---|---|---|
//! | `embed_tokens.weight` | `model.embed_tokens.weight` | same |
//! | `layers.N.self_attn.{q,k,v,o}_proj.weight` | `model.layers.N.self_attn.{q,k,v,o}_proj.weight` | transposed |
//! | `layers.N.mlp.{gate,up,down}_proj.weight` | `model.layers.N.mlp.{gate,up,down}_proj.weight` | transposed |
//! | `layers.N.{input,post_attention}_layernorm.weight` | `model.layers.N.{input,post_attention}_layernorm.weight` | same |
//! | `norm.weight` | `model.norm.weight` | same |
//! | `lm_head.weight` (only when `tie_word_embeddings = false`) | `lm_head.weight` | transposed |
//!
//! Both the rotary layout and grouped-query attention are Hugging Face's own (`rotate_half`
//! over the two halves of each head, `repeat_kv`), so query and key weights load without the
//! permutation Meta's original checkpoints need. The RoPE base is read from `rope_theta`
//! (`transformers` 4) or `rope_parameters.rope_theta` (`transformers` 5); scaled RoPE variants,
//! biases and activations other than SiLU are refused.

use cotune_sdk::hf::serde_json::{json, Value};
use cotune_sdk::hf::{set, toml, HfConfig, HfMapping, HfTensor, TRANSFORMERS_VERSION};

use crate::{Llama, LlamaConfig};

impl HfMapping for Llama {
    const CLASS: &'static str = "LlamaForCausalLM";

    /// `config.json` to this plugin's configuration keys.
    fn from_hf_config(hf: &Value) -> Result<toml::Table, String> {
        let c = HfConfig(hf);
        c.only("hidden_act", &json!("silu"))?;
        c.only("attention_bias", &json!(false))?;
        c.only("mlp_bias", &json!(false))?;
        c.only("rope_scaling", &Value::Null)?;
        let mut t = toml::Table::new();
        for key in [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
        ] {
            set(&mut t, key, c.required_usize(key)? as i64);
        }
        if let Some(kv) = c.usize("num_key_value_heads")? {
            set(&mut t, "num_key_value_heads", kv as i64);
        }
        if let Some(head_dim) = c.usize("head_dim")? {
            let (d, h) = (
                c.required_usize("hidden_size")?,
                c.required_usize("num_attention_heads")?,
            );
            if h == 0 || head_dim * h != d {
                return Err(format!(
                    "`head_dim` = {head_dim} is not supported: heads must split `hidden_size` ({d}) over `num_attention_heads` ({h}) evenly"
                ));
            }
        }
        let mut theta = c.f64("rope_theta")?;
        if let Some(params) = c.get("rope_parameters") {
            let p = HfConfig(params);
            p.only("rope_type", &json!("default"))
                .map_err(|e| format!("in `rope_parameters`: {e}"))?;
            if let Some(v) = p.f64("rope_theta")? {
                theta = Some(v);
            }
        }
        if let Some(theta) = theta {
            set(&mut t, "rope_theta", theta);
        }
        for key in ["rms_norm_eps", "initializer_range"] {
            if let Some(v) = c.f64(key)? {
                set(&mut t, key, v);
            }
        }
        if let Some(tied) = c.bool("tie_word_embeddings")? {
            set(&mut t, "tie_word_embeddings", tied);
        }
        Ok(t)
    }

    /// This configuration as `transformers`' `LlamaConfig` writes it; the token ids are unknown to
    /// a model built here and written as `null`.
    fn to_hf_config(c: &LlamaConfig) -> Result<Value, String> {
        Ok(json!({
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": null,
            "dtype": "float32",
            "eos_token_id": null,
            "head_dim": c.head_dim(),
            "hidden_act": "silu",
            "hidden_size": c.hidden_size,
            "initializer_range": c.initializer_range,
            "intermediate_size": c.intermediate_size,
            "max_position_embeddings": c.max_position_embeddings,
            "mlp_bias": false,
            "model_type": "llama",
            "num_attention_heads": c.num_attention_heads,
            "num_hidden_layers": c.num_hidden_layers,
            "num_key_value_heads": c.kv_heads(),
            "pad_token_id": null,
            "pretraining_tp": 1,
            "rms_norm_eps": c.rms_norm_eps,
            "rope_parameters": { "rope_theta": c.rope_theta, "rope_type": "default" },
            "tie_word_embeddings": c.tie_word_embeddings,
            "transformers_version": TRANSFORMERS_VERSION,
            "use_cache": true,
            "vocab_size": c.vocab_size,
        }))
    }

    /// Every tensor of a `LlamaForCausalLM` file with its parameter.
    fn tensors(c: &LlamaConfig) -> Vec<HfTensor> {
        let mut out = vec![HfTensor::same(
            "model.embed_tokens.weight",
            "embed_tokens.weight",
        )];
        for n in 0..c.num_hidden_layers {
            for linear in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ] {
                out.push(HfTensor::transposed(
                    format!("model.layers.{n}.{linear}.weight"),
                    format!("layers.{n}.{linear}.weight"),
                ));
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                out.push(HfTensor::same(
                    format!("model.layers.{n}.{norm}.weight"),
                    format!("layers.{n}.{norm}.weight"),
                ));
            }
        }
        out.push(HfTensor::same("model.norm.weight", "norm.weight"));
        if !c.tie_word_embeddings {
            out.push(HfTensor::transposed("lm_head.weight", "lm_head.weight"));
        }
        out
    }

    /// The tied head's copy and the rotary frequency buffers of older checkpoints.
    fn ignored(name: &str) -> bool {
        name == "lm_head.weight" || name.ends_with(".rotary_emb.inv_freq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"vocab_size": 50, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16})
    }

    #[test]
    fn the_rope_base_is_read_from_either_transformers_layout() {
        let mut v4 = base();
        v4["rope_theta"] = json!(500000.0);
        v4["rope_scaling"] = Value::Null;
        assert_eq!(
            Llama::from_hf_config(&v4).unwrap()["rope_theta"].as_float(),
            Some(500000.0)
        );
        let mut v5 = base();
        v5["rope_parameters"] = json!({"rope_theta": 1000.0, "rope_type": "default"});
        assert_eq!(
            Llama::from_hf_config(&v5).unwrap()["rope_theta"].as_float(),
            Some(1000.0)
        );
    }

    #[test]
    fn variants_it_does_not_compute_are_refused_by_name() {
        for (key, value, needle) in [
            (
                "rope_parameters",
                json!({"rope_theta": 1.0, "rope_type": "linear"}),
                "rope_type",
            ),
            (
                "rope_scaling",
                json!({"type": "linear", "factor": 2.0}),
                "rope_scaling",
            ),
            ("attention_bias", json!(true), "attention_bias"),
            ("hidden_act", json!("gelu"), "hidden_act"),
            ("head_dim", json!(8), "head_dim"),
        ] {
            let mut hf = base();
            hf[key] = value;
            let e = Llama::from_hf_config(&hf).unwrap_err();
            assert!(e.contains(needle), "{key}: {e}");
        }
    }
}
