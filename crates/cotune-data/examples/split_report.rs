//! Prints the split report, the tokenizer's size and token statistics for a `[data]` config.
//!
//! `cargo run -p cotune-data --example split_report [experiment.toml]` from the workspace root;
//! without an argument the default configuration is used.

use std::path::Path;
use std::time::Instant;

use cotune_data::{prepare, DataConfig};

#[derive(serde::Deserialize)]
struct Experiment {
    #[serde(default)]
    data: DataConfig,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = match std::env::args().nth(1) {
        Some(path) => toml::from_str::<Experiment>(&std::fs::read_to_string(path)?)?.data,
        None => DataConfig::default(),
    };
    let start = Instant::now();
    let prepared = prepare(&config, Path::new("."))?;
    println!("prepared in {:.2?}\n", start.elapsed());
    println!("{}", prepared.summary.to_markdown());
    println!("{}", prepared.lengths.to_markdown());
    let tokenizer = &prepared.tokenizer;
    println!("vocabulary size: {}", tokenizer.vocab_size());
    let train: Vec<_> = prepared
        .benchmark
        .parties()
        .into_iter()
        .filter(|(party, _)| party.ends_with("/train"))
        .flat_map(|(_, records)| records)
        .collect();
    let start = Instant::now();
    let question_tokens: usize = train
        .iter()
        .map(|r| tokenizer.encode(&r.question).len())
        .sum();
    let answer_tokens: usize = train
        .iter()
        .map(|r| tokenizer.encode(&r.answer).len())
        .sum();
    println!(
        "{} training records: mean tokens per question {:.2}, per answer {:.2} (encoded in {:.2?})",
        train.len(),
        question_tokens as f64 / train.len() as f64,
        answer_tokens as f64 / train.len() as f64,
        start.elapsed()
    );
    Ok(())
}
