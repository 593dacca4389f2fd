//! The server's side of a deployment: [`NetFleet`], the fleet whose devices are processes of
//! their own reached through `cotune_net`, and [`serve`], the runner of `cotune_protocol` with
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use cotune_net::{
    DeviceTask, NetServer, PartyFiles, RevocationList, RoundOutcome, RoundSpec, ServerConfig,
    ServerState, StateConfig, TlsFiles, Validator,
};

use cotune_protocol::config::{architecture_of, train_records_bound, DeployConfig};
use cotune_protocol::methods::{DeviceStep, Method, Round};
use cotune_protocol::records::{DeviceLosses, Scores, WireRecord};
use cotune_protocol::roles::{DeviceSteps, Server};
use cotune_protocol::uploads::{ExpectedUpload, Prepared};
use cotune_protocol::{DeviceReport, Fleet, FleetStart, RunOptions, WorkDone};

use crate::accept::{fedavg_weight, lock, validate, Expected};
use crate::{net_round, Part, Payload, Phase, ReportMeta, TaskMeta};

/// How `cargo xtask serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The run: its config (or the run folder to resume), root and folders.
    pub run: RunOptions,
    /// The address to listen on (port 0: any free port, see `address_file`).
    pub listen: SocketAddr,
    /// The server's certificate folder (`ca.pem`, `server.pem`, `server.key`): the `server/`
    /// folder of `cargo xtask certs`, or the folder holding it.
    pub certs: PathBuf,
    /// The revocation list; `None`: `revoked.txt` in the server's certificate folder (a
    /// missing file revokes nothing).
    pub revoked: Option<PathBuf>,
    /// A file to write the address the server listens on into, once it does.
    pub address_file: Option<PathBuf>,
    /// The server's own data folder (`cargo xtask split`'s `server/`); without it the server
    /// splits the data files itself and keeps only its share.
    pub data: Option<PathBuf>,
}

/// Runs the server side of `options.run` for device processes and returns its run folder.
///
/// The certificates and the revocation list are read first, so a mistake in them is reported
/// before the server sets up its models.
pub fn serve(options: &ServeOptions) -> anyhow::Result<PathBuf> {
    server_files(options)?;
    cotune_protocol::run_with_fleet(&options.run, options.data.as_deref(), &|start| {
        Ok(Box::new(NetFleet::start(start, options)?) as Box<dyn Fleet>)
    })
}

/// The server's TLS files and its revocation list's path, both checked.
fn server_files(options: &ServeOptions) -> anyhow::Result<(TlsFiles, PathBuf)> {
    let files = PartyFiles::find_server(&options.certs)?;
    let tls = files.read()?;
    let revoked = match &options.revoked {
        Some(path) => path.clone(),
        None => files.dir.join(cotune_net::revoke::REVOKED_FILE),
    };
    RevocationList::read(&revoked)?;
    Ok((tls, revoked))
}

/// A download a device missed (it was dropped or away), sent with its next task.
struct Pending {
    round: usize,
    broadcast: Option<Vec<u8>>,
    download: Vec<u8>,
}

/// The devices of a run, in their own processes.
pub struct NetFleet {
    rt: tokio::runtime::Runtime,
    state: Arc<ServerState>,
    server: Option<NetServer>,
    settings: DeployConfig,
    config_text: String,
    run_dir: PathBuf,
    dir: PathBuf,
    devices: usize,
    /// False when the run resumed: the setups were saved when it started.
    fresh: bool,
    /// The method of the run.
    method: Method,
    /// Each device's SLM as `plugin/architecture`, from the config.
    labels: Vec<String>,
    /// Per device, the most training records the config gives it: FedAvg's weight is the
    /// size a device declares, clamped to this.
    train_bounds: Vec<usize>,
    /// Per device, its setup: the messages of the method's server setup for it.
    setups: Vec<Payload>,
    /// Devices that have uploaded once: they hold their setup.
    ready: BTreeSet<usize>,
    pending: BTreeMap<usize, Pending>,
    /// Devices dropped from this round's step.
    dropped: BTreeSet<usize>,
    /// This round's scores, per device.
    evals: BTreeMap<usize, (Option<Scores>, Option<Scores>)>,
    /// This round's traffic on the network, per device.
    wire: BTreeMap<usize, WireRecord>,
    expected: Arc<Mutex<Expected>>,
}

