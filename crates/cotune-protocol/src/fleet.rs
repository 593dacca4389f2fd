//! The devices' side of a run, as the runner sees it: a [`Fleet`]. The runner drives every
//! round through it (setup, step, receive with evaluation, save, restore) and never asks which
//! fleet it has. Two implement it:
//!
//! - [`LocalFleet`]: every device in this process, one [`DeviceRuntime`] each, worked on
//!   threads (`cargo xtask run`);
//! - a deployment's fleet (`cotune_deploy`): every device in a process of its own, reached over
//!   the network, each holding one [`DeviceRuntime`] (`cargo xtask serve` / `device`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::{ExperimentConfig, Plugins, SlmInit};
use crate::methods::Round;
use crate::parallel::{parallel_map, worker_threads};
use crate::parties::DeviceData;
use crate::progress;
use crate::records::{DeviceLosses, Scores, WireRecord};
use crate::roles::{DeviceSteps, Server};
use crate::runtime::{put_score, DeviceRuntime, WorkDone};

/// What one device reports after a round: its losses (after the method's receive), its
/// scores (`None` where it did not report), and what crossed the network for it (deployed).
#[derive(Debug, Clone, Default)]
pub struct DeviceReport {
    /// The device's losses this round.
    pub losses: DeviceLosses,
    /// Its SLM's score, when scored.
    pub slm: Option<Scores>,
    /// Its proxy's score, when it has one.
    pub dpm: Option<Scores>,
    /// Its traffic on the network (a deployment only).
    pub wire: Option<WireRecord>,
}

impl DeviceReport {
    /// One report per device (`devices` of them), each with its losses from `losses` (in device
    /// order; devices past its end get none) and nothing else yet.
    pub fn with_losses(losses: Vec<DeviceLosses>, devices: usize) -> Vec<DeviceReport> {
        let mut reports: Vec<DeviceReport> = losses
            .into_iter()
            .map(|losses| DeviceReport {
                losses,
                ..DeviceReport::default()
            })
            .collect();
        reports.resize_with(devices, DeviceReport::default);
        reports
    }
}

/// The devices of a run.
pub trait Fleet: Send {
    /// Each device's SLM as `plugin/architecture`, in device order.
    fn slm_labels(&self) -> Vec<String>;

    /// Gives every device what the method's server setup made for it (`messages[i]`, in
    /// device order) for the method's device setup.
    fn setup(&mut self, messages: Vec<Vec<Vec<u8>>>) -> anyhow::Result<()>;

    /// The round's step on its participants (`broadcast`: what the server sent every one of
    /// them); returns what each participant that completed it uploaded, in device order.
    /// `server` is what the uploads may be checked against before acceptance.
    fn step(
        &mut self,
        round: &Round<'_>,
        server: &Server,
        broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, WorkDone)>>;

    /// The round's downloads (`downloads[i]` for device `i`) applied by the method's receive
    /// (which may add to `losses[i]`), then every device's models scored (the SLMs with
    /// `with_slms`): one report per device, in device order. Round 0 is this with no
    /// download.
    fn receive(
        &mut self,
        round: &Round<'_>,
        broadcast: Option<&[u8]>,
        downloads: Vec<Option<Vec<u8>>>,
        losses: Vec<DeviceLosses>,
        with_slms: bool,
    ) -> anyhow::Result<Vec<DeviceReport>>;

    /// Saves what the run's checkpoint holds of the devices into `dir` (nothing for devices
    /// that keep their own state); returns their schedule counters.
    fn save(&mut self, dir: &Path) -> anyhow::Result<Vec<DeviceSteps>>;

    /// Reads back what [`save`](Self::save) wrote.
    fn restore(&mut self, dir: &Path, steps: &[DeviceSteps]) -> anyhow::Result<()>;

    /// The run has finished.
    fn finish(&mut self) {}
}

/// What a fleet is built from when a run starts.
pub struct FleetStart<'a> {
    /// The checked config.
    pub config: &'a Arc<ExperimentConfig>,
    /// Its plugins.
    pub plugins: &'a Arc<Plugins>,
    /// The run folder.
    pub run_dir: &'a Path,
    /// False when resuming from the run's checkpoint.
    pub fresh: bool,
    /// The config file of a fresh run, as given.
    pub config_file: &'a Path,
}

/// Every device in this process.
pub struct LocalFleet {
    devices: Vec<DeviceRuntime>,
    threads: usize,
    run_dir: PathBuf,
}

