//! The experiment runner: setup (data, cached pre-training, DPM distillation), the rounds of
//! the chosen method, evaluation after every round, the run folder, and resuming.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cotune_data::{encode_example, prepare, DataConfig, Prepared, QaRecord, SeededRng, Tokenizer};
use cotune_distill::{
    distill, pretrain_cached, stable_hash, to_host_examples, DistillConfig, ModelRecipe, Pretrained,
};
use cotune_eval::{evaluate, Evaluation, ScoreSummary};
use cotune_host::{Example, Model, Plugin, Structure};
use serde::{Deserialize, Serialize};

use crate::config::{
    architecture_of, Aggregation, ExperimentConfig, Method, Plugins, RoundSettings, SlmInit,
    TransferSet,
};
use crate::progress::{self, Progress};
use crate::roles::{Device, DeviceLosses, DistilledProxy, RoundSeed, Server};
use crate::{fedmkt, plot};

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

/// Scores of one model on one device's test split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Normalised exact match, in [0, 1].
    pub em: f64,
    /// Rouge-L F1, in [0, 1].
    pub rouge_l: f64,
}

impl From<ScoreSummary> for Scores {
    fn from(s: ScoreSummary) -> Self {
        Scores {
            em: s.exact_match,
            rouge_l: s.rouge_l_f1,
        }
    }
}

/// One device's line of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device name.
    pub device: String,
    /// Its SLM's architecture.
    pub slm_architecture: String,
    /// Whether it took part in this round.
    pub participated: bool,
    /// SLM scores on its test split.
    pub slm: Option<Scores>,
    /// DPM (with its adapters) scores on its test split.
    pub dpm: Option<Scores>,
    /// Losses of the round's phases.
    pub losses: serde_json::Value,
    /// Bytes it sent up this round.
    pub bytes_up: u64,
    /// Bytes it received this round.
    pub bytes_down: u64,
}

/// The LLM's scores in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRecord {
    /// Macro-average over device domains.
    pub macro_average: Scores,
    /// Per domain.
    pub per_domain: Vec<(String, Scores)>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0 is before the first round.
    pub round: usize,
    /// The method.
    pub method: String,
    /// Per device.
    pub devices: Vec<DeviceRecord>,
    /// The LLM, when evaluated this round (it is re-evaluated only when it changes).
    pub llm: Option<LlmRecord>,
    /// Server losses.
    pub server_losses: serde_json::Value,
    /// Wall time of the round in seconds (setup for round 0).
    pub seconds: f64,
}

/// Progress on stderr.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[cotune] {}", format!($($arg)*)) };
}

/// Runs `config_path` (relative paths from the current directory) or resumes `resume`.
///
/// A comparison file (one with a `[compare]` table, see [`crate::compare`]) runs every variant
/// and seed it names and returns the comparison folder; `resume` may then be that folder.
pub fn run(config_path: &Path, resume: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = std::env::current_dir()?;
    let comparison = match resume {
        Some(dir) => dir.join("compare.toml").is_file(),
        None => std::fs::read_to_string(config_path)
            .map(|t| crate::compare::is_comparison(&t))
            .unwrap_or(false),
    };
    if comparison {
        return crate::compare::run_comparison(config_path, resume, &root, None);
    }
    run_with(&RunOptions {
        config: config_path.to_path_buf(),
        resume: resume.map(Path::to_path_buf),
        root: std::env::current_dir()?,
        runs_dir: None,
        cache_dir: None,
    })
}

/// Checks a config without training: parse, values, domain files, plugins, FedAvg shapes.
pub fn check_config(config_path: &Path, root: &Path) -> anyhow::Result<ExperimentConfig> {
    let mut config = ExperimentConfig::load(config_path)?;
    config.resolve_paths(root);
    config.check(config_path, root)?;
    Ok(config)
}

struct State {
    config: ExperimentConfig,
    run_dir: PathBuf,
    tokenizer: Tokenizer,
    server: Server,
    devices: Vec<Device>,
    records: Vec<RoundRecord>,
    /// Bytes each device receives before round 1 (first DPM, public questions).
    initial_down: Vec<u64>,
}

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

/// Runs (or resumes) an experiment and returns its run folder.
pub fn run_with(options: &RunOptions) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let (config_path, run_dir) = match &options.resume {
        Some(dir) => (dir.join("config.resolved.toml"), Some(dir.clone())),
        None => (options.config.clone(), None),
    };
    let mut config = ExperimentConfig::load(&config_path)?;
    config.resolve_paths(&options.root);
    if let Some(dir) = &options.runs_dir {
        config.runs_dir = dir.clone();
    }
    if let Some(dir) = &options.cache_dir {
        config.cache_dir = dir.clone();
    }
    let plugins = config.check(&config_path, &options.root)?;
    let run_dir = match run_dir {
        Some(dir) => dir,
        None => {
            let base = options.root.join(&config.runs_dir).join(format!(
                "{}-{}",
                config.name,
                utc_stamp()
            ));
            let mut dir = base.clone();
            let mut n = 1;
            while dir.exists() {
                n += 1;
                dir = PathBuf::from(format!("{}-{n}", base.display()));
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("config.resolved.toml"), toml::to_string(&config)?)?;
            dir
        }
    };
    progress!(
        "{} ({}), {} devices, {} rounds -> {}",
        config.name,
        config.method.name(),
        config.devices.len(),
        config.rounds,
        run_dir.display()
    );
    let _status = progress::Status::start(config.rounds);
    let resume_state = match &options.resume {
        Some(_) => read_resume_state(&run_dir)?,
        None => None,
    };
    let mut state = setup(
        config,
        options.root.clone(),
        run_dir,
        plugins,
        &resume_state,
    )?;
    let first_round = match &resume_state {
        Some(r) => {
            state.records = r.records.clone();
            progress!("resuming after round {}", r.completed);
            r.completed + 1
        }
        None => {
            let t = Instant::now();
            let record = state.evaluate_round(0, Vec::new(), serde_json::Value::Null, true)?;
            let record = RoundRecord {
                seconds: t.elapsed().as_secs_f64(),
                ..record
            };
            state.finish_round(record)?;
            1
        }
    };
    progress::rounds_done(first_round - 1);
    for round in first_round..=state.config.rounds {
        let t = Instant::now();
        let (losses, server_losses, bytes) = state.run_round(round)?;
        let device_rows = losses
            .into_iter()
            .zip(bytes)
            .map(|(l, b)| (l, b.0, b.1, b.2))
            .collect();
        let record = state.evaluate_round(
            round,
            device_rows,
            server_losses,
            state.config.method.trains_llm(),
        )?;
        let record = RoundRecord {
            seconds: t.elapsed().as_secs_f64(),
            ..record
        };
        state.finish_round(record)?;
        state.save_checkpoint(round)?;
        progress::rounds_done(round);
    }
    write_results(&state)?;
    progress!(
        "done in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        state.run_dir.display()
    );
    Ok(state.run_dir)
}

