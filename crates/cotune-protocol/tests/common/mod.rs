//! What the end-to-end tests share: the workspace root, the smoke config, run options with
//! their own folders, reading a run's records, and checking a refused config's message.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use cotune_protocol::{check_config, RoundRecord, RunOptions};

pub fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

pub fn smoke_text() -> String {
    std::fs::read_to_string(root().join("configs/smoke.toml")).unwrap()
}

pub fn options(config: PathBuf, runs: &Path, cache: &Path) -> RunOptions {
    RunOptions {
        config,
        resume: None,
        root: root(),
        runs_dir: Some(runs.to_path_buf()),
        cache_dir: Some(cache.to_path_buf()),
    }
}

pub fn metrics(run: &Path) -> Vec<RoundRecord> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics line parses"))
        .collect()
}

/// The scores of a record, without wall times.
pub fn scores(records: &[RoundRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::to_string(&(&r.devices, &r.llm)).unwrap())
        .collect()
}

pub fn check_error(text: &str, expect: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", check_config(&path, &root()).unwrap_err());
    for e in expect {
        assert!(err.contains(e), "{err:?} should mention {e:?}");
    }
    assert!(err.contains("bad.toml"), "{err}");
}

/// A finished run of `rounds` rounds wrote every file a run writes, and they parse.
pub fn check_outputs(run: &Path, rounds: usize) {
    let records = metrics(run);
    assert_eq!(records.len(), rounds + 1, "round 0 plus every round");
    for file in [
        "config.resolved.toml",
        "results.md",
        "results.csv",
        "tokenizer.json",
        "plots/em.svg",
        "plots/rouge_l.svg",
    ] {
        assert!(run.join(file).is_file(), "{} has no {file}", run.display());
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let width = csv.lines().next().unwrap().split(',').count();
    assert!(csv.lines().all(|l| l.split(',').count() == width), "{csv}");
    let last = run.join(format!("predictions/round-{rounds}"));
    let files: Vec<_> = std::fs::read_dir(&last).unwrap().collect();
    assert!(!files.is_empty(), "no predictions in {}", last.display());
    for f in files {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for line in text.lines() {
            let _: cotune_eval::Prediction = serde_json::from_str(line).unwrap();
        }
    }
}
