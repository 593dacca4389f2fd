//! Evaluation after every round: the SLMs (while the method changes them), the proxies with
//! their adapters, and the LLM (in round 0 and whenever the method changes it), each on its
//! test split, with every prediction written to `predictions/round-<n>/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cotune_data::QaRecord;
use cotune_eval::{evaluate, Evaluation};
use cotune_host::Model;

use crate::methods::Method;
use crate::parallel::{parallel_map, worker_threads};
use crate::progress;
use crate::records::{DeviceRecord, LlmRecord, RoundOutcome, RoundRecord, Scores};
use crate::setup::Experiment;
use crate::tokens::Codec;

impl Experiment {
    /// Scores every model of round `round` and makes its record with the round's outcome
    /// (none in round 0). `with_llm`: evaluate the LLM too.
    pub(crate) fn evaluate_round(
        &self,
        round: usize,
        outcome: RoundOutcome,
        with_llm: bool,
    ) -> anyhow::Result<RoundRecord> {
        let dir = self.run_dir.join(format!("predictions/round-{round}"));
        let method = Method::of(&self.config)?;
        let with_slms = round == 0 || method.implementation().trains_slms();
        // Every model's evaluation is independent: run them in parallel, the LLM's (the
        // largest) first.
        let all_tests: Vec<QaRecord> = self
            .devices
            .iter()
            .flat_map(|d| d.test.iter().cloned())
            .collect();
        let mut jobs: Vec<(&Model, &Codec, &[QaRecord], PathBuf)> = Vec::new();
        if with_llm {
            let llm = (&self.server.llm, &self.codecs.llm);
            jobs.push((llm.0, llm.1, &all_tests, dir.join("llm.jsonl")));
        }
        let mut slots = Vec::new();
        // In a deployment each device scores its own models and reports them.
        let remote = self.remote.as_ref();
        for dev in &self.devices {
            if remote.is_some() {
                slots.push((None, None));
                continue;
            }
            let file = |who: &str| dir.join(format!("{}-{who}.jsonl", dev.name));
            let slm = with_slms.then(|| {
                jobs.push((&dev.slm, &dev.slm_codec, &dev.test, file("slm")));
                jobs.len() - 1
            });
            let dpm = dev.dpm.as_ref().map(|p| {
                jobs.push((&p.adapted, &p.codec, &dev.test, file("dpm")));
                jobs.len() - 1
            });
            slots.push((slm, dpm));
        }
        progress::phase("evaluation", jobs.len());
        let threads = worker_threads(self.config.threads);
        let evaluations = parallel_map(jobs, threads, |(model, codec, records, file)| {
            let e = self
                .eval_model(model, codec, records, &file)
                .with_context(|| format!("evaluating {}", model.label()))?;
            progress::tick();
            Ok(e)
        })?;
        let score =
            |slot: Option<usize>| slot.map(|k| Scores::from(evaluations[k].report.macro_average));
        let mut rows = outcome.devices.into_iter();
        let devices = self
            .devices
            .iter()
            .zip(&slots)
            .map(|(dev, &(slm, dpm))| {
                let (losses, traffic) = rows.next().unwrap_or_default();
                let (slm, dpm, wire) = match remote {
                    Some(r) => {
                        let (slm, dpm) = r.scores(dev.index);
                        (slm, dpm, Some(r.wire(dev.index)))
                    }
                    None => (score(slm), score(dpm), None),
                };
                DeviceRecord {
                    device: dev.name.clone(),
                    slm_architecture: dev.slm.label().to_string(),
                    participated: traffic.participated,
                    slm,
                    dpm,
                    losses,
                    bytes_up: traffic.up,
                    bytes_down: traffic.down,
                    wire,
                }
            })
            .collect();
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
            server_losses: outcome.server,
            uploads: outcome.uploads,
            seconds: 0.0,
            alignment_seconds: None,
        })
    }

    fn eval_model(
        &self,
        model: &Model,
        codec: &Codec,
        records: &[QaRecord],
        file: &Path,
    ) -> anyhow::Result<Evaluation> {
        eval_model(
            &self.config,
            &self.codecs.shared,
            model,
            codec,
            records,
            file,
        )
    }
}

/// Scores `model` (tokenizer `codec`; `shared` is the run's) on `records` and writes its
/// predictions to `file`.
pub(crate) fn eval_model(
    config: &crate::config::ExperimentConfig,
    shared: &Codec,
    model: &Model,
    codec: &Codec,
    records: &[QaRecord],
    file: &Path,
) -> anyhow::Result<Evaluation> {
    let template = &config.data.prompt_template;
    let evaluation = if codec.same(shared) {
        evaluate(model, records, &codec.tokenizer, template, &config.eval)?
    } else {
        // A model's own tokenizer may spell a prompt longer than the budget the records
        // were filtered by: it keeps the prompt's end.
        let t = &codec.tokenizer;
        cotune_eval::evaluate_with(
            model,
            records,
            template,
            |text| {
                let ids = t.encode(text);
                ids[ids.len().saturating_sub(codec.max_prompt)..].to_vec()
            },
            |ids| t.decode(ids),
            t.eos_id(),
            &config.eval,
        )?
    };
    evaluation.write_predictions(file)?;
    Ok(evaluation)
}

/// A device's scores (SLM, proxy) and its prediction files `(name, path)`.
pub(crate) type DeviceEvaluation = (Option<Scores>, Option<Scores>, Vec<(String, PathBuf)>);

/// A device's own evaluation in a deployment (`crate::deploy`): its SLM (with `with_slms`)
/// and its proxy on its test records, predictions written under `dir/predictions/round-<n>/`
/// as a run in one process names them. Returns the scores and `(file name, path)` of each
/// prediction file.
pub(crate) fn evaluate_device(
    config: &crate::config::ExperimentConfig,
    shared: &Codec,
    dev: &crate::roles::Device,
    round: usize,
    with_slms: bool,
    dir: &Path,
) -> anyhow::Result<DeviceEvaluation> {
    let dir = dir.join(format!("predictions/round-{round}"));
    let mut files = Vec::new();
    let mut one = |model: &Model, codec: &Codec, who: &str| -> anyhow::Result<Scores> {
        let name = format!("{}-{who}.jsonl", dev.name);
        let file = dir.join(&name);
        let e = eval_model(config, shared, model, codec, &dev.test, &file)
            .with_context(|| format!("evaluating {}", model.label()))?;
        files.push((name, file));
        Ok(Scores::from(e.report.macro_average))
    };
    let slm = match with_slms {
        true => Some(one(&dev.slm, &dev.slm_codec, "slm")?),
        false => None,
    };
    let dpm = match &dev.dpm {
        Some(p) => Some(one(&p.adapted, &p.codec, "dpm")?),
        None => None,
    };
    Ok((slm, dpm, files))
}