fn encode_all(records: &[QaRecord], tokenizer: &Tokenizer, template: &str) -> Vec<Example> {
    let data: Vec<_> = records
        .iter()
        .map(|r| encode_example(tokenizer, template, r))
        .collect();
    to_host_examples(&data)
}

fn check_fits(
    model: &Model,
    who: &str,
    tokenizer: &Tokenizer,
    config: &ExperimentConfig,
) -> anyhow::Result<()> {
    let spec = model.spec();
    if (spec.vocab_size as usize) < tokenizer.vocab_size() {
        bail!(
            "{who} ({}) has vocab_size {} but the tokenizer has {} tokens; raise its vocab_size",
            model.label(),
            spec.vocab_size,
            tokenizer.vocab_size()
        );
    }
    let (p, a) = (config.data.max_prompt_tokens, config.data.max_answer_tokens);
    let need = match spec.structure {
        Structure::DecoderOnly => p + a,
        Structure::EncoderDecoder => p.max(a),
    };
    if (spec.context_len as usize) < need {
        bail!(
            "{who} ({}) has a context of {} tokens but data.max_prompt_tokens + \
             data.max_answer_tokens need {need}",
            model.label(),
            spec.context_len
        );
    }
    Ok(())
}

fn recipe<'a>(plugin: &'a Plugin, arch: &'a str, text: &'a str, seed: u64) -> ModelRecipe<'a> {
    ModelRecipe {
        plugin,
        architecture: arch,
        config: text,
        seed,
        checkpoint: None,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    completed: usize,
    llm_step: u32,
    server_dpm_steps: Vec<u32>,
    slm_steps: Vec<u32>,
    dpm_steps: Vec<(u32, u32)>,
    initial_down: Vec<u64>,
    #[serde(skip)]
    records: Vec<RoundRecord>,
}

fn read_resume_state(run_dir: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let path = run_dir.join("state/state.json");
    if !path.is_file() {
        // Killed before round 1 finished: start over in the same folder.
        return Ok(None);
    }
    let mut cp: Checkpoint = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    cp.records = metrics
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str::<RoundRecord>)
        .collect::<Result<Vec<_>, _>>()
        .context("reading metrics.jsonl")?
        .into_iter()
        .filter(|r| r.round <= cp.completed)
        .collect();
    Ok(Some(cp))
}

