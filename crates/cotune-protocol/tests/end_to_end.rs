//! End-to-end runs of `configs/smoke.toml`: every method writes a run folder whose files exist
//! and parse; a run stopped after round 1 and resumed ends with the same metrics; bad configs
//! fail before any training. Needs the plugins built (`cargo build --workspace`).

use std::path::{Path, PathBuf};

use cotune_protocol::{check_config, run_with, Method, RoundRecord, RunOptions};

mod common;
use common::*;

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

/// The records of `run` without wall times.
fn without_times(records: Vec<RoundRecord>) -> Vec<RoundRecord> {
    records
        .into_iter()
        .map(|r| RoundRecord { seconds: 0.0, ..r })
        .collect()
}

/// The smoke run's metrics are pinned, round by round and for every method: scores, every
/// loss, and the bytes each device sent and received (`tests/fixtures/smoke/<method>.jsonl`,
/// recorded on an x86-64 CPU with AVX2 and FMA by the runner before its renovation). A change
/// that moves any number fails here; one that means to (a new seed stream, another data split)
/// records the files anew from a run of `configs/smoke.toml` per method, with `seconds` zeroed
/// (`COTUNE_PIN_OUT=<folder> cargo test -p cotune-protocol --test end_to_end every_method`
/// writes them there), and says why in its commit.
///
/// Same config and seed give bit-identical numbers on the same machine (the resume test checks
/// that exactly); across CPUs the kernels pick other instruction sets (AVX-512 against AVX2),
/// which moves losses in their seventh digit. So integers (bytes, steps, counts) and the
/// structure must match exactly, and every float to within `1e-5 + 1e-4 * |pinned|`: a score
/// flip moves a score by at least one question, far beyond that.
fn check_pinned(method: &str, records: Vec<RoundRecord>) {
    let path = root().join(format!(
        "crates/cotune-protocol/tests/fixtures/smoke/{method}.jsonl"
    ));
    let got = without_times(records);
    // Recording anew: `COTUNE_PIN_OUT=<folder>` writes what this run got there, one file per
    // method, instead of comparing (to be reviewed and copied over the pinned files).
    if let Some(dir) = std::env::var_os("COTUNE_PIN_OUT") {
        let lines: Vec<String> = got
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::path::Path::new(&dir).join(format!("{method}.jsonl"));
        std::fs::write(out, lines.join("\n") + "\n").unwrap();
        return;
    }
    let pinned = cotune_protocol::records::read_metrics(&path).unwrap();
    assert_eq!(got.len(), pinned.len(), "{method}: rounds");
    for (g, p) in got.iter().zip(&pinned) {
        let (gv, pv) = (
            serde_json::to_value(g).unwrap(),
            serde_json::to_value(p).unwrap(),
        );
        if let Err(at) = close(&gv, &pv, "") {
            panic!(
                "{method}: round {} moved from its pinned numbers in {} at {at}\n got: {g:?}\n pinned: {p:?}",
                p.round,
                path.display()
            );
        }
    }
}

/// Whether `got` matches `pinned` as `check_pinned` says; else the path where it does not.
fn close(got: &serde_json::Value, pinned: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    match (got, pinned) {
        (Value::Number(g), Value::Number(p)) if g.is_f64() || p.is_f64() => {
            let (g, p) = (g.as_f64().unwrap(), p.as_f64().unwrap());
            if (g - p).abs() <= 1e-5 + 1e-4 * p.abs() {
                Ok(())
            } else {
                Err(format!("{at}: {g} against {p}"))
            }
        }
        (Value::Array(g), Value::Array(p)) if g.len() == p.len() => g
            .iter()
            .zip(p)
            .enumerate()
            .try_for_each(|(i, (g, p))| close(g, p, &format!("{at}[{i}]"))),
        (Value::Object(g), Value::Object(p)) if g.len() == p.len() => {
            p.iter().try_for_each(|(k, p)| {
                let g = g.get(k).ok_or(format!("{at}.{k}: missing"))?;
                close(g, p, &format!("{at}.{k}"))
            })
        }
        _ if got == pinned => Ok(()),
        _ => Err(format!("{at}: {got} against {pinned}")),
    }
}

