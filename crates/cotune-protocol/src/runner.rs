//! The experiment runner: the run folder, setup or restore, round 0's evaluation, then every
//! round of the method (broadcast, device steps, server step, downloads; see
//! [`crate::methods`]) with its evaluation, record and checkpoint, and the summary files. The
//! runner knows no method by name, and drives the devices through a [`Fleet`] without knowing
//! where they are: [`run_with`] keeps them in this process, [`run_with_fleet`] takes any other
//! fleet (a deployment's).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use std::sync::Arc;

use crate::checkpoint;
use crate::config::{ExperimentConfig, Plugins, PrivacyMode};
use crate::fleet::{Fleet, FleetStart, LocalFleet};
use crate::methods::{FederatedMethod, Method, Round, Upload};
use crate::parties::{prepare_parties, ServerData};
use crate::progress;
use crate::records::{
    DeviceLosses, PrivacySpent, RoundOutcome, RoundRecord, Scores, Traffic, UploadsRecord,
};
use crate::results::write_results;
use crate::runtime::guards_uploads;
use crate::setup::{build_server, Experiment, ServerSide};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The experiment config file.
    pub config: PathBuf,
    /// A run folder to resume instead of starting a new run.
    pub resume: Option<PathBuf>,
    /// The folder relative paths (data, runs, cache) are taken from.
    pub root: PathBuf,
    /// Overrides the config's `runs_dir`.
    pub runs_dir: Option<PathBuf>,
    /// Overrides the config's `cache_dir`.
    pub cache_dir: Option<PathBuf>,
}

/// Checks a config without training: parse, values, domain files, plugins, FedAvg shapes.
pub fn check_config(config_path: &Path, root: &Path) -> anyhow::Result<ExperimentConfig> {
    let mut config = ExperimentConfig::load(config_path)?;
    config.resolve_paths(root);
    config.check(config_path, root)?;
    Ok(config)
}

/// The current UTC time as `YYYYMMDD-HHMMSS` (run folder names).
pub(crate) fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Runs (or resumes) an experiment with every device in this process and returns its run
/// folder.
pub fn run_with(options: &RunOptions) -> anyhow::Result<PathBuf> {
    run_inner(options, &Parties::InProcess)
}

/// Makes the fleet of a run whose devices are elsewhere (a deployment's).
pub type FleetMaker<'a> = dyn Fn(&FleetStart<'_>) -> anyhow::Result<Box<dyn Fleet>> + 'a;

/// [`run_with`] with the devices in the fleet `make` builds: the server reads only its own
/// share of the data, from `server_data` (a folder `cargo xtask split` wrote) or, without it,
/// from the data files (the benchmark is split and everything but the server's share dropped).
pub fn run_with_fleet(
    options: &RunOptions,
    server_data: Option<&Path>,
    make: &FleetMaker<'_>,
) -> anyhow::Result<PathBuf> {
    run_inner(
        options,
        &Parties::Remote {
            server_data: server_data.map(Path::to_path_buf),
            make,
        },
    )
}

/// Where the devices are, and where the server's data comes from.
enum Parties<'a> {
    /// Every party in this process: the benchmark is split here.
    InProcess,
    /// The devices elsewhere.
    Remote {
        server_data: Option<PathBuf>,
        make: &'a FleetMaker<'a>,
    },
}

