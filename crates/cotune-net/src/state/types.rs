//! What the runner gives the round state and reads back: settings, round specifications, the
//! per-device and per-round reports, and the reasons an RPC is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::NetError;

/// The runner's check of an upload, called with the device, the round and the whole payload
/// before the upload is accepted; `Err(reason)` refuses it.
pub type Validator = Arc<dyn Fn(u32, u64, &[u8]) -> Result<(), String> + Send + Sync>;

/// Settings of the server's round state.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The interval at which devices send heartbeats (the server tells each device at Register).
    pub heartbeat_interval: Duration,
    /// A device whose last call is older than this many intervals is dropped.
    pub missed_heartbeats: u32,
    /// How long a device waits before asking for a task again when there is none.
    pub poll_interval: Duration,
    /// The largest upload the server accepts, in bytes.
    pub max_upload_bytes: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            poll_interval: Duration::from_millis(500),
            max_upload_bytes: 1 << 30,
        }
    }
}

impl StateConfig {
    pub(super) fn check(&self) -> Result<(), NetError> {
        if self.heartbeat_interval < Duration::from_millis(10) {
            return Err(NetError::Config {
                field: "heartbeat interval",
                value: format!("{:?}", self.heartbeat_interval),
                reason: "must be at least 10 ms",
            });
        }
        if self.missed_heartbeats == 0 {
            return Err(NetError::Config {
                field: "missed heartbeats",
                value: "0".to_string(),
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    /// How long a device may stay silent before it is dropped.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }
}

/// What one device receives in a round.
#[derive(Debug, Clone)]
pub struct DeviceTask {
    /// The runner's instructions, opaque to the transport; sent in the PullTask reply.
    pub task: Bytes,
    /// The payload the device downloads in chunks (the same `Bytes` may be shared by devices).
    pub download: Bytes,
}

/// A round the runner opens.
#[derive(Debug, Clone)]
pub struct RoundSpec {
    /// The round's number; larger than every round opened before.
    pub round: u64,
    /// The participants and what each receives.
    pub tasks: BTreeMap<u32, DeviceTask>,
    /// How long after opening the round closes at the latest.
    pub deadline: Duration,
    /// The fewest accepted uploads for the round to complete.
    pub min_devices: usize,
}

/// Where a device stands in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Has not pulled its task yet.
    Waiting,
    /// Pulled its task: downloading, training or uploading.
    Training,
    /// Its upload was received whole and accepted.
    Uploaded,
    /// Missed the deadline or its heartbeats; it may join the next round.
    Dropped,
}

impl DeviceState {
    /// The state in words, for progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Waiting => "waiting",
            DeviceState::Training => "training",
            DeviceState::Uploaded => "uploaded",
            DeviceState::Dropped => "dropped",
        }
    }
}

/// One device in one round, for the runner's metrics and progress line.
#[derive(Debug, Clone)]
pub struct DeviceRound {
    /// Where the device stands.
    pub state: DeviceState,
    /// Bytes the server sent this device for the round: every message's encoded length plus
    /// the 5-byte gRPC frame header (task reply, download chunks, upload replies), counted when
    /// handed to HTTP/2, so chunks in flight when a stream broke are included.
    pub sent_wire_bytes: u64,
    /// Bytes the server received from this device for the round, counted the same way.
    pub received_wire_bytes: u64,
    /// The largest single message of the round, either way, framed.
    pub largest_message_bytes: u64,
    /// Length of the download payload.
    pub download_len: u64,
    /// Length of the accepted upload.
    pub upload_len: Option<u64>,
    /// From the task's pull to the accepted upload or the drop (so far, while training).
    pub wall: Duration,
    /// Every refusal of this device's uploads in the round, with its reason.
    pub refusals: Vec<String>,
    /// Why the device was dropped.
    pub dropped: Option<String>,
}

/// How a round ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Still collecting uploads.
    Open,
    /// Closed with at least the minimum number of accepted uploads.
    Completed,
    /// Closed with fewer; the reason names the counts.
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// A round's state: its outcome, each participant, the accepted uploads.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// The round's number.
    pub round: u64,
    /// Open, completed or failed.
    pub outcome: RoundOutcome,
    /// Every participant.
    pub devices: BTreeMap<u32, DeviceRound>,
    /// The accepted uploads by device.
    pub uploads: BTreeMap<u32, Bytes>,
    /// Since the round opened (until it closed, once closed).
    pub elapsed: Duration,
    /// The minimum number of accepted uploads.
    pub min_devices: usize,
}

impl RoundReport {
    /// The accepted uploads of a completed round, or the failure.
    pub fn into_uploads(self) -> Result<BTreeMap<u32, Bytes>, NetError> {
        match self.outcome {
            RoundOutcome::Completed => Ok(self.uploads),
            RoundOutcome::Failed { reason } => Err(NetError::RoundFailed {
                round: self.round,
                reason,
            }),
            RoundOutcome::Open => Err(NetError::Round {
                round: self.round,
                reason: "is still open".to_string(),
            }),
        }
    }

    /// One line for people: `round 3 open: 0 uploaded, 1 training, 2 dropped; 12.3 MB down, 4.5 MB up`.
    pub fn progress_line(&self) -> String {
        let count = |s: DeviceState| self.devices.values().filter(|d| d.state == s).count();
        let down: u64 = self.devices.values().map(|d| d.sent_wire_bytes).sum();
        let up: u64 = self.devices.values().map(|d| d.received_wire_bytes).sum();
        let outcome = match &self.outcome {
            RoundOutcome::Open => "open".to_string(),
            RoundOutcome::Completed => "completed".to_string(),
            RoundOutcome::Failed { reason } => format!("failed ({reason})"),
        };
        format!(
            "round {} {outcome}: {} uploaded, {} training, {} waiting, {} dropped; {:.1} MB down, {:.1} MB up, {:.1} s",
            self.round,
            count(DeviceState::Uploaded),
            count(DeviceState::Training),
            count(DeviceState::Waiting),
            count(DeviceState::Dropped),
            down as f64 / 1e6,
            up as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why the state refused an RPC; the server turns it into a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The session is unknown or expired: register again (NOT_FOUND).
    Session(String),
    /// The device's certificate is connected elsewhere (ALREADY_EXISTS).
    AlreadyConnected(String),
    /// A closed, unknown or wrong round, or a device that is not (or no longer) in it
    /// (FAILED_PRECONDITION).
    Stale(String),
    /// The upload failed its checks (INVALID_ARGUMENT).
    Invalid(String),
    /// A chunk's offset does not continue what the server holds (OUT_OF_RANGE).
    Offset(String),
}

impl Refusal {
    pub(crate) fn reason(&self) -> &str {
        match self {
            Refusal::Session(r)
            | Refusal::AlreadyConnected(r)
            | Refusal::Stale(r)
            | Refusal::Invalid(r)
            | Refusal::Offset(r) => r,
        }
    }
}