#[test]
fn every_method_runs_the_smoke_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    for method in Method::all() {
        if method.name() == "llm-kd" {
            // It answers the field benchmark's prompts: run on configs/field-smoke.toml below.
            continue;
        }
        let config = variant(tmp.path(), method.name(), method.name(), 2, "");
        let run = run_with(&options(config, &runs, &cache))
            .unwrap_or_else(|e| panic!("{}: {e:#}", method.name()));
        check_outputs(&run, 2);
        let records = metrics(&run);
        check_pinned(method.name(), records.clone());
        let last = records.last().unwrap();
        if method.uses_dpm() {
            assert!(last
                .devices
                .iter()
                .all(|d| d.bytes_up > 0 && d.bytes_down > 0));
            assert!(last.devices.iter().all(|d| d.dpm.is_some()));
        }
        if method.name() == "fedmkt" {
            // Knowledge (top-k distributions) crosses the network, parameters do not.
            assert!(last
                .devices
                .iter()
                .all(|d| d.bytes_up > 0 && d.bytes_down > 0 && d.dpm.is_none()));
            assert!(last.llm.is_some(), "fedmkt trains the LLM");
        }
        if method.name() == "seq-kd" {
            // The LLM's answers reach every device once, at setup; nothing goes up.
            let first = &records[1].devices;
            assert!(first.iter().all(|d| d.bytes_down > 0 && d.bytes_up == 0));
            assert!(first.iter().all(|d| d.losses.transfer_examples > 0));
            assert!(last.devices.iter().all(|d| d.bytes_down == 0));
        }
        if method.name() == "standalone" {
            assert!(last
                .devices
                .iter()
                .all(|d| d.bytes_up == 0 && d.bytes_down == 0));
        }
    }
    // One DPM per device on the server: each device's pair learns on its own, pinned too.
    let path = tmp.path().join("per-device.toml");
    std::fs::write(
        &path,
        smoke_text().replace("aggregation = \"fedavg\"", "aggregation = \"per-device\""),
    )
    .unwrap();
    let run = run_with(&options(path, &runs, &cache)).unwrap();
    check_outputs(&run, 2);
    let records = metrics(&run);
    assert_eq!(records[1].server_losses.per_device.len(), 2);
    check_pinned("co-plms-per-device", records);
    for transfer in ["public", "synthetic"] {
        let extra = format!("transfer = \"{transfer}\"");
        let config = variant(tmp.path(), transfer, "co-plms", 1, &extra);
        let run = run_with(&options(config, &runs, &cache)).unwrap();
        check_outputs(&run, 1);
        let records = metrics(&run);
        let n = records[1].devices[0].losses.transfer_examples;
        assert!(n >= 39 + 16, "{transfer} adds transfer examples: {n}");
    }
}

