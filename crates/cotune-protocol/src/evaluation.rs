//! Evaluation after every round: the devices score their own models in their fleet (the
//! SLMs while the method changes them, the proxies with their adapters); the server scores the
//! LLM (in round 0 and whenever the method changes it) on its own evaluation records. Every
//! prediction is written to `predictions/round-<n>/`.

use anyhow::Context;

use crate::fleet::DeviceReport;
use crate::methods::Method;
use crate::progress;
use crate::records::{DeviceRecord, LlmRecord, RoundOutcome, RoundRecord, Scores};
use crate::setup::Experiment;

impl Experiment {
    /// The record of round `round` from its outcome (none in round 0) and the devices'
    /// reports, with the LLM scored when `with_llm`.
    pub(crate) fn evaluate_round(
        &self,
        round: usize,
        outcome: RoundOutcome,
        reports: Vec<DeviceReport>,
        with_llm: bool,
    ) -> anyhow::Result<RoundRecord> {
        let method = Method::of(&self.config)?;
        let llm = match with_llm {
            true => {
                progress::phase("evaluation: LLM", 1);
                let file = self
                    .run_dir
                    .join(format!("predictions/round-{round}/llm.jsonl"));
                let e = crate::scoring::eval_model(
                    &self.config,
                    &self.codecs.shared,
                    &self.server.llm,
                    &self.codecs.llm,
                    &self.llm_eval,
                    &file,
                )
                .with_context(|| format!("evaluating {}", self.server.llm.label()))?;
                progress::tick();
                Some(LlmRecord {
                    macro_average: e.report.macro_average.into(),
                    per_domain: e
                        .report
                        .per_domain
                        .iter()
                        .map(|d| (d.domain.clone(), Scores::from(d.summary)))
                        .collect(),
                })
            }
            false => None,
        };
        let mut rows = outcome.devices.into_iter();
        let mut reports = reports.into_iter();
        let devices = self
            .device_names
            .iter()
            .zip(&self.slm_labels)
            .map(|(name, label)| {
                let (losses, traffic) = rows.next().unwrap_or_default();
                let report = reports.next().unwrap_or_default();
                DeviceRecord {
                    device: name.clone(),
                    slm_architecture: label.clone(),
                    participated: traffic.participated,
                    slm: report.slm,
                    dpm: report.dpm,
                    losses,
                    bytes_up: traffic.up,
                    bytes_down: traffic.down,
                    wire: report.wire,
                }
            })
            .collect();
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
}
