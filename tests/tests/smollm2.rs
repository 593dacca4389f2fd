//! SmolLM2-135M-Instruct from its GGUF file (`cargo xtask fetch smollm2`): the prompt ids of the
//! tokenizer built from the file's metadata, and cotune's greedy continuations, against
//! `transformers` 5.24.0 (torch 2.15.0) loading the same file (`from_pretrained(folder,
//! gguf_file=...)`, its tokenizer's ids, `generate(do_sample=False)`), run 2026-12-01 on the file
//! with the sha256 below; an independent NumPy forward pass over llama.cpp's own reader and
//! dequantisers (`scripts/gguf_llama_reference.py`) gives the same ids. The file is about 98 MB
//! and CI does not download it: without it the test says it was skipped and passes; the tiny
//! GGUF files of `plugins/llama/tests/gguf.rs` and `crates/cotune-host/tests/gguf_checkpoint.rs`
//! run everywhere.

use std::path::PathBuf;
use std::process::Command;

use cotune_host::{open_checkpoint, DeviceChoice, GenerateOptions, HfCheckpoint};
use cotune_tests::{target_dir, workspace_root};

/// sha256 b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53.
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// (prompt, its ids, transformers' 12 greedy ids)
const CASES: [(&str, &[u32], [u32; 12]); 3] = [
    (
        "The capital of France is",
        &[504, 3575, 282, 4649, 314],
        [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
    ),
    (
        "Question: What is the chemical symbol for gold?\nAnswer:",
        &[
            17872, 42, 1812, 314, 260, 2819, 3573, 327, 4231, 47, 198, 21350, 42,
        ],
        [
            6920, 314, 253, 3452, 30147, 284, 3172, 4718, 28, 351, 253, 2819,
        ],
    ),
    (
        "In 1984, 12345 people",
        &[788, 216, 33, 41, 40, 36, 28, 216, 33, 34, 35, 36, 37, 701],
        [4242, 281, 260, 216, 34, 32, 33, 40, 29, 34, 32, 34],
    ),
];

/// The model cache of `cargo xtask fetch` (`COTUNE_MODEL_CACHE`, `XDG_CACHE_HOME/cotune/models`
/// or `~/.cache/cotune/models`).
fn cached_file() -> Option<PathBuf> {
    let dir = std::env::var_os("COTUNE_MODEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("cotune/models"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cotune/models"))
        })?;
    Some(dir.join(FILE)).filter(|p| p.is_file())
}

#[test]
fn smollm2_from_gguf_matches_the_reference() {
    let Some(file) = cached_file() else {
        eprintln!("skipped: {FILE} is not in the model cache (cargo xtask fetch smollm2)");
        return;
    };
    let checkpoint = HfCheckpoint::read(&file).unwrap();
    let json = checkpoint
        .tokenizer_json()
        .unwrap()
        .expect("SmolLM2's metadata has a tokenizer");
    let tokenizer = cotune_data::Tokenizer::from_json_text(&json, &file).unwrap();
    for (text, ids, _) in CASES {
        assert_eq!(tokenizer.encode(text), ids, "{text:?}");
    }
    let (_, release) = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace_root())
        .args(["build", "-p", "cotune-llama"]);
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "building the llama plugin"
    );
    let (_, model) = open_checkpoint(&file, "", 0, DeviceChoice::FLEX).unwrap();
    let spec = model.spec();
    assert_eq!((spec.vocab_size, spec.num_params), (49_152, 134_515_008));
    let prompts: Vec<Vec<u32>> = CASES.iter().map(|(_, ids, _)| ids.to_vec()).collect();
    let options = GenerateOptions {
        max_new_tokens: 12,
        // `<|im_end|>`: none of the reference's continuations reaches it.
        eos_id: 2,
    };
    let out = model.generate(&prompts, &options).unwrap();
    for ((text, _, expect), got) in CASES.iter().zip(out) {
        assert_eq!(got, expect, "{text:?}");
    }
}
