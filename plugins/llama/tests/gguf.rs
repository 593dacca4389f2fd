//! GGUF files as LLaMA checkpoints, through the SDK's loader (`cotune_sdk::hf::load`).
//!
//! A tiny LLaMA is built here, exported as a Hugging Face folder, and that folder converted to
//! GGUF in the test the way llama.cpp's `convert_hf_to_gguf.py` does it: llama.cpp's tensor
//! names, dims innermost first, the query and key rows permuted for llama.cpp's rotary layout
//! (`LlamaModel.permute`, written out again below from its numpy), metadata under `llama.*`.
//! Loaded back from the GGUF file the model gives the folder's logits: bit for bit from F32
//! tensors, closely from Q8_0 ones; with a tied head (no `output.weight`) too. Broken files are
//! refused with the file and the tensor or key named.

use std::path::{Path, PathBuf};

use cotune_gguf::{GgmlType, GgufWriter};
use cotune_llama::Llama;
use cotune_sdk::abi::{ErrorKind, PluginError};
use cotune_sdk::burn::tensor::Device;
use cotune_sdk::hf::{self, read_safetensors};
use cotune_sdk::testing::{example, max_abs_diff};
use cotune_sdk::Trainer;

const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const VOCAB: usize = 96;

/// A model whose attention matters: wide initial weights, so that a wrongly ordered query or
/// key row changes the logits clearly.
fn config(tied: bool) -> String {
    format!(
        "vocab_size = {VOCAB}\nhidden_size = 64\nintermediate_size = 128\nnum_hidden_layers = 2\n\
         num_attention_heads = {HEADS}\nnum_key_value_heads = {KV_HEADS}\n\
         max_position_embeddings = 64\nrope_theta = 100000.0\nrms_norm_eps = 1e-5\n\
         initializer_range = 0.25\ntie_word_embeddings = {tied}\n"
    )
}

fn unwrap<T>(r: Result<T, PluginError>) -> T {
    r.unwrap_or_else(|e| panic!("{:?}: {}", e.kind, e.message))
}

fn load(path: &Path) -> Trainer<Llama> {
    unwrap(hf::load::<Llama>(path, "", 0, Device::flex())).0
}

fn load_err(path: &Path) -> PluginError {
    match hf::load::<Llama>(path, "", 0, Device::flex()) {
        Ok(_) => panic!("{} was loaded", path.display()),
        Err(e) => e,
    }
}

/// A Hugging Face folder of a fresh model.
fn hf_folder(dir: &Path, tied: bool) -> PathBuf {
    let trainer = unwrap(Trainer::<Llama>::from_toml(
        &config(tied),
        7,
        Device::flex(),
    ));
    let folder = dir.join(if tied { "hf-tied" } else { "hf" });
    unwrap(hf::export(&trainer, None, &folder));
    folder
}

/// `LlamaModel.permute` of `convert_hf_to_gguf.py` on a row-major `[rows, cols]` matrix:
/// `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
fn converter_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(w.len());
    // The result in row-major order walks (head, i, j) with j fastest: source index (head, j, i).
    for head in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let row = (head * 2 + j) * half + i;
                out.extend_from_slice(&w[row * cols..(row + 1) * cols]);
            }
        }
    }
    out
}

/// llama.cpp's name for a `LlamaForCausalLM` tensor.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (layer, rest) = rest.split_once('.').unwrap();
            let part = match rest {
                "input_layernorm.weight" => "attn_norm",
                "self_attn.q_proj.weight" => "attn_q",
                "self_attn.k_proj.weight" => "attn_k",
                "self_attn.v_proj.weight" => "attn_v",
                "self_attn.o_proj.weight" => "attn_output",
                "post_attention_layernorm.weight" => "ffn_norm",
                "mlp.gate_proj.weight" => "ffn_gate",
                "mlp.up_proj.weight" => "ffn_up",
                "mlp.down_proj.weight" => "ffn_down",
                other => panic!("no GGUF name for {other}"),
            };
            format!("blk.{layer}.{part}.weight")
        }
    }
}

/// How the test's converter writes a folder.
#[derive(Clone, Copy)]
struct Convert {
    /// The type of 2-D weights (norms are always F32, as llama.cpp writes them).
    matrices: GgmlType,
    /// Whether to permute query and key rows (false only to show that it matters).
    permute: bool,
}

