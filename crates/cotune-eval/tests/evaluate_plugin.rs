//! The evaluation loop on a real plugin model (a tiny GPT-2): it generates, scores per domain,
//! and writes a predictions file whose lines parse back.
//!
//! Needs the gpt2 plugin built (`cargo build --workspace`).

use cotune_data::{prepare, DataConfig};
use cotune_eval::{evaluate, EvalOptions, Prediction};
use cotune_host::{DeviceChoice, Plugin};

#[test]
fn evaluates_a_gpt2_model_and_writes_predictions() {
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..");
    let config = DataConfig {
        domains: vec!["geography".into(), "chemistry".into()],
        device_train_size: 20,
        valid_size: 5,
        test_size: 6,
        public_valid_size: 10,
        vocab_size: 400,
        ..DataConfig::default()
    };
    let prepared = prepare(&config, &root).expect("the shipped data prepares");
    let plugin = Plugin::find("gpt2").expect("build the plugins first: cargo build --workspace");
    let model_config = format!(
        "vocab_size = {}\nn_positions = 128\nn_embd = 32\nn_layer = 1\nn_head = 2\n",
        prepared.tokenizer.vocab_size()
    );
    let model = plugin
        .new_model("gpt2", &model_config, 1, DeviceChoice::FLEX)
        .expect("a tiny gpt2 builds");
    let records: Vec<_> = prepared
        .benchmark
        .devices
        .iter()
        .flat_map(|d| d.test.iter().cloned())
        .collect();
    let options = EvalOptions {
        max_new_tokens: 5,
        batch_size: 4,
        first_line: false,
    };
    let evaluation = evaluate(
        &model,
        &records,
        &prepared.tokenizer,
        &config.prompt_template,
        &options,
    )
    .expect("evaluation runs");
    assert_eq!(evaluation.predictions.len(), records.len());
    let domains: Vec<&str> = evaluation
        .report
        .per_domain
        .iter()
        .map(|d| d.domain.as_str())
        .collect();
    assert_eq!(domains, ["geography", "chemistry"]);
    assert_eq!(evaluation.report.macro_average.count, 12);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preds/test.jsonl");
    evaluation.write_predictions(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Prediction> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a prediction"))
        .collect();
    assert_eq!(lines, evaluation.predictions);
    for (p, r) in lines.iter().zip(&records) {
        assert_eq!(p.question, r.question);
        assert_eq!(p.reference, r.answer);
        assert!((0.0..=1.0).contains(&p.rouge_l));
    }
}
