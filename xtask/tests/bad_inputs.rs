//! Bad inputs across the commands: each is refused with one message that names the thing and
//! the value, says each clause once, and (for `run`) leaves no run folder behind.
//!
//! The `xtask` binary is run as a user runs it; `run` builds the plugins first (a no-op when
//! they are current).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the command printed after `error: `, with the whole stderr for failure messages.
fn fails(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("the xtask binary starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "xtask {args:?} succeeded on a bad input; stderr:\n{stderr}"
    );
    let message = stderr
        .lines()
        .skip_while(|l| !l.starts_with("error: "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !message.is_empty(),
        "xtask {args:?}: no `error: ` line in:\n{stderr}"
    );
    (message["error: ".len()..].to_string(), stderr)
}

/// The message's clauses (separated by `: `) each appear once, and it shows no Rust debug forms.
fn said_once(message: &str) {
    let mut seen = std::collections::HashSet::new();
    for clause in message.split(": ").map(str::trim) {
        if clause.len() > 3 {
            assert!(
                seen.insert(clause),
                "clause {clause:?} appears twice in:\n{message}"
            );
        }
    }
    for debug in ["Some(", "None", "[\"", "Os {"] {
        assert!(!message.contains(debug), "{debug} in:\n{message}");
    }
}

fn check(args: &[&str], names: &[&str]) -> String {
    let (message, stderr) = fails(args);
    for name in names {
        assert!(
            message.contains(name),
            "xtask {args:?}: the message does not name {name:?}:\n{message}\n(stderr:\n{stderr})"
        );
    }
    said_once(&message);
    println!("xtask {args:?}\n  -> {message}");
    message
}

fn root() -> PathBuf {
    cotune_tests::workspace_root()
}

/// The smoke config, edited by `edit`, written to `dir/name` with runs and cache inside `dir`.
fn smoke_variant(dir: &Path, name: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/smoke.toml")).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    table.insert(
        "runs_dir".into(),
        dir.join("runs").display().to_string().into(),
    );
    table.insert(
        "cache_dir".into(),
        dir.join("cache").display().to_string().into(),
    );
    edit(&mut table);
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}

fn device_slm(table: &mut toml::Table, i: usize) -> &mut toml::Table {
    table["devices"].as_array_mut().unwrap()[i]
        .as_table_mut()
        .unwrap()["slm"]
        .as_table_mut()
        .unwrap()
}

fn no_run_folder(dir: &Path) {
    let runs = dir.join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused run left {left:?} behind");
}