/// The folder converted to a GGUF writer, as `convert_hf_to_gguf.py` would.
fn convert(folder: &Path, how: Convert) -> GgufWriter {
    let text = std::fs::read_to_string(folder.join("config.json")).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| c[k].as_u64().unwrap() as u32;
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("general.name", "tiny llama")
        .set("llama.block_count", n("num_hidden_layers"))
        .set("llama.context_length", n("max_position_embeddings"))
        .set("llama.embedding_length", n("hidden_size"))
        .set("llama.feed_forward_length", n("intermediate_size"))
        .set("llama.attention.head_count", n("num_attention_heads"))
        .set("llama.attention.head_count_kv", n("num_key_value_heads"))
        .set(
            "llama.rope.freq_base",
            c["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32,
        )
        .set(
            "llama.attention.layer_norm_rms_epsilon",
            c["rms_norm_eps"].as_f64().unwrap() as f32,
        )
        .set("llama.rope.dimension_count", n("head_dim"))
        .set("general.file_type", 1u32)
        .set("tokenizer.ggml.model", "gpt2")
        .set("tokenizer.ggml.pre", "smollm")
        .set(
            "tokenizer.ggml.tokens",
            (0..VOCAB).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        )
        .set("tokenizer.ggml.eos_token_id", 2u32);
    let stored = unwrap(read_safetensors(&folder.join("model.safetensors")));
    for (name, t) in stored {
        let mut data = t.data;
        if how.permute && name.ends_with("q_proj.weight") {
            data = converter_permute(&data, t.shape[0], t.shape[1], HEADS);
        }
        if how.permute && name.ends_with("k_proj.weight") {
            data = converter_permute(&data, t.shape[0], t.shape[1], KV_HEADS);
        }
        let dims: Vec<usize> = t.shape.iter().rev().copied().collect();
        let ty = if dims.len() == 2 {
            how.matrices
        } else {
            GgmlType::F32
        };
        w.add_tensor(gguf_name(&name), &dims, ty, &data).unwrap();
    }
    w
}

fn write(w: &GgufWriter, path: &Path) -> PathBuf {
    w.write(path).unwrap();
    path.to_path_buf()
}

fn logits(trainer: &Trainer<Llama>) -> Vec<f32> {
    let batch = [
        example(&[5, 17, 3, 60, 2], &[9, 41, 88, 12, 0, 33]),
        example(&[95, 1], &[7, 7, 7]),
    ];
    unwrap(trainer.answer_logits(&batch)).data.to_vec()
}

fn params(trainer: &Trainer<Llama>) -> Vec<cotune_sdk::abi::NamedTensor> {
    unwrap(trainer.export_params(cotune_sdk::abi::ParamSelection::All))
}

const F32: Convert = Convert {
    matrices: GgmlType::F32,
    permute: true,
};

#[test]
fn a_gguf_file_gives_the_folders_logits_exactly_from_f32_and_closely_from_q8_0() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let folder = hf_folder(dir.path(), tied);
        let reference = load(&folder);
        let want = logits(&reference);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));

        let w = convert(&folder, F32);
        let file = write(&w, &dir.path().join(format!("tiny-{tied}.gguf")));
        let from_gguf = load(&file);
        assert_eq!(from_gguf.config().tie_word_embeddings, tied);
        assert_eq!(from_gguf.config().rope_theta, 100000.0);
        assert_eq!(from_gguf.config().rms_norm_eps, 1e-5);
        let got = logits(&from_gguf);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "tied {tied}: F32 GGUF logits differ by {}",
            max_abs_diff(&got, &want)
        );

        let q8 = Convert {
            matrices: GgmlType::Q8_0,
            ..F32
        };
        let file = write(
            &convert(&folder, q8),
            &dir.path().join(format!("q8-{tied}.gguf")),
        );
        let quantised = load(&file);
        // Every weight within about half a Q8_0 step (a block's scale is max |block| / 127,
        // stored as a half float, which adds up to 127 * 2^-11 of it), the largest step
        // bounding every block's (blocks run along rows of the Hugging Face layout, which the
        // plugin stores transposed).
        for (x, y) in params(&reference).iter().zip(&params(&quantised)) {
            assert_eq!(x.name, y.name);
            let step = x.data.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            let worst = max_abs_diff(&x.data, &y.data);
            assert!(
                worst <= step * 0.57,
                "{}: {worst} against a step of {step}",
                x.name
            );
        }
        let got = logits(&quantised);
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let diff: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        let relative = rms(&diff) / rms(&want);
        println!(
            "tied {tied}: Q8_0 vs F32 logits: max |diff| {:e}, relative RMS {relative:e} (max |logit| {scale})",
            max_abs_diff(&got, &want)
        );
        assert!(
            relative > 0.0 && relative < 0.08,
            "Q8_0: relative RMS {relative}"
        );

        // The permutation matters: without it (a file converted wrongly) the logits move.
        let unpermuted = Convert {
            permute: false,
            ..F32
        };
        let file = write(
            &convert(&folder, unpermuted),
            &dir.path().join("wrong.gguf"),
        );
        let got = logits(&load(&file));
        let diff: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        let wrong = rms(&diff) / rms(&want);
        println!("tied {tied}: without the permutation: relative RMS {wrong:e}");
        assert!(
            wrong > 4.0 * relative,
            "the rotary permutation matters less than Q8_0 rounding: {wrong} against {relative}"
        );
    }
}

