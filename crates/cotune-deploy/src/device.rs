//! One device of a deployment, in its own process: it dials the server, pulls its tasks, and
//! keeps its data, its models and their state in its own folder. Its work is a
//! `cotune_protocol::DeviceRuntime`, the same as each device's in a run in one process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use cotune_net::{ClientConfig, DeviceClient, NetError, PartyFiles, Pull};
use cotune_protocol::records::DeviceLosses;
use cotune_protocol::roles::DeviceSteps;
use cotune_protocol::{CheckScope, DeviceData, DeviceRuntime, ExperimentConfig};

use crate::{Part, Payload, Phase, ReportMeta, TaskMeta};

/// How `cargo xtask device` runs.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The server, `https://host:port`.
    pub server: String,
    /// The name the server's certificate must carry; `None`: the host of `server`.
    pub server_name: Option<String>,
    /// This device's index in the config (its certificate names it).
    pub device: usize,
    /// The device's certificate folder (`ca.pem`, `device.pem`, `device.key`): the
    /// `device-<i>/` folder of `cargo xtask certs`, or the folder holding it.
    pub certs: PathBuf,
    /// The device's own folder: config, setup, models, state, predictions, cache.
    pub dir: PathBuf,
    /// The folder relative paths of the config (data, plugins) are taken from.
    pub root: PathBuf,
    /// The device's own data folder (`cargo xtask split`'s `device-<i>/`); without it the
    /// device splits the data files itself and keeps only its share.
    pub data: Option<PathBuf>,
}

/// Runs one device until the server says the run has finished.
pub fn run_device(options: &DeviceOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cotune-device")
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    rt.block_on(device_loop(options))
}