fn run_inner(options: &RunOptions, parties: &Parties<'_>) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let config_path = match &options.resume {
        Some(dir) if !dir.join("config.resolved.toml").is_file() => anyhow::bail!(
            "cannot resume {}: not a run folder (it has no config.resolved.toml)",
            dir.display()
        ),
        Some(dir) => dir.join("config.resolved.toml"),
        None => options.config.clone(),
    };
    let mut config = ExperimentConfig::load(&config_path)?;
    config.resolve_paths(&options.root);
    if let Some(dir) = &options.runs_dir {
        config.runs_dir = dir.clone();
    }
    if let Some(dir) = &options.cache_dir {
        config.cache_dir = dir.clone();
    }
    let scope = match parties {
        Parties::Remote {
            server_data: Some(_),
            ..
        } => crate::validation::CheckScope::Server,
        _ => crate::validation::CheckScope::Everything,
    };
    let plugins = config.check_as(&config_path, &options.root, scope)?;
    let run_dir = match &options.resume {
        Some(dir) => dir.clone(),
        None => new_run_dir(&config, &options.root)?,
    };
    progress!(
        "{} ({}), {} devices, {} rounds -> {}",
        config.name,
        config.method.as_str(),
        config.devices.len(),
        config.rounds,
        run_dir.display()
    );
    let _status = progress::Status::start(config.rounds);
    let resumable = match &options.resume {
        Some(dir) => checkpoint::read(dir)?,
        None => None,
    };
    let fresh_dir = options.resume.is_none().then(|| run_dir.clone());
    let started_run = start(
        config,
        &options.root,
        run_dir,
        plugins,
        resumable,
        parties,
        &options.config,
    );
    let (experiment, records) = match started_run {
        Ok(started) => started,
        Err(err) => {
            // A fresh run that fails before its first checkpoint has nothing to resume: its
            // folder (created above, by this call) goes, so a failed start leaves nothing.
            if let Some(dir) = fresh_dir {
                if std::fs::remove_dir_all(&dir).is_ok() {
                    progress!("the run did not start; removed {}", dir.display());
                }
            }
            return Err(err);
        }
    };
    let run_dir = run_rounds(experiment, records)?;
    progress!(
        "done in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        run_dir.display()
    );
    Ok(run_dir)
}

