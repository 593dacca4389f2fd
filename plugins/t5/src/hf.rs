//! The Hugging Face mapping of the T5 plugin: `T5ForConditionalGeneration` checkpoints, with the
//! names and layouts of the table in the crate documentation.
//!
//! The head: `transformers` 5 writes `tie_word_embeddings` and `scale_decoder_outputs`,
//! `transformers` 4 only `tie_word_embeddings` (absent means true), whose value then also says
//! whether the decoder output is scaled by `d_model^-0.5` before the head. Both keys become this
//! plugin's keys of the same names, so every combination loads: tied and scaled (the original
//! T5), untied and unscaled (T5 v1.1 saved by `transformers` 4, with its own `lm_head.weight`),
//! tied and unscaled (T5 v1.1 and Flan-T5 saved by `transformers` 5), untied and scaled. An
//! export writes both keys. Copies of `shared.weight` that checkpoints may hold
//! (`encoder.embed_tokens.weight`, `decoder.embed_tokens.weight`, a tied `lm_head.weight`) are
//! skipped.

use cotune_sdk::hf::serde_json::{json, Value};
use cotune_sdk::hf::{set, toml, HfConfig, HfMapping, HfTensor, TRANSFORMERS_VERSION};

use crate::{T5Config, T5};

impl HfMapping for T5 {
    const CLASS: &'static str = "T5ForConditionalGeneration";

    /// `config.json` to this plugin's configuration keys (`max_length`, which Hugging Face's lacks,
    /// keeps its default unless the extra configuration sets it).
    fn from_hf_config(hf: &Value) -> Result<toml::Table, String> {
        let c = HfConfig(hf);
        let mut t = toml::Table::new();
        for key in [
            "vocab_size",
            "d_model",
            "d_kv",
            "d_ff",
            "num_layers",
            "num_heads",
        ] {
            set(&mut t, key, c.required_usize(key)? as i64);
        }
        for key in [
            "num_decoder_layers",
            "relative_attention_num_buckets",
            "relative_attention_max_distance",
            "decoder_start_token_id",
        ] {
            if let Some(v) = c.usize(key)? {
                set(&mut t, key, v as i64);
            }
        }
        for key in ["layer_norm_epsilon", "initializer_factor"] {
            if let Some(v) = c.f64(key)? {
                set(&mut t, key, v);
            }
        }
        if let Some(ff) = c.str("feed_forward_proj")? {
            if !matches!(ff, "relu" | "gated-gelu") {
                return Err(format!(
                    "`feed_forward_proj` = {ff:?} is not supported (relu or gated-gelu)"
                ));
            }
            set(&mut t, "feed_forward_proj", ff);
        }
        let tied = c.bool("tie_word_embeddings")?.unwrap_or(true);
        let scaled = c.bool("scale_decoder_outputs")?.unwrap_or(tied);
        set(&mut t, "tie_word_embeddings", tied);
        set(&mut t, "scale_decoder_outputs", scaled);
        Ok(t)
    }

    /// This configuration as `transformers`' `T5Config` writes it. The padding id is the decoder
    /// start id (T5's convention); the end-of-sequence id is unknown to a model built here and
    /// written as `null`.
    fn to_hf_config(c: &T5Config) -> Result<Value, String> {
        let gated = c.feed_forward_proj == "gated-gelu";
        Ok(json!({
            "classifier_dropout": 0.0,
            "d_ff": c.d_ff,
            "d_kv": c.d_kv,
            "d_model": c.d_model,
            "decoder_start_token_id": c.decoder_start_token_id,
            "dense_act_fn": if gated { "gelu_new" } else { "relu" },
            "dropout_rate": 0.1,
            "dtype": "float32",
            "eos_token_id": null,
            "feed_forward_proj": c.feed_forward_proj,
            "initializer_factor": c.initializer_factor,
            "is_decoder": false,
            "is_encoder_decoder": true,
            "is_gated_act": gated,
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "model_type": "t5",
            "num_decoder_layers": c.decoder_layers(),
            "num_heads": c.num_heads,
            "num_layers": c.num_layers,
            "pad_token_id": c.decoder_start_token_id,
            "relative_attention_max_distance": c.relative_attention_max_distance,
            "relative_attention_num_buckets": c.relative_attention_num_buckets,
            "scale_decoder_outputs": c.scales_decoder_outputs(),
            "tie_word_embeddings": c.tie_word_embeddings,
            "transformers_version": TRANSFORMERS_VERSION,
            "use_cache": true,
            "vocab_size": c.vocab_size,
        }))
    }