async fn device_loop(options: &DeviceOptions) -> anyhow::Result<()> {
    let i = options.device;
    let files = PartyFiles::find_device(&options.certs, i)?;
    let tls = files.read()?;
    // The certificate must be this device's (both of its names: the server checks the same).
    let der = cotune_net::certs::pem_der(&tls.cert_pem, &files.cert)?;
    let named = cotune_net::identity_of_certificate(&der)
        .with_context(|| format!("reading {}", files.cert.display()))?;
    if named.device as usize != i {
        anyhow::bail!(
            "the certificate {} names device {}, not --device {i}",
            files.cert.display(),
            named.device
        );
    }
    let mut config = ClientConfig::new(options.server.clone(), tls);
    if let Some(name) = &options.server_name {
        config.domain = name.clone();
    }
    let mut client = DeviceClient::connect(config).await?;
    if client.device() as usize != i {
        anyhow::bail!(
            "the server reads device {} from {}, not --device {i}",
            client.device(),
            files.cert.display()
        );
    }
    progress!("device {i}: connected to {}", options.server);
    let mut local = tokio::task::block_in_place(|| Local::resume(options))?;
    loop {
        let t = match client.next_task(Duration::from_secs(30)).await? {
            Pull::Finished => {
                progress!("device {i}: the run has finished");
                return Ok(());
            }
            Pull::Wait(_) => continue,
            Pull::Task(t) => t,
        };
        let meta: TaskMeta =
            serde_json::from_slice(&t.task).context("reading the task the server sent")?;
        let what = format!("round {} {}", meta.round, meta.phase.name());
        progress!(
            "device {i}: {what} (deadline in {:.0} s)",
            t.deadline_in.as_secs_f64()
        );
        let download = match client.download(&t).await {
            Ok(d) => d,
            Err(e @ NetError::Refused { .. }) => {
                progress!("device {i}: {e}; waiting for the next task");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let payload = Payload::decode(&download, "the download").map_err(anyhow::Error::msg)?;
        let report = tokio::task::block_in_place(|| handle(&mut local, options, &meta, &payload))
            .with_context(|| format!("device {i}, {what}"))?;
        match client.upload(t.round, Bytes::from(report)).await {
            Ok(()) => progress!("device {i}: {what} uploaded"),
            Err(e @ NetError::Refused { .. }) => {
                progress!("device {i}: {e}; waiting for the next task")
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where a device's state stands: `(round, 0)` after setup, `(round, 1)` after a step,
/// `(round, 2)` after a download and evaluation.
type Key = (usize, u8);

fn key(round: usize, phase: Phase) -> Key {
    (round, if phase == Phase::Step { 1 } else { 2 })
}

/// A device's models and data, built from the config and its setup.
struct Local {
    run: String,
    config_text: String,
    runtime: DeviceRuntime,
    /// The saved state the models in memory equal, if any.
    at: Option<Key>,
}

impl Local {
    /// The device as its folder left it, if it was set up before.
    fn resume(options: &DeviceOptions) -> anyhow::Result<Option<Local>> {
        let config_file = options.dir.join("config.toml");
        let setup_file = options.dir.join("setup.safetensors");
        let run_file = options.dir.join("run.txt");
        if !(config_file.is_file() && setup_file.is_file() && run_file.is_file()) {
            return Ok(None);
        }
        let run = std::fs::read_to_string(&run_file)
            .with_context(|| format!("reading {}", run_file.display()))?;
        let text = std::fs::read_to_string(&config_file)
            .with_context(|| format!("reading {}", config_file.display()))?;
        let bytes = std::fs::read(&setup_file)
            .with_context(|| format!("reading {}", setup_file.display()))?;
        let setup = Payload::decode(&bytes, &setup_file.display().to_string())
            .map_err(anyhow::Error::msg)?;
        let mut local = Local::build(options, &run, &text, &setup)?;
        match checkpoints(&options.dir)?.last().copied() {
            Some(k) => {
                local.restore(options, k)?;
                progress!(
                    "device {}: resumed from its state after round {} {}",
                    options.device,
                    k.0,
                    ["setup", "step", "evaluation"][k.1 as usize]
                );
            }
            // Stopped between writing its setup and its first state: the models just built
            // are that state.
            None => local.save(options, (0, 0))?,
        }
        Ok(Some(local))
    }

    /// Builds the device from the config text, its own data and its setup (the messages of the
    /// method's server setup for it).
    fn build(
        options: &DeviceOptions,
        run: &str,
        text: &str,
        setup: &Payload,
    ) -> anyhow::Result<Local> {
        let i = options.device;
        let path = options.dir.join("config.toml");
        write_atomic(&path, text.as_bytes())?;
        let mut config = ExperimentConfig::load(&path)?;
        config.resolve_paths(&options.root);
        config.cache_dir = options.dir.join("cache");
        let scope = match options.data {
            Some(_) => CheckScope::Device,
            None => CheckScope::Everything,
        };
        let plugins = config.check_as(&path, &options.root, scope)?;
        if i >= config.devices.len() {
            anyhow::bail!(
                "--device {i}: the server's config has {} devices",
                config.devices.len()
            );
        }
        progress!(
            "device {i}: setting up ({}, SLM {})",
            config.devices[i].domain,
            config.devices[i].slm.plugin
        );
        let data = match &options.data {
            Some(dir) => DeviceData::read(dir, &config, i)?,
            None => DeviceData::from_files(&config, &options.root, &options.dir, i)?,
        };
        let cache = config.cache_dir.clone();
        let mut runtime =
            DeviceRuntime::build(Arc::new(config), Arc::new(plugins), data, &cache, true)?;
        runtime.setup(&setup.setup_messages())?;
        Ok(Local {
            run: run.to_string(),
            config_text: text.to_string(),
            runtime,
            at: None,
        })
    }

    /// Saves the models as state `k`: written into a fresh folder, then renamed into place,
    /// so a process stopped at any moment leaves either the old state or the new one.
    fn save(&mut self, options: &DeviceOptions, k: Key) -> anyhow::Result<()> {
        let dir = state_dir(&options.dir, k);
        let tmp = options.dir.join(format!("state/tmp-{:06}-{}", k.0, k.1));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let steps = self.runtime.save(&tmp)?;
        let file = tmp.join("steps.json");
        std::fs::write(&file, serde_json::to_vec(&steps)?)
            .with_context(|| format!("writing {}", file.display()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} into place", tmp.display()))?;
        self.at = Some(k);
        // Two states back are enough to repeat any phase; older ones go.
        let all = checkpoints(&options.dir)?;
        for old in all.iter().take(all.len().saturating_sub(3)) {
            let _ = std::fs::remove_dir_all(state_dir(&options.dir, *old));
        }
        Ok(())
    }

    fn restore(&mut self, options: &DeviceOptions, k: Key) -> anyhow::Result<()> {
        let dir = state_dir(&options.dir, k);
        let file = dir.join("steps.json");
        let steps: DeviceSteps = serde_json::from_slice(
            &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("reading {}", file.display()))?;
        self.runtime.restore(&dir, &steps)?;
        self.at = Some(k);
        Ok(())
    }

    /// Goes back to the last saved state before `target`, unless the models already hold it.
    fn go_back_before(&mut self, options: &DeviceOptions, target: Key) -> anyhow::Result<()> {
        let before = checkpoints(&options.dir)?
            .into_iter()
            .rfind(|k| *k < target);
        match before {
            Some(k) if self.at != Some(k) => self.restore(options, k),
            Some(_) => Ok(()),
            None => anyhow::bail!(
                "device {} has no saved state before round {} in {}",
                options.device,
                target.0,
                options.dir.display()
            ),
        }
    }
}

/// Writes `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn state_dir(dir: &Path, k: Key) -> PathBuf {
    dir.join(format!("state/{:06}-{}", k.0, k.1))
}

/// The saved states in `dir`, oldest first (a state counts once its `steps.json` is written).
fn checkpoints(dir: &Path) -> anyhow::Result<Vec<Key>> {
    let state = dir.join("state");
    let mut keys = Vec::new();
    let Ok(entries) = std::fs::read_dir(&state) else {
        return Ok(keys);
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", state.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let parsed = name
            .split_once('-')
            .and_then(|(r, p)| Some((r.parse::<usize>().ok()?, p.parse::<u8>().ok()?)));
        if let Some(k) = parsed {
            if k.1 <= 2 && entry.path().join("steps.json").is_file() {
                keys.push(k);
            }
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

/// One task: set up if needed, go back to the state before the phase, apply a missed
/// download, run the phase, save, and return the upload.
fn handle(
    local: &mut Option<Local>,
    options: &DeviceOptions,
    meta: &TaskMeta,
    payload: &Payload,
) -> anyhow::Result<Vec<u8>> {
    let started = Instant::now();
    let i = options.device;
    if let Some(l) = local.as_ref() {
        if l.run != meta.run || l.config_text != meta.config {
            anyhow::bail!(
                "{} holds the state of run {} and the server runs {}{}; give this device an \
                 empty --dir",
                options.dir.display(),
                l.run,
                meta.run,
                if l.run == meta.run {
                    " with another config"
                } else {
                    ""
                }
            );
        }
    }
    if local.is_none() {
        if !meta.setup {
            anyhow::bail!(
                "device {i} has no state in {} and the server sent no setup (the device set up \
                 earlier in this run, so its folder was lost or another --dir was given)",
                options.dir.display()
            );
        }
        let mut setup = Payload::default();
        for (part, message) in payload.parts() {
            if let Part::Setup(_) = part {
                setup.put(part.clone(), message.to_vec());
            }
        }
        let mut l = Local::build(options, &meta.run, &meta.config, &setup)?;
        write_atomic(&options.dir.join("setup.safetensors"), &setup.encode())?;
        write_atomic(&options.dir.join("run.txt"), meta.run.as_bytes())?;
        l.save(options, (0, 0))?;
        *local = Some(l);
    }
    let Some(l) = local.as_mut() else {
        anyhow::bail!("device {i} is not set up");
    };
    let target = key(meta.round, meta.phase);
    l.go_back_before(options, target)?;
    let rt = &mut l.runtime;
    if let Some(missed) = meta.pending {
        let message = payload
            .get(&Part::Pending)
            .context("the task names a missed download but holds none")?
            .to_vec();
        let participants = cotune_protocol::participants(rt.config(), missed);
        let mut losses = DeviceLosses::default();
        let broadcast = payload.get(&Part::PendingBroadcast).map(<[u8]>::to_vec);
        let config = rt.shared_config();
        let codecs = rt.codecs().clone();
        let round = cotune_protocol::methods::Round::of(&config, &codecs, missed, &participants);
        rt.receive(&round, broadcast.as_deref(), &message, &mut losses)?;
        progress!("device {i}: applied the download of round {missed} it missed");
    }
    let config = rt.shared_config();
    let codecs = rt.codecs().clone();
    let round =
        cotune_protocol::methods::Round::of(&config, &codecs, meta.round, &meta.participants);
    let broadcast = payload.get(&Part::Broadcast);
    let mut report = ReportMeta {
        phase: meta.phase,
        round: meta.round,
        device: i,
        losses: meta.losses.clone(),
        examples: rt.device.train.len(),
        prepared: None,
        slm: None,
        dpm: None,
        seconds: 0.0,
    };
    let mut out = Payload::default();
    match meta.phase {
        Phase::Step => {
            let (step, examples, prepared) = rt.step(&round, broadcast)?;
            report.losses = step.losses;
            report.examples = examples;
            report.prepared = prepared.map(|p| (p.norm, p.clipped, p.attacked));
            let fault = test_fault(meta.round);
            if fault.as_deref() == Some("examples") {
                report.examples = 1_000_000_000;
            }
            if let Some(mut upload) = step.upload {
                if let Some(kind) = fault.filter(|k| k != "examples") {
                    upload = apply_fault(&kind, upload)?;
                }
                out.put(Part::Upload, upload);
            }
        }
        Phase::Receive => {
            if let Some(download) = payload.get(&Part::Download) {
                rt.receive(&round, broadcast, download, &mut report.losses)?;
            }
            let (slm, dpm, files) = rt.evaluate(meta.round, meta.with_slms, &options.dir)?;
            (report.slm, report.dpm) = (slm, dpm);
            for (name, path) in files.into_iter().filter(|_| meta.send_predictions) {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.put(Part::Prediction(name), bytes);
            }
        }
    }
    l.save(options, target)?;
    report.seconds = started.elapsed().as_secs_f64();
    out.meta = serde_json::to_string(&report)?;
    Ok(out.encode())
}

/// A test hook: `COTUNE_DEVICE_FAULT=<kind>:<round>[,<kind>:<round>...]` makes this process's
/// first step upload of each round named bad (a parameter set's `nan`, `shape`, `norm`; FedMKT
/// knowledge that covers one example too few, `topk-short`), claims a billion training
/// examples (`examples`), or stalls the step for two minutes (`stall`), so the tests can show
/// what the server does with it. Each fault is used once per process.
fn test_fault(round: usize) -> Option<String> {
    static USED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    let spec = std::env::var("COTUNE_DEVICE_FAULT").ok()?;
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    for (k, entry) in spec.split(',').enumerate() {
        let Some((kind, at)) = entry.split_once(':') else {
            continue;
        };
        if at.parse::<usize>().ok() == Some(round) && !used.contains(&k) {
            used.push(k);
            progress!("test fault {kind} in round {round}");
            return Some(kind.to_string());
        }
    }
    None
}

fn apply_fault(kind: &str, upload: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if kind == "stall" {
        std::thread::sleep(Duration::from_secs(120));
        return Ok(upload);
    }
    if kind == "topk-short" {
        let mut knowledge = cotune_protocol::fedmkt::decode_topk(&upload)?;
        knowledge.pop();
        return Ok(cotune_protocol::fedmkt::encode_topk(&knowledge));
    }
    let mut params = cotune_protocol::message::decode_params(&upload)?;
    let Some(first) = params.first_mut() else {
        return Ok(upload);
    };
    match kind {
        "nan" => first.data[0] = f32::NAN,
        "norm" => first.data.iter_mut().for_each(|v| *v += 1e4),
        "shape" => {
            let mut data = first.data.to_vec();
            data.pop();
            *first = cotune_host::NamedTensor::new(
                first.name.to_string(),
                vec![data.len() as u64],
                data,
            );
        }
        other => anyhow::bail!("unknown test fault {other:?}"),
    }
    Ok(cotune_protocol::message::encode_params(&params))
}
