//! GGUF files (llama.cpp's model format) read as Hugging Face checkpoints: wherever
//! [`load`](super::load) takes a Hugging Face folder it also takes a `.gguf` file.
//!
//! The file's metadata is translated into the `config.json` the Hugging Face class would have
//! ([`hf_config`]), and its tensors, dequantised to `f32` by `cotune-gguf`, are renamed to the
//! class's tensor names ([`hf_tensors`]); from there the plugin's own [`HfMapping`] loads them as
//! it loads `model.safetensors`, with the same checks.
//!
//! Only the `llama` architecture is read for now (`LlamaForCausalLM`). Its tensors, as gguf-py's
//! `tensor_mapping.py` names them:
//!
//! | GGUF | Hugging Face |
//! |---|---|
//! | `token_embd.weight` | `model.embed_tokens.weight` |
//! | `blk.N.attn_norm.weight` | `model.layers.N.input_layernorm.weight` |
//! | `blk.N.attn_{q,k,v}.weight` | `model.layers.N.self_attn.{q,k,v}_proj.weight` |
//! | `blk.N.attn_output.weight` | `model.layers.N.self_attn.o_proj.weight` |
//! | `blk.N.ffn_norm.weight` | `model.layers.N.post_attention_layernorm.weight` |
//! | `blk.N.ffn_{gate,up,down}.weight` | `model.layers.N.mlp.{gate,up,down}_proj.weight` |
//! | `output_norm.weight` | `model.norm.weight` |
//! | `output.weight` (absent when the head is tied) | `lm_head.weight` |
//!
//! GGUF lists a tensor's dimensions innermost first (ggml's `ne`), so a PyTorch `[out, in]`
//! matrix is stored with dims `[in, out]` and the same row-major values: the Hugging Face shape
//! is the dims reversed, and the values need no transposing.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of
//! every query and key projection for its rotary layout, which pairs dimensions `2i` and `2i + 1`
//! of a head where Hugging Face's `rotate_half` pairs `i` and `i + head_dim / 2`:
//! `w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2)`, so GGUF row `h * head_dim + 2i + j`
//! is Hugging Face row `h * head_dim + j * head_dim / 2 + i`. [`unpermute_rows`] undoes it (with
//! the query heads for `attn_q`, the key/value heads for `attn_k`); [`permute_rows`] is the
//! converter's direction.

use std::collections::BTreeMap;
use std::path::Path;

use cotune_abi::{ErrorKind, PluginError};
use cotune_gguf::{Gguf, Value as GgufValue};
use serde_json::{json, Map, Value};

use super::{err, StoredTensor};

pub use cotune_gguf::{hf_class, is_gguf_file as is_gguf, EXTENSION as GGUF_EXTENSION};

fn gguf_error(kind: ErrorKind) -> impl Fn(cotune_gguf::Error) -> PluginError {
    // The reader's errors name the file and the byte offset.
    move |e| err(kind, e.to_string())
}

/// Opens the GGUF file at `path` (its header, metadata and tensor infos; tensor data is read
/// when asked for).
pub fn open(path: &Path) -> Result<Gguf, PluginError> {
    Gguf::open(path).map_err(gguf_error(ErrorKind::Io))
}

/// The file's architecture, refused naming it and the file unless it is one read here.
fn architecture(gguf: &Gguf) -> Result<&str, PluginError> {
    let arch = gguf
        .architecture()
        .map_err(gguf_error(ErrorKind::InvalidConfig))?;
    if hf_class(arch).is_none() {
        return Err(err(
            ErrorKind::UnknownArchitecture,
            format!(
                "{}: GGUF architecture `{arch}` (general.architecture) cannot be loaded; only `llama` can",
                gguf.origin()
            ),
        ));
    }
    Ok(arch)
}