#[test]
fn a_resumed_run_ends_with_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    // co-plms keeps a proxy on every device; seq-kd keeps the LLM's answers, which it saves
    // and restores itself.
    for method in ["co-plms", "seq-kd"] {
        let full = run_with(&options(
            variant(tmp.path(), &format!("{method}-full"), method, 2, ""),
            &runs,
            &cache,
        ))
        .unwrap();
        // Stopped after round 1: the same run with one round, then told it has two and resumed.
        let cut = run_with(&options(
            variant(tmp.path(), &format!("{method}-cut"), method, 1, ""),
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
        assert_eq!(
            scores(&metrics(&full)),
            scores(&metrics(&resumed)),
            "{method}"
        );
    }
}

/// Runs `text` for real, in folders of its own, and returns the error it must fail with;
/// asserts it wrote no run folder and no cache.
fn refused_run(text: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let path = tmp.path().join("refused.toml");
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", run_with(&options(path, &runs, &cache)).unwrap_err());
    assert!(
        !runs.exists() && !cache.exists(),
        "a refused run wrote {runs:?} or {cache:?}: {err}"
    );
    err
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
    // A typo in a model's own config keys is the plugin's to find, and it is found before any
    // data split or training, naming the model's key and the bad one, once.
    for (from, to, key) in [
        ("n_embd = 24", "n_embdd = 24", "devices[1].slm.config"),
        (
            "n_embd = 48, n_layer = 2",
            "n_embd = 48, n_layr = 2",
            "llm.config",
        ),
        (
            "n_embd = 32, n_layer = 1, n_head = 2 }\nlora_rank",
            "n_embd = 32, n_layer = 1, n_head = 0 }\nlora_rank",
            "dpm.config",
        ),
    ] {
        assert!(smoke.contains(from), "{from}");
        let bad = smoke.replace(from, to);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let err = format!("{:#}", check_config(&path, &root()).unwrap_err());
        assert!(err.contains(key), "{err}");
        assert!(
            err.contains(&to[..to.find(' ').unwrap()]) || err.contains("n_head"),
            "{err}"
        );
        assert_eq!(err.matches("gpt2/gpt2").count(), 1, "{err}");
    }
    // Run for real, a typo in the LLM's table stops the run before anything is written.
    let err = refused_run(&smoke.replace("n_embd = 48, n_layer = 2", "n_embd = 48, n_layr = 2"));
    assert!(
        err.contains("llm.config") && err.contains("n_layr"),
        "{err}"
    );
    // So does a bad training value, though training would first read it in round 1, after
    // pre-training has filled the cache (the unit tests of `validation` try every key).
    let rate = "slm = { learning_rate = 3e-3, batch_size = 16 }";
    assert!(smoke.contains(rate), "the smoke config changed shape");
    let err = refused_run(&smoke.replace(rate, "slm = { learning_rate = -3e-3, batch_size = 16 }"));
    assert!(
        err.contains("train.slm.learning_rate") && err.contains("got -0.003"),
        "{err}"
    );
    let err = refused_run(&smoke.replace("kl_weight = 0.7", "kl_weight = 1.7"));
    assert!(
        err.contains("distill.train.kl_weight") && err.contains("got 1.7"),
        "{err}"
    );
    // A tokenizer larger than the models' vocabulary is refused before the run folder is
    // made, naming the model once and both sizes.
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let path = tmp.path().join("vocab.toml");
    std::fs::write(
        &path,
        smoke.replacen("vocab_size = 512", "vocab_size = 700", 1),
    )
    .unwrap();
    let err = format!("{:#}", run_with(&options(path, &runs, &cache)).unwrap_err());
    assert!(err.contains("512") && err.contains("700"), "{err}");
    assert_eq!(err.matches("gpt2/gpt2").count(), 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "a refused run left {left:?}");
    // A model whose context cannot hold a prompt and its answer.
    check_error(
        &smoke.replace(
            "n_positions = 64, n_embd = 24",
            "n_positions = 32, n_embd = 24",
        ),
        &["devices[1].slm.config", "context of 32", "64"],
    );
    // A proxy cut from the LLM needs the LLM's width: refused before training, naming a tensor.
    check_error(
        &smoke.replace("lora_rank = 2", "lora_rank = 2\ninit = \"llm-layers\""),
        &["dpm.init", "llm-layers", "shape", "LLM"],
    );
    check_error(
        &smoke.replace(
            "transfer = \"local\"",
            "transfer = \"local\"\ngate_sharpness = 0",
        ),
        &["train.gate_sharpness", "0"],
    );
    check_error(
        &smoke.replace(
            "transfer = \"local\"",
            "transfer = \"local\"\ntransfer_select = \"similar\"",
        ),
        &["train.transfer_select", "\"local\""],
    );
}

/// The levers of co-tuning together: SLMs pre-trained without their own domain, a proxy cut
/// from the LLM's layers, gated mutual learning on both sides, public questions chosen by
/// similarity on the device; the round-0 table is written.
#[test]
fn general_slms_a_cut_proxy_and_gated_saml_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let text = smoke_text()
        .replace(
            "config = { vocab_size = 512, n_positions = 64, n_embd = 32, n_layer = 1, n_head = 2 }\nlora_rank = 2",
            "config = { vocab_size = 512, n_positions = 64, n_embd = 48, n_layer = 1, n_head = 4 }\nlora_rank = 2\ninit = \"llm-layers\"",
        )
        .replace("init = \"pretrained-public\"", "init = \"pretrained-general\"")
        .replace(
            "transfer = \"local\"",
            "transfer = \"public\"\ntransfer_select = \"similar\"\nsaml = \"gated\"\ngate_sharpness = 2.0",
        );
    assert!(text.contains("llm-layers") && text.contains("pretrained-general"));
    let config = tmp.path().join("levers.toml");
    std::fs::write(&config, text).unwrap();
    let run = run_with(&options(config, &runs, &cache)).unwrap();
    check_outputs(&run, 2);
    let records = metrics(&run);
    let gate = |r: Option<&cotune_distill::EpochReport>| r.and_then(|r| r.gate);
    for record in &records[1..] {
        for d in &record.devices {
            assert!(d.losses.transfer_examples > 0);
            for g in [gate(d.losses.slm.as_ref()), gate(d.losses.dpm.as_ref())] {
                let g = g.expect("gated SAML records its mean gate");
                assert!(g > 0.0 && g < 1.0, "gate {g}");
            }
        }
        let g = gate(record.server_losses.llm.as_ref()).expect("the server side is gated too");
        assert!(g > 0.0 && g < 1.0, "gate {g}");
    }
    let results = std::fs::read_to_string(run.join("results.md")).unwrap();
    let table = results
        .split("## Before co-tuning (round 0, %)")
        .nth(1)
        .expect("results.md has the round-0 table");
    for domain in ["geography", "chemistry", "**average**"] {
        assert!(table.contains(&format!("| {domain} |")), "{table}");
    }
    // Two pre-trainings were cached: the LLM's and the chemistry SLM's (on the public corpus
    // without chemistry; `setup`'s unit test checks the corpus).
    let pretrained = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("pretrain-")
        })
        .count();
    assert_eq!(pretrained, 2, "the LLM and one general SLM");
}

