//! Bad deploy settings and command lines of `cotune-run serve` / `device` / `certs`: each
//! refused with its key or flag and the value, before anything runs.

#[path = "../../cotune-protocol/tests/common/mod.rs"]
mod common;
mod procs;

use std::process::Command;

use common::{root, smoke_text};
use procs::*;

#[test]
fn bad_deploy_settings_are_refused_with_their_key_and_value() {
    let with =
        |table: &str| smoke_text().replace("[data]", &format!("[deploy]\n{table}\n\n[data]"));
    for (table, expect) in [
        (
            "min_devices = 0",
            &["deploy.min_devices", "between 1 and the 2 devices, got 0"][..],
        ),
        ("min_devices = 3", &["deploy.min_devices", "got 3"]),
        (
            "deadline_seconds = -1.0",
            &["deploy.deadline_seconds", "got -1"],
        ),
        (
            "setup_deadline_seconds = nan",
            &["deploy.setup_deadline_seconds", "got NaN"],
        ),
        (
            "heartbeat_seconds = 0.001",
            &["deploy.heartbeat_seconds", "at least 0.01"],
        ),
        (
            "missed_heartbeats = 0",
            &["deploy.missed_heartbeats", "got 0"],
        ),
        (
            "max_update_norm = 0.0",
            &["deploy.max_update_norm", "got 0"],
        ),
        (
            "max_upload_mib = inf",
            &["deploy.max_upload_mib", "got inf"],
        ),
        ("deadline = 3.0", &["unknown field `deadline`"]),
    ] {
        common::check_error(&with(table), expect);
    }
}

#[test]
fn bad_command_lines_are_refused_with_the_flag_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let smoke = root().join("configs/smoke.toml");
    let smoke = smoke.to_str().unwrap();
    let compare = root().join("configs/compare.toml");
    let compare = compare.to_str().unwrap();
    let missing = tmp.path().join("no-certs");
    let missing = missing.to_str().unwrap();
    let not_a_run = tmp.path().to_str().unwrap();
    let good = certs(tmp.path(), 2);
    let good_server = good.join("server");
    let good_server = good_server.to_str().unwrap();
    let device_1 = good.join("device-1");
    let device_1 = device_1.to_str().unwrap();
    let bad_list = tmp.path().join("revoked.txt");
    std::fs::write(&bad_list, "device 1\ndevice x\n").unwrap();
    let bad_list = bad_list.to_str().unwrap();
    for (args, expect) in [
        (
            vec![
                "serve",
                smoke,
                "--listen",
                "127.0.0.1:0",
                "--certs",
                good_server,
                "--revoked",
                bad_list,
            ],
            format!("{bad_list}: line 2: \"device x\" names device \"x\", not a device number"),
        ),
        (
            vec![
                "serve",
                smoke,
                "--listen",
                "127.0.0.1:0",
                "--certs",
                missing,
            ],
            format!("neither it nor {missing}/server/server.pem exists"),
        ),
        (
            vec![
                "device",
                "--server",
                "https://127.0.0.1:1",
                "--device",
                "0",
                "--certs",
                device_1,
                "--dir",
                missing,
            ],
            format!("the certificate {device_1}/device.pem names device 1, not --device 0"),
        ),
        (
            vec![
                "device",
                "--server",
                "https://127.0.0.1:1",
                "--device",
                "0",
                "--certs",
                device_1,
                "--server-name",
                "bad name",
            ],
            "invalid value 'bad name' for '--server-name <NAME>': neither a DNS name nor an IP \
             address"
                .to_string(),
        ),
        (
            vec![
                "certs",
                "--out",
                missing,
                "--devices",
                "1",
                "--server-name",
                "127.0.0.2",
            ],
            "invalid value '127.0.0.2' for '--server-name <NAME>': an IP address: give it with \
             --server-ip"
                .to_string(),
        ),
        (
            vec!["certs", "--out", good.to_str().unwrap(), "--devices", "1"],
            "the folder already holds a CA".to_string(),
        ),
        (
            vec!["certs", "add-device", "--ca", missing, "--device", "1"],
            format!("neither it nor {missing}/ca/ca.key exists"),
        ),
        (
            vec![
                "certs",
                "add-device",
                "--ca",
                good.to_str().unwrap(),
                "--device",
                "1",
            ],
            "device-1: it exists; a device's key is never written over".to_string(),
        ),
        (
            vec!["serve", smoke, "--certs", missing],
            "the following required arguments were not provided:\n  --listen <ADDR>".to_string(),
        ),
        (
            vec![
                "serve",
                smoke,
                "--listen",
                "localhost:x",
                "--certs",
                missing,
            ],
            "invalid value 'localhost:x' for '--listen <ADDR>'".to_string(),
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:0", "--certs", missing],
            "<CONFIG|--config <FILE>|--resume <RUN_DIR>>".to_string(),
        ),
        (
            vec![
                "device",
                "--server",
                "https://127.0.0.1:1",
                "--device",
                "one",
            ],
            "invalid value 'one' for '--device <I>'".to_string(),
        ),
        (
            vec![
                "device",
                "--server",
                "https://127.0.0.1:1",
                "--device",
                "0",
                "--certs",
                missing,
                "--dir",
                missing,
            ],
            "no-certs/device-0/device.pem".to_string(),
        ),
        (
            vec!["device", "--bogus"],
            "unexpected argument '--bogus'".to_string(),
        ),
        (
            vec!["certs", "--out", missing, "--devices", "0"],
            "invalid value '0' for '--devices <N>': a deployment needs at least one device"
                .to_string(),
        ),
        // Without a command the arguments are run's.
        (
            vec![smoke, "--resume", not_a_run],
            format!("cannot resume {not_a_run}: not a run folder"),
        ),
        (
            vec![compare, "--cache-dir", missing],
            format!("--cache-dir {missing} applies to one run"),
        ),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(&expect), "{args:?}: {err}");
    }
}
