//! GGUF files as checkpoints on the host side: `HfCheckpoint::read` finds the class from
//! `general.architecture`, `open_checkpoint` builds the model through the LLaMA plugin, the
//! tokenizer comes from the file's metadata, and an export writes a Hugging Face folder that
//! opens again with the same logits. Broken files are refused naming the file, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use cotune_gguf::{GgmlType, GgufWriter};
use cotune_host::hf::{is_gguf, HfCheckpoint};
use cotune_host::{open_checkpoint, DeviceChoice, Example, GenerateOptions, Model};

const HIDDEN: usize = 32;
const FFN: usize = 64;
const LAYERS: usize = 2;

/// Builds the LLaMA plugin (same profile as this test) so the host finds it.
fn plugin_built() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(root)
            .args(["build", "-p", "cotune-llama"]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command.status().expect("starting cargo");
        assert!(
            status.success(),
            "building the llama plugin failed ({status})"
        );
    });
}

/// Three control tokens, the byte-level alphabet and a few merges.
fn tokenizer(w: &mut GgufWriter) -> usize {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    // GPT-2's byte-level alphabet: printable bytes stand for themselves, the others from U+0100.
    let mut shifted = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let c = if printable {
            char::from_u32(b).unwrap()
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap()
        };
        tokens.push(c.to_string());
    }
    let merges = ["h e", "l l", "he ll", "Ġ w", "o r"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let n = tokens.len();
    let types: Vec<i32> = (0..n).map(|i| if i < 3 { 3 } else { 1 }).collect();
    w.set("tokenizer.ggml.model", "gpt2")
        .set("tokenizer.ggml.pre", "smollm")
        .set("tokenizer.ggml.tokens", tokens)
        .set("tokenizer.ggml.token_type", types)
        .set("tokenizer.ggml.merges", merges.to_vec())
        .set("tokenizer.ggml.bos_token_id", 1u32)
        .set("tokenizer.ggml.eos_token_id", 2u32)
        .set("tokenizer.ggml.add_bos_token", false);
    n
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A tiny LLaMA GGUF file with a tied head: Q8_0 matrices, F32 norms.
fn tiny_gguf(path: &Path, architecture: &str) -> PathBuf {
    let mut w = GgufWriter::new();
    w.set("general.architecture", architecture)
        .set("llama.block_count", LAYERS as u32)
        .set("llama.context_length", 64u32)
        .set("llama.embedding_length", HIDDEN as u32)
        .set("llama.feed_forward_length", FFN as u32)
        .set("llama.attention.head_count", 4u32)
        .set("llama.attention.head_count_kv", 2u32)
        .set("llama.rope.freq_base", 100000.0f32)
        .set("llama.attention.layer_norm_rms_epsilon", 1e-5f32);
    let vocab = tokenizer(&mut w);
    let mut seed = 0;
    let mut add = |w: &mut GgufWriter, name: String, dims: &[usize]| {
        seed += 1;
        let n = dims.iter().product();
        let (ty, data) = if dims.len() == 1 {
            (GgmlType::F32, vec![1.0; n])
        } else {
            (GgmlType::Q8_0, values(n, seed))
        };
        w.add_tensor(name, dims, ty, &data).unwrap();
    };
    add(&mut w, "token_embd.weight".into(), &[HIDDEN, vocab]);
    for l in 0..LAYERS {
        add(&mut w, format!("blk.{l}.attn_norm.weight"), &[HIDDEN]);
        add(&mut w, format!("blk.{l}.attn_q.weight"), &[HIDDEN, HIDDEN]);
        add(
            &mut w,
            format!("blk.{l}.attn_k.weight"),
            &[HIDDEN, HIDDEN / 2],
        );
        add(
            &mut w,
            format!("blk.{l}.attn_v.weight"),
            &[HIDDEN, HIDDEN / 2],
        );
        add(
            &mut w,
            format!("blk.{l}.attn_output.weight"),
            &[HIDDEN, HIDDEN],
        );
        add(&mut w, format!("blk.{l}.ffn_norm.weight"), &[HIDDEN]);
        add(&mut w, format!("blk.{l}.ffn_gate.weight"), &[HIDDEN, FFN]);
        add(&mut w, format!("blk.{l}.ffn_up.weight"), &[HIDDEN, FFN]);
        add(&mut w, format!("blk.{l}.ffn_down.weight"), &[FFN, HIDDEN]);
    }
    add(&mut w, "output_norm.weight".into(), &[HIDDEN]);
    w.write(path).unwrap();
    path.to_path_buf()
}

fn open(path: &Path) -> Model {
    plugin_built();
    open_checkpoint(path, "", 0, DeviceChoice::FLEX)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

fn logits(model: &Model) -> Vec<f32> {
    let batch = [Example::new(vec![260, 5, 77], vec![3, 200, 2])];
    model.answer_logits(&batch).unwrap().data.to_vec()
}

#[test]
fn a_gguf_file_opens_generates_and_exports_as_a_hugging_face_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_gguf(&dir.path().join("tiny.gguf"), "llama");
    assert!(is_gguf(&file));

    let checkpoint = HfCheckpoint::read(&file).unwrap();
    assert!(checkpoint.is_gguf());
    assert_eq!(checkpoint.architectures, ["LlamaForCausalLM"]);
    assert_eq!(checkpoint.model_type.as_deref(), Some("llama"));
    assert_eq!(checkpoint.eos_token_id(), Some(2));
    assert_eq!(checkpoint.config_path(), file);
    assert!(checkpoint.tokenizer_path().is_none());

    // The tokenizer from the metadata: control tokens whole, digits one by one (smollm).
    let json = checkpoint.tokenizer_json().unwrap().unwrap();
    let tokenizer_file = dir.path().join("tokenizer.json");
    std::fs::write(&tokenizer_file, &json).unwrap();
    let tokenizer = cotune_data::Tokenizer::load(&tokenizer_file).unwrap();
    let ids = tokenizer.encode("<|im_start|>hello world 42");
    assert_eq!(ids[0], 1);
    assert_eq!(tokenizer.decode(&ids), "hello world 42");
    assert_eq!(tokenizer.vocab_size(), 264);

    let model = open(&file);
    assert_eq!(model.spec().architecture.as_str(), "llama");
    assert_eq!(model.spec().vocab_size, 264);
    let prompt = tokenizer.encode("hello");
    let out = model
        .generate(
            &[prompt],
            &GenerateOptions {
                max_new_tokens: 5,
                eos_id: 2,
            },
        )
        .unwrap();
    assert!(out[0].len() <= 5 && out[0].iter().all(|&id| id < 264));

    let folder = dir.path().join("exported");
    model.export_hf(&folder).unwrap();
    assert!(checkpoint.write_tokenizer(&folder).unwrap());
    let exported = HfCheckpoint::read(&folder).unwrap();
    assert_eq!(exported.architectures, ["LlamaForCausalLM"]);
    assert_eq!(exported.eos_token_id(), Some(2));
    assert_eq!(
        std::fs::read_to_string(folder.join("tokenizer.json")).unwrap(),
        json
    );
    let again = open(&folder);
    assert_eq!(logits(&again), logits(&model));
}

#[test]
fn broken_and_foreign_gguf_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let shown = |p: &Path| p.display().to_string();

    let qwen = tiny_gguf(&dir.path().join("qwen.gguf"), "qwen2");
    let e = HfCheckpoint::read(&qwen).unwrap_err().to_string();
    assert!(e.contains(&shown(&qwen)) && e.contains("`qwen2`"), "{e}");

    let good = tiny_gguf(&dir.path().join("good.gguf"), "llama");
    let bytes = std::fs::read(&good).unwrap();
    for len in [3, 30, 300, bytes.len() / 2] {
        let cut = dir.path().join(format!("cut-{len}.gguf"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = HfCheckpoint::read(&cut).map(|_| ());
        // Cut inside the header or metadata: refused on reading; inside the tensor data: the
        // header reads, and the plugin refuses the tensors.
        let e = match e {
            Err(e) => e.to_string(),
            Ok(()) => {
                plugin_built();
                open_checkpoint(&cut, "", 0, DeviceChoice::FLEX)
                    .map(|_| ())
                    .unwrap_err()
                    .to_string()
            }
        };
        assert!(
            e.contains(&shown(&cut)) && e.contains("at byte"),
            "{len}: {e}"
        );
    }

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let e = HfCheckpoint::read(&text).unwrap_err().to_string();
    assert!(
        e.contains(&shown(&text)) && e.contains("not a GGUF file"),
        "{e}"
    );

    // A file without the extension is still recognised by its magic.
    let renamed = dir.path().join("model.bin");
    std::fs::copy(&good, &renamed).unwrap();
    assert!(is_gguf(&renamed));
    assert!(!is_gguf(dir.path()));
}