/// Typed reads of GGUF metadata for the translation to `config.json`; each error names the key
/// and what was found (the caller adds the file).
struct Meta<'a> {
    gguf: &'a Gguf,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    /// A non-negative integer of any integer type, if present.
    fn uint_at(&self, key: &str) -> Result<Option<u64>, String> {
        let Some(value) = self.gguf.get(key) else {
            return Ok(None);
        };
        let n: Option<i128> = match value {
            GgufValue::U8(v) => Some((*v).into()),
            GgufValue::I8(v) => Some((*v).into()),
            GgufValue::U16(v) => Some((*v).into()),
            GgufValue::I16(v) => Some((*v).into()),
            GgufValue::U32(v) => Some((*v).into()),
            GgufValue::I32(v) => Some((*v).into()),
            GgufValue::U64(v) => Some((*v).into()),
            GgufValue::I64(v) => Some((*v).into()),
            GgufValue::Array(a) => {
                return Err(format!(
                    "`{key}` is an {} (a value per layer), which is not supported",
                    a.type_description()
                ))
            }
            _ => None,
        };
        match n {
            Some(n) if n >= 0 => Ok(Some(n as u64)),
            Some(n) => Err(format!("`{key}` must be a non-negative integer, got {n}")),
            None => Err(format!(
                "`{key}` must be an integer, got a {}",
                value.type_description()
            )),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, String> {
        self.uint_at(&self.key(key))
    }

    fn required_uint(&self, key: &str) -> Result<u64, String> {
        let full = self.key(key);
        self.uint_at(&full)?
            .ok_or_else(|| format!("metadata key `{full}` is missing"))
    }

    /// A number (`f32` values are read as the decimal they print as: 1e-5, not
    /// 0.000009999999747), if present.
    fn float(&self, key: &str) -> Result<Option<f64>, String> {
        let full = self.key(key);
        match self.gguf.get(&full) {
            None => Ok(None),
            Some(GgufValue::F32(v)) => Ok(Some(v.to_string().parse().unwrap_or(f64::from(*v)))),
            Some(GgufValue::F64(v)) => Ok(Some(*v)),
            Some(_) => self.uint_at(&full).map(|n| n.map(|n| n as f64)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>, String> {
        let full = self.key(key);
        match self.gguf.get(&full) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "`{full}` must be a string, got a {}",
                other.type_description()
            )),
        }
    }
}

/// The `config.json` a Hugging Face folder of the file's model would have, from its metadata:
/// `{arch}.block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count`,
/// `attention.head_count_kv`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`,
/// `context_length`, the vocabulary size (`{arch}.vocab_size`, or the length of
/// `tokenizer.ggml.tokens`, or the embedding's rows), a tied head when there is no
/// `output.weight`, and the tokenizer's `bos_token_id` and `eos_token_id`.
///
/// Refused, naming the file and the key: an architecture other than `llama`, a missing size,
/// scaled RoPE, partial rotary dimensions, and experts.
pub fn hf_config(gguf: &Gguf) -> Result<Value, PluginError> {
    let arch = architecture(gguf)?;
    let class = hf_class(arch).expect("checked by architecture()");
    let bad = |e: String| err(ErrorKind::InvalidConfig, format!("{}: {e}", gguf.origin()));
    let m = Meta { gguf, arch };

    let layers = m.required_uint("block_count").map_err(bad)?;
    let hidden = m.required_uint("embedding_length").map_err(bad)?;
    let ffn = m.required_uint("feed_forward_length").map_err(bad)?;
    let heads = m.required_uint("attention.head_count").map_err(bad)?;
    let kv_heads = m
        .uint("attention.head_count_kv")
        .map_err(bad)?
        .unwrap_or(heads);
    let context = m.required_uint("context_length").map_err(bad)?;
    if let Some(experts) = m.uint("expert_count").map_err(bad)?.filter(|&n| n > 0) {
        return Err(bad(format!(
            "`{}` = {experts}: mixtures of experts are not supported",
            m.key("expert_count")
        )));
    }
    if let Some(kind) = m.string("rope.scaling.type").map_err(bad)? {
        if kind != "none" {
            return Err(bad(format!(
                "`{}` = \"{kind}\": scaled RoPE is not supported",
                m.key("rope.scaling.type")
            )));
        }
    }
    let head_dim = if heads > 0 && hidden % heads == 0 {
        Some(hidden / heads)
    } else {
        None
    };
    let key_length = m.uint("attention.key_length").map_err(bad)?;
    let value_length = m.uint("attention.value_length").map_err(bad)?;
    if let (Some(k), Some(v)) = (key_length, value_length) {
        if k != v {
            return Err(bad(format!(
                "`{}` = {k} and `{}` = {v} differ, which is not supported",
                m.key("attention.key_length"),
                m.key("attention.value_length")
            )));
        }
    }
    let head_dim_config = key_length.or(value_length);
    if let Some(rot) = m.uint("rope.dimension_count").map_err(bad)? {
        let full = head_dim_config.or(head_dim);
        if Some(rot) != full {
            return Err(bad(format!(
                "`{}` = {rot}: rotary embeddings over part of a head (of {}) are not supported",
                m.key("rope.dimension_count"),
                full.map_or("unknown width".to_string(), |d| d.to_string())
            )));
        }
    }

    let token_count = match gguf.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(tokens)) => Some(tokens.len() as u64),
        _ => None,
    };
    let embedding_rows = gguf
        .tensor("token_embd.weight")
        .and_then(|t| (t.dims.len() == 2).then(|| t.dims[1]));
    let vocab = m
        .uint("vocab_size")
        .map_err(bad)?
        .or(token_count)
        .or(embedding_rows)
        .ok_or_else(|| {
            bad(format!(
                "the vocabulary size is unknown: no `{}`, no tokenizer.ggml.tokens and no token_embd.weight",
                m.key("vocab_size")
            ))
        })?;

    let mut config = Map::new();
    config.insert("architectures".into(), json!([class]));
    config.insert("model_type".into(), json!(arch));
    config.insert("vocab_size".into(), json!(vocab));
    config.insert("hidden_size".into(), json!(hidden));
    config.insert("intermediate_size".into(), json!(ffn));
    config.insert("num_hidden_layers".into(), json!(layers));
    config.insert("num_attention_heads".into(), json!(heads));
    config.insert("num_key_value_heads".into(), json!(kv_heads));
    if let Some(d) = head_dim_config {
        config.insert("head_dim".into(), json!(d));
    }
    config.insert("max_position_embeddings".into(), json!(context));
    config.insert("hidden_act".into(), json!("silu"));
    config.insert("attention_bias".into(), json!(false));
    config.insert("mlp_bias".into(), json!(false));
    if let Some(eps) = m.float("attention.layer_norm_rms_epsilon").map_err(bad)? {
        config.insert("rms_norm_eps".into(), json!(eps));
    }
    let theta = m.float("rope.freq_base").map_err(bad)?.unwrap_or(10_000.0);
    config.insert(
        "rope_parameters".into(),
        json!({ "rope_theta": theta, "rope_type": "default" }),
    );
    config.insert(
        "tie_word_embeddings".into(),
        json!(gguf.tensor("output.weight").is_none()),
    );
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = m.uint_at(key).map_err(bad)? {
            config.insert(name.into(), json!(id));
        }
    }
    Ok(Value::Object(config))
}