#[test]
fn bad_run_configs_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = |p: &Path| p.display().to_string();

    // 1. A missing config file.
    let missing = dir.join("nope.toml");
    check(
        &["run", "--config", &s(&missing)],
        &[&s(&missing), "No such file"],
    );

    // 2. A config that is not TOML.
    let malformed = dir.join("malformed.toml");
    std::fs::write(&malformed, "name = \"x\"\nrounds = = 2\n").unwrap();
    check(
        &["run", "--config", &s(&malformed)],
        &[&s(&malformed), "line 2"],
    );

    // 3. An unknown method.
    let method = smoke_variant(dir, "method.toml", |t| {
        t.insert("method".into(), "co-plm".into());
    });
    check(
        &["run", "--config", &s(&method)],
        &["`method`", "co-plm", "co-plms"],
    );

    // 4. A typo in a device's model config.
    let typo = smoke_variant(dir, "typo.toml", |t| {
        let config = device_slm(t, 1)["config"].as_table_mut().unwrap();
        let width = config.remove("n_embd").unwrap();
        config.insert("n_embdd".into(), width);
    });
    let message = check(
        &["run", "--config", &s(&typo)],
        &["devices[1].slm.config", "n_embdd", "gpt2/gpt2"],
    );
    assert!(message.contains(&s(&typo)), "{message}");

    // 5. An unknown plugin.
    let unknown = smoke_variant(dir, "plugin.toml", |t| {
        device_slm(t, 0).insert("plugin".into(), "no-such-plugin".into());
    });
    check(
        &["run", "--config", &s(&unknown)],
        &[
            "devices[0].slm.plugin",
            "no-such-plugin",
            "cotune_no_such_plugin",
        ],
    );

    // 6. A plugin built against another ABI.
    let library = cotune_tests::fixture_library("wrong-abi-plugin");
    let wrong_abi = smoke_variant(dir, "abi.toml", |t| {
        device_slm(t, 0).insert("plugin".into(), s(&library).into());
    });
    check(
        &["run", "--config", &s(&wrong_abi)],
        &["devices[0].slm.plugin", &s(&library), "ABI version"],
    );

    // 7. A malformed line in a device's data file.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(root().join("data")).unwrap().flatten() {
        if entry.path().is_dir() {
            continue;
        }
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
    }
    let chemistry = data.join("chemistry.jsonl");
    let text = std::fs::read_to_string(&chemistry).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"question\": \"what?\", oops";
    std::fs::write(&chemistry, lines.join("\n")).unwrap();
    let bad_data = smoke_variant(dir, "data.toml", |t| {
        t["data"]
            .as_table_mut()
            .unwrap()
            .insert("dir".into(), s(&data).into());
    });
    check(
        &["run", "--config", &s(&bad_data)],
        &["devices[1].domain", &format!("{}:3", s(&chemistry))],
    );

    // 8. A checkpoint folder that does not exist.
    let gone = dir.join("no-such-checkpoint");
    let no_checkpoint = smoke_variant(dir, "checkpoint.toml", |t| {
        device_slm(t, 0).insert("checkpoint".into(), s(&gone).into());
    });
    check(
        &["run", "--config", &s(&no_checkpoint)],
        &["devices[0].slm.checkpoint", &s(&gone)],
    );

    // 9. Resuming a folder that is not a run.
    check(
        &["run", "--resume", &s(dir)],
        &[&s(dir), "not a run folder"],
    );

    no_run_folder(dir);
}

#[test]
fn bad_files_for_the_other_commands_are_refused_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = |p: &Path| p.display().to_string();

    // 10. A score file whose second line is not JSON.
    let scores = dir.join("bad.jsonl");
    std::fs::write(
        &scores,
        "{\"prediction\": \"a\", \"reference\": \"a\"}\nnot json\n",
    )
    .unwrap();
    check(
        &["score", &s(&scores)],
        &[&format!("{}:2", s(&scores)), "\"prediction\""],
    );

    // 11. A missing score file.
    let missing = dir.join("missing.jsonl");
    check(&["score", &s(&missing)], &[&s(&missing)]);

    // 12. A missing checkpoint folder.
    let gone = dir.join("gone");
    check(
        &["generate", "--checkpoint", &s(&gone), "--prompt", "hi"],
        &[&s(&gone)],
    );

    // 13. A corrupt checkpoint: the weights file cut short.
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    let fixture = root().join("tests/fixtures/hf/gpt2");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(file), corrupt.join(file)).unwrap();
    }
    let weights = std::fs::read(fixture.join("model.safetensors")).unwrap();
    std::fs::write(corrupt.join("model.safetensors"), &weights[..300]).unwrap();
    check(
        &["generate", "--checkpoint", &s(&corrupt), "--prompt", "hi"],
        &[&s(&corrupt.join("model.safetensors")), "300 bytes"],
    );

    // 14. A checkpoint whose config.json is not JSON.
    std::fs::write(corrupt.join("config.json"), "garbage").unwrap();
    check(
        &["generate", "--checkpoint", &s(&corrupt), "--prompt", "hi"],
        &[&s(&corrupt.join("config.json")), "not valid JSON"],
    );

    // 15. A conformance run on a library that is not there.
    let library = dir.join("libcotune_nothing.so");
    check(&["conformance", &s(&library)], &[&s(&library)]);

    // 16. An unknown command.
    check(&["frobnicate"], &["frobnicate"]);
}