/// Names `config`, `runs` and `cache` folders (one a line) for [`run_in_a_child_process`].
const CHILD_RUN: &str = "COTUNE_TEST_CHILD_RUN";

/// Not a test of its own: the process `a_killed_run_resumes_to_the_same_metrics` starts and
/// kills. Without its variable it has nothing to run.
#[test]
fn run_in_a_child_process() {
    let Ok(spec) = std::env::var(CHILD_RUN) else {
        return;
    };
    let parts: Vec<&str> = spec.lines().collect();
    let [config, runs, cache] = parts[..] else {
        panic!("{CHILD_RUN} names a config, a runs folder and a cache folder, got {spec:?}");
    };
    run_with(&options(config.into(), Path::new(runs), Path::new(cache))).unwrap();
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let config = variant(tmp.path(), "killed", "co-plms", 3, "");
    // The uninterrupted run (it also fills the pre-training cache).
    let full = run_with(&options(config.clone(), &runs, &cache)).unwrap();
    // The same run in another process (this test binary running `run_in_a_child_process`),
    // killed as soon as round 1's checkpoint is complete.
    let killed_runs = tmp.path().join("killed-runs");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "run_in_a_child_process", "--nocapture"])
        .env(
            CHILD_RUN,
            format!(
                "{}\n{}\n{}",
                config.display(),
                killed_runs.display(),
                cache.display()
            ),
        )
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let run_dir = loop {
        let state = std::fs::read_dir(&killed_runs).ok().and_then(|mut d| {
            d.next()
                .map(|e| e.unwrap().path())
                .filter(|p| p.join("state/state.json").is_file())
        });
        if let Some(dir) = state {
            child.kill().unwrap();
            break dir;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run exited ({status}) before round 1 was checkpointed");
        }
        assert!(
            started.elapsed().as_secs() < 600,
            "no checkpoint after 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.wait().unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("state/state.json")).unwrap())
            .unwrap();
    let completed = state["completed"].as_u64().unwrap();
    assert!(completed < 3, "killed after round {completed} of 3");
    assert!(
        !run_dir.join("results.md").exists(),
        "the killed run must not have finished"
    );
    let resumed = run_with(&RunOptions {
        resume: Some(run_dir.clone()),
        ..options(PathBuf::new(), &killed_runs, &cache)
    })
    .unwrap();
    assert_eq!(resumed, run_dir);
    check_outputs(&resumed, 3);
    assert_eq!(scores(&metrics(&full)), scores(&metrics(&resumed)));
}

#[test]
fn device_threads_do_not_change_the_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let mut outcomes = Vec::new();
    for threads in [1, 2] {
        let path = variant(tmp.path(), &format!("t{threads}"), "co-plms", 1, "");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("seed = 0", &format!("seed = 0\nthreads = {threads}"));
        std::fs::write(&path, text).unwrap();
        let run = run_with(&options(path, &runs, &cache)).unwrap();
        outcomes.push(scores(&metrics(&run)));
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

#[test]
fn a_comparison_runs_every_variant_and_seed_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("configs/smoke.toml"),
        tmp.path().join("smoke.toml"),
    )
    .unwrap();
    let file = tmp.path().join("cmp.toml");
    std::fs::write(
        &file,
        format!(
            r#"[compare]
name = "cmp"
base = "smoke.toml"
seeds = [0, 1]
pretrain_seed = 0
set = {{ rounds = 1, runs_dir = {runs:?}, cache_dir = {cache:?} }}

[[compare.variants]]
name = "co-plms/public"
method = "co-plms"
set = {{ "train.transfer" = "public" }}

[[compare.variants]]
name = "fedmkt"
method = "fedmkt"
set = {{ "devices.*.init" = "random" }}
"#,
            runs = tmp.path().join("runs").display().to_string(),
            cache = tmp.path().join("cache").display().to_string(),
        ),
    )
    .unwrap();
    let dir = cotune_protocol::compare::run_comparison(&file, None, &root(), None).unwrap();
    let md = std::fs::read_to_string(dir.join("comparison.md")).unwrap();
    for needle in ["co-plms/public", "fedmkt", "±", "## EM", "## Rouge-L"] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    let csv = std::fs::read_to_string(dir.join("comparison.csv")).unwrap();
    // Two variants x (2 devices + average + LLM) x 2 metrics + a bytes line per variant.
    assert_eq!(csv.lines().count(), 1 + 2 * 4 * 2 + 2, "{csv}");
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.ends_with(",2") || l.contains("bytes")),
        "{csv}"
    );
    for run in [
        "co-plms-public-seed0",
        "co-plms-public-seed1",
        "fedmkt-seed0",
        "fedmkt-seed1",
    ] {
        check_outputs(&dir.join(run), 1);
    }
    // Resuming a finished comparison reruns nothing and writes the same table.
    let before = std::fs::metadata(dir.join("fedmkt-seed1/metrics.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    let again = cotune_protocol::compare::run_comparison(&file, Some(&dir), &root(), None).unwrap();
    assert_eq!(again, dir);
    let after = std::fs::metadata(dir.join("fedmkt-seed1/metrics.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
    let md2 = std::fs::read_to_string(dir.join("comparison.md")).unwrap();
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("Wall time"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&md), strip(&md2));
}

#[test]
fn bad_comparisons_fail_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("configs/smoke.toml"),
        tmp.path().join("smoke.toml"),
    )
    .unwrap();
    let check = |body: &str, expect: &[&str]| {
        let file = tmp.path().join("bad-cmp.toml");
        std::fs::write(&file, body).unwrap();
        let err = format!(
            "{:#}",
            cotune_protocol::compare::run_comparison(&file, None, &root(), Some(tmp.path()))
                .unwrap_err()
        );
        for e in expect {
            assert!(err.contains(e), "{err:?} should mention {e:?}");
        }
    };
    let head = "[compare]\nname = \"c\"\nbase = \"smoke.toml\"\nseeds = [0]\n";
    check(
        &format!("{head}[[compare.variants]]\nname = \"a\"\nmethod = \"fedprox\"\n"),
        &["fedprox", "variant \"a\""],
    );
    check(
        &format!("{head}[[compare.variants]]\nname = \"a\"\nmethod = \"co-plms\"\nset = {{ \"devices.9.init\" = \"random\" }}\n"),
        &["devices.9.init", "index 9"],
    );
    check(
        "[compare]\nname = \"c\"\nbase = \"nowhere.toml\"\nseeds = [0]\n[[compare.variants]]\nname = \"a\"\nmethod = \"co-plms\"\n",
        &["nowhere.toml"],
    );
    check(
        &format!("{head}colour = 1\n[[compare.variants]]\nname = \"a\"\nmethod = \"co-plms\"\n"),
        &["colour"],
    );
    // A typo in a model table that only one variant sets: found by that variant's plugin before
    // the first run starts.
    check(
        &format!("{head}[[compare.variants]]\nname = \"a\"\nmethod = \"co-plms\"\n[[compare.variants]]\nname = \"b\"\nmethod = \"co-plms\"\nset = {{ \"llm.config.n_embdd\" = 48 }}\n"),
        &["variant \"b\"", "llm.config", "n_embdd"],
    );
    // Nothing was started.
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| {
        let p = e.unwrap().path();
        !p.file_name().unwrap().to_string_lossy().starts_with("c-")
    }));
}