impl NetFleet {
    /// Starts serving the devices of the run `start` describes.
    pub fn start(start: &FleetStart<'_>, options: &ServeOptions) -> anyhow::Result<NetFleet> {
        let config = &**start.config;
        let settings = config.deploy.clone().unwrap_or_default();
        let dir = start.run_dir.join("deploy");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let saved = dir.join("config.toml");
        // The config the devices are sent: the file given, or for a resumed run (even one
        // stopped before its first round) the copy its deployment saved.
        let config_text = match start.fresh && !saved.is_file() {
            true => {
                let path = start.config_file;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                std::fs::write(&saved, &text)
                    .with_context(|| format!("writing {}", saved.display()))?;
                text
            }
            false => std::fs::read_to_string(&saved).with_context(|| {
                format!(
                    "reading {} (a run folder started by `serve` has it)",
                    saved.display()
                )
            })?,
        };
        let n = config.devices.len();
        let labels = config
            .devices
            .iter()
            .zip(&start.plugins.slms)
            .map(|(d, p)| format!("{}/{}", p.name(), architecture_of(&d.slm, p)))
            .collect();
        let ready: BTreeSet<usize> = match std::fs::read(dir.join("ready.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("reading deploy/ready.json")?,
            Err(_) => BTreeSet::new(),
        };
        let mut pending = BTreeMap::new();
        for i in 0..n {
            let path = dir.join(format!("pending-{i}.safetensors"));
            if let Ok(bytes) = std::fs::read(&path) {
                let p = Payload::decode(&bytes, &path.display().to_string())
                    .map_err(anyhow::Error::msg)?;
                let round: usize = serde_json::from_str(&p.meta)
                    .with_context(|| format!("reading {}", path.display()))?;
                let download = p.get(&Part::Pending).unwrap_or_default().to_vec();
                let broadcast = p.get(&Part::PendingBroadcast).map(<[u8]>::to_vec);
                pending.insert(
                    i,
                    Pending {
                        round,
                        broadcast,
                        download,
                    },
                );
            }
        }
        let expected = Arc::new(Mutex::new(Expected::default()));
        let validator: Validator = {
            let expected = expected.clone();
            Arc::new(move |device, round, bytes| validate(&lock(&expected), device, round, bytes))
        };
        let state = ServerState::with_validator(
            StateConfig {
                heartbeat_interval: Duration::from_secs_f64(settings.heartbeat_seconds),
                missed_heartbeats: settings.missed_heartbeats,
                poll_interval: Duration::from_millis(200),
                max_upload_bytes: (settings.max_upload_mib * 1024.0 * 1024.0) as u64,
            },
            validator,
        )?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cotune-serve")
            .enable_all()
            .build()
            .context("starting the network runtime")?;
        let (tls, revoked) = server_files(options)?;
        let mut server_config = ServerConfig::new(options.listen, tls);
        server_config.revoked = Some(revoked);
        let server = rt.block_on(NetServer::start(server_config, state.clone()))?;
        let addr = server.local_addr();
        if let Some(file) = &options.address_file {
            std::fs::write(file, addr.to_string())
                .with_context(|| format!("writing {}", file.display()))?;
        }
        progress!(
            "serving {n} devices on {addr} (certificates from {}); start them with \
             `cargo xtask device --server https://<this host>:{} --device <i> --certs <dir>`",
            options.certs.display(),
            addr.port()
        );
        Ok(NetFleet {
            rt,
            state,
            server: Some(server),
            settings,
            config_text,
            run_dir: start.run_dir.to_path_buf(),
            dir,
            devices: n,
            fresh: start.fresh,
            method: Method::of(config)?,
            labels,
            train_bounds: config
                .devices
                .iter()
                .map(|d| train_records_bound(&config.data, Some(&d.domain)))
                .collect(),
            setups: Vec::new(),
            ready,
            pending,
            dropped: BTreeSet::new(),
            evals: BTreeMap::new(),
            wire: BTreeMap::new(),
            expected,
        })
    }

    fn new_round(&mut self) {
        self.wire.clear();
        self.evals.clear();
        self.dropped.clear();
    }

    /// The step of `round` on its participants' devices: what each accepted device uploaded,
    /// as a device in one process returns it.
    fn steps(
        &mut self,
        round: &Round<'_>,
        server: &Server,
        received: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, WorkDone)>> {
        self.new_round();
        let r = round.number;
        let uploads: BTreeMap<usize, ExpectedUpload> = self
            .method
            .implementation()
            .expected_uploads(round, server, received)?
            .into_iter()
            .collect();
        *lock(&self.expected) = Expected {
            net_round: net_round(r, Phase::Step),
            phase: Some(Phase::Step),
            round: r,
            uploads,
            max_norm: self.settings.max_update_norm,
            send_predictions: false,
        };
        let mut tasks = BTreeMap::new();
        for &i in round.participants {
            let task = self.task(
                r,
                Phase::Step,
                i,
                round.participants,
                received,
                None,
                DeviceLosses::default(),
                false,
            );
            tasks.insert(i, task);
        }
        let deadline = self.settings.deadline_seconds;
        let reports = self.run_phase(r, Phase::Step, tasks, deadline)?;
        let mut out = Vec::new();
        for (i, p) in reports {
            let meta: ReportMeta = serde_json::from_str(&p.meta)?;
            self.wire.entry(i).or_default().device_seconds += meta.seconds;
            self.ready.insert(i);
            self.pending.remove(&i);
            let prepared = meta.prepared.map(|(norm, clipped, attacked)| Prepared {
                norm,
                clipped,
                attacked,
            });
            let step = DeviceStep {
                losses: meta.losses,
                upload: p.get(&Part::Upload).map(<[u8]>::to_vec),
            };
            // FedAvg's weight: the training-set size the device declares, clamped to what the
            // config gives a device (and to at least one), never a larger claim.
            let bound = self.train_bounds[i];
            let examples = fedavg_weight(meta.examples, bound);
            if examples != meta.examples {
                progress!(
                    "  round {r} step: device {i} says it has {} training examples; weighed as \
                     {examples} (the config gives a device at most {bound})",
                    meta.examples
                );
            }
            out.push((i, (step, examples, prepared)));
        }
        let uploaded: BTreeSet<usize> = out.iter().map(|(i, _)| *i).collect();
        self.dropped = round
            .participants
            .iter()
            .copied()
            .filter(|i| !uploaded.contains(i))
            .collect();
        self.persist()?;
        Ok(out)
    }

    /// The downloads of `round` and every connected device's evaluation (round 0: every
    /// device's setup and evaluation): the losses of each device that reported, after the
    /// method's receive.
    fn receive_round(
        &mut self,
        round: &Round<'_>,
        received: Option<&[u8]>,
        downloads: Vec<Option<Vec<u8>>>,
        losses: &[DeviceLosses],
        with_slms: bool,
    ) -> anyhow::Result<Vec<(usize, DeviceLosses)>> {
        if round.number == 0 {
            self.new_round();
            let everyone: Vec<usize> = (0..self.devices).collect();
            return self.receive_phase(0, &everyone, &everyone, None, &downloads, losses, true);
        }
        let connected: BTreeSet<usize> = self
            .state
            .connected_devices()
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let targets: Vec<usize> = (0..self.devices)
            .filter(|i| !self.dropped.contains(i) && connected.contains(i))
            .collect();
        self.receive_phase(
            round.number,
            &targets,
            round.participants,
            received,
            &downloads,
            losses,
            with_slms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_phase(
        &mut self,
        r: usize,
        targets: &[usize],
        participants: &[usize],
        received: Option<&[u8]>,
        downloads: &[Option<Vec<u8>>],
        losses: &[DeviceLosses],
        with_slms: bool,
    ) -> anyhow::Result<Vec<(usize, DeviceLosses)>> {
        *lock(&self.expected) = Expected {
            net_round: net_round(r, Phase::Receive),
            phase: Some(Phase::Receive),
            round: r,
            uploads: BTreeMap::new(),
            max_norm: None,
            send_predictions: self.settings.send_predictions,
        };
        let mut tasks = BTreeMap::new();
        for &i in targets {
            let task = self.task(
                r,
                Phase::Receive,
                i,
                participants,
                received,
                downloads[i].as_deref(),
                losses[i].clone(),
                with_slms || r == 0,
            );
            tasks.insert(i, task);
        }
        let deadline = match r {
            0 => self.settings.setup_deadline_seconds,
            _ => self.settings.deadline_seconds,
        };
        let reports = match tasks.is_empty() {
            true => {
                progress!("  round {r}: no device is connected to download and evaluate");
                BTreeMap::new()
            }
            false => self.run_phase(r, Phase::Receive, tasks, deadline)?,
        };
        let mut out = Vec::new();
        for (i, p) in &reports {
            let meta: ReportMeta = serde_json::from_str(&p.meta)?;
            self.wire.entry(*i).or_default().device_seconds += meta.seconds;
            self.evals.insert(*i, (meta.slm, meta.dpm));
            // Each device's files in a folder of its own, so no device names another's; only
            // when asked for (the validator refuses them otherwise).
            let dir = self
                .run_dir
                .join(format!("predictions/round-{r}/device-{i}"));
            for (part, bytes) in p.parts() {
                if let (Part::Prediction(file), true) = (part, self.settings.send_predictions) {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let path = dir.join(file);
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
            self.ready.insert(*i);
            self.pending.remove(i);
            out.push((*i, meta.losses));
        }
        for (i, download) in downloads.iter().enumerate() {
            if let (Some(download), false) = (download, reports.contains_key(&i)) {
                self.pending.insert(
                    i,
                    Pending {
                        round: r,
                        broadcast: received.map(<[u8]>::to_vec),
                        download: download.clone(),
                    },
                );
            }
        }
        self.persist()?;
        Ok(out)
    }

    /// Device `i`'s task and download for a phase.
    #[allow(clippy::too_many_arguments)]
    fn task(
        &self,
        round: usize,
        phase: Phase,
        i: usize,
        participants: &[usize],
        broadcast: Option<&[u8]>,
        download: Option<&[u8]>,
        losses: DeviceLosses,
        with_slms: bool,
    ) -> (TaskMeta, Payload) {
        let mut p = Payload::default();
        let setup = !self.ready.contains(&i);
        if setup {
            for (part, message) in self.setups[i].parts() {
                p.put(part.clone(), message.to_vec());
            }
        }
        let pending = self.pending.get(&i).map(|pd| {
            p.put(Part::Pending, pd.download.clone());
            if let Some(b) = &pd.broadcast {
                p.put(Part::PendingBroadcast, b.clone());
            }
            pd.round
        });
        if let Some(b) = broadcast {
            p.put(Part::Broadcast, b.to_vec());
        }
        if let Some(d) = download {
            p.put(Part::Download, d.to_vec());
        }
        let meta = TaskMeta {
            run: self
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            config: self.config_text.clone(),
            phase,
            round,
            participants: participants.to_vec(),
            setup,
            pending,
            download: download.is_some(),
            broadcast: broadcast.is_some(),
            losses,
            with_slms,
            send_predictions: self.settings.send_predictions,
        };
        (meta, p)
    }

    /// Opens one phase, shows every device's state while it runs, and returns the accepted
    /// uploads; a phase that fails stops the run with its reason.
    fn run_phase(
        &mut self,
        r: usize,
        phase: Phase,
        tasks: BTreeMap<usize, (TaskMeta, Payload)>,
        deadline: f64,
    ) -> anyhow::Result<BTreeMap<usize, Payload>> {
        let net = net_round(r, phase);
        let participants = tasks.len();
        let spec = RoundSpec {
            round: net,
            tasks: tasks
                .into_iter()
                .map(|(i, (meta, payload))| {
                    let task = DeviceTask {
                        task: Bytes::from(serde_json::to_vec(&meta).unwrap_or_default()),
                        download: Bytes::from(payload.encode()),
                    };
                    (i as u32, task)
                })
                .collect(),
            deadline: Duration::from_secs_f64(deadline),
            min_devices: self.settings.min_devices.min(participants),
        };
        self.state.open_round(spec)?;
        let state = self.state.clone();
        let what = format!("round {r} {}", phase.name());
        let report = self.rt.block_on(async {
            let mut last = String::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(1), state.wait_round(net)).await {
                    Ok(report) => break report,
                    Err(_) => {
                        if let Some(report) = state.report(net) {
                            let line = device_states(&report);
                            if line != last {
                                progress!("  {what}: {line}");
                                last = line;
                            }
                        }
                    }
                }
            }
        })?;
        let line = report.progress_line();
        // The transport numbers phases; the line names the round and phase instead.
        let line = line
            .split_once(": ")
            .map_or(line.as_str(), |(_, rest)| rest);
        progress!(
            "  {what} {}: {line} [{}]",
            match &report.outcome {
                RoundOutcome::Completed => "completed",
                RoundOutcome::Failed { .. } => "failed",
                RoundOutcome::Open => "open",
            },
            device_states(&report)
        );
        // The transport's reasons name its round numbers; these name the round and phase.
        let words = |reason: &str| reason.replace(&format!("round {net}"), &what);
        for (&d, dr) in &report.devices {
            let w = self.wire.entry(d as usize).or_default();
            w.bytes_down += dr.sent_wire_bytes;
            w.bytes_up += dr.received_wire_bytes;
            w.largest_message = w.largest_message.max(dr.largest_message_bytes);
            w.seconds += dr.wall.as_secs_f64();
            for reason in dr.refusals.iter().map(|r| words(r)) {
                progress!("  {what}: refused an upload of device {d}: {reason}");
                w.refusals.push(format!("{}: {reason}", phase.name()));
            }
            if let Some(reason) = dr.dropped.as_deref().map(words) {
                progress!("  {what}: dropped device {d}: {reason}");
                w.dropped.push(format!("{}: {reason}", phase.name()));
            }
        }
        if let RoundOutcome::Failed { reason } = &report.outcome {
            anyhow::bail!(
                "{what} failed: {} (deploy.min_devices = {}); the state after the last \
                 completed round is saved: start the server again with --resume {} once the \
                 devices are up",
                words(reason),
                self.settings.min_devices,
                self.run_dir.display()
            );
        }
        let mut uploads = BTreeMap::new();
        for (d, bytes) in report.into_uploads()? {
            let p = Payload::decode(&bytes, &format!("the upload of device {d}"))
                .map_err(anyhow::Error::msg)?;
            uploads.insert(d as usize, p);
        }
        Ok(uploads)
    }

    /// Writes which devices hold their setup and the downloads they missed.
    fn persist(&self) -> anyhow::Result<()> {
        let ready = self.dir.join("ready.json");
        std::fs::write(&ready, serde_json::to_vec(&self.ready)?)
            .with_context(|| format!("writing {}", ready.display()))?;
        for i in 0..self.devices {
            let path = self.dir.join(format!("pending-{i}.safetensors"));
            match self.pending.get(&i) {
                Some(pd) => {
                    let mut p = Payload::new(pd.round.to_string());
                    p.put(Part::Pending, pd.download.clone());
                    if let Some(b) = &pd.broadcast {
                        p.put(Part::PendingBroadcast, b.clone());
                    }
                    std::fs::write(&path, p.encode())
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }
}

impl Fleet for NetFleet {
    fn slm_labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    /// A fresh run keeps every device's setup (also on disk, for a resumed server); a resumed
    /// run reads the setups it kept (what the server's setup makes when resuming is not
    /// trained, and the devices set up long ago).
    fn setup(&mut self, messages: Vec<Vec<Vec<u8>>>) -> anyhow::Result<()> {
        self.setups.clear();
        for (i, m) in messages.into_iter().enumerate() {
            let path = self.dir.join(format!("setup-{i}.safetensors"));
            let payload = match self.fresh && !path.is_file() {
                true => {
                    let mut p = Payload::default();
                    for (k, message) in m.into_iter().enumerate() {
                        p.put(Part::Setup(k), message);
                    }
                    std::fs::write(&path, p.encode())
                        .with_context(|| format!("writing {}", path.display()))?;
                    p
                }
                false => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Payload::decode(&bytes, &path.display().to_string())
                        .map_err(anyhow::Error::msg)?
                }
            };
            self.setups.push(payload);
        }
        Ok(())
    }

    fn step(
        &mut self,
        round: &Round<'_>,
        server: &Server,
        broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, WorkDone)>> {
        self.steps(round, server, broadcast)
    }

    fn receive(
        &mut self,
        round: &Round<'_>,
        broadcast: Option<&[u8]>,
        downloads: Vec<Option<Vec<u8>>>,
        losses: Vec<DeviceLosses>,
        with_slms: bool,
    ) -> anyhow::Result<Vec<DeviceReport>> {
        let received = self.receive_round(round, broadcast, downloads, &losses, with_slms)?;
        let mut reports = DeviceReport::with_losses(losses, self.devices);
        for (i, l) in received {
            reports[i].losses = l;
        }
        for (i, r) in reports.iter_mut().enumerate() {
            (r.slm, r.dpm) = self.evals.get(&i).copied().unwrap_or((None, None));
            r.wire = Some(self.wire.get(&i).cloned().unwrap_or_default());
        }
        Ok(reports)
    }

    /// The devices keep their own state; the server's side of it is written after every phase.
    fn save(&mut self, _dir: &Path) -> anyhow::Result<Vec<DeviceSteps>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _dir: &Path, _steps: &[DeviceSteps]) -> anyhow::Result<()> {
        Ok(())
    }

    /// Tells every device the run has finished and stops serving.
    fn finish(&mut self) {
        self.state.finish();
        let server = self.server.take();
        self.rt.block_on(async move {
            // Devices ask every 200 ms between phases (the poll interval): two seconds let each
            // hear it. A device away now learns it when it gives up reconnecting.
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Some(server) = server {
                let _ = server.shutdown(Duration::from_secs(1)).await;
            }
        });
    }
}

/// `device 0 uploaded, device 1 training` for the progress line.
fn device_states(report: &cotune_net::RoundReport) -> String {
    report
        .devices
        .iter()
        .map(|(d, r)| format!("device {d} {}", r.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
