//! Hugging Face checkpoints in and out, against fixtures made by `transformers` itself
//! (`scripts/hf_fixtures.py` writes `tests/fixtures/hf/<family>/`: a tiny random-weight model
//! folder and `reference.json` with transformers' logits and greedy continuations).
//!
//! For each family: cotune's logits match transformers' to 1e-4, greedy continuations of 10
//! tokens are identical, an export reloads bit-identically and has the fixture's tensor names,
//! shapes and config keys, and every kind of broken folder is refused with a message naming the
//! file and the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use cotune_host::{
    open_checkpoint, DeviceChoice, ErrorKind, Example, GenerateOptions, HostError, Model,
    ParamSelection, Plugin, TrainOptions,
};
use cotune_tests::{target_dir, workspace_root};
use serde_json::Value;

const FAMILIES: [&str; 3] = ["gpt2", "llama", "t5"];

/// Builds the workspace's plugins once (same profile as the tests) so the host finds them in
/// the target folder.
fn plugins_built() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let (_, release) = target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(workspace_root()).args([
            "build",
            "-p",
            "cotune-gpt2",
            "-p",
            "cotune-llama",
            "-p",
            "cotune-t5",
        ]);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("starting cargo");
        assert!(status.success(), "building the plugins failed ({status})");
    });
}

fn fixture(family: &str) -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("hf")
        .join(family)
}

fn reference(family: &str) -> Value {
    let path = fixture(family).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn open(folder: &Path, extra: &str) -> Model {
    plugins_built();
    open_checkpoint(folder, extra, 0, DeviceChoice::FLEX)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

fn open_err(folder: &Path) -> HostError {
    plugins_built();
    match open_checkpoint(folder, "", 0, DeviceChoice::FLEX) {
        Ok((_, model)) => panic!("{} opened as {}", folder.display(), model.label()),
        Err(e) => e,
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A case's input as an example whose answer positions are exactly the positions transformers
/// produced logits for: decoder-only, the first token is the prompt and the rest plus one
/// filler token the answer; encoder-decoder, the source is the prompt and the decoder input
/// after its start token, plus a filler, the answer.
fn case_example(case: &Value) -> (Example, Vec<u32>) {
    match case.get("tokens") {
        Some(tokens) => {
            let tokens = ids(tokens);
            let mut answer = tokens[1..].to_vec();
            answer.push(0);
            (Example::new(tokens[..1].to_vec(), answer), tokens)
        }
        None => {
            let (source, decoder) = (ids(&case["source"]), ids(&case["decoder"]));
            let mut answer = decoder[1..].to_vec();
            answer.push(0);
            (Example::new(source.clone(), answer), source)
        }
    }
}

/// The worst absolute difference between the model's logits and transformers' over every case.
fn max_logit_difference(model: &Model, reference: &Value) -> f32 {
    let mut worst = 0.0f32;
    for case in reference["cases"].as_array().unwrap() {
        let (example, _) = case_example(case);
        let logits = model.answer_logits(&[example]).unwrap();
        let rows = case["logits"].as_array().unwrap();
        assert_eq!(rows.len(), logits.answer_len as usize);
        for (t, row) in rows.iter().enumerate() {
            let got = logits.row(0, t);
            let want = row.as_array().unwrap();
            assert_eq!(got.len(), want.len(), "vocabulary size");
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w.as_f64().unwrap() as f32).abs());
            }
        }
    }
    worst
}

/// Greedy continuations of every case's prompt, with an end-of-sequence id that transformers'
/// continuation never produces (so a correct model runs the full length).
fn greedy(model: &Model, reference: &Value) -> Vec<(Vec<u32>, Vec<u32>)> {
    let steps = reference["greedy_steps"].as_u64().unwrap() as u32;
    let vocab = reference["vocab_size"].as_u64().unwrap() as u32;
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let (_, prompt) = case_example(case);
            let want = ids(&case["greedy"]);
            let eos_id = (0..vocab).rev().find(|id| !want.contains(id)).unwrap();
            let options = GenerateOptions {
                max_new_tokens: steps,
                eos_id,
            };
            let got = model.generate(&[prompt], &options).unwrap().remove(0);
            (got, want)
        })
        .collect()
}

#[test]
fn logits_and_greedy_continuations_match_transformers() {
    for family in FAMILIES {
        let reference = reference(family);
        let model = open(&fixture(family), "");
        assert_eq!(model.spec().architecture.as_str(), family);
        let worst = max_logit_difference(&model, &reference);
        println!("{family}: max |logit difference| to transformers = {worst:e}");
        assert!(worst <= 1e-4, "{family}: logits differ by {worst}");
        for (got, want) in greedy(&model, &reference) {
            assert_eq!(want.len(), 10);
            assert_eq!(got, want, "{family}: greedy continuation");
        }
    }
}

/// Tensor names and shapes of a safetensors file, from its header.
fn safetensors_shapes(path: &Path) -> BTreeMap<String, Vec<u64>> {
    let (header, _) = read_safetensors_header(path);
    header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            (name.clone(), shape)
        })
        .collect()
}