fn setup(
    config: ExperimentConfig,
    root: PathBuf,
    run_dir: PathBuf,
    plugins: Plugins,
    resume: &Option<Checkpoint>,
) -> anyhow::Result<State> {
    let t = Instant::now();
    let Prepared {
        benchmark,
        tokenizer,
        ..
    } = prepare(&config.data, &root).context("preparing the data")?;
    tokenizer
        .save(&run_dir.join("tokenizer.json"))
        .context("saving the tokenizer")?;
    let template = config.data.prompt_template.clone();
    let mut public_records = benchmark.public_train.clone();
    if let Some(max) = config.max_public {
        SeededRng::for_stream(config.data.seed, "max-public").shuffle(&mut public_records);
        public_records.truncate(max);
    }
    let public_train = encode_all(&public_records, &tokenizer, &template);
    let public_valid = encode_all(&benchmark.public_valid, &tokenizer, &template);
    let data_key = stable_hash(&[
        &serde_json::to_string(&config.data)?,
        &format!("{:?}", config.max_public),
        &tokenizer.to_json(),
    ]);
    let cache_dir = root.join(&config.cache_dir);
    progress!(
        "data ready: {} public train, {} public valid, devices {:?} ({:.1}s)",
        public_train.len(),
        public_valid.len(),
        benchmark
            .devices
            .iter()
            .map(|d| (d.name.as_str(), d.train.len(), d.test.len()))
            .collect::<Vec<_>>(),
        t.elapsed().as_secs_f64()
    );
    let method = config.method;
    let checkpoints = run_dir.join("state");
    let load = |model: &mut Model, name: &str| -> anyhow::Result<()> {
        let path = checkpoints.join(format!("{name}.ckpt"));
        model
            .load(&path)
            .with_context(|| format!("resuming {}", path.display()))
    };

    // The server LLM, pre-trained on the public corpus (cached).
    let llm_arch = architecture_of(&config.llm, &plugins.llm);
    let llm_text = config.llm.config_text();
    let pretrain_seed = config.pretrain_seed.unwrap_or(config.seed);
    let llm_recipe = ModelRecipe {
        checkpoint: config.llm.checkpoint.as_deref(),
        ..recipe(&plugins.llm, &llm_arch, &llm_text, pretrain_seed)
    };
    if resume.is_none() {
        // Every pre-training (the LLM's and each distinct pre-trained SLM's) is independent:
        // run them in parallel to fill the cache, which the steps below then read.
        let slm_specs: Vec<(usize, String, String)> = config
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.init == SlmInit::PretrainedPublic)
            .map(|(i, d)| {
                (
                    i,
                    architecture_of(&d.slm, &plugins.slms[i]),
                    d.slm.config_text(),
                )
            })
            .collect();
        let mut jobs = vec![("the LLM".to_string(), llm_recipe)];
        let mut seen = Vec::new();
        for (i, arch, text) in &slm_specs {
            let id = (
                plugins.slms[*i].path().to_path_buf(),
                arch.clone(),
                text.clone(),
            );
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            jobs.push((
                format!("the SLM of {}", config.devices[*i].domain),
                ModelRecipe {
                    checkpoint: config.devices[*i].slm.checkpoint.as_deref(),
                    ..recipe(
                        &plugins.slms[*i],
                        arch,
                        text,
                        pretrain_seed.wrapping_add(100),
                    )
                },
            ));
        }
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        progress::phase("pre-training", jobs.len());
        let started = Instant::now();
        let done = parallel_map(jobs, threads, |(who, r)| {
            let p = pretrain_cached(
                r,
                &data_key,
                &public_train,
                &public_valid,
                &config.pretrain,
                &cache_dir,
            )
            .with_context(|| format!("pre-training {who}"))?;
            progress::tick();
            Ok((who, p.report))
        })?;
        // The steps below only read these from the cache; say here which this run trained.
        for (who, report) in &done {
            progress!(
                "{who}: {} (best epoch {})",
                if report.from_cache {
                    "pre-trained by an earlier run, read from the cache"
                } else {
                    "pre-trained now and cached"
                },
                report.best_epoch
            );
        }
        progress!(
            "pre-training phase done in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let llm = if resume.is_some() {
        let mut m = llm_recipe.build()?;
        load(&mut m, "llm")?;
        m
    } else {
        let Pretrained { model, report } = pretrain_cached(
            llm_recipe,
            &data_key,
            &public_train,
            &public_valid,
            &config.pretrain,
            &cache_dir,
        )?;
        progress!(
            "LLM {} pre-trained: best epoch {}, valid CE {:?}",
            model.label(),
            report.best_epoch,
            report
                .valid_cross_entropy
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
        );
        model
    };
    check_fits(&llm, "llm", &tokenizer, &config)?;

    // The first DPM, distilled from the LLM (cached with the LLM's key and its own settings).
    let n = config.devices.len();
    let mut initial_down = vec![0u64; n];
    let mut proxies: Vec<Option<DistilledProxy>> = (0..n).map(|_| None).collect();
    let mut server_dpms = Vec::new();
    if method.uses_dpm() {
        let entry = config.dpm_of(0);
        let arch = architecture_of(&entry.model(), &plugins.dpms[0]);
        let text = entry.model().config_text();
        let dpm_seed = config.seed.wrapping_add(1);
        let dpm_recipe = recipe(&plugins.dpms[0], &arch, &text, dpm_seed);
        let mut first = dpm_recipe.build()?;
        check_fits(&first, "dpm", &tokenizer, &config)?;
        if resume.is_none() {
            distill_cached(
                &llm,
                &mut first,
                &public_train,
                &config.distill,
                &[
                    &llm_text,
                    &text,
                    &data_key,
                    &serde_json::to_string(&config.pretrain)?,
                    plugins.llm.version(),
                    plugins.dpms[0].version(),
                ],
                &cache_dir,
                dpm_seed,
            )?;
        }
        let first_params = first.export_params(cotune_host::ParamSelection::All)?;
        let message = crate::message::encode_params(&first_params);
        let slots = match (method, config.train.aggregation) {
            (Method::Fedavg, _) | (_, Aggregation::Fedavg) => 1,
            (_, Aggregation::PerDevice) => n,
        };
        for slot in 0..slots {
            let e = config.dpm_of(slot.min(n - 1));
            let p = &plugins.dpms[slot.min(n - 1)];
            let a = architecture_of(&e.model(), p);
            let t = e.model().config_text();
            let mut m = recipe(p, &a, &t, dpm_seed).build()?;
            if resume.is_some() {
                load(&mut m, &format!("server-dpm-{slot}"))?;
            } else {
                m.import_params(&first_params)
                    .context("a device DPM must match the distilled one")?;
            }
            server_dpms.push(m);
        }
        for (i, slot) in proxies.iter_mut().enumerate() {
            let e = config.dpm_of(i);
            let p = &plugins.dpms[i];
            let a = architecture_of(&e.model(), p);
            let plain_text = e.model().config_text();
            let adapted_text = e.adapted_config_text();
            let mut proxy = DistilledProxy {
                shared: recipe(p, &a, &plain_text, dpm_seed).build()?,
                adapted: recipe(p, &a, &adapted_text, dpm_seed + 1 + i as u64).build()?,
                shared_step: 0,
                adapted_step: 0,
            };
            if let Some(cp) = resume {
                load(&mut proxy.shared, &format!("device-{i}-dpm-shared"))?;
                load(&mut proxy.adapted, &format!("device-{i}-dpm-adapted"))?;
                (proxy.shared_step, proxy.adapted_step) = cp.dpm_steps[i];
            } else {
                // The first download: the server sends the distilled DPM's shared part.
                proxy.download(&message)?;
                initial_down[i] += message.len() as u64;
            }
            *slot = Some(proxy);
        }
    }

    // The devices and their SLMs.
    let mut devices = Vec::with_capacity(n);
    for (i, (entry, data)) in config.devices.iter().zip(&benchmark.devices).enumerate() {
        let plugin = &plugins.slms[i];
        let arch = architecture_of(&entry.slm, plugin);
        let text = entry.slm.config_text();
        let slm_seed = config.seed.wrapping_add(100 + i as u64);
        let r = ModelRecipe {
            checkpoint: entry.slm.checkpoint.as_deref(),
            ..recipe(plugin, &arch, &text, slm_seed)
        };
        let slm = if resume.is_some() {
            let mut m = r.build()?;
            load(&mut m, &format!("device-{i}-slm"))?;
            m
        } else {
            match &entry.init {
                SlmInit::Random | SlmInit::Checkpoint(_) => r.build()?,
                // Pre-trained SLMs of one config share the cache: seed from the config only.
                SlmInit::PretrainedPublic => {
                    let r = ModelRecipe {
                        seed: pretrain_seed.wrapping_add(100),
                        ..r
                    };
                    pretrain_cached(
                        r,
                        &data_key,
                        &public_train,
                        &public_valid,
                        &config.pretrain,
                        &cache_dir,
                    )?
                    .model
                }
            }
        };
        check_fits(&slm, &format!("devices[{i}].slm"), &tokenizer, &config)?;
        let mut test = data.test.clone();
        if let Some(max) = config.max_test {
            test.truncate(max);
        }
        let mut public_transfer = Vec::new();
        if method.uses_dpm() && config.train.transfer == TransferSet::Public {
            let mut idx: Vec<usize> = (0..public_records.len()).collect();
            SeededRng::for_stream(config.seed.wrapping_add(i as u64), "public-transfer")
                .shuffle(&mut idx);
            idx.truncate(config.train.transfer_size);
            let records: Vec<QaRecord> = idx.iter().map(|&k| public_records[k].clone()).collect();
            if resume.is_none() {
                initial_down[i] += serde_json::to_vec(&records)?.len() as u64;
            }
            public_transfer = encode_all(&records, &tokenizer, &template);
        }
        devices.push(Device {
            name: data.name.clone(),
            slm,
            slm_step: 0,
            dpm: proxies[i].take(),
            train: encode_all(&data.train, &tokenizer, &template),
            train_records: data.train.clone(),
            test,
            public_transfer,
        });
        if let Some(cp) = resume {
            devices[i].slm_step = cp.slm_steps[i];
        }
    }
    let mut server = Server {
        llm_step: 0,
        dpm_steps: vec![0; server_dpms.len()],
        dpms: server_dpms,
        public_train,
        llm,
    };
    if let Some(cp) = resume {
        server.llm_step = cp.llm_step;
        server.dpm_steps = cp.server_dpm_steps.clone();
        initial_down = cp.initial_down.clone();
    }
    progress!("setup done in {:.1}s", t.elapsed().as_secs_f64());
    Ok(State {
        config,
        run_dir,
        tokenizer,
        server,
        devices,
        records: Vec::new(),
        initial_down,
    })
}

