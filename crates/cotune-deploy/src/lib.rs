//! A run whose devices live in their own processes, on their own machines, reached over gRPC
//! with mutual TLS (`cotune_net`): `cargo xtask serve` runs the server side of a config,
//! `cargo xtask device` one device; `cargo xtask split` gives each party its own data folder.
//! `docs/deployment.md` is the how-to.
//!
//! # Who holds what
//!
//! The server process runs the runner of `cotune_protocol` with this crate's [`NetFleet`] as its
//! fleet: the LLM, the DPM slots, the public corpus, aggregation, server-side mutual learning,
//! the LLM's evaluation on the server's own evaluation records, the run folder with
//! `metrics.jsonl`, results, plots and `state/`. It never opens a device's data file, never
//! builds, saves or holds a device's model, and never sees a device's questions: with
//! `--data DIR/server` (`cargo xtask split`) it reads only its own folder. A device process holds
//! one `cotune_protocol::DeviceRuntime`, the same as a run in one process holds per device: its
//! SLM, what its method keeps on it (a proxy and its adapters), its training and test records
//! (from `--data DIR/device-<i>`), and their state in a folder of its own (`--dir`), and never
//! opens a port. The method's device setup runs on the device with what the server's setup
//! sent it (the first DPM; every public question, of which it keeps those closest to its own).
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
//!    method's message with its losses. The server checks every upload before accepting it,
//!    against what the method's `expected_uploads` says it must be (a DPM's names and shapes,
//!    finite values and `deploy.max_update_norm`; FedMKT's knowledge on the round's sample;
//!    centralized's records; nothing), so that an accepted upload cannot fail the server's
//!    step; then the server's step runs on the accepted uploads exactly as in one process,
//!    FedAvg weighing each by the training-set size its device declares clamped to the
//!    config's.
//! 2. **receive** (every connected device that was not dropped from the step): the download
//!    holds the device's message from the server's step; the device applies it, evaluates its
//!    models on its test split, saves its state and uploads the scores and, with
//!    `deploy.send_predictions`, its prediction files (kept in `predictions/round-<r>/device-<i>/`,
//!    capped in number and size; refused when not asked for).
//!
//! The first task a device gets carries the config and the messages of the method's server
//! setup for it; the device builds its SLM (pre-training it when the config says so), runs the
//! method's device setup with them, and keeps everything in its folder. Every payload is a
//! safetensors file of typed parts ([`Payload`], [`Part`]).
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

/// A progress line on standard error.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[cotune] {}", format!($($arg)*)) };
}

mod accept;
mod commands;
mod device;
mod payload;
mod server;

pub use commands::{certs_command, device_command, serve_command, split_command};
pub use device::{run_device, DeviceOptions};
pub use payload::{Part, Payload};
pub use server::{serve, NetFleet, ServeOptions};

use cotune_protocol::records::{DeviceLosses, Scores};
use serde::{Deserialize, Serialize};

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
    /// The download holds the device's setup ([`Part::Setup`]).
    pub setup: bool,
    /// The round of a missed download the download holds ([`Part::Pending`],
    /// [`Part::PendingBroadcast`]).
    pub pending: Option<usize>,
    /// The download holds the server's message for this device ([`Part::Download`]).
    pub download: bool,
    /// The download holds the round's broadcast ([`Part::Broadcast`]).
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
    /// Its local training examples: FedAvg's weight, clamped by the server to what the config
    /// gives a device.
    pub examples: usize,
    /// What preparing the upload measured: `(norm, clipped, attacked)`.
    pub prepared: Option<(f64, bool, bool)>,
    pub slm: Option<Scores>,
    pub dpm: Option<Scores>,
    /// Seconds the device worked on the phase.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_have_their_own_transport_rounds() {
        assert_eq!(net_round(0, Phase::Receive), 1);
        assert_eq!(net_round(1, Phase::Step), 2);
        assert_eq!(net_round(1, Phase::Receive), 3);
        assert_eq!(net_round(7, Phase::Step), 14);
    }
}
