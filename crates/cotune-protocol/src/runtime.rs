//! One device's side of a run, the same wherever the device lives: in one process beside the
//! server ([`crate::fleet::LocalFleet`] holds one per device) or in a process of its own on
//! another machine (a deployment's device process holds one). It owns the device's data
//! ([`DeviceData`]), its SLM and what its method keeps on it; it builds them, sets the method
//! up with what the server sent, runs the method's device step and receive, scores its models
//! and saves and restores them.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cotune_data::QaRecord;
use cotune_distill::{pretrain_cached, stable_hash, ModelRecipe};
use cotune_eval::Evaluation;
use cotune_host::{Example, Model};

use crate::config::{architecture_of, ExperimentConfig, Plugins, SlmInit};
use crate::methods::{DeviceSetup, DeviceStep, FederatedMethod, Method, Round};
use crate::parties::DeviceData;
use crate::recipes::{check_fits, pretrain_seed, recipe};
use crate::records::{DeviceLosses, Scores};
use crate::roles::{Device, DeviceSteps};
use crate::tokens::data_key;
use crate::tokens::Codec;
use crate::uploads::Prepared;

/// What a device's step gives the server's side: the method's step, the device's local
/// example count (FedAvg's weight) and what preparing the upload measured.
pub type WorkDone = (DeviceStep, usize, Option<Prepared>);

/// A device's scores (SLM, proxy) and its prediction files `(name, path)`.
pub type DeviceEvaluation = (
    Option<Scores>,
    Option<Scores>,
    Vec<(String, std::path::PathBuf)>,
);

/// One device and what it needs to act in a round.
pub struct DeviceRuntime {
    config: Arc<ExperimentConfig>,
    /// The plugin libraries its models come from: held while the models live.
    plugins: Arc<Plugins>,
    codecs: crate::tokens::Codecs,
    method: Method,
    /// The device.
    pub device: Device,
}

