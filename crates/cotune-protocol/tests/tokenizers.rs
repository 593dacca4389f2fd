//! Models with tokenizers of their own: every method end to end with per-model tokenizers,
//! devices from Hugging Face folders of three families with their own `tokenizer.json`, and
//! the errors of tokenizers that do not fit.

mod common;

use std::path::{Path, PathBuf};

use cotune_protocol::run_with;

use common::*;

/// The smoke config with per-model tokenizers: the LLM keeps the run's (512), the DPM 400, the
/// geography SLM 300, the chemistry SLM 460; `method` and `alignment` set.
fn per_model(dir: &Path, name: &str, method: &str, alignment: &str) -> PathBuf {
    let text = smoke_text()
        .replace("method = \"co-plms\"", &format!("method = \"{method}\""))
        .replace("rounds = 2", "rounds = 1")
        .replace(
            "transfer = \"local\"",
            &format!("transfer = \"local\"\nalignment = \"{alignment}\""),
        )
        .replace("lora_rank = 2", "lora_rank = 2\ntokenizer = { vocab_size = 400 }")
        .replace(
            "slm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 32,",
            "slm = { plugin = \"gpt2\", tokenizer = { vocab_size = 300 }, config = { vocab_size = 512, n_positions = 64, n_embd = 32,",
        )
        .replace(
            "slm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 24,",
            "slm = { plugin = \"gpt2\", tokenizer = { vocab_size = 460 }, config = { vocab_size = 512, n_positions = 64, n_embd = 24,",
        );
    assert_eq!(
        text.matches("tokenizer = {").count(),
        3,
        "the smoke config changed shape"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_method_runs_with_a_tokenizer_per_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    for method in ["co-plms", "fedmkt", "standalone", "fedavg", "centralized"] {
        let path = per_model(tmp.path(), method, method, "mined");
        let run =
            run_with(&options(path, &runs, &cache)).unwrap_or_else(|e| panic!("{method}: {e:#}"));
        let records = metrics(&run);
        assert_eq!(records.len(), 2, "{method}");
        // Each model's own tokenizer is kept with the run.
        for file in ["device-0-slm.json", "device-1-slm.json"] {
            let t = cotune_data::Tokenizer::load(&run.join("tokenizers").join(file)).unwrap();
            assert!(t.vocab_size() <= 460, "{method}: {file}");
        }
        let vocab = |file: &str| {
            cotune_data::Tokenizer::load(&run.join("tokenizers").join(file))
                .unwrap()
                .vocab_size()
        };
        assert_ne!(vocab("device-0-slm.json"), vocab("device-1-slm.json"));
        // The alignment's time is in the record (summed over the devices' threads).
        let aligned = records[1]
            .alignment_seconds
            .expect("alignment time recorded");
        assert!(aligned.is_finite() && aligned >= 0.0, "{method}");
        if method != "centralized" {
            for d in &records[1].devices {
                let slm = d.slm.expect("the SLMs are scored");
                assert!(slm.em.is_finite(), "{method}");
            }
        }
    }
}

#[test]
fn questions_the_proxy_writes_reach_the_slm_as_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let path = per_model(tmp.path(), "synthetic", "co-plms", "mined");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("transfer = \"local\"", "transfer = \"synthetic\"");
    std::fs::write(&path, text).unwrap();
    let run = run_with(&options(path, &runs, &cache)).unwrap_or_else(|e| panic!("{e:#}"));
    let records = metrics(&run);
    for d in &records[1].devices {
        // The local questions plus the proxy's own (16 asked; a few may come back empty).
        assert!(
            d.losses.transfer_examples > 30,
            "{}: {:?}",
            d.device,
            d.losses
        );
        let slm = d.losses.slm.expect("the SLM learned");
        assert!(slm.kl.is_finite() && slm.kl > 0.0);
    }
}

#[test]
fn uld_runs_and_a_rerun_gives_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let path = per_model(tmp.path(), "uld", "co-plms", "uld");
    let a = metrics(&run_with(&options(path.clone(), &runs, &cache)).unwrap());
    let b = metrics(&run_with(&options(path, &runs, &cache)).unwrap());
    assert_eq!(scores(&a), scores(&b));
    let dpm = a[1].devices[0]
        .losses
        .dpm
        .expect("the proxy learned from the SLM");
    assert!(dpm.kl.is_finite() && dpm.kl > 0.0, "{dpm:?}");
}

