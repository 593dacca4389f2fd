//! Setup of a run: the data and tokenizer, the cached pre-training of the LLM and of pre-trained
//! SLMs, the server and the devices, then what the method adds (its
//! [`setup`](crate::methods::FederatedMethod::setup)). Resuming builds the same experiment
//! without training anything; [`crate::checkpoint`] then restores the models.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cotune_data::{prepare, Benchmark, Prepared, QaRecord, SeededRng};
use cotune_distill::{pretrain_cached, stable_hash, ModelRecipe, Pretrained};
use cotune_host::{Example, Model};

use crate::config::{architecture_of, EvalSplit, ExperimentConfig, Plugins, SlmInit};
use crate::methods::{Method, Setup};
use crate::parallel::{parallel_map, worker_threads};
use crate::progress;
use crate::recipes::{check_fits, recipe};
use crate::roles::{Device, Server};
use crate::tokens::{bridge, Codec, Codecs};

/// A run's state between rounds: the config, the run folder, the roles and what the first
/// download carried.
pub(crate) struct Experiment {
    /// The checked config.
    pub config: ExperimentConfig,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Every model's tokenizer.
    pub codecs: Codecs,
    /// The server.
    pub server: Server,
    /// The devices, in config order.
    pub devices: Vec<Device>,
    /// Bytes each device receives before round 1 (first DPM, public questions).
    pub initial_down: Vec<u64>,
    /// In a deployment, the devices in their own processes: the device steps, downloads and
    /// device evaluations go through it (`crate::deploy`).
    pub remote: Option<crate::deploy::Remote>,
}

/// The prepared data: the benchmark, every model's tokenizer, and the public corpus as records
/// and, per tokenizer, as examples with the key that names them in the cache.
struct Data {
    benchmark: Benchmark,
    codecs: Codecs,
    public_records: Vec<QaRecord>,
    /// Per tokenizer fingerprint.
    encoded: std::collections::HashMap<String, Encoded>,
}

/// The public corpus in one tokenizer's ids.
struct Encoded {
    public_train: Vec<Example>,
    public_valid: Vec<Example>,
    /// The data part of cache keys: the data config and this tokenizer.
    key: String,
}

/// Builds the experiment of `config`. With `fresh` false (resuming) nothing is pre-trained or
/// distilled: the models are restored from the run's checkpoints next.
pub(crate) fn setup(
    config: ExperimentConfig,
    root: &Path,
    run_dir: PathBuf,
    plugins: Plugins,
    fresh: bool,
) -> anyhow::Result<Experiment> {
    let t = Instant::now();
    let data = prepare_data(&config, root, &run_dir)?;
    let cache_dir = root.join(&config.cache_dir);
    if fresh {
        pretrain_all(&config, &plugins, &data, &cache_dir)?;
    }
    let llm = build_llm(&config, &plugins, &data, &cache_dir, fresh)?;
    check_fits(&llm, "llm", &data.codecs.llm.tokenizer, &config)?;
    let mut devices = build_devices(&config, &plugins, &data, &cache_dir, fresh, None)?;
    let (llm_codec, dpm_codec) = (data.codecs.llm.clone(), data.codecs.dpms[0].clone());
    let (alignment, top_k) = (config.train.alignment, config.train.top_k);
    let llm_side = data.public(&llm_codec);
    let dpm_side = data.public(&dpm_codec);
    let mut server = Server {
        llm,
        llm_step: 0,
        dpms: Vec::new(),
        dpm_steps: Vec::new(),
        public_records: data.public_records.clone(),
        public_train: llm_side.train.into_owned(),
        public_dpm: dpm_side.train.into_owned(),
        public_valid: dpm_side.valid.into_owned(),
        to_llm: bridge(alignment, top_k, ("dpm", &dpm_codec), ("llm", &llm_codec))?,
        to_dpm: bridge(alignment, top_k, ("llm", &llm_codec), ("dpm", &dpm_codec))?,
        llm_codec,
        dpm_codec,
    };
    let mut initial_down = vec![0u64; devices.len()];
    let data_key = data.public(&data.codecs.shared).key;
    Method::of(&config)?.implementation().setup(&mut Setup {
        config: &config,
        plugins: &plugins,
        codecs: &data.codecs,
        server: &mut server,
        devices: &mut devices,
        public_records: &data.public_records,
        initial_down: &mut initial_down,
        cache_dir: &cache_dir,
        data_key: &data_key,
        fresh,
    })?;
    progress!("setup done in {:.1}s", t.elapsed().as_secs_f64());
    Ok(Experiment {
        config,
        run_dir,
        codecs: data.codecs,
        server,
        devices,
        initial_down,
        remote: None,
    })
}