/// A recurrent plugin (no attention; its cache is its hidden state) co-tunes as a device next to
/// GPT-2 models: `configs/gru-device.toml` runs end to end and its SLM learns.
#[test]
fn a_gru_device_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let run = run_with(&options(
        root().join("configs/gru-device.toml"),
        &runs,
        &cache,
    ))
    .unwrap();
    check_outputs(&run, 2);
    let records = metrics(&run);
    let gru: Vec<_> = records
        .iter()
        .flat_map(|r| &r.devices)
        .filter(|d| d.slm_architecture == "gru/gru")
        .collect();
    assert_eq!(gru.len(), 3, "rounds 0, 1 and 2 of the GRU device");
    let ce: Vec<f32> = gru
        .iter()
        .filter_map(|d| d.losses.slm.as_ref().map(|l| l.cross_entropy))
        .collect();
    assert_eq!(ce.len(), 2, "{ce:?}");
    assert!(ce.iter().all(|c| c.is_finite()) && ce[1] < ce[0], "{ce:?}");
}

/// `configs/plugin-check.toml` is what a plugin author compares against: its reference device
/// (device 0, a GPT-2-like SLM from random weights) must reach a clearly non-zero exact match.
#[test]
fn the_plugin_check_reference_device_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let run = run_with(&options(
        root().join("configs/plugin-check.toml"),
        &runs,
        &cache,
    ))
    .unwrap();
    let records = metrics(&run);
    let em = |r: &RoundRecord| r.devices[0].slm.as_ref().expect("SLM scores").em;
    assert_eq!(
        em(&records[0]),
        0.0,
        "the reference SLM starts from random weights"
    );
    let last = em(records.last().unwrap());
    assert!(
        last >= 0.05,
        "the reference device ends at {:.1}% EM",
        100.0 * last
    );
}

