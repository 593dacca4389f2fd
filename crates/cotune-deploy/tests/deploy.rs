//! A deployment on loopback: the server and its devices as separate processes of
//! `cotune-run serve` / `cotune-run device`, talking gRPC over mutual TLS on 127.0.0.1. Every
//! wait is bounded; every process is killed when its test ends.

// The protocol's end-to-end tests share these helpers.
#[path = "../../cotune-protocol/tests/common/mod.rs"]
mod common;
mod procs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::process::Command;

use common::{metrics, options, root};
use cotune_protocol::run_with;
use procs::*;

#[test]
fn four_device_processes_give_the_metrics_of_one_process_and_bad_uploads_and_certificates_are_refused(
) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = config(dir, "four", 2, true, "max_update_norm = 1000.0");
    // Public transfer questions chosen by similarity: they reach each device in its setup.
    edit(
        &config,
        "transfer = \"local\"",
        "transfer = \"public\"\ntransfer_select = \"similar\"",
    );
    let cache = dir.join("cache");
    let alone = run_with(&options(config.clone(), &dir.join("alone"), &cache)).unwrap();

    let certs = certs(dir, 4);
    let runs = dir.join("runs");
    let (mut server, addr) = serve(
        dir,
        &serve_args(&config, "127.0.0.1:0", &certs, &runs, &cache),
        "server",
    );
    // Devices 1-3 each send one bad upload first: NaN, an oversize update, a wrong shape.
    // Device 1 claims a billion training examples in round 2: FedAvg weighs it as the 40 the
    // config gives a device (which it holds), so the numbers stay those of one process.
    let faults = [
        None,
        Some("nan:1,examples:2"),
        Some("norm:2"),
        Some("shape:1"),
    ];
    let mut devices: Vec<Proc> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let env: Vec<(&str, &str)> = f.iter().map(|f| ("COTUNE_DEVICE_FAULT", *f)).collect();
            device(dir, &addr, i, &certs, &env)
        })
        .collect();
    wait_for(600, "device 0 to connect", || {
        devices[0].log().contains("connected").then_some(())
    });
    // A second process with device 0's certificate, and a device whose certificate another
    // CA signed, are refused and stop by themselves.
    let mut twin = device_at(dir, &addr, 0, &certs, &dir.join("twin"), &[]);
    let stranger_certs = dir.join("stranger");
    cotune_net::make_dev_certs(&stranger_certs, 1).unwrap();
    let mut stranger = device_at(dir, &addr, 0, &stranger_certs, &dir.join("stranger"), &[]);
    assert!(!twin.wait(120).success());
    assert!(
        twin.log().contains("already connected") || twin.log().contains("refused the connection"),
        "{}",
        twin.log()
    );
    assert!(!stranger.wait(120).success());
    assert!(stranger.log().contains("TLS"), "{}", stranger.log());

    assert!(server.wait(600).success(), "{}", server.log());
    for d in &mut devices {
        assert!(d.wait(60).success(), "{}", d.log());
    }
    let run = only_run(&runs);
    let (one, deployed) = (metrics(&alone), metrics(&run));
    assert_eq!(deployed.len(), 3);
    assert_eq!(comparable(&one), comparable(&deployed));
    assert!(
        server.log().contains(
            "device 1 says it has 1000000000 training examples; weighed as 40 (the config \
             gives a device at most 40)"
        ),
        "{}",
        server.log()
    );
    // The predictions are the same files too, each device's in a folder of its own.
    for r in 0..=2 {
        for (device, name) in [
            (Some(0), "geography-slm"),
            (Some(1), "chemistry-dpm"),
            (Some(2), "acronyms-slm"),
            (None, "llm"),
        ] {
            let file = format!("predictions/round-{r}/{name}.jsonl");
            let deployed = match device {
                Some(i) => format!("predictions/round-{r}/device-{i}/{name}.jsonl"),
                None => file.clone(),
            };
            assert_eq!(
                std::fs::read_to_string(alone.join(&file)).unwrap(),
                std::fs::read_to_string(run.join(&deployed)).unwrap(),
                "{deployed}"
            );
        }
        // Nothing a device sends lands outside its folder.
        for entry in std::fs::read_dir(run.join(format!("predictions/round-{r}"))).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            assert!(
                entry.path().is_dir() || name.starts_with("llm"),
                "predictions/round-{r}/{name}"
            );
        }
    }
    // Every device's traffic is recorded per round; no message is above gRPC's 4 MiB.
    for r in &deployed {
        for d in &r.devices {
            let w = d.wire.as_ref().expect("a deployed run records the wire");
            assert!(w.bytes_down > 0 && w.bytes_up > 0, "{w:?}");
            assert!(w.largest_message <= 4 << 20, "{w:?}");
        }
    }
    let refusals = |round: usize, device: usize| {
        deployed[round].devices[device]
            .wire
            .clone()
            .unwrap()
            .refusals
    };
    assert!(refusals(1, 0).is_empty());
    assert!(
        refusals(1, 1)[0].contains("non-finite value NaN"),
        "{:?}",
        refusals(1, 1)
    );
    assert!(
        refusals(2, 2)[0].contains("above deploy.max_update_norm"),
        "{:?}",
        refusals(2, 2)
    );
    assert!(refusals(1, 3)[0].contains("shape"), "{:?}", refusals(1, 3));
    assert!(server.log().contains("refused an upload of device 1"));
}