/// One device of `config`, as its own process builds it (`crate::deploy`): the same data
/// preparation and tokenizers as [`setup`] (the split is a function of the config and the data
/// files), its SLM built or pre-trained into `dir/cache`, no proxy yet. Returns every model's
/// tokenizer with it.
pub(crate) fn device_side(
    config: &ExperimentConfig,
    root: &Path,
    dir: &Path,
    plugins: &Plugins,
    index: usize,
) -> anyhow::Result<(Codecs, Device)> {
    let data = prepare_data(config, root, dir)?;
    let mut devices = build_devices(
        config,
        plugins,
        &data,
        &dir.join("cache"),
        true,
        Some(index),
    )?;
    let device = devices
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the config has no device {index}"))?;
    Ok((data.codecs, device))
}

fn prepare_data(config: &ExperimentConfig, root: &Path, run_dir: &Path) -> anyhow::Result<Data> {
    let t = Instant::now();
    let Prepared {
        benchmark,
        tokenizer,
        ..
    } = prepare(&config.data, root).context("preparing the data")?;
    tokenizer
        .save(&run_dir.join("tokenizer.json"))
        .context("saving the tokenizer")?;
    let template = &config.data.prompt_template;
    let texts = match needs_training_texts(config) {
        true => benchmark.training_texts(template),
        false => Vec::new(),
    };
    let codecs = Codecs::resolve(config, tokenizer, &|| texts.clone())?;
    let own = codecs.own();
    if !own.is_empty() {
        let dir = run_dir.join("tokenizers");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lines = Vec::new();
        for (name, codec) in &own {
            codec
                .tokenizer
                .save(&dir.join(format!("{name}.json")))
                .with_context(|| format!("saving the tokenizer of {name}"))?;
            lines.push(format!(
                "{name} {} tokens ({})",
                codec.tokenizer.vocab_size(),
                codec.origin
            ));
        }
        progress!(
            "own tokenizers: {}; the run's has {} tokens; alignment {}",
            lines.join(", "),
            codecs.shared.tokenizer.vocab_size(),
            config.train.alignment.name()
        );
    }
    let mut public_records = benchmark.public_train.clone();
    if let Some(max) = config.max_public {
        SeededRng::for_stream(config.data.seed, "max-public").shuffle(&mut public_records);
        public_records.truncate(max);
    }
    let mut encoded = std::collections::HashMap::new();
    for codec in codecs.distinct() {
        let key = stable_hash(&[
            &serde_json::to_string(&config.data)?,
            &format!("{:?}", config.max_public),
            &codec.tokenizer.to_json(),
        ]);
        encoded.insert(
            codec.tokenizer.fingerprint().to_string(),
            Encoded {
                public_train: codec.encode(&public_records, template),
                public_valid: codec.encode(&benchmark.public_valid, template),
                key,
            },
        );
    }
    let public_train = &encoded[codecs.shared.tokenizer.fingerprint()].public_train;
    let public_valid = &encoded[codecs.shared.tokenizer.fingerprint()].public_valid;
    let devices: Vec<String> = benchmark
        .devices
        .iter()
        .map(|d| format!("{} {}/{}", d.name, d.train.len(), d.test.len()))
        .collect();
    progress!(
        "data ready: {} public train, {} public valid; devices (train/test) {} ({:.1}s)",
        public_train.len(),
        public_valid.len(),
        devices.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(Data {
        benchmark,
        codecs,
        public_records,
        encoded,
    })
}

/// Whether a model's tokenizer is trained apart from the run's (it needs the training texts).
fn needs_training_texts(config: &ExperimentConfig) -> bool {
    let entries = std::iter::once(config.llm.clone())
        .chain(config.devices.iter().map(|d| d.slm.clone()))
        .chain((0..config.devices.len()).map(|i| config.dpm_of(i).model()));
    entries
        .map(|e| crate::tokens::Source::of(&e, &config.data))
        .any(|s| matches!(s, crate::tokens::Source::Trained(_)))
}

/// The seed of the cached pre-trainings.
fn pretrain_seed(config: &ExperimentConfig) -> u64 {
    config.pretrain_seed.unwrap_or(config.seed)
}

/// The corpus a model is pre-trained on: the public corpus, or for a `pretrained-general` SLM
/// the public corpus without its device's domains.
struct Corpus<'a> {
    train: std::borrow::Cow<'a, [Example]>,
    valid: std::borrow::Cow<'a, [Example]>,
    /// The data part of the cache key.
    key: String,
}