#[test]
fn every_shipped_config_passes_its_checks() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A config of a real pre-trained model needs its file (`cargo xtask fetch ...`), which
        // CI does not download: it is checked where the file is present, and said skipped.
        let config = cotune_protocol::ExperimentConfig::parse(&text, &path);
        let missing = config.ok().and_then(|mut c| {
            c.resolve_paths(&root());
            c.llm.checkpoint.filter(|p| !p.exists())
        });
        if let Some(file) = missing {
            eprintln!("skipped {}: {} is not here", path.display(), file.display());
            continue;
        }
        if cotune_protocol::compare::is_comparison(&text) {
            let runs = cotune_protocol::compare::check_comparison(&path, &root())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            // A lever and its reference are the smallest comparison.
            assert!(runs >= 2, "{}: {runs} runs", path.display());
        } else {
            let config = check_config(&path, &root())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            // The split is only made at run time: every party's share (the server's LLM
            // evaluation records included) must fit the data files.
            cotune_data::Benchmark::build(&config.data, &root())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        seen += 1;
    }
    assert!(seen >= 4, "smoke, default, compare and paper configs");
}

#[test]
fn a_device_slm_starts_from_a_hugging_face_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    // A GPT-2 model with the smoke run's vocabulary, written as a Hugging Face folder.
    let plugin = cotune_host::Plugin::find("gpt2").expect("build the plugins first");
    let model_config = "vocab_size = 512\nn_positions = 64\nn_embd = 32\nn_layer = 1\nn_head = 2\n";
    let model = plugin
        .new_model("gpt2", model_config, 77, cotune_host::DeviceChoice::FLEX)
        .unwrap();
    let folder = tmp.path().join("slm-checkpoint");
    model.export_hf(&folder).unwrap();
    let text = smoke_text()
        .replace("method = \"co-plms\"", "method = \"standalone\"")
        .replace("rounds = 2", "rounds = 1")
        .replace(
            "slm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 32, n_layer = 1, n_head = 2 } }",
            &format!("init = {:?}\nslm = {{}}", folder.display().to_string()),
        );
    assert!(text.contains("slm = {}"), "the smoke config changed shape");
    let path = tmp.path().join("from-checkpoint.toml");
    std::fs::write(&path, text).unwrap();
    let run = run_with(&options(path, &runs, &cache)).unwrap();
    check_outputs(&run, 1);
    let records = metrics(&run);
    assert_eq!(records[0].devices[0].slm_architecture, "gpt2/gpt2");
    // Round 0 is the checkpoint itself: its predictions are the exported model's.
    let tokenizer = cotune_data::Tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let lines: Vec<cotune_eval::Prediction> =
        std::fs::read_to_string(run.join("predictions/round-0/geography-slm.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let tests: Vec<cotune_data::QaRecord> = lines
        .iter()
        .map(|p| cotune_data::QaRecord {
            domain: p.domain.clone(),
            question: p.question.clone(),
            answer: p.reference.clone(),
        })
        .collect();
    let config =
        cotune_protocol::ExperimentConfig::load(&run.join("config.resolved.toml")).unwrap();
    let direct = cotune_eval::evaluate(
        &model,
        &tests,
        &tokenizer,
        &config.data.prompt_template,
        &config.eval,
    )
    .unwrap();
    let from_run: Vec<&str> = lines.iter().map(|p| p.prediction.as_str()).collect();
    let from_model: Vec<&str> = direct
        .predictions
        .iter()
        .map(|p| p.prediction.as_str())
        .collect();
    assert_eq!(from_run, from_model);
    // And the run trained it: round 1 has a loss.
    assert!(
        records[1].devices[0]
            .losses
            .slm
            .expect("the SLM trained")
            .steps
            > 0
    );
    // A folder that is not a checkpoint is refused before training, naming it.
    let bad = smoke_text().replace(
        "slm = { plugin = \"gpt2\", config = { vocab_size = 512, n_positions = 64, n_embd = 32, n_layer = 1, n_head = 2 } }",
        "slm = { checkpoint = \"no/such/folder\" }",
    );
    check_error(&bad, &["devices[0].slm.checkpoint", "no/such/folder"]);
}

#[test]
fn split_folders_hold_every_share_and_are_never_written_over() {
    use cotune_protocol::{write_parties, DeviceData, ServerData};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("parties.toml");
    std::fs::write(
        &path,
        smoke_text().replace("transfer = \"local\"", "transfer = \"public\""),
    )
    .unwrap();
    let config = check_config(&path, &root()).unwrap();
    let out = tmp.path().join("parties");
    let written = write_parties(&config, &root(), &out).unwrap();
    assert_eq!(written.len(), 1 + config.devices.len());
    let server = ServerData::read(&written[0], &config).unwrap();
    let devices: Vec<DeviceData> = (0..config.devices.len())
        .map(|i| DeviceData::read(&written[1 + i], &config, i).unwrap())
        .collect();
    // The server holds no device's question; the shares are disjoint.
    let held: std::collections::HashSet<&str> = server
        .public_train
        .iter()
        .chain(&server.public_valid)
        .chain(&server.llm_eval)
        .map(|r| r.question.as_str())
        .collect();
    for d in &devices {
        assert!(!d.train.is_empty() && !d.eval.is_empty(), "{}", d.name);
        for r in d.train.iter().chain(&d.eval) {
            assert!(!held.contains(r.question.as_str()), "{:?}", r.question);
        }
    }
    assert!(!server.llm_eval.is_empty());
    // Device 1 pre-trains its SLM on the public corpus: its folder holds it, device 0's not.
    assert!(devices[1].public.is_some() && devices[0].public.is_none());
    // A party refuses another's folder; a second split leaves the first one whole.
    let err = DeviceData::read(&written[1], &config, 1).err().unwrap();
    assert!(format!("{err:#}").contains("not of device-1"), "{err:#}");
    let before = std::fs::read(written[1].join("train.jsonl")).unwrap();
    let err = write_parties(&config, &root(), &out).err().unwrap();
    assert!(format!("{err:#}").contains("exists"), "{err:#}");
    assert_eq!(
        std::fs::read(written[1].join("train.jsonl")).unwrap(),
        before
    );
}