#[test]
fn the_exported_folder_of_a_gguf_model_reloads_identically_with_its_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let folder = hf_folder(dir.path(), true);
    let file = write(&convert(&folder, F32), &dir.path().join("m.gguf"));
    let (trainer, config) = unwrap(hf::load::<Llama>(&file, "", 0, Device::flex()));
    assert_eq!(config["eos_token_id"], 2);
    let out = dir.path().join("exported");
    unwrap(hf::export(&trainer, Some(&config), &out));
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let exported: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(exported["architectures"][0], "LlamaForCausalLM");
    assert_eq!(exported["eos_token_id"], 2, "{text}");
    assert_eq!(exported["tie_word_embeddings"], true);
    assert_eq!(logits(&load(&out)), logits(&trainer));
}

/// The folder converted with F32 tensors, changed by `change`.
fn broken(dir: &Path, name: &str, change: impl FnOnce(&mut GgufWriter)) -> PathBuf {
    let folder = dir.join("hf");
    if !folder.exists() {
        hf_folder(dir, false);
    }
    let mut w = convert(&folder, F32);
    change(&mut w);
    write(&w, &dir.join(name))
}

fn message(e: &PluginError) -> String {
    e.message.to_string()
}

#[test]
fn broken_files_are_refused_naming_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = broken(dir.path(), "good.gguf", |_| {});
    let bytes = std::fs::read(&good).unwrap();
    let shown = |p: &Path| p.display().to_string();

    // Cut inside the tensor data, inside the metadata, and inside the header.
    for (name, len) in [
        ("cut-data.gguf", bytes.len() - 100),
        ("cut-meta.gguf", 200),
        ("cut-header.gguf", 10),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let e = load_err(&path);
        let m = message(&e);
        assert!(
            m.contains(&shown(&path)) && m.contains("at byte"),
            "{name}: {m}"
        );
    }
    let path = dir.path().join("cut-data.gguf");
    assert!(message(&load_err(&path)).contains("past the end of the file"));

    // Not a GGUF file at all, under the name of one.
    let path = dir.path().join("text.gguf");
    std::fs::write(&path, "this is not a model").unwrap();
    let m = message(&load_err(&path));
    assert!(
        m.contains(&shown(&path)) && m.contains("not a GGUF file"),
        "{m}"
    );

    // Another architecture.
    let path = broken(dir.path(), "qwen.gguf", |w| {
        w.set("general.architecture", "qwen2");
    });
    let e = load_err(&path);
    assert_eq!(e.kind, ErrorKind::UnknownArchitecture);
    let m = message(&e);
    assert!(m.contains("qwen2") && m.contains(&shown(&path)), "{m}");

    // A size missing from the metadata.
    let path = dir.path().join("no-layers.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.write(&path).unwrap();
    let m = message(&load_err(&path));
    assert!(
        m.contains("llama.block_count") && m.contains(&shown(&path)),
        "{m}"
    );

    // A tensor missing, one of the wrong shape, one with no place: named as in the file.
    let path = broken(dir.path(), "layers.gguf", |w| {
        w.set("llama.block_count", 3u32);
    });
    let e = load_err(&path);
    assert_eq!(e.kind, ErrorKind::UnknownParameter);
    let m = message(&e);
    assert!(
        m.contains("blk.2.attn_q.weight") && m.contains("missing") && m.contains(&shown(&path)),
        "{m}"
    );

    let path = broken(dir.path(), "vocab.gguf", |w| {
        w.set(
            "tokenizer.ggml.tokens",
            (0..VOCAB + 1).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        );
    });
    let e = load_err(&path);
    assert_eq!(e.kind, ErrorKind::ShapeMismatch);
    let m = message(&e);
    assert!(
        m.contains("token_embd.weight") && m.contains("dims [64, 96]") && m.contains("[64, 97]"),
        "{m}"
    );

    let path = broken(dir.path(), "extra.gguf", |w| {
        w.add_tensor("rope_freqs.weight", &[8], GgmlType::F32, &[1.0; 8])
            .unwrap();
    });
    let m = message(&load_err(&path));
    assert!(
        m.contains("rope_freqs.weight") && m.contains(&shown(&path)),
        "{m}"
    );
}