impl Data {
    /// The whole public corpus in `codec`'s tokens.
    fn public(&self, codec: &Codec) -> Corpus<'_> {
        let e = &self.encoded[codec.tokenizer.fingerprint()];
        Corpus {
            train: (&e.public_train[..]).into(),
            valid: (&e.public_valid[..]).into(),
            key: e.key.clone(),
        }
    }

    /// The corpus of the SLM of device `i` starting at `init`, in its tokens: without its
    /// domains for `pretrained-general`; `None` when it is not pre-trained.
    fn corpus_of(&self, init: &SlmInit, i: usize) -> anyhow::Result<Option<Corpus<'_>>> {
        let codec = &self.codecs.slms[i];
        match init {
            SlmInit::PretrainedPublic => Ok(Some(self.public(codec))),
            SlmInit::PretrainedGeneral => {
                let domains = &self.benchmark.devices[i].domains;
                let e = &self.encoded[codec.tokenizer.fingerprint()];
                let train = without_domains(&self.public_records, &e.public_train, domains);
                let valid = without_domains(&self.benchmark.public_valid, &e.public_valid, domains);
                if train.is_empty() || valid.is_empty() {
                    anyhow::bail!(
                        "devices[{i}].init = \"pretrained-general\": the public corpus without \
                         the domain{} {} leaves {} training and {} validation examples; it \
                         needs both",
                        if domains.len() == 1 { "" } else { "s" },
                        domains.join(", "),
                        train.len(),
                        valid.len()
                    );
                }
                let without = domains.join(",");
                Ok(Some(Corpus {
                    train: train.into(),
                    valid: valid.into(),
                    key: stable_hash(&[&e.key, "general-without", &without]),
                }))
            }
            SlmInit::Random | SlmInit::Checkpoint(_) => Ok(None),
        }
    }
}

/// The examples (encoded `records`, in the same order) whose record is of none of `domains`.
fn without_domains(records: &[QaRecord], examples: &[Example], domains: &[String]) -> Vec<Example> {
    records
        .iter()
        .zip(examples)
        .filter(|(r, _)| !domains.contains(&r.domain))
        .map(|(_, e)| e.clone())
        .collect()
}

/// Every pre-training (the LLM's and each distinct pre-trained SLM's) is independent: they run
/// in parallel to fill the cache, which the builds below then read.
fn pretrain_all(
    config: &ExperimentConfig,
    plugins: &Plugins,
    data: &Data,
    cache_dir: &Path,
) -> anyhow::Result<()> {
    let seed = pretrain_seed(config);
    let llm_arch = architecture_of(&config.llm, &plugins.llm);
    let llm_text = config.llm.config_text();
    let llm = ModelRecipe {
        checkpoint: config.llm.checkpoint.as_deref(),
        ..recipe(&plugins.llm, &llm_arch, &llm_text, seed)
    };
    let mut slms = Vec::new();
    for (i, d) in config.devices.iter().enumerate() {
        if let Some(corpus) = data.corpus_of(&d.init, i)? {
            let arch = architecture_of(&d.slm, &plugins.slms[i]);
            slms.push((i, arch, d.slm.config_text(), corpus));
        }
    }
    let mut jobs = Vec::new();
    if config.pretrain.llm {
        jobs.push(("the LLM".to_string(), llm, data.public(&data.codecs.llm)));
    }
    let mut seen = Vec::new();
    for (i, arch, text, corpus) in &slms {
        let id = (
            plugins.slms[*i].path().to_path_buf(),
            arch,
            text,
            &corpus.key,
        );
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let device = &config.devices[*i];
        jobs.push((
            format!("the SLM of {}", device.domain),
            ModelRecipe {
                checkpoint: device.slm.checkpoint.as_deref(),
                ..recipe(&plugins.slms[*i], arch, text, seed.wrapping_add(100))
            },
            Corpus {
                train: corpus.train.as_ref().into(),
                valid: corpus.valid.as_ref().into(),
                key: corpus.key.clone(),
            },
        ));
    }
    progress::phase("pre-training", jobs.len());
    let started = Instant::now();
    let done = parallel_map(jobs, worker_threads(config.threads), |(who, r, corpus)| {
        let p = pretrain_cached(
            r,
            &corpus.key,
            &corpus.train,
            &corpus.valid,
            &config.pretrain,
            cache_dir,
        )
        .with_context(|| format!("pre-training {who}"))?;
        progress::tick();
        Ok((who, p.report))
    })?;
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
    Ok(())
}