impl LocalFleet {
    /// Builds every device of `start.config` from its share of the data (`data`, in device
    /// order), SLMs pre-trained into `cache_dir` where the config says so.
    pub fn build(
        start: &FleetStart<'_>,
        data: Vec<DeviceData>,
        cache_dir: &Path,
    ) -> anyhow::Result<LocalFleet> {
        let config = start.config;
        let threads = worker_threads(config.threads);
        // Devices whose SLMs are pre-trained alike share one cache entry: the first of each
        // is built before the others, which then read it.
        let identity = |i: usize| {
            let d = &config.devices[i];
            let general = matches!(d.init, SlmInit::PretrainedGeneral).then(|| d.domain.clone());
            format!("{:?}{}{:?}", d.init, d.slm.config_text(), general)
                + &start.plugins.slms[i].path().display().to_string()
        };
        let mut seen = Vec::new();
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for d in data {
            let id = identity(d.index);
            match seen.contains(&id) {
                true => rest.push(d),
                false => {
                    seen.push(id);
                    first.push(d)
                }
            }
        }
        progress::phase("devices: setup", first.len() + rest.len());
        let build = |d: DeviceData| {
            let r = DeviceRuntime::build(
                config.clone(),
                start.plugins.clone(),
                d,
                cache_dir,
                start.fresh,
            );
            progress::tick();
            r
        };
        let mut devices = parallel_map(first, threads, build)?;
        devices.extend(parallel_map(rest, threads, build)?);
        devices.sort_by_key(|d| d.device.index);
        Ok(LocalFleet {
            devices,
            threads,
            run_dir: start.run_dir.to_path_buf(),
        })
    }

    /// The devices chosen by index, for work on threads.
    fn chosen(&mut self, chosen: &[usize]) -> Vec<&mut DeviceRuntime> {
        self.devices
            .iter_mut()
            .filter(|d| chosen.contains(&d.device.index))
            .collect()
    }
}

impl Fleet for LocalFleet {
    fn slm_labels(&self) -> Vec<String> {
        self.devices.iter().map(DeviceRuntime::slm_label).collect()
    }

    fn setup(&mut self, messages: Vec<Vec<Vec<u8>>>) -> anyhow::Result<()> {
        for (d, m) in self.devices.iter_mut().zip(messages) {
            d.setup(&m)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        round: &Round<'_>,
        _server: &Server,
        broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, WorkDone)>> {
        let threads = self.threads;
        let picked = self.chosen(round.participants);
        for_devices(picked, threads, |d| d.step(round, broadcast))
    }

    fn receive(
        &mut self,
        round: &Round<'_>,
        broadcast: Option<&[u8]>,
        downloads: Vec<Option<Vec<u8>>>,
        losses: Vec<DeviceLosses>,
        with_slms: bool,
    ) -> anyhow::Result<Vec<DeviceReport>> {
        let threads = self.threads;
        let receivers: Vec<usize> = (0..downloads.len())
            .filter(|&i| downloads[i].is_some())
            .collect();
        let mut reports = DeviceReport::with_losses(losses, self.devices.len());
        progress::phase("devices: downloads", receivers.len());
        let picked = self.chosen(&receivers);
        let received = for_devices(picked, threads, |d| {
            let i = d.device.index;
            let mut l = reports[i].losses.clone();
            let download = downloads[i].as_deref().unwrap_or_default();
            d.receive(round, broadcast, download, &mut l)?;
            Ok(l)
        })?;
        for (i, l) in received {
            reports[i].losses = l;
        }
        // Every model's evaluation is independent: all of them on threads.
        let dir = self
            .run_dir
            .join(format!("predictions/round-{}", round.number));
        let jobs: Vec<(usize, &DeviceRuntime, (&'static str, _, _))> = self
            .devices
            .iter()
            .flat_map(|d| {
                d.scored_models(with_slms)
                    .into_iter()
                    .map(move |m| (d.device.index, d, m))
            })
            .collect();
        progress::phase("evaluation", jobs.len());
        let scored = parallel_map(jobs, threads, |(i, d, model)| {
            let who = model.0;
            let (e, _) = d.evaluate_one(model, &dir)?;
            progress::tick();
            Ok((i, who, Scores::from(e.report.macro_average)))
        })?;
        for (i, who, s) in scored {
            let r = &mut reports[i];
            put_score(who, s, (&mut r.slm, &mut r.dpm));
        }
        Ok(reports)
    }

    fn save(&mut self, dir: &Path) -> anyhow::Result<Vec<DeviceSteps>> {
        self.devices.iter().map(|d| d.save(dir)).collect()
    }

    fn restore(&mut self, dir: &Path, steps: &[DeviceSteps]) -> anyhow::Result<()> {
        if steps.len() != self.devices.len() {
            anyhow::bail!(
                "{} has {} devices, the config {}",
                dir.join("state.json").display(),
                steps.len(),
                self.devices.len()
            );
        }
        for (d, s) in self.devices.iter_mut().zip(steps) {
            d.restore(dir, s)?;
        }
        Ok(())
    }
}

/// Runs `f` on every device of `picked` (in device order), `threads` at a time, and returns
/// the results in device order; each finished device ticks the progress phase.
fn for_devices<T: Send>(
    picked: Vec<&mut DeviceRuntime>,
    threads: usize,
    f: impl Fn(&mut DeviceRuntime) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<(usize, T)>> {
    parallel_map(picked, threads, |dev| {
        let (i, who) = (dev.device.index, dev.device.name.clone());
        let r = f(dev).with_context(|| format!("device {i} ({who})"))?;
        progress::tick();
        Ok((i, r))
    })
}