/// Distils `student` from `teacher`, or loads the cached result keyed by `key_parts`.
#[allow(clippy::too_many_arguments)]
fn distill_cached(
    teacher: &Model,
    student: &mut Model,
    examples: &[Example],
    config: &DistillConfig,
    key_parts: &[&str],
    cache_dir: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    let settings = serde_json::to_string(config)?;
    let seed_text = seed.to_string();
    let mut parts = vec!["distill-v1", settings.as_str(), seed_text.as_str()];
    parts.extend_from_slice(key_parts);
    let key = stable_hash(&parts);
    let dir = cache_dir.join(format!("distill-{key}"));
    let path = dir.join("dpm.ckpt");
    if path.is_file() {
        student
            .load(&path)
            .with_context(|| format!("loading cached DPM {}", path.display()))?;
        progress!("DPM distilled (from cache {})", dir.display());
        return Ok(());
    }
    let t = Instant::now();
    distill(teacher, student, examples, config, seed)?;
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join("dpm.ckpt.partial");
    student.save(&partial)?;
    std::fs::rename(&partial, &path)?;
    progress!("DPM distilled in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

type Bytes = (bool, u64, u64);

impl State {
    fn seed(&self, round: usize, device: usize) -> RoundSeed {
        RoundSeed {
            seed: self.config.seed,
            round,
            device,
        }
    }

    fn participants(&self, round: usize) -> Vec<usize> {
        let n = self.devices.len();
        let k = ((n as f64 * self.config.train.device_fraction).round() as usize).clamp(1, n);
        let mut idx: Vec<usize> = (0..n).collect();
        if k < n {
            SeededRng::for_stream(self.config.seed.wrapping_add(round as u64), "participants")
                .shuffle(&mut idx);
            idx.truncate(k);
            idx.sort_unstable();
        }
        idx
    }

    /// Worker threads for per-device work.
    fn threads(&self) -> usize {
        match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// One round of the method; returns per-device losses, server losses and bytes.
    #[allow(clippy::type_complexity)]
    fn run_round(
        &mut self,
        round: usize,
    ) -> anyhow::Result<(Vec<DeviceLosses>, serde_json::Value, Vec<Bytes>)> {
        let method = self.config.method;
        let train = self.config.train.clone();
        let n = self.devices.len();
        let participants = self.participants(round);
        let mut bytes: Vec<Bytes> = (0..n)
            .map(|i| {
                let down = if round == 1 { self.initial_down[i] } else { 0 };
                (participants.contains(&i), 0, down)
            })
            .collect();
        let mut losses = vec![DeviceLosses::default(); n];
        progress!(
            "round {round}/{}: devices {:?}",
            self.config.rounds,
            participants
        );
        let server_seed = self.seed(round, usize::MAX);
        let sample = self
            .server
            .public_sample(train.server_public_sample, server_seed.of(0, 0));
        let mut server_losses = serde_json::Map::new();
        if method == Method::Fedmkt {
            self.fedmkt_round(
                &participants,
                &sample,
                round,
                &mut losses,
                &mut bytes,
                &mut server_losses,
            )?;
            return Ok((losses, serde_json::Value::Object(server_losses), bytes));
        }

        // Device side, devices in parallel (each one's work depends only on its own state).
        let threads = self.threads();
        let seeds: Vec<RoundSeed> = (0..n).map(|i| self.seed(round, i)).collect();
        let (tokenizer, data) = (&self.tokenizer, &self.config.data);
        progress::phase("devices", participants.len());
        let results = for_devices(&mut self.devices, &participants, threads, |i, dev| {
            device_round(dev, method, &train, tokenizer, data, seeds[i])
        })?;
        let mut uploads: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, (l, upload)) in results {
            if let Some(message) = upload {
                bytes[i].1 += message.len() as u64;
                uploads.push((i, message));
            }
            losses[i] = l;
        }

        // Server side.
        progress::phase("server", 1);
        let aggregate = method == Method::Fedavg || train.aggregation == Aggregation::Fedavg;
        if method.uses_dpm() {
            let mut downloads: Vec<(usize, Vec<u8>)> = Vec::new();
            if aggregate {
                let weighted: Vec<(Vec<u8>, f64)> = uploads
                    .iter()
                    .map(|(i, m)| (m.clone(), self.devices[*i].train.len() as f64))
                    .collect();
                self.server.aggregate(&weighted, 0)?;
                if method != Method::Fedavg {
                    let (a, b) = self.server.mutual_learning(
                        0,
                        &sample,
                        train.server_epochs,
                        &train.llm,
                        &train.dpm,
                        server_seed,
                    )?;
                    server_losses.insert("llm".into(), serde_json::to_value(a)?);
                    server_losses.insert("dpm".into(), serde_json::to_value(b)?);
                }
                let message = self.server.dpm_message(0)?;
                downloads.extend((0..n).map(|i| (i, message.clone())));
            } else {
                for (i, message) in &uploads {
                    self.server.receive(message, *i)?;
                    let (a, b) = self.server.mutual_learning(
                        *i,
                        &sample,
                        train.server_epochs,
                        &train.llm,
                        &train.dpm,
                        self.seed(round, usize::MAX - 1 - i),
                    )?;
                    server_losses.insert(format!("llm-with-{i}"), serde_json::to_value(a)?);
                    server_losses.insert(format!("dpm-{i}"), serde_json::to_value(b)?);
                    downloads.push((*i, self.server.dpm_message(*i)?));
                }
            }
            for (i, message) in downloads {
                bytes[i].2 += message.len() as u64;
                self.devices[i]
                    .dpm
                    .as_mut()
                    .expect("DPM methods build proxies")
                    .download(&message)?;
            }
        }
        if method == Method::Centralized {
            // Privacy broken on purpose: the LLM sees every device's training data.
            let all: Vec<Example> = self
                .devices
                .iter()
                .flat_map(|d| d.train.iter().cloned())
                .collect();
            let mut last = None;
            let bar = Progress::new("server LLM on all device data", train.local_epochs);
            for e in 0..train.local_epochs {
                last = Some(cotune_distill::train_epoch(
                    &mut self.server.llm,
                    None,
                    &all,
                    &train.llm,
                    server_seed.of(1, e),
                    &mut self.server.llm_step,
                )?);
                bar.tick();
            }
            server_losses.insert("llm".into(), serde_json::to_value(last)?);
            for &i in &participants {
                bytes[i].1 += serde_json::to_vec(&self.devices[i].train_records)?.len() as u64;
            }
        }
        Ok((losses, serde_json::Value::Object(server_losses), bytes))
    }

    /// One FedMKT round: local SLM tuning, top-k knowledge up, min-CE selection and LLM
    /// learning on the server, the LLM's top-k down, SLMs learning from it.
    fn fedmkt_round(
        &mut self,
        participants: &[usize],
        sample: &[Example],
        round: usize,
        losses: &mut [DeviceLosses],
        bytes: &mut [Bytes],
        server_losses: &mut serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<()> {
        let train = self.config.train.clone();
        let threads = self.threads();
        let seeds: Vec<RoundSeed> = (0..self.devices.len())
            .map(|i| self.seed(round, i))
            .collect();
        // Down: the round's public examples (the server picks them; devices hold no corpus).
        let sample_message = fedmkt::encode_examples(sample);
        let batch = train.slm.batch_size.max(1);
        // Devices: local tuning, then their knowledge on the public sample.
        progress::phase("devices: local tuning", participants.len());
        let ups = for_devices(&mut self.devices, participants, threads, |i, dev| {
            let l = dev.tune_slm_locally(train.local_epochs, &train.slm, seeds[i])?;
            let received = fedmkt::decode_examples(&sample_message)?;
            let knowledge = fedmkt::top_k(&dev.slm, &received, train.top_k, batch)?;
            Ok((l, fedmkt::encode_topk(&knowledge)))
        })?;
        let mut candidates = Vec::new();
        for (i, (l, message)) in ups {
            losses[i].slm = l;
            bytes[i].2 += sample_message.len() as u64;
            bytes[i].1 += message.len() as u64;
            candidates.push(
                fedmkt::decode_topk(&message)
                    .with_context(|| format!("knowledge upload of device {i}"))?,
            );
        }
        // Server: its own knowledge (sent down), then the LLM learns from the selected uploads.
        progress::phase("server", 1);
        let llm_knowledge = fedmkt::top_k(&self.server.llm, sample, train.top_k, batch)?;
        let down = fedmkt::encode_topk(&llm_knowledge);
        let vocab = self.server.llm.spec().vocab_size as usize;
        let selected = fedmkt::select_min_ce(sample, &candidates, vocab)?;
        let server_seed = self.seed(round, usize::MAX);
        let mut last = None;
        for e in 0..train.server_epochs {
            last = Some(fedmkt::train_on_targets(
                &mut self.server.llm,
                sample,
                &selected,
                &train.llm,
                server_seed.of(2, e),
                &mut self.server.llm_step,
            )?);
        }
        server_losses.insert("llm".into(), serde_json::to_value(last)?);
        // Devices: learn from the LLM's knowledge on the same examples.
        progress::phase("devices: learning from the LLM", participants.len());
        let learned = for_devices(&mut self.devices, participants, threads, |i, dev| {
            let received = fedmkt::decode_examples(&sample_message)?;
            let targets = fedmkt::decode_topk(&down)?;
            let mut last = None;
            for e in 0..train.saml_epochs {
                last = Some(fedmkt::train_on_targets(
                    &mut dev.slm,
                    &received,
                    &targets,
                    &train.slm,
                    seeds[i].of(7, e),
                    &mut dev.slm_step,
                )?);
            }
            Ok(last)
        })?;
        for (i, l) in learned {
            bytes[i].2 += down.len() as u64;
            losses[i].slm = l.or(losses[i].slm);
            losses[i].transfer_examples = sample.len();
        }
        Ok(())
    }

    fn eval_model(
        &self,
        model: &Model,
        records: &[QaRecord],
        file: &Path,
    ) -> anyhow::Result<Evaluation> {
        let evaluation = evaluate(
            model,
            records,
            &self.tokenizer,
            &self.config.data.prompt_template,
            &self.config.eval,
        )?;
        evaluation.write_predictions(file)?;
        Ok(evaluation)
    }

    fn evaluate_round(
        &self,
        round: usize,
        rows: Vec<(DeviceLosses, bool, u64, u64)>,
        server_losses: serde_json::Value,
        with_llm: bool,
    ) -> anyhow::Result<RoundRecord> {
        let dir = self.run_dir.join(format!("predictions/round-{round}"));
        let method = self.config.method;
        // Every model's evaluation is independent: run them in parallel, the LLM's (the
        // largest) first.
        let all_tests: Vec<QaRecord> = self
            .devices
            .iter()
            .flat_map(|d| d.test.iter().cloned())
            .collect();
        let mut jobs: Vec<(&Model, &[QaRecord], PathBuf)> = Vec::new();
        if with_llm {
            jobs.push((&self.server.llm, &all_tests, dir.join("llm.jsonl")));
        }
        let mut slots = Vec::new();
        for dev in &self.devices {
            let slm = !(method == Method::Centralized && round > 0);
            let slm_slot = slm.then(|| {
                jobs.push((
                    &dev.slm,
                    &dev.test,
                    dir.join(format!("{}-slm.jsonl", dev.name)),
                ));
                jobs.len() - 1
            });
            let dpm_slot = dev.dpm.as_ref().map(|p| {
                jobs.push((
                    &p.adapted,
                    &dev.test,
                    dir.join(format!("{}-dpm.jsonl", dev.name)),
                ));
                jobs.len() - 1
            });
            slots.push((slm_slot, dpm_slot));
        }
        progress::phase("evaluation", jobs.len());
        let evaluations = parallel_map(jobs, self.threads(), |(model, records, file)| {
            let e = self
                .eval_model(model, records, &file)
                .with_context(|| format!("evaluating {}", model.label()))?;
            progress::tick();
            Ok(e)
        })?;
        let mut devices = Vec::new();
        for (i, dev) in self.devices.iter().enumerate() {
            let score = |slot: Option<usize>| {
                slot.map(|k| Scores::from(evaluations[k].report.macro_average))
            };
            let (losses, participated, up, down) =
                rows.get(i)
                    .cloned()
                    .unwrap_or((DeviceLosses::default(), false, 0, 0));
            devices.push(DeviceRecord {
                device: dev.name.clone(),
                slm_architecture: dev.slm.label().to_string(),
                participated,
                slm: score(slots[i].0),
                dpm: score(slots[i].1),
                losses: serde_json::to_value(losses)?,
                bytes_up: up,
                bytes_down: down,
            });
        }
        let llm = with_llm.then(|| {
            let e = &evaluations[0];
            LlmRecord {
                macro_average: e.report.macro_average.into(),
                per_domain: e
                    .report
                    .per_domain
                    .iter()
                    .map(|d| (d.domain.clone(), Scores::from(d.summary)))
                    .collect(),
            }
        });
        Ok(RoundRecord {
            round,
            method: method.name().into(),
            devices,
            llm,
            server_losses,
            seconds: 0.0,
        })
    }

    fn finish_round(&mut self, record: RoundRecord) -> anyhow::Result<()> {
        let summary: Vec<String> = record
            .devices
            .iter()
            .map(|d| {
                let f = |s: Option<Scores>| {
                    s.map(|s| format!("{:.1}/{:.1}", 100.0 * s.em, 100.0 * s.rouge_l))
                        .unwrap_or_else(|| "-".into())
                };
                format!("{} slm {} dpm {}", d.device, f(d.slm), f(d.dpm))
            })
            .collect();
        progress!(
            "round {} evaluated (EM/Rouge-L %): {}{} [{:.1}s]",
            record.round,
            summary.join("; "),
            record
                .llm
                .as_ref()
                .map(|l| format!(
                    "; LLM {:.1}/{:.1}",
                    100.0 * l.macro_average.em,
                    100.0 * l.macro_average.rouge_l
                ))
                .unwrap_or_default(),
            record.seconds
        );
        self.records.push(record);
        // Rewritten whole, so a resumed run's file holds exactly the completed rounds.
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(self.run_dir.join("metrics.jsonl"))?);
        for r in &self.records {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        out.flush()?;
        Ok(())
    }

    fn save_checkpoint(&self, round: usize) -> anyhow::Result<()> {
        let dir = self.run_dir.join("state");
        std::fs::create_dir_all(&dir)?;
        let save = |m: &Model, name: &str| m.save(dir.join(format!("{name}.ckpt")));
        save(&self.server.llm, "llm")?;
        for (k, m) in self.server.dpms.iter().enumerate() {
            save(m, &format!("server-dpm-{k}"))?;
        }
        for (i, d) in self.devices.iter().enumerate() {
            save(&d.slm, &format!("device-{i}-slm"))?;
            if let Some(p) = &d.dpm {
                save(&p.shared, &format!("device-{i}-dpm-shared"))?;
                save(&p.adapted, &format!("device-{i}-dpm-adapted"))?;
            }
        }
        let cp = Checkpoint {
            completed: round,
            llm_step: self.server.llm_step,
            server_dpm_steps: self.server.dpm_steps.clone(),
            slm_steps: self.devices.iter().map(|d| d.slm_step).collect(),
            dpm_steps: self
                .devices
                .iter()
                .map(|d| {
                    d.dpm
                        .as_ref()
                        .map(|p| (p.shared_step, p.adapted_step))
                        .unwrap_or_default()
                })
                .collect(),
            initial_down: self.initial_down.clone(),
            records: Vec::new(),
        };
        // Written last and atomically: its presence means the round's checkpoints are whole.
        let partial = dir.join("state.json.partial");
        std::fs::write(&partial, serde_json::to_string_pretty(&cp)?)?;
        std::fs::rename(&partial, dir.join("state.json"))?;
        Ok(())
    }
}

fn pct(s: Option<Scores>, f: fn(&Scores) -> f64) -> String {
    s.map(|s| format!("{:.2}", 100.0 * f(&s)))
        .unwrap_or_else(|| "-".into())
}

/// Writes `results.md` and `results.csv` from the recorded rounds.
fn write_results(state: &State) -> anyhow::Result<()> {
    let records = &state.records;
    let last = records.last().context("no rounds recorded")?;
    let rounds = records.len().saturating_sub(1).max(1) as f64;
    let llm = records.iter().rev().find_map(|r| r.llm.clone());
    let llm0 = records.first().and_then(|r| r.llm.clone());
    let mut md = format!(
        "# {} ({})\n\nFinal round {}; scores in % on each device's test split; bytes are means \
         per round.\n\n| device | SLM | SLM EM | SLM Rouge-L | DPM EM | DPM Rouge-L | bytes up | \
         bytes down |\n|---|---|---|---|---|---|---|---|\n",
        state.config.name,
        state.config.method.name(),
        last.round
    );
    let mut csv = String::from(
        "method,device,slm,slm_em,slm_rouge_l,dpm_em,dpm_rouge_l,bytes_up_per_round,bytes_down_per_round\n",
    );
    let per_device_bytes = |i: usize| -> (f64, f64) {
        let (u, d) = records.iter().skip(1).fold((0u64, 0u64), |(u, d), r| {
            (u + r.devices[i].bytes_up, d + r.devices[i].bytes_down)
        });
        (u as f64 / rounds, d as f64 / rounds)
    };
    for (i, d) in last.devices.iter().enumerate() {
        let (up, down) = per_device_bytes(i);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {up:.0} | {down:.0} |\n",
            d.device,
            d.slm_architecture,
            pct(d.slm, |s| s.em),
            pct(d.slm, |s| s.rouge_l),
            pct(d.dpm, |s| s.em),
            pct(d.dpm, |s| s.rouge_l)
        ));
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{up:.0},{down:.0}\n",
            state.config.method.name(),
            d.device,
            d.slm_architecture,
            pct(d.slm, |s| s.em),
            pct(d.slm, |s| s.rouge_l),
            pct(d.dpm, |s| s.em),
            pct(d.dpm, |s| s.rouge_l)
        ));
    }
    let mean = |f: fn(&DeviceRecord) -> Option<Scores>, g: fn(&Scores) -> f64| -> String {
        let v: Vec<f64> = last.devices.iter().filter_map(f).map(|s| g(&s)).collect();
        if v.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", 100.0 * v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    md.push_str(&format!(
        "| **average** | | {} | {} | {} | {} | | |\n",
        mean(|d| d.slm, |s| s.em),
        mean(|d| d.slm, |s| s.rouge_l),
        mean(|d| d.dpm, |s| s.em),
        mean(|d| d.dpm, |s| s.rouge_l)
    ));
    csv.push_str(&format!(
        "{},average,,{},{},{},{},,\n",
        state.config.method.name(),
        mean(|d| d.slm, |s| s.em),
        mean(|d| d.slm, |s| s.rouge_l),
        mean(|d| d.dpm, |s| s.em),
        mean(|d| d.dpm, |s| s.rouge_l)
    ));
    if let Some(l) = &llm {
        md.push_str("\n## Server LLM\n\n| domain | before (round 0) EM | Rouge-L | final EM | Rouge-L |\n|---|---|---|---|---|\n");
        let before = llm0.as_ref();
        let mut rows: Vec<(String, Scores, Option<Scores>)> = l
            .per_domain
            .iter()
            .map(|(d, s)| {
                let b = before.and_then(|b| b.per_domain.iter().find(|(x, _)| x == d).map(|x| x.1));
                (d.clone(), *s, b)
            })
            .collect();
        rows.push((
            "**macro average**".into(),
            l.macro_average,
            before.map(|b| b.macro_average),
        ));
        for (d, s, b) in rows {
            md.push_str(&format!(
                "| {d} | {} | {} | {} | {} |\n",
                pct(b, |s| s.em),
                pct(b, |s| s.rouge_l),
                pct(Some(s), |s| s.em),
                pct(Some(s), |s| s.rouge_l)
            ));
            csv.push_str(&format!(
                "{},llm:{},{},{},{},,,,\n",
                state.config.method.name(),
                d.trim_matches('*'),
                state.server.llm.label(),
                pct(Some(s), |s| s.em),
                pct(Some(s), |s| s.rouge_l)
            ));
        }
    }
    md.push_str("\n## Per round (average over devices, %)\n\n| round | SLM EM | SLM Rouge-L | DPM EM | DPM Rouge-L | LLM EM | LLM Rouge-L | seconds |\n|---|---|---|---|---|---|---|---|\n");
    for r in records {
        let avg = |f: fn(&DeviceRecord) -> Option<Scores>, g: fn(&Scores) -> f64| -> String {
            let v: Vec<f64> = r.devices.iter().filter_map(f).map(|s| g(&s)).collect();
            if v.is_empty() {
                "-".into()
            } else {
                format!("{:.2}", 100.0 * v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            r.round,
            avg(|d| d.slm, |s| s.em),
            avg(|d| d.slm, |s| s.rouge_l),
            avg(|d| d.dpm, |s| s.em),
            avg(|d| d.dpm, |s| s.rouge_l),
            pct(r.llm.as_ref().map(|l| l.macro_average), |s| s.em),
            pct(r.llm.as_ref().map(|l| l.macro_average), |s| s.rouge_l),
            r.seconds
        ));
    }
    std::fs::write(state.run_dir.join("results.md"), md)?;
    std::fs::write(state.run_dir.join("results.csv"), csv)?;
    write_plots(&state.run_dir, &state.config, records)?;
    Ok(())
}