/// What one GGUF tensor is in the Hugging Face checkpoint: its name, and the heads its rows are
/// permuted over (query and key projections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfName {
    /// The Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// The number of heads whose rows llama.cpp's converter permuted, if it did.
    pub permuted_heads: Option<usize>,
}

const LAYER_TENSORS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const GLOBAL_TENSORS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The Hugging Face name of the `llama` GGUF tensor `gguf_name`, `None` for a name the class
/// has no tensor for. `heads` and `kv_heads` are the query and key/value head counts.
pub fn llama_hf_name(gguf_name: &str, heads: usize, kv_heads: usize) -> Option<HfName> {
    if let Some((_, hf)) = GLOBAL_TENSORS.iter().find(|(g, _)| *g == gguf_name) {
        return Some(HfName {
            name: hf.to_string(),
            permuted_heads: None,
        });
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let part = rest.strip_suffix(".weight")?;
    let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == part)?;
    Some(HfName {
        name: format!("model.layers.{layer}.{hf}.weight"),
        permuted_heads: match part {
            "attn_q" => Some(heads),
            "attn_k" => Some(kv_heads),
            _ => None,
        },
    })
}

/// The `llama` GGUF name of the Hugging Face tensor `hf_name` (for messages), if it has one.
pub fn llama_gguf_name(hf_name: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_TENSORS.iter().find(|(_, h)| *h == hf_name) {
        return Some(g.to_string());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let part = rest.strip_suffix(".weight")?;
    let (g, _) = LAYER_TENSORS.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{g}.weight"))
}

/// Undoes llama.cpp's rotary permutation of a `[rows, cols]` row-major matrix whose rows are
/// `heads` heads of `rows / heads` (even) rows each: GGUF row `h * d + 2i + j` becomes row
/// `h * d + j * d / 2 + i`.
///
/// # Panics
/// If `data` is not `rows * cols` long or `rows` is not `heads` heads of an even width; callers
/// check the shape first.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    rotary_rows(data, rows, cols, heads, false)
}