/// A new folder `<runs_dir>/<name>-<stamp>[-n]` holding the resolved config.
fn new_run_dir(config: &ExperimentConfig, root: &Path) -> anyhow::Result<PathBuf> {
    let base = root
        .join(&config.runs_dir)
        .join(format!("{}-{}", config.name, utc_stamp()));
    let mut dir = base.clone();
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = PathBuf::from(format!("{}-{n}", base.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("config.resolved.toml"), toml::to_string(config)?)?;
    Ok(dir)
}

/// Sets the experiment up: fresh, with round 0 evaluated, or restored from its last
/// checkpoint with the records of the rounds it completed.
fn start(
    config: ExperimentConfig,
    root: &Path,
    run_dir: PathBuf,
    plugins: Plugins,
    resumable: Option<checkpoint::Resumable>,
    parties: &Parties<'_>,
    config_file: &Path,
) -> anyhow::Result<(Experiment, Vec<RoundRecord>)> {
    let t = Instant::now();
    let fresh = resumable.is_none();
    let cache_dir = root.join(&config.cache_dir);
    let (config, plugins) = (Arc::new(config), Arc::new(plugins));
    let fleet_start = FleetStart {
        config: &config,
        plugins: &plugins,
        run_dir: &run_dir,
        fresh,
        config_file,
    };
    // The server and the devices set up side by side: their pre-trainings are independent.
    let (side, fleet): (ServerSide, Box<dyn Fleet>) = match parties {
        Parties::InProcess => {
            let (server_data, devices) = prepare_parties(&config, root, &run_dir)?;
            std::thread::scope(|s| {
                let fleet = s.spawn(|| LocalFleet::build(&fleet_start, devices, &cache_dir));
                let side = build_server(&config, &plugins, server_data, &cache_dir, fresh);
                let fleet = fleet
                    .join()
                    .map_err(|_| anyhow::anyhow!("setting up the devices panicked"))?;
                Ok::<_, anyhow::Error>((side?, Box::new(fleet?) as Box<dyn Fleet>))
            })?
        }
        Parties::Remote { server_data, make } => {
            let data = match server_data {
                Some(dir) => ServerData::read(dir, &config)?,
                None => ServerData::from_files(&config, root, &run_dir)?,
            };
            if server_data.is_some() {
                crate::parties::save_tokenizers(&data.codecs, &run_dir, &config)?;
            }
            let side = build_server(&config, &plugins, data, &cache_dir, fresh)?;
            (side, make(&fleet_start)?)
        }
    };
    let ServerSide {
        server,
        codecs,
        llm_eval,
        device_names,
        messages,
    } = side;
    let initial_down = messages
        .iter()
        .map(|m| m.iter().map(|b| b.len() as u64).sum())
        .collect();
    let mut fleet = fleet;
    fleet.setup(messages)?;
    let mut experiment = Experiment {
        slm_labels: fleet.slm_labels(),
        config,
        run_dir,
        codecs,
        server,
        fleet,
        initial_down,
        llm_eval,
        device_names,
    };
    progress!("setup done in {:.1}s", t.elapsed().as_secs_f64());
    match resumable {
        Some(r) => {
            experiment.restore(&r.checkpoint)?;
            progress!("resuming after round {}", r.checkpoint.completed);
            Ok((experiment, r.records))
        }
        None => {
            let everyone: Vec<usize> = (0..experiment.device_names.len()).collect();
            let reports = {
                let (config, codecs) = (experiment.config.clone(), experiment.codecs.clone());
                let round = Round::of(&config, &codecs, 0, &everyone);
                let losses = vec![DeviceLosses::default(); everyone.len()];
                let downloads = vec![None; everyone.len()];
                experiment
                    .fleet
                    .receive(&round, None, downloads, losses, true)?
            };
            let traffic = vec![Traffic::default(); everyone.len()];
            let outcome = RoundOutcome {
                devices: reports
                    .iter()
                    .map(|r| r.losses.clone())
                    .zip(traffic)
                    .collect(),
                ..RoundOutcome::default()
            };
            let mut record = experiment.evaluate_round(0, outcome, reports, true)?;
            record.seconds = t.elapsed().as_secs_f64();
            progress!(
                "before co-tuning (round 0, % on each device's {} split):",
                experiment.config.eval_split.describe()
            );
            for line in crate::results::round_zero_table(&record, &experiment.config).lines() {
                progress!("  {line}");
            }
            let mut records = Vec::new();
            experiment.finish_round(&mut records, record)?;
            Ok((experiment, records))
        }
    }
}

/// The rounds after the last recorded one, each evaluated, recorded and checkpointed; then the
/// summary files.
fn run_rounds(
    mut experiment: Experiment,
    mut records: Vec<RoundRecord>,
) -> anyhow::Result<PathBuf> {
    let first = records.last().map_or(0, |r| r.round) + 1;
    progress::rounds_done(first - 1);
    let trains_llm = Method::of(&experiment.config)?.trains_llm();
    let aligns = !experiment.codecs.own().is_empty();
    for round in first..=experiment.config.rounds {
        let t = Instant::now();
        let aligned = cotune_distill::alignment_seconds();
        let (outcome, reports) = experiment.run_round(round)?;
        let mut record = experiment.evaluate_round(round, outcome, reports, trains_llm)?;
        record.seconds = t.elapsed().as_secs_f64();
        record.alignment_seconds = aligns.then(|| cotune_distill::alignment_seconds() - aligned);
        experiment.finish_round(&mut records, record)?;
        experiment.save_checkpoint(round)?;
        progress::rounds_done(round);
    }
    write_results(
        &experiment.run_dir,
        &experiment.config,
        experiment.server.llm.label(),
        &records,
    )?;
    experiment.fleet.finish();
    Ok(experiment.run_dir)
}

impl Experiment {
    /// The privacy spent after round `number` (`participants` devices take part each round),
    /// by the accountant; `None` without `[privacy]`.
    fn privacy_spent(&self, number: usize, participants: usize) -> Option<PrivacySpent> {
        let p = self.config.privacy.as_ref()?;
        let q = match p.mode {
            PrivacyMode::Central => participants as f64 / self.device_names.len().max(1) as f64,
            PrivacyMode::Local => 1.0,
        };
        let epsilon = |rounds: u64| {
            Some(crate::accountant::epsilon_after(
                q,
                p.noise_multiplier,
                rounds,
                p.delta,
            ))
            .filter(|e| e.is_finite())
        };
        Some(PrivacySpent {
            epsilon_round: epsilon(1),
            epsilon: epsilon(number as u64),
            delta: p.delta,
            sampling_rate: q,
        })
    }

    /// One round of the method: broadcast, device steps, server step, downloads with the
    /// devices' evaluation. Every message is counted in its device's traffic.
    fn run_round(
        &mut self,
        number: usize,
    ) -> anyhow::Result<(RoundOutcome, Vec<crate::fleet::DeviceReport>)> {
        let method: &dyn FederatedMethod = Method::of(&self.config)?.implementation();
        let participants = participants(&self.config, number);
        let n = self.device_names.len();
        let mut traffic: Vec<Traffic> = (0..n)
            .map(|i| Traffic {
                participated: participants.contains(&i),
                up: 0,
                down: if number == 1 { self.initial_down[i] } else { 0 },
            })
            .collect();
        let mut losses = vec![DeviceLosses::default(); n];
        progress!(
            "round {number}/{}: devices {}",
            self.config.rounds,
            participants
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = self.config.clone();
        let codecs = self.codecs.clone();
        let round = Round::of(&config, &codecs, number, &participants);

        let broadcast = method.broadcast(&round, &self.server)?;
        if let Some(message) = &broadcast {
            for &i in &participants {
                traffic[i].down += message.len() as u64;
            }
        }
        let received = broadcast.as_deref();

        progress::phase("devices", participants.len());
        let guarded = guards_uploads(&config, method);
        let steps = self.fleet.step(&round, &self.server, received)?;
        let mut uploads = Vec::new();
        let mut record = UploadsRecord::default();
        for (i, (step, examples, prepared)) in steps {
            if let Some(p) = prepared {
                record.update_norms.push((i, p.norm));
                if p.clipped {
                    record.clipped.push(i);
                }
                if p.attacked {
                    record.attacker = Some(i);
                }
            }
            losses[i] = step.losses;
            if let Some(bytes) = step.upload {
                traffic[i].up += bytes.len() as u64;
                uploads.push(Upload {
                    device: i,
                    bytes,
                    examples,
                });
            }
        }

        progress::phase("server", 1);
        let server = method.server_step(&round, &mut self.server, uploads)?;
        record.privacy = self.privacy_spent(number, participants.len());
        if let Some(p) = &config.privacy {
            if let Some(spent) = &record.privacy {
                let eps = |e: Option<f64>| e.map_or("infinite".to_string(), |e| format!("{e:.3}"));
                progress!(
                    "  privacy ({} noise, multiplier {}, clip {}): epsilon {} this round, {} so far, at delta {:e}",
                    p.mode.name(),
                    p.noise_multiplier,
                    p.clip,
                    eps(spent.epsilon_round),
                    eps(spent.epsilon),
                    spent.delta
                );
            }
        }
        let mut downloads: Vec<Option<Vec<u8>>> = vec![None; n];
        for (i, message) in server.downloads {
            traffic[i].down += message.len() as u64;
            downloads[i] = Some(message);
        }
        let with_slms = method.trains_slms();
        let reports = self
            .fleet
            .receive(&round, received, downloads, losses, with_slms)?;
        record.server = server.checks;
        let uploads = (guarded || !record.server.refused.is_empty()).then_some(record);
        Ok((
            RoundOutcome {
                devices: reports
                    .iter()
                    .map(|r| r.losses.clone())
                    .zip(traffic)
                    .collect(),
                server: server.losses,
                uploads,
            },
            reports,
        ))
    }

    /// Logs the round's scores and appends its record to `metrics.jsonl` (rewritten whole, so
    /// a resumed run's file holds exactly the completed rounds).
    fn finish_round(
        &self,
        records: &mut Vec<RoundRecord>,
        record: RoundRecord,
    ) -> anyhow::Result<()> {
        use std::io::Write;
        let f = |s: Option<Scores>| {
            s.map(|s| format!("{:.1}/{:.1}", 100.0 * s.em, 100.0 * s.rouge_l))
                .unwrap_or_else(|| "-".into())
        };
        let summary: Vec<String> = record
            .devices
            .iter()
            .map(|d| format!("{} slm {} dpm {}", d.device, f(d.slm), f(d.dpm)))
            .collect();
        let llm = record
            .llm
            .as_ref()
            .map(|l| format!("; LLM {}", f(Some(l.macro_average))))
            .unwrap_or_default();
        let aligned = record
            .alignment_seconds
            .map(|a| {
                format!(
                    ", of which alignment {a:.2}s = {:.1}%",
                    100.0 * a / record.seconds.max(1e-9)
                )
            })
            .unwrap_or_default();
        progress!(
            "round {} evaluated (EM/Rouge-L %): {}{llm} ({:.1}s{aligned})",
            record.round,
            summary.join("; "),
            record.seconds
        );
        records.push(record);
        let path = self.run_dir.join("metrics.jsonl");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
        );
        for r in records.iter() {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// The devices taking part in round `round` of `config`: all, or a seeded draw of
/// `devices_per_round` of them.
pub fn participants(config: &ExperimentConfig, round: usize) -> Vec<usize> {
    let n = config.devices.len();
    let k = config.devices_per_round();
    let mut idx: Vec<usize> = (0..n).collect();
    if k < n {
        cotune_data::SeededRng::for_stream(config.seed.wrapping_add(round as u64), "participants")
            .shuffle(&mut idx);
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}