impl DeviceRuntime {
    /// Builds device `data.index` of `config`: its SLM (random, from a checkpoint, or
    /// pre-trained on the public corpus into `cache_dir`; with `fresh` false, when resuming,
    /// built bare to be restored) and its data in its models' tokens. The method's state comes
    /// with [`setup`](Self::setup).
    pub fn build(
        config: Arc<ExperimentConfig>,
        plugins: Arc<Plugins>,
        data: DeviceData,
        cache_dir: &Path,
        fresh: bool,
    ) -> anyhow::Result<DeviceRuntime> {
        let i = data.index;
        let entry = config
            .devices
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("the config has no device {i}"))?;
        let template = &config.data.prompt_template;
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
        let codec = data.codecs.slms[i].clone();
        let corpus = match fresh {
            true => corpus_of(&config, &data, &codec)?,
            false => None,
        };
        let slm = match corpus {
            Some((train, valid, key)) => {
                // Pre-trained SLMs of one config share the cache: seeded from the config only.
                let r = ModelRecipe {
                    seed: pretrain_seed(&config).wrapping_add(100),
                    ..r
                };
                let p = pretrain_cached(r, &key, &train, &valid, &config.pretrain, cache_dir)
                    .with_context(|| format!("pre-training the SLM of {}", entry.domain))?;
                progress!(
                    "the SLM of {}: {} (best epoch {})",
                    entry.domain,
                    if p.report.from_cache {
                        "pre-trained by an earlier run, read from the cache"
                    } else {
                        "pre-trained now and cached"
                    },
                    p.report.best_epoch
                );
                p.model
            }
            None => r.build()?,
        };
        check_fits(
            &slm,
            &format!("devices[{i}].slm"),
            &codec.tokenizer,
            &config,
        )?;
        let method = Method::of(&config)?;
        let device = Device {
            index: i,
            name: data.name,
            slm,
            slm_step: 0,
            state: None,
            train: codec.encode(&data.train, template),
            train_records: data.train,
            prompts: data.prompts,
            test: data.eval,
            slm_codec: codec,
        };
        Ok(DeviceRuntime {
            config,
            plugins,
            codecs: data.codecs,
            method,
            device,
        })
    }

    /// The config the device runs.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// The config the device runs, shared (to build a [`Round`] while the device works).
    pub fn shared_config(&self) -> Arc<ExperimentConfig> {
        self.config.clone()
    }

    /// Every model's tokenizer.
    pub fn codecs(&self) -> &crate::tokens::Codecs {
        &self.codecs
    }

    /// The method's setup on this device with the messages the server's setup made for it.
    pub fn setup(&mut self, received: &[Vec<u8>]) -> anyhow::Result<()> {
        let setup = DeviceSetup {
            config: &self.config,
            plugins: &self.plugins,
            codecs: &self.codecs,
        };
        self.method
            .implementation()
            .device_setup(&setup, &mut self.device, received)
            .with_context(|| {
                format!(
                    "setting up device {} ({})",
                    self.device.index, self.device.name
                )
            })
    }

    /// The round `number` with `participants`, as this device sees it.
    pub fn round<'a>(&'a self, number: usize, participants: &'a [usize]) -> Round<'a> {
        Round::of(&self.config, &self.codecs, number, participants)
    }

    /// The method's step on this device (`broadcast`: what the server sent every participant),
    /// then its upload prepared as `[privacy]` and `[attack]` say.
    pub fn step(
        &mut self,
        round: &Round<'_>,
        broadcast: Option<&[u8]>,
    ) -> anyhow::Result<WorkDone> {
        let method = self.method.implementation();
        let config = &*self.config;
        let dev = &mut self.device;
        let (privacy, attack) = (config.privacy.as_ref(), config.attack.as_ref());
        // The shared part the round starts from: updates are measured against it.
        let reference = match guards_uploads(config, method) {
            true => Some(
                dev.proxy()?
                    .adapted
                    .export_params(cotune_host::ParamSelection::Shared)?,
            ),
            false => None,
        };
        let steps_before = dev.slm_step;
        let mut step = method.device_step(round, dev, broadcast)?;
        step.losses.slm_steps += dev.slm_step.wrapping_sub(steps_before);
        let prepared = match (&reference, step.upload.as_mut()) {
            (Some(reference), Some(bytes)) => Some(
                crate::uploads::prepare_upload(
                    bytes,
                    reference,
                    privacy,
                    attack,
                    dev.index,
                    round.device_seed(dev.index),
                )
                .map_err(|e| anyhow::anyhow!("device {}'s upload: {e}", dev.name))?,
            ),
            _ => None,
        };
        progress!(
            "  device {} ({}): {}",
            dev.name,
            dev.slm.label(),
            losses_line(&step.losses)
        );
        Ok((step, dev.train.len(), prepared))
    }

    /// The method's receive of `download` on this device; may add to `losses`.
    pub fn receive(
        &mut self,
        round: &Round<'_>,
        broadcast: Option<&[u8]>,
        download: &[u8],
        losses: &mut DeviceLosses,
    ) -> anyhow::Result<()> {
        let steps_before = self.device.slm_step;
        self.method.implementation().device_receive(
            round,
            &mut self.device,
            broadcast,
            download,
            losses,
        )?;
        losses.slm_steps += self.device.slm_step.wrapping_sub(steps_before);
        Ok(())
    }

    /// The models scored every round: `(who, model, tokenizer)`, the SLM with `with_slms`.
    pub fn scored_models(&self, with_slms: bool) -> Vec<(&'static str, &Model, &Codec)> {
        let mut out = Vec::new();
        if with_slms {
            out.push(("slm", &self.device.slm, &self.device.slm_codec));
        }
        if let Some(state) = &self.device.state {
            out.extend(state.scored());
        }
        out
    }

    /// Scores one of [`scored_models`](Self::scored_models) on the device's evaluation records
    /// and writes its predictions to `dir/<name>-<who>.jsonl`.
    pub fn evaluate_one(
        &self,
        (who, model, codec): (&str, &Model, &Codec),
        dir: &Path,
    ) -> anyhow::Result<(Evaluation, std::path::PathBuf)> {
        let file = dir.join(format!("{}-{who}.jsonl", self.device.name));
        let e = crate::scoring::eval_model(
            &self.config,
            &self.codecs.shared,
            model,
            codec,
            &self.device.test,
            &file,
        )
        .with_context(|| format!("evaluating {}", model.label()))?;
        Ok((e, file))
    }

    /// Scores the device's models of round `round` (the SLM with `with_slms`, the proxy
    /// always) with predictions written under `dir/predictions/round-<n>/`.
    pub fn evaluate(
        &self,
        round: usize,
        with_slms: bool,
        dir: &Path,
    ) -> anyhow::Result<DeviceEvaluation> {
        let dir = dir.join(format!("predictions/round-{round}"));
        let mut scores = (None, None);
        let mut files = Vec::new();
        for job in self.scored_models(with_slms) {
            let who = job.0;
            let (e, file) = self.evaluate_one(job, &dir)?;
            put_score(
                who,
                Scores::from(e.report.macro_average),
                (&mut scores.0, &mut scores.1),
            );
            files.push((format!("{}-{who}.jsonl", self.device.name), file));
        }
        Ok((scores.0, scores.1, files))
    }

    /// Writes the device's models to `dir` and returns their schedule counters.
    pub fn save(&self, dir: &Path) -> anyhow::Result<DeviceSteps> {
        self.device.save(dir)
    }

    /// Reads back what [`save`](Self::save) wrote.
    pub fn restore(&mut self, dir: &Path, steps: &DeviceSteps) -> anyhow::Result<()> {
        self.device.restore(dir, steps)
    }

    /// The SLM's label (`plugin/architecture`).
    pub fn slm_label(&self) -> String {
        self.device.slm.label().to_string()
    }
}

