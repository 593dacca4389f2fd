//! What the deployment's process tests share: running `cotune-run` to success, certificates,
//! configs, and the server and device processes, each killed when its handle drops.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{options, root, smoke_text};
use cotune_protocol::{run_with, RoundRecord};

pub const BIN: &str = env!("CARGO_BIN_EXE_cotune-run");

/// Device processes started, for their log names.
pub static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The tests that start processes run one at a time: each has a machine's cores to itself, so
/// heartbeats are not starved by the other tests' training.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself, for at most `secs`.
    pub fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
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
pub fn wait_for<T>(secs: u64, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
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
pub fn config(dir: &Path, name: &str, rounds: usize, four: bool, deploy: &str) -> PathBuf {
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
pub fn with_method(dir: &Path, method: &str, rounds: usize) -> (PathBuf, PathBuf, PathBuf) {
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
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Records without wall times and network figures: what must be the same in one process.
pub fn comparable(records: &[RoundRecord]) -> Vec<serde_json::Value> {
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
pub fn run_ok(args: &[&str]) -> String {
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

pub fn certs(dir: &Path, devices: usize) -> PathBuf {
    let out = dir.join("certs");
    cotune_net::make_dev_certs(&out, devices).unwrap();
    out
}

/// The arguments of `cotune-run serve` for `config` on `listen`.
pub fn serve_args(
    config: &Path,
    listen: &str,
    certs: &Path,
    runs: &Path,
    cache: &Path,
) -> Vec<String> {
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
pub fn serve(dir: &Path, args: &[String], log: &str) -> (Proc, String) {
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
pub fn device(dir: &Path, addr: &str, i: usize, certs: &Path, env: &[(&str, &str)]) -> Proc {
    device_at(dir, addr, i, certs, &dir.join(format!("device-{i}")), env)
}

/// Device `i` with the certificates in `certs` and its folder `own`; its log goes to `dir`.
pub fn device_at(
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

pub fn only_run(runs: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.resolved.toml").is_file())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// Every log file in `dir`, for failure messages.
pub fn logs(dir: &Path) -> String {
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
