//! A deployment on loopback: the server and its devices as separate processes of
//! `cotune-run serve` / `cotune-run device`, talking gRPC over mutual TLS on 127.0.0.1. Every
//! wait is bounded; every process is killed when its test ends.

// The protocol's end-to-end tests share these helpers.
#[path = "../../cotune-protocol/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{metrics, options, root, smoke_text};
use cotune_protocol::{run_with, RoundRecord};

const BIN: &str = env!("CARGO_BIN_EXE_cotune-run");

/// Device processes started, for their log names.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The tests that start processes run one at a time: each has a machine's cores to itself, so
/// heartbeats are not starved by the other tests' training.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself, for at most `secs`.
    fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{} still running after {secs} s; its log:\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `ready` answers something, for at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The smoke config with `rounds` rounds, two more devices when `four`, and `deploy` as its
/// `[deploy]` table.
fn config(dir: &Path, name: &str, rounds: usize, four: bool, deploy: &str) -> PathBuf {
    let mut text = smoke_text().replace("rounds = 2", &format!("rounds = {rounds}"));
    text = text.replace("[data]", &format!("[deploy]\n{deploy}\n\n[data]"));
    if four {
        text.push_str(
            r#"
[[devices]]
domain = "acronyms"
slm = { plugin = "llama", config = { vocab_size = 512, max_position_embeddings = 64, hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 1 } }

[[devices]]
domain = "iso_codes"
slm = { plugin = "gpt2", config = { vocab_size = 512, n_positions = 64, n_embd = 16, n_layer = 1, n_head = 2 } }
"#,
        );
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The two-device config with `method` and `rounds` in `dir`, the cache its runs share, and
/// its run in one process (what a deployment of it must equal).
fn with_method(dir: &Path, method: &str, rounds: usize) -> (PathBuf, PathBuf, PathBuf) {
    let config = config(dir, method, rounds, false, "");
    edit(
        &config,
        "method = \"co-plms\"",
        &format!("method = \"{method}\""),
    );
    let cache = dir.join("cache");
    let alone = run_with(&options(config.clone(), &dir.join("alone"), &cache)).unwrap();
    (config, cache, alone)
}

/// Replaces `from` (which must be there) with `to` in the file `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Records without wall times and network figures: what must be the same in one process.
fn comparable(records: &[RoundRecord]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("alignment_seconds");
            for d in o["devices"].as_array_mut().unwrap() {
                d.as_object_mut().unwrap().remove("wire");
            }
            v
        })
        .collect()
}

/// Runs `cotune-run` with `args` to success, for its output.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn certs(dir: &Path, devices: usize) -> PathBuf {
    let out = dir.join("certs");
    cotune_net::make_dev_certs(&out, devices).unwrap();
    out
}

/// The arguments of `cotune-run serve` for `config` on `listen`.
fn serve_args(config: &Path, listen: &str, certs: &Path, runs: &Path, cache: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    vec![
        path(config),
        "--listen".into(),
        listen.into(),
        "--certs".into(),
        path(certs),
        "--runs-dir".into(),
        path(runs),
        "--cache-dir".into(),
        path(cache),
    ]
}

/// Starts `cotune-run serve` (on a free loopback port unless `args` say otherwise); returns it
/// and its address.
fn serve(dir: &Path, args: &[String], log: &str) -> (Proc, String) {
    let address = dir.join(format!("{log}.address"));
    let _ = std::fs::remove_file(&address);
    let mut all: Vec<&str> = vec!["serve"];
    all.extend(args.iter().map(String::as_str));
    all.extend_from_slice(&["--address-file", address.to_str().unwrap()]);
    let server = Proc::spawn(&all, &dir.join(format!("{log}.log")), &[]);
    let addr = wait_for(600, "the server to listen", || {
        std::fs::read_to_string(&address)
            .ok()
            .filter(|a| !a.is_empty())
    });
    (server, addr)
}

/// Device `i` with its folder in `dir`.
fn device(dir: &Path, addr: &str, i: usize, certs: &Path, env: &[(&str, &str)]) -> Proc {
    device_at(dir, addr, i, certs, &dir.join(format!("device-{i}")), env)
}

/// Device `i` with the certificates in `certs` and its folder `own`; its log goes to `dir`.
fn device_at(
    dir: &Path,
    addr: &str,
    i: usize,
    certs: &Path,
    own: &Path,
    env: &[(&str, &str)],
) -> Proc {
    let server = format!("https://{addr}");
    let index = i.to_string();
    Proc::spawn(
        &[
            "device",
            "--server",
            &server,
            "--device",
            &index,
            "--certs",
            certs.to_str().unwrap(),
            "--dir",
            own.to_str().unwrap(),
        ],
        &dir.join(format!(
            "device-{i}-{}.log",
            STARTED.fetch_add(1, Ordering::SeqCst)
        )),
        env,
    )
}

fn only_run(runs: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.resolved.toml").is_file())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

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

/// Every log file in `dir`, for failure messages.
fn logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            format!(
                "== {}\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect()
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
                "10.0.0.1",
            ],
            "invalid value '10.0.0.1' for '--server-name <NAME>': an IP address: give it with \
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
