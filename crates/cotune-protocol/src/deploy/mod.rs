//! A run whose devices live in their own processes, on their own machines, reached over gRPC
//! with mutual TLS (`cotune_net`): `cargo xtask serve` runs the server side of a config,
//! `cargo xtask device` one device. `docs/deployment.md` is the how-to.
//!
//! # Who holds what
//!
//! The server process does everything a run in one process does on the server's side (the
//! LLM, the DPM slots, the public corpus, aggregation, server-side mutual learning, the LLM's
//! evaluation, the run folder with `metrics.jsonl`, results, plots and `state/`); a device
//! process holds its SLM, its proxy's adapters and optimiser counters, its training split and
//! its test split, in a folder of its own (`--dir`, default `runs/device-<i>`), and never
//! opens a port. The benchmark's split is a function of the config and the data files, so a
//! device derives its own split from its copy of the data; its private examples never travel.
//! The server builds the same initial devices as a run in one process to make their first
//! downloads (the first DPM, the public questions of the transfer set) and never trains or
//! evaluates them.
//!
//! # A round on the wire
//!
//! Round `r` is two phases, each a `cotune_net` round (numbers `2r` and `2r + 1`; round 0's
//! evaluation is `1`):
//!
//! 1. **step** (the round's participants): the task says the round; the download holds the
//!    method's broadcast, and for a device that missed an earlier download that download
//!    (applied first). The device runs the method's device step (DST, SAML for `co-plms`),
//!    prepares its upload as `[privacy]` / `[attack]` say, saves its state, and uploads the
//!    method's message with its losses. The server checks every upload before accepting it
//!    (names and shapes against the round's DPM, finite values, `deploy.max_update_norm`,
//!    size); then the server's step runs on the accepted uploads exactly as in one process.
//! 2. **receive** (every connected device that was not dropped from the step): the download
//!    holds the device's message from the server's step; the device applies it, evaluates its
//!    models on its test split, saves its state and uploads the scores and prediction files.
//!
//! The first task a device gets carries the config and its setup (the first DPM, its public
//! questions); the device builds its SLM (pre-training it when the config says so) and its
//! proxy from them, and keeps both in its folder. Every payload is a safetensors file
//! ([`Payload`]).
//!
//! # Failures
//!
//! A phase closes when every participant has uploaded or been dropped (silent for
//! `deploy.missed_heartbeats` heartbeats, or past `deploy.deadline_seconds`), and completes
//! with at least `deploy.min_devices` accepted uploads; a failed phase stops the server with
//! the counts (its state is saved after every round, so `--resume` continues). A dropped
//! device gets its missed download with its next task. A device saves its state after every
//! phase and, before each phase, goes back to its state before that phase: a restarted
//! device, or a server that restarted from its last completed round and repeats a phase,
//! computes the same numbers again.

mod device;
mod payload;
mod server;

pub use device::{run_device, DeviceOptions};
pub use payload::Payload;
pub(crate) use server::Remote;
pub use server::{serve, ServeOptions};

use serde::{Deserialize, Serialize};

use crate::message::{decode_params, encode_params};
use crate::records::{DeviceLosses, Scores};

/// The two phases of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// The device's step and upload.
    Step,
    /// The device's download and evaluation.
    Receive,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Step => "step",
            Phase::Receive => "receive",
        }
    }
}

/// The transport's round number of `phase` of round `round`.
pub(crate) fn net_round(round: usize, phase: Phase) -> u64 {
    2 * round as u64 + u64::from(phase == Phase::Receive)
}

/// What a task says (the PullTask reply's bytes, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskMeta {
    /// The run's name (its folder's on the server): a device's folder holds one run.
    pub run: String,
    /// The experiment config, as the server was started with it.
    pub config: String,
    pub phase: Phase,
    pub round: usize,
    /// The round's participants.
    pub participants: Vec<usize>,
    /// The download holds the device's setup (`setup/` parameters, `setup-public` blob).
    pub setup: bool,
    /// The round of a missed download the download holds (`pending/`, `pending-broadcast`).
    pub pending: Option<usize>,
    /// The download holds the server's message for this device (`download/`).
    pub download: bool,
    /// The download holds the round's broadcast (`broadcast`).
    pub broadcast: bool,
    /// Receive: the device's losses from its step, which the method's receive may add to.
    pub losses: DeviceLosses,
    /// Receive: score the SLM too (the proxy is always scored).
    pub with_slms: bool,
    /// Receive: send the prediction files with the scores.
    pub send_predictions: bool,
}

/// What a device uploads with its message (the payload's metadata, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReportMeta {
    pub phase: Phase,
    pub round: usize,
    pub device: usize,
    pub losses: DeviceLosses,
    /// Its local training examples (FedAvg's weight).
    pub examples: usize,
    /// What preparing the upload measured: `(norm, clipped, attacked)`.
    pub prepared: Option<(f64, bool, bool)>,
    pub slm: Option<Scores>,
    pub dpm: Option<Scores>,
    /// Seconds the device worked on the phase.
    pub seconds: f64,
}

/// Puts a method's message into `payload` as group `group`: as `F32` parameters when it is a
/// parameter set (a DPM's shared part), else as one blob.
pub(crate) fn put_message(payload: &mut Payload, group: &str, bytes: &[u8]) {
    match decode_params(bytes) {
        Ok(params) if !params.is_empty() => {
            for mut p in params {
                p.name = format!("{group}/{}", p.name).into();
                payload.params.push(p);
            }
        }
        _ => payload.blobs.push((group.to_string(), bytes.to_vec())),
    }
}

/// The message [`put_message`] put as group `group`, byte for byte.
pub(crate) fn take_message(payload: &Payload, group: &str) -> Option<Vec<u8>> {
    if let Some(blob) = payload.blob(group) {
        return Some(blob.to_vec());
    }
    let prefix = format!("{group}/");
    let params: Vec<cotune_host::NamedTensor> = payload
        .params
        .iter()
        .filter_map(|p| {
            p.name
                .strip_prefix(prefix.as_str())
                .map(|name| cotune_host::NamedTensor::new(name, p.shape.to_vec(), p.data.to_vec()))
        })
        .collect();
    (!params.is_empty()).then(|| encode_params(&params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_host::NamedTensor;

    #[test]
    fn a_message_goes_through_a_payload_byte_for_byte() {
        let params = vec![
            NamedTensor::new("h.0.w", vec![2, 2], vec![1.0, 2.0, 3.0, -4.5]),
            NamedTensor::new("wte", vec![3], vec![0.5, 0.25, 0.0]),
        ];
        let message = encode_params(&params);
        let mut p = Payload::default();
        put_message(&mut p, "download", &message);
        put_message(&mut p, "broadcast", b"fedmkt knowledge");
        let back = Payload::decode(&p.encode(), "test").unwrap();
        assert_eq!(take_message(&back, "download").unwrap(), message);
        assert_eq!(
            take_message(&back, "broadcast").unwrap(),
            b"fedmkt knowledge"
        );
        assert_eq!(take_message(&back, "pending"), None);
        assert_eq!(back.params[0].name.as_str(), "download/h.0.w");
    }

    #[test]
    fn phases_have_their_own_transport_rounds() {
        assert_eq!(net_round(0, Phase::Receive), 1);
        assert_eq!(net_round(1, Phase::Step), 2);
        assert_eq!(net_round(1, Phase::Receive), 3);
        assert_eq!(net_round(7, Phase::Step), 14);
    }
}