#[test]
fn tokenizers_that_do_not_fit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(per_model(tmp.path(), "base", "co-plms", "mined")).unwrap();
    // Larger than the model's embedding: the model, both sizes.
    check_error(
        &base.replace(
            "tokenizer = { vocab_size = 300 }",
            "tokenizer = { vocab_size = 900 }",
        ),
        &["devices[0].slm", "512", "900", "devices[0].slm.tokenizer"],
    );
    // A missing file.
    check_error(
        &base.replace(
            "tokenizer = { vocab_size = 300 }",
            "tokenizer = \"no/such/tokenizer.json\"",
        ),
        &["devices[0].slm", "no/such/tokenizer.json"],
    );
    // An unreadable file.
    let garbage = tmp.path().join("garbage.json");
    std::fs::write(&garbage, "{ this is not json").unwrap();
    check_error(
        &base.replace(
            "tokenizer = { vocab_size = 300 }",
            &format!("tokenizer = {:?}", garbage.display().to_string()),
        ),
        &["devices[0].slm", "garbage.json"],
    );
    // "shared" with two vocabularies: both models and both sizes.
    check_error(
        &base.replace("alignment = \"mined\"", "alignment = \"shared\""),
        &["train.alignment", "shared", "llm", "dpm", "512", "400"],
    );
    // A tokenizer table with a typo, and one too small to hold the bytes.
    check_error(
        &base.replace("{ vocab_size = 300 }", "{ vocab_sise = 300 }"),
        &["vocab_sise", "vocab_size"],
    );
    check_error(
        &base.replace("{ vocab_size = 300 }", "{ vocab_size = 100 }"),
        &["vocab_size = 100", "260"],
    );
    // The DPMs must share one tokenizer.
    let own_dpm = base.replace(
        "init = \"pretrained-public\"",
        "init = \"pretrained-public\"\ndpm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 32, n_layer = 1, n_head = 2 }, lora_rank = 2, tokenizer = { vocab_size = 350 } }",
    )
    .replace("aggregation = \"fedavg\"", "aggregation = \"per-device\"");
    check_error(&own_dpm, &["devices[1].dpm", "one tokenizer", "350", "400"]);
}

/// A copy of a test fixture folder with its own tokenizer of `size` tokens.
fn folder_with_tokenizer(dir: &Path, family: &str, size: usize) -> PathBuf {
    let from = root().join("tests/fixtures/hf").join(family);
    let to = dir.join(family);
    std::fs::create_dir_all(&to).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    let texts: Vec<String> = ["geography", "chemistry", "acronyms", "trivia"]
        .iter()
        .flat_map(|d| {
            let text = std::fs::read_to_string(root().join(format!("data/{d}.jsonl"))).unwrap();
            text.lines()
                .take(300)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let t = cotune_data::Tokenizer::train(texts, size).unwrap();
    t.save(&to.join("tokenizer.json")).unwrap();
    to
}

#[test]
fn devices_from_three_families_with_their_own_tokenizers_co_tune() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let folders = [("gpt2", 300), ("llama", 280), ("t5", 320)];
    let mut text = smoke_text().replace("rounds = 2", "rounds = 1").replace(
        "transfer = \"local\"",
        "transfer = \"local\"\nalignment = \"mined\"",
    );
    let start = text.find("[[devices]]").unwrap();
    text.truncate(start);
    for ((family, size), domain) in folders.iter().zip(["geography", "chemistry", "acronyms"]) {
        let folder = folder_with_tokenizer(tmp.path(), family, *size);
        text.push_str(&format!(
            "[[devices]]\ndomain = \"{domain}\"\ninit = {:?}\nslm = {{}}\n\n",
            folder.display().to_string()
        ));
    }
    let path = tmp.path().join("mixed.toml");
    std::fs::write(&path, text).unwrap();
    let run = run_with(&options(path, &runs, &cache)).unwrap_or_else(|e| panic!("{e:#}"));
    let records = metrics(&run);
    let archs: Vec<&str> = records[0]
        .devices
        .iter()
        .map(|d| d.slm_architecture.as_str())
        .collect();
    assert_eq!(archs, ["gpt2/gpt2", "llama/llama", "t5/t5"]);
    for (i, (_, size)) in folders.iter().enumerate() {
        let t = cotune_data::Tokenizer::load(&run.join(format!("tokenizers/device-{i}-slm.json")))
            .unwrap();
        assert!(t.vocab_size() <= *size, "device {i}");
    }
    for d in &records[1].devices {
        let slm = d.losses.slm.expect("every SLM learned");
        assert!(slm.kl.is_finite() && slm.kl > 0.0, "{}: {slm:?}", d.device);
    }
}
