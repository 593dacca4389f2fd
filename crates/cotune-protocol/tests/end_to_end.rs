//! End-to-end runs of `configs/smoke.toml`: every method writes a run folder whose files exist
//! and parse; a run stopped after round 1 and resumed ends with the same metrics; bad configs
//! fail before any training. Needs the plugins built (`cargo build --workspace`).

use std::path::{Path, PathBuf};

use cotune_protocol::{check_config, run_with, Method, RoundRecord, RunOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn smoke_text() -> String {
    std::fs::read_to_string(root().join("configs/smoke.toml")).unwrap()
}

/// Writes `text` with `method` and `rounds` replaced to a file in `dir`.
fn variant(dir: &Path, name: &str, method: &str, rounds: usize, extra: &str) -> PathBuf {
    let text = smoke_text()
        .replace("method = \"co-plms\"", &format!("method = \"{method}\""))
        .replace("rounds = 2", &format!("rounds = {rounds}"))
        .replace(
            "transfer = \"local\"",
            if extra.is_empty() {
                "transfer = \"local\""
            } else {
                extra
            },
        );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn options(config: PathBuf, runs: &Path, cache: &Path) -> RunOptions {
    RunOptions {
        config,
        resume: None,
        root: root(),
        runs_dir: Some(runs.to_path_buf()),
        cache_dir: Some(cache.to_path_buf()),
    }
}

fn metrics(run: &Path) -> Vec<RoundRecord> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics line parses"))
        .collect()
}

/// The scores of a record, without wall times.
fn scores(records: &[RoundRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::to_string(&(&r.devices, &r.llm)).unwrap())
        .collect()
}

fn check_outputs(run: &Path, rounds: usize) {
    let records = metrics(run);
    assert_eq!(records.len(), rounds + 1, "round 0 plus every round");
    for file in [
        "config.resolved.toml",
        "results.md",
        "results.csv",
        "tokenizer.json",
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

#[test]
fn every_method_runs_the_smoke_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    for method in Method::ALL {
        let config = variant(tmp.path(), method.name(), method.name(), 2, "");
        let run = run_with(&options(config, &runs, &cache))
            .unwrap_or_else(|e| panic!("{}: {e:#}", method.name()));
        check_outputs(&run, 2);
        let records = metrics(&run);
        let last = records.last().unwrap();
        if method.uses_dpm() {
            assert!(last
                .devices
                .iter()
                .all(|d| d.bytes_up > 0 && d.bytes_down > 0));
            assert!(last.devices.iter().all(|d| d.dpm.is_some()));
        }
        if method == Method::Standalone {
            assert!(last
                .devices
                .iter()
                .all(|d| d.bytes_up == 0 && d.bytes_down == 0));
        }
    }
    for transfer in ["public", "synthetic"] {
        let extra = format!("transfer = \"{transfer}\"");
        let config = variant(tmp.path(), transfer, "co-plms", 1, &extra);
        let run = run_with(&options(config, &runs, &cache)).unwrap();
        check_outputs(&run, 1);
        let records = metrics(&run);
        let n = records[1].devices[0].losses["transfer_examples"]
            .as_u64()
            .unwrap();
        assert!(n >= 39 + 16, "{transfer} adds transfer examples: {n}");
    }
}

#[test]
fn a_resumed_run_ends_with_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let full = run_with(&options(
        variant(tmp.path(), "full", "co-plms", 2, ""),
        &runs,
        &cache,
    ))
    .unwrap();
    // Stopped after round 1: the same run with one round, then told it has two and resumed.
    let cut = run_with(&options(
        variant(tmp.path(), "cut", "co-plms", 1, ""),
        &runs,
        &cache,
    ))
    .unwrap();
    let resolved = cut.join("config.resolved.toml");
    let text = std::fs::read_to_string(&resolved).unwrap();
    std::fs::write(&resolved, text.replace("rounds = 1", "rounds = 2")).unwrap();
    let resumed = run_with(&RunOptions {
        resume: Some(cut.clone()),
        ..options(PathBuf::new(), &runs, &cache)
    })
    .unwrap();
    assert_eq!(resumed, cut);
    assert_eq!(scores(&metrics(&full)), scores(&metrics(&resumed)));
}

fn check_error(text: &str, expect: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", check_config(&path, &root()).unwrap_err());
    for e in expect {
        assert!(err.contains(e), "{err:?} should mention {e:?}");
    }
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn bad_configs_fail_before_training() {
    let smoke = smoke_text();
    check_error(
        &smoke.replace("method = \"co-plms\"", "method = \"co-plms-turbo\""),
        &["co-plms-turbo", "method"],
    );
    check_error(
        &smoke.replace("domain = \"chemistry\"", "domain = \"alchemy\""),
        &["devices[1].domain", "alchemy.jsonl"],
    );
    check_error(
        &smoke.replace(
            "slm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 24",
            "slm = { plugin = \"no-such-arch\", config = { vocab_size = 512, n_positions = 64, n_embd = 24",
        ),
        &["devices[1].slm.plugin", "no-such-arch"],
    );
    let own_dpm = smoke.replace(
        "init = \"pretrained-public\"",
        "init = \"pretrained-public\"\ndpm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 16, n_layer = 1, n_head = 2 } }",
    );
    check_error(&own_dpm, &["devices[1].dpm", "FedAvg"]);
    // The same devices are fine when the server keeps one DPM per device.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ok.toml");
    std::fs::write(
        &path,
        own_dpm.replace("aggregation = \"fedavg\"", "aggregation = \"per-device\""),
    )
    .unwrap();
    check_config(&path, &root()).unwrap();
    check_error(
        &smoke.replace("rounds = 2", "rounds = 2\nroundz = 3"),
        &["roundz"],
    );
}