    /// Every tensor of a `T5ForConditionalGeneration` file with its parameter.
    fn tensors(c: &T5Config) -> Vec<HfTensor> {
        let mut out = vec![HfTensor::same("shared.weight", "shared.weight")];
        let ff_inputs: &[&str] = if c.feed_forward_proj == "gated-gelu" {
            &["wi_0", "wi_1"]
        } else {
            &["wi"]
        };
        for (stack, layers) in [("encoder", c.num_layers), ("decoder", c.decoder_layers())] {
            for n in 0..layers {
                let hf = format!("{stack}.block.{n}.layer");
                let ours = format!("{stack}.block.{n}");
                let mut sublayers = vec![("0", "SelfAttention", "self_attention")];
                if stack == "decoder" {
                    sublayers.push(("1", "EncDecAttention", "cross_attention"));
                }
                for (index, hf_name, our_name) in sublayers {
                    for p in ["q", "k", "v", "o"] {
                        out.push(HfTensor::transposed(
                            format!("{hf}.{index}.{hf_name}.{p}.weight"),
                            format!("{ours}.{our_name}.{p}.weight"),
                        ));
                    }
                    if n == 0 && our_name == "self_attention" {
                        out.push(HfTensor::same(
                            format!("{hf}.{index}.{hf_name}.relative_attention_bias.weight"),
                            format!("{ours}.{our_name}.relative_attention_bias.weight"),
                        ));
                    }
                    out.push(HfTensor::same(
                        format!("{hf}.{index}.layer_norm.weight"),
                        format!("{ours}.{our_name}.layer_norm.gamma"),
                    ));
                }
                let ff = if stack == "decoder" { "2" } else { "1" };
                for p in ff_inputs.iter().chain(&["wo"]) {
                    out.push(HfTensor::transposed(
                        format!("{hf}.{ff}.DenseReluDense.{p}.weight"),
                        format!("{ours}.feed_forward.{p}.weight"),
                    ));
                }
                out.push(HfTensor::same(
                    format!("{hf}.{ff}.layer_norm.weight"),
                    format!("{ours}.feed_forward.layer_norm.gamma"),
                ));
            }
            out.push(HfTensor::same(
                format!("{stack}.final_layer_norm.weight"),
                format!("{stack}.final_layer_norm.gamma"),
            ));
        }
        if !c.tie_word_embeddings {
            out.push(HfTensor::transposed("lm_head.weight", "lm_head.weight"));
        }
        out
    }

    /// Copies of `shared.weight` and the cross-attention position bias some checkpoints carry.
    fn ignored(name: &str) -> bool {
        matches!(
            name,
            "encoder.embed_tokens.weight"
                | "decoder.embed_tokens.weight"
                | "lm_head.weight"
                | "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_sdk::LanguageModel;

    fn base() -> Value {
        json!({"vocab_size": 50, "d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1,
               "num_heads": 2})
    }

    /// The translated (`tie_word_embeddings`, `scale_decoder_outputs`) of `hf`.
    fn head(hf: &Value) -> (Option<bool>, Option<bool>) {
        let t = T5::from_hf_config(hf).unwrap();
        (
            t["tie_word_embeddings"].as_bool(),
            t["scale_decoder_outputs"].as_bool(),
        )
    }

    #[test]
    fn the_head_follows_both_transformers_versions() {
        // transformers 4: only `tie_word_embeddings` (absent means tied), which also scales.
        assert_eq!(head(&base()), (Some(true), Some(true)));
        let mut v4 = base();
        v4["tie_word_embeddings"] = json!(false);
        assert_eq!(head(&v4), (Some(false), Some(false)));
        v4["scale_decoder_outputs"] = Value::Null;
        assert_eq!(head(&v4), (Some(false), Some(false)), "null is absent");
        // transformers 5 writes both keys; every combination is taken as written.
        for tied in [true, false] {
            for scaled in [true, false] {
                let mut v5 = base();
                v5["tie_word_embeddings"] = json!(tied);
                v5["scale_decoder_outputs"] = json!(scaled);
                assert_eq!(head(&v5), (Some(tied), Some(scaled)), "{v5}");
            }
        }
    }

    #[test]
    fn export_writes_both_head_keys() {
        let config = |extra: &str| -> T5Config {
            toml::from_str(&format!("{}{extra}", T5::EXAMPLE_CONFIG)).unwrap()
        };
        let keys = |c: &T5Config| {
            let hf = T5::to_hf_config(c).unwrap();
            (
                hf["tie_word_embeddings"].clone(),
                hf["scale_decoder_outputs"].clone(),
            )
        };
        assert_eq!(keys(&config("")), (json!(true), json!(true)));
        assert_eq!(
            keys(&config("tie_word_embeddings = false\n")),
            (json!(false), json!(false))
        );
        assert_eq!(
            keys(&config("scale_decoder_outputs = false\n")),
            (json!(true), json!(false))
        );
        assert_eq!(
            keys(&config(
                "tie_word_embeddings = false\nscale_decoder_outputs = true\n"
            )),
            (json!(false), json!(true))
        );
    }

    #[test]
    fn bad_head_keys_are_refused_by_name_and_value() {
        for key in ["tie_word_embeddings", "scale_decoder_outputs"] {
            let mut hf = base();
            hf[key] = json!("no");
            let e = T5::from_hf_config(&hf).unwrap_err();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("\"no\""),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_feed_forwards_are_refused_by_name() {
        let mut hf = base();
        hf["feed_forward_proj"] = json!("gated-silu");
        let e = T5::from_hf_config(&hf).unwrap_err();
        assert!(
            e.contains("`feed_forward_proj`") && e.contains("gated-silu"),
            "{e}"
        );
    }
}