/// llama.cpp's rotary permutation (`LlamaModel.permute` in `convert_hf_to_gguf.py`): row
/// `h * d + j * d / 2 + i` becomes row `h * d + 2i + j`. The inverse of [`unpermute_rows`].
///
/// # Panics
/// As [`unpermute_rows`].
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    rotary_rows(data, rows, cols, heads, true)
}

fn rotary_rows(data: &[f32], rows: usize, cols: usize, heads: usize, forward: bool) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols, "a [{rows}, {cols}] matrix");
    assert!(
        heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2),
        "{rows} rows are not {heads} heads of an even width"
    );
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let hf = h * d + j * half + i;
                let gg = h * d + 2 * i + j;
                let (from, to) = if forward { (hf, gg) } else { (gg, hf) };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Every tensor of the file under its Hugging Face name, dequantised to `f32`, in the Hugging
/// Face shape (the dims reversed), query and key rows un-permuted. `config` is the file's
/// [`hf_config`] (for the head counts).
///
/// Refused, naming the file and the tensor: a tensor the class has no place for, a type that
/// cannot be dequantised, a query or key projection whose rows are not whole heads of an even
/// width, and anything the reader finds wrong with the bytes (with their offset).
pub fn hf_tensors(
    gguf: &Gguf,
    config: &Value,
) -> Result<BTreeMap<String, StoredTensor>, PluginError> {
    let file = gguf.origin();
    architecture(gguf)?;
    let count = |key: &str| config.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
    let (heads, kv_heads) = (count("num_attention_heads"), count("num_key_value_heads"));
    let mut out = BTreeMap::new();
    for info in gguf.tensors() {
        let Some(hf) = llama_hf_name(&info.name, heads, kv_heads) else {
            return Err(err(
                ErrorKind::UnknownParameter,
                format!(
                    "{file}: tensor `{}` has no place in a LlamaForCausalLM checkpoint",
                    info.name
                ),
            ));
        };
        if !cotune_gguf::quant::can_dequantize(info.ty) {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "{file}: tensor `{}` has type {}, which cannot be dequantised here",
                    info.name, info.ty
                ),
            ));
        }
        let (dims, data) = gguf
            .tensor_f32(&info.name)
            .map_err(gguf_error(ErrorKind::Io))?;
        let shape: Vec<usize> = dims.iter().rev().copied().collect();
        let data = match hf.permuted_heads {
            None => data,
            Some(heads) => {
                let [rows, cols] = shape[..] else {
                    return Err(err(
                        ErrorKind::ShapeMismatch,
                        format!(
                            "{file}: tensor `{}` has {} dimensions, expected 2",
                            info.name,
                            shape.len()
                        ),
                    ));
                };
                if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
                    return Err(err(
                        ErrorKind::ShapeMismatch,
                        format!(
                            "{file}: tensor `{}` has {rows} rows, which are not {heads} heads of an even width",
                            info.name
                        ),
                    ));
                }
                unpermute_rows(&data, rows, cols, heads)
            }
        };
        out.insert(hf.name, StoredTensor { shape, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_gguf::{GgmlType, GgufWriter};

    #[test]
    fn the_rotary_permutation_matches_the_converter_and_is_undone() {
        // Two heads of width 4, one column: the converter's permute reshapes each head to
        // (2, 2) and swaps the axes, so rows [0, 1, 2, 3] become [0, 2, 1, 3].
        let hf: Vec<f32> = (0..8).map(|r| r as f32).collect();
        let gguf = permute_rows(&hf, 8, 1, 2);
        assert_eq!(gguf, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rows(&gguf, 8, 1, 2), hf);
        // Wider heads and several columns: a round trip.
        let m: Vec<f32> = (0..(12 * 3)).map(|v| v as f32).collect();
        assert_eq!(unpermute_rows(&permute_rows(&m, 12, 3, 2), 12, 3, 2), m);
        // Head width 6: rows 0..6 of a head become 0, 3, 1, 4, 2, 5.
        let g = permute_rows(&m, 12, 3, 2);
        let firsts: Vec<f32> = g.chunks(3).map(|r| r[0] / 3.0).collect();
        assert_eq!(firsts, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
    }

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            (
                "blk.11.attn_q.weight",
                "model.layers.11.self_attn.q_proj.weight",
            ),
            (
                "blk.0.ffn_down.weight",
                "model.layers.0.mlp.down_proj.weight",
            ),
            (
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
            ("output.weight", "lm_head.weight"),
        ] {
            assert_eq!(llama_hf_name(g, 4, 2).unwrap().name, h);
            assert_eq!(llama_gguf_name(h).unwrap(), g);
        }
        assert_eq!(
            llama_hf_name("blk.0.attn_q.weight", 4, 2)
                .unwrap()
                .permuted_heads,
            Some(4)
        );
        assert_eq!(
            llama_hf_name("blk.0.attn_k.weight", 4, 2)
                .unwrap()
                .permuted_heads,
            Some(2)
        );
        for unknown in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_q.bias",
            "blk..attn_q.weight",
        ] {
            assert!(llama_hf_name(unknown, 4, 2).is_none(), "{unknown}");
        }
    }

    fn base() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama")
            .set("llama.block_count", 2u32)
            .set("llama.embedding_length", 8u32)
            .set("llama.feed_forward_length", 16u32)
            .set("llama.attention.head_count", 2u32)
            .set("llama.attention.head_count_kv", 1u32)
            .set("llama.context_length", 32u32)
            .set("llama.rope.freq_base", 100000.0f32)
            .set("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
            .set("tokenizer.ggml.tokens", vec!["a", "b", "c"])
            .set("tokenizer.ggml.eos_token_id", 2u32);
        w
    }

    #[test]
    fn the_config_is_translated_from_the_metadata() {
        let g = Gguf::parse(&base().to_bytes().unwrap()).unwrap();
        let c = hf_config(&g).unwrap();
        assert_eq!(c["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(c["vocab_size"], json!(3));
        assert_eq!(c["num_key_value_heads"], json!(1));
        assert_eq!(c["rms_norm_eps"], json!(1e-5));
        assert_eq!(c["rope_parameters"]["rope_theta"], json!(100000.0));
        assert_eq!(c["tie_word_embeddings"], json!(true));
        assert_eq!(c["eos_token_id"], json!(2));
    }

    #[test]
    fn what_is_not_computed_is_refused_by_name() {
        let mut w = base();
        w.set("general.architecture", "qwen2");
        let e = hf_config(&Gguf::parse(&w.to_bytes().unwrap()).unwrap()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownArchitecture);
        assert!(
            e.message.contains("qwen2") && e.message.contains("<bytes>"),
            "{}",
            e.message
        );

        for (key, value, needle) in [
            (
                "llama.rope.scaling.type",
                GgufValue::from("linear"),
                "scaled RoPE",
            ),
            ("llama.expert_count", GgufValue::U32(8), "experts"),
            (
                "llama.rope.dimension_count",
                GgufValue::U32(2),
                "part of a head",
            ),
            (
                "llama.feed_forward_length",
                GgufValue::from(vec![16u32, 16]),
                "per layer",
            ),
            ("llama.block_count", GgufValue::from("two"), "integer"),
        ] {
            let mut w = base();
            w.set(key, value);
            let e = hf_config(&Gguf::parse(&w.to_bytes().unwrap()).unwrap()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidConfig);
            assert!(
                e.message.contains(key) && e.message.contains(needle),
                "{}",
                e.message
            );
        }

        let mut w = base();
        w.add_raw_tensor(
            "token_embd.weight",
            &[256, 3],
            GgmlType::IQ2_XXS,
            vec![0; 3 * 66],
        )
        .unwrap();
        let g = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
        let e = hf_tensors(&g, &hf_config(&g).unwrap()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("IQ2_XXS") && e.message.contains("token_embd.weight"),
            "{}",
            e.message
        );

        let mut w = base();
        w.add_tensor("rope_freqs.weight", &[4], GgmlType::F32, &[1.0; 4])
            .unwrap();
        let g = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
        let e = hf_tensors(&g, &hf_config(&g).unwrap()).unwrap_err();
        assert!(e.message.contains("rope_freqs.weight"), "{}", e.message);
    }
}