/// The corpus the device's SLM is pre-trained on, in its tokens, with its cache key: the
/// public corpus, or for `pretrained-general` the public corpus without the device's domains;
/// `None` when it is not pre-trained.
#[allow(clippy::type_complexity)]
fn corpus_of(
    config: &ExperimentConfig,
    data: &DeviceData,
    codec: &Codec,
) -> anyhow::Result<Option<(Vec<Example>, Vec<Example>, String)>> {
    let i = data.index;
    let init = &config.devices[i].init;
    let Some((train, valid)) = data.public.as_ref() else {
        return Ok(None);
    };
    let template = &config.data.prompt_template;
    let key = data_key(config, codec)?;
    match init {
        SlmInit::PretrainedPublic => Ok(Some((
            codec.encode(train, template),
            codec.encode(valid, template),
            key,
        ))),
        SlmInit::PretrainedGeneral => {
            let domains = &data.domains;
            let keep = |records: &[QaRecord]| -> Vec<QaRecord> {
                records
                    .iter()
                    .filter(|r| !domains.contains(&r.domain))
                    .cloned()
                    .collect()
            };
            let (train, valid) = (keep(train), keep(valid));
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
            Ok(Some((
                codec.encode(&train, template),
                codec.encode(&valid, template),
                stable_hash(&[&key, "general-without", &without]),
            )))
        }
        SlmInit::Random | SlmInit::Checkpoint(_) => Ok(None),
    }
}

/// Puts the score of the scored model `who` (see [`DeviceRuntime::scored_models`]) into its
/// place: the SLM's, or the one of what the method keeps (the proxy's).
pub(crate) fn put_score(
    who: &str,
    score: Scores,
    (slm, dpm): (&mut Option<Scores>, &mut Option<Scores>),
) {
    match who {
        "slm" => *slm = Some(score),
        _ => *dpm = Some(score),
    }
}

/// Whether the DPM uploads of a run of `config` are prepared and recorded one by one: with
/// privacy, an attack, a robust rule or a screen (a plain run's uploads go up as they are).
pub(crate) fn guards_uploads(config: &ExperimentConfig, method: &dyn FederatedMethod) -> bool {
    let t = &config.train;
    method.uses_dpm()
        && (config.privacy.is_some()
            || config.attack.is_some()
            || !matches!(
                method.aggregation(t),
                crate::config::Aggregation::Fedavg | crate::config::Aggregation::PerDevice
            )
            || t.screen_ratio > 0.0)
}

/// A device's losses for the log: the cross-entropy of each phase that ran.
fn losses_line(l: &DeviceLosses) -> String {
    let parts: Vec<String> = [("slm", l.slm), ("dpm", l.dpm), ("dst", l.dst)]
        .iter()
        .filter_map(|(who, r)| r.map(|r| format!("{who} CE {:.3}", r.cross_entropy)))
        .collect();
    if parts.is_empty() {
        "no local training".into()
    } else {
        parts.join(", ")
    }
}