/// Runs `f` on every participating device, `threads` at a time, and returns the results in
/// device order. Each device's work touches only that device, so the results do not depend on
/// `threads`.
fn for_devices<T: Send>(
    devices: &mut [Device],
    participants: &[usize],
    threads: usize,
    f: impl Fn(usize, &mut Device) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<(usize, T)>> {
    let chosen: Vec<(usize, &mut Device)> = devices
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| participants.contains(i))
        .collect();
    parallel_map(chosen, threads, |(i, dev)| {
        let who = dev.name.clone();
        let r = f(i, dev).with_context(|| format!("device {i} ({who})"))?;
        progress::tick();
        Ok((i, r))
    })
}

/// The device side of one round of `method` (every method but `fedmkt`): returns its losses
/// and, for methods with a distilled proxy, the serialised shared part it uploads.
fn device_round(
    dev: &mut Device,
    method: Method,
    train: &RoundSettings,
    tokenizer: &Tokenizer,
    data: &DataConfig,
    seed: RoundSeed,
) -> anyhow::Result<(DeviceLosses, Option<Vec<u8>>)> {
    let mut l = DeviceLosses::default();
    match method {
        Method::Standalone => {
            l.slm = dev.tune_slm_locally(train.local_epochs, &train.slm, seed)?;
        }
        Method::Centralized => {}
        Method::Fedmkt => bail!("fedmkt rounds run through fedmkt_round"),
        Method::Fedavg => {
            l.slm = dev.tune_slm_locally(train.local_epochs, &train.slm, seed)?;
            l.dpm = dev.tune_dpm_locally(train.local_epochs, &train.dpm, seed)?;
        }
        Method::CoPlms | Method::CoPlmsNoDst | Method::CoPlmsNoSaml => {
            if method != Method::CoPlmsNoDst {
                l.dst = dev.domain_specific_tuning(train.local_epochs, &train.dst, seed)?;
            }
            if method == Method::CoPlmsNoSaml {
                l.slm = dev.tune_slm_locally(train.local_epochs, &train.slm, seed)?;
                l.dpm = dev.tune_dpm_locally(train.local_epochs, &train.dpm, seed)?;
            } else {
                let mut transfer = dev.train.clone();
                match train.transfer {
                    TransferSet::Local => {}
                    TransferSet::Public => transfer.extend(dev.public_transfer.iter().cloned()),
                    TransferSet::Synthetic => transfer.extend(dev.synthetic_transfer(
                        tokenizer,
                        &data.prompt_template,
                        train.transfer_size,
                        data.max_prompt_tokens,
                        data.max_answer_tokens,
                        seed,
                    )?),
                }
                l.transfer_examples = transfer.len();
                (l.slm, l.dpm) = dev.mutual_learning(
                    &transfer,
                    train.saml_epochs,
                    &train.slm,
                    &train.dpm,
                    seed,
                )?;
            }
        }
    }
    let upload = match &dev.dpm {
        Some(proxy) if method.uses_dpm() => Some(proxy.upload()?),
        _ => None,
    };
    progress!(
        "  device {} ({}): slm CE {:?}, dpm CE {:?}, dst CE {:?}",
        dev.name,
        dev.slm.label(),
        l.slm.map(|r| r.cross_entropy),
        l.dpm.map(|r| r.cross_entropy),
        l.dst.map(|r| r.cross_entropy)
    );
    Ok((l, upload))
}