fn read_safetensors_header(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn write_safetensors_header(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let text = serde_json::to_vec(header).unwrap();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn config_keys(folder: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(folder.join("config.json")).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value.as_object().unwrap().keys().cloned().collect()
}

fn bits(model: &Model) -> Vec<(String, Vec<u64>, Vec<u32>)> {
    model
        .export_params(ParamSelection::All)
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.name.to_string(),
                p.shape.to_vec(),
                p.data.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

#[test]
fn exports_reload_bit_identically_with_the_fixtures_names_shapes_and_keys() {
    let out = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let source = fixture(family);
        let model = open(&source, "");
        let folder = out.path().join(family);
        model.export_hf(&folder).unwrap();
        let again = open(&folder, "");
        assert!(bits(&model) == bits(&again), "{family}: reload differs");
        assert_eq!(
            safetensors_shapes(&folder.join("model.safetensors")),
            safetensors_shapes(&source.join("model.safetensors")),
            "{family}: tensor names and shapes"
        );
        assert_eq!(config_keys(&folder), config_keys(&source), "{family}");
        assert_eq!(
            std::fs::read(folder.join("tokenizer.json")).unwrap(),
            std::fs::read(source.join("tokenizer.json")).unwrap(),
            "{family}: the tokenizer goes along"
        );
    }
}

/// The fixture's configuration written in the plugin's own TOML keys.
fn own_config(family: &str) -> &'static str {
    match family {
        "gpt2" => "vocab_size = 320\nn_positions = 64\nn_embd = 32\nn_layer = 2\nn_head = 4\n",
        "llama" => "vocab_size = 320\nhidden_size = 32\nintermediate_size = 64\nnum_hidden_layers = 2\nnum_attention_heads = 4\nnum_key_value_heads = 2\nmax_position_embeddings = 64\n",
        _ => "vocab_size = 320\nd_model = 32\nd_kv = 8\nd_ff = 64\nnum_layers = 2\nnum_decoder_layers = 3\nnum_heads = 4\nrelative_attention_num_buckets = 8\nrelative_attention_max_distance = 20\nfeed_forward_proj = \"gated-gelu\"\n",
    }
}

#[test]
fn a_model_built_in_cotune_exports_what_transformers_saves() {
    plugins_built();
    let out = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let plugin = Plugin::find(family).unwrap();
        let model = plugin
            .new_model(family, own_config(family), 3, DeviceChoice::FLEX)
            .unwrap();
        let folder = out.path().join(family);
        model.export_hf(&folder).unwrap();
        let source = fixture(family);
        assert_eq!(
            safetensors_shapes(&folder.join("model.safetensors")),
            safetensors_shapes(&source.join("model.safetensors")),
            "{family}: tensor names and shapes"
        );
        assert_eq!(config_keys(&folder), config_keys(&source), "{family}");
        assert!(!folder.join("tokenizer.json").exists());
        let again = open(&folder, "");
        assert!(bits(&model) == bits(&again), "{family}: reload differs");
    }
}

/// The model's logits and greedy continuations on every case of `reference`, in the layout of
/// `reference.json`, so `scripts/hf_fixtures.py --check <folder> --reference <file>` can hold
/// `transformers` to a model cotune changed.
fn cotune_reference(model: &Model, reference: &Value) -> Value {
    let steps = reference["greedy_steps"].as_u64().unwrap() as u32;
    let cases: Vec<Value> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let (example, prompt) = case_example(case);
            let logits = model.answer_logits(&[example]).unwrap();
            let rows: Vec<Vec<f32>> = (0..logits.answer_len as usize)
                .map(|t| logits.row(0, t).to_vec())
                .collect();
            // An end-of-sequence id past the vocabulary cannot be given; the last id is one
            // these tiny random models practically never produce, and a stop shows as a
            // shorter continuation.
            let options = GenerateOptions {
                max_new_tokens: steps,
                eos_id: model.spec().vocab_size - 1,
            };
            let greedy = model.generate(&[prompt], &options).unwrap().remove(0);
            let mut out = case.clone();
            out["logits"] = serde_json::json!(rows);
            out["greedy"] = serde_json::json!(greedy);
            out
        })
        .collect();
    let mut out = reference.clone();
    out["cases"] = Value::Array(cases);
    out
}

/// Where the adapter test leaves its exports: `$COTUNE_KEEP_HF_EXPORTS/<family>` when that is
/// set (to run `scripts/hf_fixtures.py --check` on them), else a temporary folder.
fn export_folder(family: &str, temp: &Path) -> PathBuf {
    match std::env::var_os("COTUNE_KEEP_HF_EXPORTS") {
        Some(dir) => PathBuf::from(dir).join(format!("{family}-lora-trained")),
        None => temp.join(family),
    }
}