/// Every file under `dir` (recursively), as text where it is text.
fn texts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

#[test]
fn every_party_reads_only_its_own_folder_and_the_numbers_are_those_of_one_process() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = config(dir, "parties", 2, false, "send_predictions = false");
    // The devices choose their public transfer questions by similarity to their own, on the
    // device; the second SLM is pre-trained on the public corpus, which its folder holds.
    edit(
        &config,
        "transfer = \"local\"",
        "transfer = \"public\"\ntransfer_select = \"similar\"",
    );
    let cache = dir.join("cache");
    let alone = run_with(&options(config.clone(), &dir.join("alone"), &cache)).unwrap();

    // `split` writes each party's folder; every process reads only its own.
    let parts = dir.join("parts");
    let out = Command::new(BIN)
        .args([
            "split",
            "--config",
            config.to_str().unwrap(),
            "--out",
            parts.to_str().unwrap(),
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for party in ["server", "device-0", "device-1"] {
        assert!(parts.join(party).join("party.json").is_file(), "{party}");
    }
    // The data files the config names are out of reach: the parties read their folders.
    let hidden = dir.join("no-data");
    std::fs::create_dir_all(&hidden).unwrap();
    edit(
        &config,
        "[data]",
        &format!("[data]\ndir = {:?}", hidden.display().to_string()),
    );

    // The certificates as docs/deployment.md makes them for a server the devices reach by
    // name: a certificate naming only server.cotune.test, each party's folder its own; one more
    // device added later with the kept CA key, and revoked.
    let certs = dir.join("certs");
    run_ok(&[
        "certs",
        "--out",
        certs.to_str().unwrap(),
        "--devices",
        "2",
        "--server-name",
        "server.cotune.test",
    ]);
    run_ok(&[
        "certs",
        "add-device",
        "--ca",
        certs.join("ca").to_str().unwrap(),
        "--device",
        "2",
    ]);
    std::fs::write(certs.join("server/revoked.txt"), "# lost\ndevice 2\n").unwrap();
    let runs = dir.join("runs");
    let mut args = serve_args(
        &config,
        "127.0.0.1:0",
        &certs.join("server"),
        &runs,
        &dir.join("server-cache"),
    );
    args.extend(["--data".into(), parts.join("server").display().to_string()]);
    let (mut server, addr) = serve(dir, &args, "server");
    let server_url = format!("https://{addr}");
    // Each device dials 127.0.0.1 and checks the certificate against the server's name.
    let party = |i: usize, name: Option<&str>, own: &str| {
        let mut args = vec![
            "device".to_string(),
            "--server".into(),
            server_url.clone(),
            "--device".into(),
            i.to_string(),
            "--certs".into(),
            certs.join(format!("device-{i}")).display().to_string(),
            "--dir".into(),
            dir.join(own).display().to_string(),
            "--data".into(),
            parts
                .join(format!("device-{}", i.min(1)))
                .display()
                .to_string(),
        ];
        if let Some(name) = name {
            args.extend(["--server-name".into(), name.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(&args, &dir.join(format!("{own}.log")), &[])
    };
    let mut devices: Vec<Proc> = (0..2)
        .map(|i| party(i, Some("server.cotune.test"), &format!("device-{i}")))
        .collect();
    // Without --server-name the device checks the certificate against 127.0.0.1: it stops at
    // once, naming both names. The revoked device is refused by the server.
    let mut unnamed = party(0, None, "unnamed");
    let mut revoked = party(2, Some("server.cotune.test"), "revoked");
    assert!(!unnamed.wait(120).success());
    for expect in [
        "not valid for name \"127.0.0.1\"",
        "server.cotune.test",
        "--server-name",
    ] {
        assert!(
            unnamed.log().contains(expect),
            "{expect}: {}",
            unnamed.log()
        );
    }
    assert!(!revoked.wait(120).success());
    assert!(
        revoked
            .log()
            .contains("the certificate of device 2 (serial ")
            && revoked
                .log()
                .contains("revoked.txt line 2 revokes device 2"),
        "{}",
        revoked.log()
    );
    assert!(server.wait(600).success(), "{}", server.log());
    for d in &mut devices {
        assert!(d.wait(60).success(), "{}", d.log());
    }
    let run = only_run(&runs);
    assert_eq!(comparable(&metrics(&alone)), comparable(&metrics(&run)));

    // No device's question is anywhere in the server's data folder or its run folder.
    let mut questions = Vec::new();
    for i in 0..2 {
        for split in ["train", "valid", "test"] {
            let file = parts.join(format!("device-{i}/{split}.jsonl"));
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                questions.push(r["question"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(questions.len() > 100, "{}", questions.len());
    let server_files = [texts_under(&parts.join("server")), texts_under(&run)].concat();
    assert!(server_files.len() > 10);
    for (path, text) in &server_files {
        for q in &questions {
            // As a record holds it (JSON), wherever a record could travel.
            let field = format!("\"question\":{}", serde_json::to_string(q).unwrap());
            assert!(
                !text.contains(&field),
                "{} holds the device question {q:?}",
                path.display()
            );
        }
    }
}

#[test]
fn a_method_with_its_own_setup_runs_deployed_with_the_numbers_of_one_process() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // seq-kd's server setup has the LLM answer public questions; each device's setup keeps
    // them in its SLM's tokens (docs/architecture.md, "Adding a method").
    let (config, cache, alone) = with_method(dir, "seq-kd", 2);
    let certs = certs(dir, 2);
    let runs = dir.join("runs");
    let (mut server, addr) = serve(
        dir,
        &serve_args(&config, "127.0.0.1:0", &certs, &runs, &cache),
        "server",
    );
    let mut devices: Vec<Proc> = (0..2).map(|i| device(dir, &addr, i, &certs, &[])).collect();
    assert!(server.wait(600).success(), "{}", server.log());
    for d in &mut devices {
        assert!(d.wait(60).success(), "{}", d.log());
    }
    let (one, deployed) = (metrics(&alone), metrics(&only_run(&runs)));
    assert_eq!(comparable(&one), comparable(&deployed));
    assert!(deployed[1]
        .devices
        .iter()
        .all(|d| d.losses.transfer_examples == 16));
}

#[test]
fn a_stalled_device_is_dropped_at_the_deadline_killed_restarted_and_rejoins() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = config(
        dir,
        "stall",
        4,
        false,
        "deadline_seconds = 8.0\nheartbeat_seconds = 1.0\nmissed_heartbeats = 3\nsend_predictions = false",
    );
    let certs = certs(dir, 2);
    let runs = dir.join("runs");
    let (mut server, addr) = serve(
        dir,
        &serve_args(&config, "127.0.0.1:0", &certs, &runs, &dir.join("cache")),
        "server",
    );
    let mut first = device(dir, &addr, 0, &certs, &[]);
    let stalled = device(dir, &addr, 1, &certs, &[("COTUNE_DEVICE_FAULT", "stall:1")]);
    // Device 1 stalls in round 1's step, still sending heartbeats: the step closes at its
    // deadline with device 0 alone.
    wait_for(600, "device 1 to be dropped at the deadline", || {
        server.log().contains("dropped device 1").then_some(())
    });
    assert!(
        server
            .log()
            .contains("dropped device 1: missed the deadline of round 1 step"),
        "{}",
        server.log()
    );
    drop(stalled);
    // Its session lapses after three missed heartbeats (3 s); the same device starts again from its
    // own folder.
    std::thread::sleep(Duration::from_secs(5));
    let mut again = device(dir, &addr, 1, &certs, &[]);
    assert!(server.wait(600).success(), "{}", server.log());
    assert!(first.wait(60).success());
    assert!(again.wait(60).success(), "{}", again.log());
    assert!(
        again.log().contains("resumed from its state"),
        "{}",
        again.log()
    );
    assert!(
        again.log().contains("applied the download of round"),
        "{}",
        again.log()
    );
    let run = only_run(&runs);
    let records = metrics(&run);
    assert_eq!(records.len(), 5);
    // send_predictions = false: the devices kept their prediction files.
    assert!(run.join("predictions/round-1/llm.jsonl").is_file());
    assert!(!run.join("predictions/round-1/geography-slm.jsonl").exists());
    for i in 0..2 {
        assert!(!run.join(format!("predictions/round-1/device-{i}")).exists());
    }
    assert!(dir
        .join("device-0/predictions/round-1/geography-slm.jsonl")
        .is_file());
    let d1 = |r: usize| records[r].devices[1].clone();
    assert!(d1(1).wire.unwrap().dropped[0].starts_with("step:"));
    assert_eq!(d1(1).bytes_up, 0, "its upload never counted");
    assert!(d1(1).slm.is_none(), "not evaluated in the round it missed");
    assert!(records[1].devices[0].slm.is_some());
    // It rejoins at the first round after its restart (the rounds in between close without
    // it) and takes part in every round from then on.
    let back = (2..=4)
        .find(|&r| d1(r).bytes_up > 0)
        .expect("device 1 rejoined");
    for r in back..=4 {
        assert!(d1(r).slm.is_some() && d1(r).bytes_up > 0, "round {r}");
        assert!(d1(r).wire.unwrap().dropped.is_empty(), "round {r}");
    }
}

#[test]
fn a_server_killed_between_rounds_continues_to_the_metrics_of_an_uninterrupted_run() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // FedMKT: a broadcast, and uploads and downloads that are knowledge, not parameters.
    let (config, cache, alone) = with_method(dir, "fedmkt", 3);
    let certs = certs(dir, 2);
    let runs = dir.join("runs");
    let first_args = serve_args(&config, "127.0.0.1:0", &certs, &runs, &cache);
    let (server, addr) = serve(dir, &first_args, "server");
    // Device 1's first knowledge upload of round 2 (after the restart) covers one example too
    // few: refused and recorded, it sends a good one; the server's step never sees it.
    let mut devices: Vec<Proc> = (0..2)
        .map(|i| {
            let fault = [("COTUNE_DEVICE_FAULT", "topk-short:2")];
            device(dir, &addr, i, &certs, &fault[..i])
        })
        .collect();
    let run = wait_for(600, "round 1's checkpoint", || {
        let run = std::fs::read_dir(&runs).ok()?.next()?.ok()?.path();
        let state = std::fs::read_to_string(run.join("state/state.json")).ok()?;
        state.contains("\"completed\": 1").then_some(run)
    });
    drop(server);
    // The same address, resuming the run folder: the devices reconnect by themselves.
    let mut again_args = serve_args(&config, &addr, &certs, &runs, &cache);
    again_args.extend(["--resume".to_string(), run.to_str().unwrap().to_string()]);
    let (mut server, _) = serve(dir, &again_args, "server-again");
    assert!(server.wait(600).success(), "{}", server.log());
    assert!(
        server.log().contains("resuming after round"),
        "{}",
        server.log()
    );
    for d in &mut devices {
        assert!(d.wait(60).success(), "{}", d.log());
    }
    let deployed = metrics(&run);
    assert_eq!(comparable(&metrics(&alone)), comparable(&deployed));
    let refusals = &deployed[2].devices[1].wire.as_ref().unwrap().refusals;
    assert!(
        refusals.len() == 1
            && refusals[0].contains("step: validation: the knowledge upload covers")
            && refusals[0].contains("examples, the round's public sample has"),
        "{refusals:?}"
    );
    // A new run finds device 0's folder holding this one's state: refused by name.
    let (_server, addr) = serve(dir, &first_args, "server-new-run");
    let mut stale = device(dir, &addr, 0, &certs, &[]);
    assert!(!stale.wait(120).success());
    let name = run.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stale.log().contains(&format!(
            "holds the state of run {name} and the server runs"
        )),
        "{}",
        stale.log()
    );
}

#[test]
fn a_soak_of_short_rounds_with_devices_leaving_and_joining_at_random_loses_nothing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rounds = 16;
    let config = config(
        dir,
        "soak",
        rounds,
        true,
        "deadline_seconds = 3.0\nsetup_deadline_seconds = 20.0\nheartbeat_seconds = 0.5\nmissed_heartbeats = 4",
    );
    let certs = certs(dir, 4);
    let runs = dir.join("runs");
    let (mut server, addr) = serve(
        dir,
        &serve_args(&config, "127.0.0.1:0", &certs, &runs, &dir.join("cache")),
        "server",
    );
    // Device 0 stays; device 3 joins late; devices 1-3 are killed and started again at random
    // (a fixed seed), each time after their session has lapsed; after eight such events every
    // device is started again and stays.
    let mut devices: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(device(dir, &addr, i, &certs, &[])))
        .chain([None])
        .collect();
    // The chaos starts with the rounds (round 0, the devices' setup, closes at its deadline
    // without device 3, which sets up when it first joins).
    wait_for(600, "round 1", || {
        server.log().contains("round 1/").then_some(())
    });
    let mut rng = fastrand::Rng::with_seed(7);
    let (start, mut events) = (Instant::now(), 0);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the soak ran for 5 minutes; the server's log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        if events >= 8 {
            for (i, d) in devices.iter_mut().enumerate() {
                if d.is_none() {
                    std::thread::sleep(Duration::from_millis(3000));
                    *d = Some(device(dir, &addr, i, &certs, &[]));
                }
            }
            continue;
        }
        let i = rng.usize(1..4);
        match devices[i].take() {
            Some(running) => drop(running),
            None => {
                // A killed device's session lapses after 2 s; a second process before that
                // would be refused as a twin.
                std::thread::sleep(Duration::from_millis(3000));
                devices[i] = Some(device(dir, &addr, i, &certs, &[]));
            }
        }
        events += 1;
    }
    assert!(server.wait(1).success(), "{}", server.log());
    let run = only_run(&runs);
    let records = metrics(&run);
    // Every round completed, in order, and its state was saved.
    assert_eq!(
        records.iter().map(|r| r.round).collect::<Vec<_>>(),
        (0..=rounds).collect::<Vec<_>>()
    );
    let state = std::fs::read_to_string(run.join("state/state.json")).unwrap();
    assert!(
        state.contains(&format!("\"completed\": {rounds}")),
        "{state}"
    );
    for r in &records[1..] {
        // Device 0 never left: it took part in and was scored in every round.
        assert!(
            r.devices[0].bytes_up > 0 && r.devices[0].slm.is_some(),
            "{r:?}"
        );
        for d in &r.devices {
            let w = d.wire.as_ref().unwrap();
            // An accepted upload was counted; a scored device uploaded its evaluation.
            if d.slm.is_some() {
                assert!(w.bytes_up > 0, "{d:?}");
            }
            for reason in &w.dropped {
                assert!(
                    reason.starts_with("step:") || reason.starts_with("receive:"),
                    "{reason}"
                );
            }
        }
    }
    // The devices still running finish by themselves.
    for d in devices.iter_mut().flatten() {
        assert!(d.wait(60).success(), "{}", d.log());
    }
    // The soak did what it says: devices were dropped, and came back to be scored again.
    let drops: usize = records
        .iter()
        .flat_map(|r| &r.devices)
        .map(|d| d.wire.as_ref().unwrap().dropped.len())
        .sum();
    let scored: Vec<usize> = (1..4)
        .map(|i| {
            records[1..]
                .iter()
                .filter(|r| r.devices[i].slm.is_some())
                .count()
        })
        .collect();
    eprintln!(
        "soak: {events} kills and starts, {drops} drops; rounds scored per device 1-3: {scored:?}"
    );
    assert!(events > 0 && drops > 0);
    // Back for good, every device took part in the last round from its own saved state.
    let last = &records[rounds];
    assert!(
        last.devices
            .iter()
            .all(|d| d.slm.is_some() && d.bytes_up > 0),
        "{last:?}; the logs:\n{}",
        logs(dir)
    );
}