/// `f` over `items`, `threads` at a time, results in the items' order.
fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    if threads <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<std::thread::Result<anyhow::Result<R>>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(slot) = queue.get(k) else { break };
                let item = slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("each item is taken once");
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item)));
                *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            match r
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item ran")
            {
                Ok(r) => r,
                Err(panic) => bail!("worker {k} panicked: {}", panic_text(&panic)),
            }
        })
        .collect()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// `plots/em.svg` and `plots/rouge_l.svg`: each device's SLM score per round, and the LLM's
/// macro average (dashed) when the method changes it.
fn write_plots(
    run_dir: &Path,
    config: &ExperimentConfig,
    records: &[RoundRecord],
) -> anyhow::Result<()> {
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir)?;
    type Metric = (&'static str, &'static str, fn(&Scores) -> f64);
    let metrics: [Metric; 2] = [
        ("em", "exact match (%)", |s| s.em),
        ("rouge_l", "Rouge-L F1 (%)", |s| s.rouge_l),
    ];
    for (file, label, f) in metrics {
        let mut series = Vec::new();
        if let Some(first) = records.first() {
            for (i, d) in first.devices.iter().enumerate() {
                series.push(plot::Series {
                    label: format!("{} ({})", d.device, d.slm_architecture),
                    points: records
                        .iter()
                        .filter_map(|r| {
                            r.devices
                                .get(i)
                                .and_then(|d| d.slm)
                                .map(|s| (r.round, 100.0 * f(&s)))
                        })
                        .collect(),
                    dashed: false,
                });
            }
        }
        let llm: Vec<(usize, f64)> = records
            .iter()
            .filter_map(|r| {
                r.llm
                    .as_ref()
                    .map(|l| (r.round, 100.0 * f(&l.macro_average)))
            })
            .collect();
        if !llm.is_empty() {
            series.push(plot::Series {
                label: "server LLM (macro)".into(),
                points: llm,
                dashed: true,
            });
        }
        let title = format!(
            "{}: {} per round, SLMs ({})",
            config.name,
            label,
            config.method.name()
        );
        std::fs::write(
            dir.join(format!("{file}.svg")),
            plot::line_chart(&title, label, &series),
        )?;
    }
    Ok(())
}