#[test]
fn a_checkpoint_trains_with_adapters_and_exports_them_merged() {
    let temp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let reference = reference(family);
        let mut model = open(&fixture(family), "[lora]\nrank = 2\n");
        assert!(model.spec().num_trainable_params < model.spec().num_params);
        let batch = [case_example(&reference["cases"][0]).0];
        let options = TrainOptions {
            learning_rate: 1e-2,
            ..TrainOptions::default()
        };
        let first = model.train_step(&batch, None, &options).unwrap();
        let mut last = first;
        for _ in 0..5 {
            last = model.train_step(&batch, None, &options).unwrap();
        }
        assert!(last.loss < first.loss, "{family}: {first:?} then {last:?}");
        let trained = cotune_reference(&model, &reference);

        let folder = export_folder(family, temp.path());
        model.export_hf(&folder).unwrap();
        assert_eq!(
            safetensors_shapes(&folder.join("model.safetensors")),
            safetensors_shapes(&fixture(family).join("model.safetensors")),
            "{family}: adapters are merged, not exported"
        );
        let text = serde_json::to_string(&trained).unwrap();
        std::fs::write(folder.join("cotune-reference.json"), text).unwrap();

        let merged = open(&folder, "");
        let worst = max_logit_difference(&merged, &trained);
        println!("{family}: merged export vs the trained model with adapters: {worst:e}");
        assert!(
            worst < 1e-4,
            "{family}: merged weights change the logits by {worst}"
        );
        let before = max_logit_difference(&merged, &reference);
        assert!(
            before > 1e-3,
            "{family}: training changed nothing ({before})"
        );
    }
}

/// A copy of `family`'s fixture folder to break.
fn copy_fixture(family: &str, to: &Path) -> PathBuf {
    let folder = to.join(family);
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(family).join(file), folder.join(file)).unwrap();
    }
    folder
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_fixture("gpt2", dir.path());
    std::fs::remove_file(folder.join("model.safetensors")).unwrap();
    let e = open_err(&folder);
    assert_eq!(e.plugin_kind(), Some(ErrorKind::Io), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");

    std::fs::remove_file(folder.join("config.json")).unwrap();
    let e = open_err(&folder).to_string();
    assert!(e.contains("config.json"), "{e}");

    let e = open_err(&dir.path().join("no-such-folder")).to_string();
    assert!(
        e.contains("no-such-folder") && e.contains("no such folder"),
        "{e}"
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_fixture("gpt2", dir.path());
    let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
    std::fs::write(
        folder.join("config.json"),
        config.replace("GPT2LMHeadModel", "MysteryForCausalLM"),
    )
    .unwrap();
    let e = open_err(&folder).to_string();
    assert!(
        e.contains("MysteryForCausalLM") && e.contains("config.json"),
        "{e}"
    );
    assert!(
        e.contains("GPT2LMHeadModel"),
        "the plugins found are listed: {e}"
    );

    // A plugin asked to load another family's folder names both classes.
    let plugin = Plugin::find("gpt2").unwrap();
    let e = plugin
        .new_model_from_hf("gpt2", fixture("llama"), "", 0, DeviceChoice::FLEX)
        .unwrap_err();
    assert_eq!(e.plugin_kind(), Some(ErrorKind::UnknownArchitecture), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("LlamaForCausalLM") && e.contains("GPT2LMHeadModel"),
        "{e}"
    );
}

#[test]
fn unsupported_config_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_fixture("llama", dir.path());
    let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
    std::fs::write(
        folder.join("config.json"),
        config.replace("\"silu\"", "\"gelu\""),
    )
    .unwrap();
    let e = open_err(&folder);
    assert_eq!(e.plugin_kind(), Some(ErrorKind::InvalidConfig), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("`hidden_act`") && e.contains("gelu") && e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn missing_misshaped_and_unexpected_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_fixture("gpt2", dir.path());
    let weights = folder.join("model.safetensors");
    let (header, data) = read_safetensors_header(&weights);

    let mut missing = header.clone();
    missing.remove("transformer.h.1.mlp.c_fc.weight");
    write_safetensors_header(&weights, &missing, &data);
    let e = open_err(&folder);
    assert_eq!(e.plugin_kind(), Some(ErrorKind::UnknownParameter), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("transformer.h.1.mlp.c_fc.weight")
            && e.contains("missing"),
        "{e}"
    );

    // The same bytes under a transposed shape.
    let mut misshaped = header.clone();
    misshaped["transformer.wpe.weight"]["shape"] = serde_json::json!([32, 64]);
    write_safetensors_header(&weights, &misshaped, &data);
    let e = open_err(&folder);
    assert_eq!(e.plugin_kind(), Some(ErrorKind::ShapeMismatch), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("transformer.wpe.weight") && e.contains("[32, 64]") && e.contains("[64, 32]"),
        "{e}"
    );

    let mut extra = header.clone();
    let copy = extra["transformer.ln_f.bias"].clone();
    extra.insert("transformer.h.2.ln_1.bias".into(), copy);
    write_safetensors_header(&weights, &extra, &data);
    let e = open_err(&folder).to_string();
    assert!(
        e.contains("transformer.h.2.ln_1.bias") && e.contains("no place"),
        "{e}"
    );
}