/// The server LLM: pre-trained (read from the cache the pre-training phase filled), or built
/// bare when resuming.
fn build_llm(
    config: &ExperimentConfig,
    plugins: &Plugins,
    data: &Data,
    cache_dir: &Path,
    fresh: bool,
) -> anyhow::Result<Model> {
    let arch = architecture_of(&config.llm, &plugins.llm);
    let text = config.llm.config_text();
    let r = ModelRecipe {
        checkpoint: config.llm.checkpoint.as_deref(),
        ..recipe(&plugins.llm, &arch, &text, pretrain_seed(config))
    };
    if !fresh {
        return Ok(r.build()?);
    }
    if !config.pretrain.llm {
        let model = r.build()?;
        progress!(
            "LLM {} from {}, not pre-trained here (pretrain.llm = false)",
            model.label(),
            config
                .llm
                .checkpoint
                .as_ref()
                .map_or("random weights".into(), |c| c.display().to_string())
        );
        return Ok(model);
    }
    let corpus = data.public(&data.codecs.llm);
    let Pretrained { model, report } = pretrain_cached(
        r,
        &corpus.key,
        &corpus.train,
        &corpus.valid,
        &config.pretrain,
        cache_dir,
    )?;
    let valid: Vec<String> = report
        .valid_cross_entropy
        .iter()
        .map(|v| format!("{v:.3}"))
        .collect();
    progress!(
        "LLM {} pre-trained: best epoch {}, valid CE by epoch {}",
        model.label(),
        report.best_epoch,
        valid.join(", ")
    );
    Ok(model)
}

/// The devices with their SLMs (random, from a checkpoint, or pre-trained on the public corpus)
/// and their private data.
fn build_devices(
    config: &ExperimentConfig,
    plugins: &Plugins,
    data: &Data,
    cache_dir: &Path,
    fresh: bool,
    only: Option<usize>,
) -> anyhow::Result<Vec<Device>> {
    let template = &config.data.prompt_template;
    let mut devices = Vec::with_capacity(config.devices.len());
    for (i, (entry, split)) in config
        .devices
        .iter()
        .zip(&data.benchmark.devices)
        .enumerate()
    {
        if only.is_some_and(|k| k != i) {
            continue;
        }
        let plugin = &plugins.slms[i];
        let arch = architecture_of(&entry.slm, plugin);
        let text = entry.slm.config_text();
        let r = ModelRecipe {
            checkpoint: entry.slm.checkpoint.as_deref(),
            ..recipe(
                plugin,
                &arch,
                &text,
                config.seed.wrapping_add(100 + i as u64),
            )
        };
        let corpus = if fresh {
            data.corpus_of(&entry.init, i)?
        } else {
            None
        };
        let slm = match corpus {
            Some(corpus) => {
                // Pre-trained SLMs of one config share the cache: seeded from the config only.
                let r = ModelRecipe {
                    seed: pretrain_seed(config).wrapping_add(100),
                    ..r
                };
                pretrain_cached(
                    r,
                    &corpus.key,
                    &corpus.train,
                    &corpus.valid,
                    &config.pretrain,
                    cache_dir,
                )?
                .model
            }
            None => r.build()?,
        };
        let codec = &data.codecs.slms[i];
        check_fits(&slm, &format!("devices[{i}].slm"), &codec.tokenizer, config)?;
        let mut test = match config.eval_split {
            EvalSplit::Test => split.test.clone(),
            EvalSplit::Valid => split.valid.clone(),
        };
        if let Some(max) = config.max_test {
            test.truncate(max);
        }
        devices.push(Device {
            index: i,
            name: split.name.clone(),
            slm,
            slm_codec: codec.clone(),
            slm_step: 0,
            dpm: None,
            train: codec.encode(&split.train, template),
            train_records: split.train.clone(),
            test,
            public_transfer: Vec::new(),
            public_records: Vec::new(),
        });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_general_corpus_leaves_out_the_devices_domains() {
        let record = |domain: &str, q: &str| QaRecord {
            domain: domain.into(),
            question: q.into(),
            answer: "a".into(),
        };
        let records = [
            record("geography", "g1"),
            record("trivia", "t1"),
            record("chemistry", "c1"),
            record("geography", "g2"),
        ];
        let examples: Vec<Example> = (0..4u32).map(|i| Example::new(vec![i], vec![i])).collect();
        let kept = without_domains(&records, &examples, &["geography".to_string()]);
        let ids: Vec<u32> = kept.iter().map(|e| e.prompt[0]).collect();
        assert_eq!(ids, [1, 2]);
        let none = without_domains(&records, &examples, &[]);
        assert_eq!(none.len(), 4);
    }
}
