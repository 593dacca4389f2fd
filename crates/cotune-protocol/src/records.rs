//! What a run records: per round, each device's scores, losses and traffic, the LLM's scores and
//! the server's losses (`metrics.jsonl`, one [`RoundRecord`] a line).

use cotune_distill::EpochReport;
use cotune_eval::ScoreSummary;
use serde::{Deserialize, Serialize};

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

/// Losses of one device in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceLosses {
    /// DST (adapters) on local data.
    pub dst: Option<EpochReport>,
    /// The SLM's last pass (local CE, or its side of mutual learning).
    pub slm: Option<EpochReport>,
    /// The DPM shared part's last pass.
    pub dpm: Option<EpochReport>,
    /// Size of the device-side transfer set this round.
    pub transfer_examples: usize,
    /// The SLM's optimiser steps this round, every phase together: the budget a method spends.
    #[serde(default)]
    pub slm_steps: u32,
}

/// The server's losses in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerLosses {
    /// The LLM's last pass (against the one DPM, or on its own data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<EpochReport>,
    /// The aggregated DPM's side of mutual learning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpm: Option<EpochReport>,
    /// Mutual learning with each device's own DPM (per-device aggregation), in device order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_device: Vec<PairLosses>,
    /// Per domain, how many of the round's server prompts were answered by the proxy rather
    /// than the LLM (`server_prompt_labeller = "surer"`), and how many there were: where the
    /// devices' knowledge reached the LLM.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub proxy_answers: std::collections::BTreeMap<String, (usize, usize)>,
}

/// The server LLM and one device's DPM learning from each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairLosses {
    /// The device's index.
    pub device: usize,
    /// The LLM's last pass.
    pub llm: Option<EpochReport>,
    /// The DPM's last pass.
    pub dpm: Option<EpochReport>,
}

/// What crossed the network for one device in one round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Whether the device took part in the round.
    pub participated: bool,
    /// Bytes it sent.
    pub up: u64,
    /// Bytes it received.
    pub down: u64,
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
    pub losses: DeviceLosses,
    /// Bytes it sent up this round.
    pub bytes_up: u64,
    /// Bytes it received this round.
    pub bytes_down: u64,
    /// In a deployment: what crossed the network for it this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireRecord>,
}

/// One device's traffic on the network in one round of a deployment (`crate::deploy`): both
/// phases (its step, then its download and evaluation), every gRPC message counted as encoded
/// plus its 5-byte frame header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Bytes the server sent it (task replies, download chunks, upload replies).
    pub bytes_down: u64,
    /// Bytes the server received from it.
    pub bytes_up: u64,
    /// The largest single message, either way.
    pub largest_message: u64,
    /// From each task's pull to its accepted upload (or the drop), summed over the phases.
    pub seconds: f64,
    /// Of `seconds`, the time the device itself reported working (setup, training,
    /// evaluation, saving); the rest is the network path (download, upload, waits).
    #[serde(default)]
    pub device_seconds: f64,
    /// Every refused upload, with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<String>,
    /// Why it was dropped from a phase, if it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
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
    #[serde(default)]
    pub server_losses: ServerLosses,
    /// What happened to the uploads: privacy, attacks, the server's checks and rule (absent
    /// for rounds without DPM uploads and for runs before these were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads: Option<UploadsRecord>,
    /// Wall time of the round in seconds (setup for round 0).
    pub seconds: f64,
    /// Seconds of that spent carrying distributions between tokenizers (runs where some model
    /// has a tokenizer of its own; `cotune_distill::align`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_seconds: Option<f64>,
}

/// The server's checks of one round's uploads and how it combined them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadChecks {
    /// The combination rule (`fedavg`, `median`, ..., `per-device`).
    pub rule: String,
    /// Uploads the server refused, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedUpload>,
    /// With a screen: each checked upload's DPM cross-entropy on the public validation split,
    /// `(device, CE)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screen: Vec<(usize, f64)>,
    /// `krum`: the device whose upload was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub krum_choice: Option<usize>,
    /// What the server did instead of its rule, when it could not apply it (too few uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// An upload the server did not learn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedUpload {
    /// The sender.
    pub device: usize,
    /// Why, naming the value.
    pub reason: String,
}

/// The uploads of one round: what the devices did to them and what the server did with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadsRecord {
    /// Per uploading device, its update's L2 norm before clipping, `(device, norm)` (measured
    /// on the device; recorded for the experiment, not sent).
    pub update_norms: Vec<(usize, f64)>,
    /// Devices whose update was longer than `clip` and scaled down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clipped: Vec<usize>,
    /// The attacking device, when it uploaded this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attacker: Option<usize>,
    /// The server's side.
    pub server: UploadChecks,
    /// With `[privacy]`: epsilon of this round alone and of every round so far, at `delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySpent>,
}

/// The privacy spent, by the accountant (`crate::accountant`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Epsilon of this round's release alone; absent when there is no guarantee (no noise).
    pub epsilon_round: Option<f64>,
    /// Epsilon of all releases up to and including this round; absent when there is none.
    pub epsilon: Option<f64>,
    /// The delta both are stated at.
    pub delta: f64,
    /// The sampling rate the accountant used (the share of devices taking part; 1 for local
    /// noise).
    pub sampling_rate: f64,
}

/// What one round produced before evaluation: per device its losses and traffic, and the
/// server's losses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundOutcome {
    /// Per device, in device order.
    pub devices: Vec<(DeviceLosses, Traffic)>,
    /// The server's.
    pub server: ServerLosses,
    /// What happened to the uploads (methods that upload DPM parameters).
    pub uploads: Option<UploadsRecord>,
}

/// Reads `metrics.jsonl` (blank lines skipped), naming the file and line on error.
pub fn read_metrics(path: &std::path::Path) -> anyhow::Result<Vec<RoundRecord>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a round record", path.display(), n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_record_round_trips_through_json() {
        let report = EpochReport {
            steps: 3,
            loss: 1.5,
            cross_entropy: 1.25,
            kl: 0.0,
            gate: Some(0.5),
        };
        let record = RoundRecord {
            round: 1,
            method: "co-plms".into(),
            devices: vec![DeviceRecord {
                device: "geography".into(),
                slm_architecture: "gpt2/gpt2".into(),
                participated: true,
                slm: Some(Scores {
                    em: 0.5,
                    rouge_l: 0.75,
                }),
                dpm: None,
                losses: DeviceLosses {
                    slm: Some(report),
                    transfer_examples: 40,
                    ..DeviceLosses::default()
                },
                bytes_up: 10,
                bytes_down: 20,
                wire: None,
            }],
            llm: None,
            server_losses: ServerLosses {
                per_device: vec![PairLosses {
                    device: 0,
                    llm: Some(report),
                    dpm: None,
                }],
                ..ServerLosses::default()
            },
            uploads: None,
            seconds: 2.0,
            alignment_seconds: None,
        };
        let line = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<RoundRecord>(&line).unwrap(), record);
        // An empty set of server losses is written as an empty object.
        let quiet = serde_json::to_value(ServerLosses::default()).unwrap();
        assert_eq!(quiet, serde_json::json!({}));
    }

    #[test]
    fn a_bad_metrics_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "\nnot json\n").unwrap();
        let err = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(err.contains("metrics.jsonl:2"), "{err}");
    }
}
