//! The server's state: device sessions and rounds, driven by the runner and by the RPCs.
//!
//! [`ServerState`] is plain synchronous state behind one mutex; the RPC handlers in
//! [`crate::server`] call into it, the runner opens rounds and waits for them. Time is checked
//! whenever anyone touches the state (`sweep`): lapsed sessions are removed (their devices dropped
//! from the open round), a passed deadline drops every device that has not uploaded, and the
//! round closes when every participant has uploaded or been dropped, or at its deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::proto::{self, pull_task_reply};
use crate::{wire_len, NetError};

mod types;

pub use types::*;

macro_rules! net_log {
    ($($arg:tt)*) => { eprintln!("[cotune-net] {}", format!($($arg)*)) };
}
pub(crate) use net_log;

struct Session {
    id: u64,
    instance: u64,
    last_seen: Instant,
}

struct Partial {
    sha256: [u8; 32],
    total: u64,
    buf: BytesMut,
}

struct Slot {
    task: Bytes,
    download: Bytes,
    download_sha256: [u8; 32],
    state: DeviceState,
    started: Option<Instant>,
    ended: Option<Instant>,
    sent: u64,
    received: u64,
    largest: u64,
    refusals: Vec<String>,
    dropped: Option<String>,
    partial: Option<Partial>,
    /// The whole upload is being validated (outside the lock).
    validating: bool,
    accepted: Option<Bytes>,
    accepted_sha256: [u8; 32],
}

impl Slot {
    fn report(&self, now: Instant) -> DeviceRound {
        let wall = match self.started {
            Some(start) => self.ended.unwrap_or(now).saturating_duration_since(start),
            None => Duration::ZERO,
        };
        DeviceRound {
            state: self.state,
            sent_wire_bytes: self.sent,
            received_wire_bytes: self.received,
            largest_message_bytes: self.largest,
            download_len: self.download.len() as u64,
            upload_len: self.accepted.as_ref().map(|b| b.len() as u64),
            wall,
            refusals: self.refusals.clone(),
            dropped: self.dropped.clone(),
        }
    }

    fn drop_for(&mut self, device: u32, round: u64, reason: String, now: Instant) {
        net_log!("device {device} dropped from round {round}: {reason}");
        self.state = DeviceState::Dropped;
        self.dropped = Some(reason);
        self.ended = Some(now);
        self.partial = None;
    }

    fn count_sent(&mut self, wire: u64) {
        self.sent += wire;
        self.largest = self.largest.max(wire);
    }

    fn count_received(&mut self, wire: u64) {
        self.received += wire;
        self.largest = self.largest.max(wire);
    }
}

struct Round {
    round: u64,
    opened: Instant,
    deadline: Instant,
    deadline_len: Duration,
    min_devices: usize,
    slots: BTreeMap<u32, Slot>,
    outcome: RoundOutcome,
    closed: Option<Instant>,
}

impl Round {
    fn report(&self, now: Instant) -> RoundReport {
        RoundReport {
            round: self.round,
            outcome: self.outcome.clone(),
            devices: self
                .slots
                .iter()
                .map(|(d, s)| (*d, s.report(now)))
                .collect(),
            uploads: self
                .slots
                .iter()
                .filter_map(|(d, s)| s.accepted.clone().map(|b| (*d, b)))
                .collect(),
            elapsed: self
                .closed
                .unwrap_or(now)
                .saturating_duration_since(self.opened),
            min_devices: self.min_devices,
        }
    }

    fn is_open(&self) -> bool {
        self.outcome == RoundOutcome::Open
    }

    fn close(&mut self, now: Instant, why: &str) {
        let accepted = self.slots.values().filter(|s| s.accepted.is_some()).count();
        self.outcome = if accepted >= self.min_devices {
            RoundOutcome::Completed
        } else {
            RoundOutcome::Failed {
                reason: format!(
                    "{accepted} accepted uploads of {} participants, fewer than the minimum {} ({why})",
                    self.slots.len(),
                    self.min_devices
                ),
            }
        };
        self.closed = Some(now);
        for slot in self.slots.values_mut() {
            slot.partial = None;
        }
        match &self.outcome {
            RoundOutcome::Failed { reason } => {
                net_log!("round {} failed: {reason}", self.round)
            }
            _ => net_log!(
                "round {} completed with {accepted} of {} uploads ({why})",
                self.round,
                self.slots.len()
            ),
        }
    }
}

struct Inner {
    sessions: HashMap<u32, Session>,
    next_session: u64,
    /// Every round opened, the last one possibly open.
    rounds: BTreeMap<u64, Round>,
    finished: bool,
}

impl Inner {
    fn open_round(&mut self) -> Option<&mut Round> {
        self.rounds.values_mut().next_back().filter(|r| r.is_open())
    }
}

/// The server's sessions and rounds, shared by the RPC handlers and the runner.
pub struct ServerState {
    config: StateConfig,
    validator: Validator,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// A chunk the state accepted; `complete` carries the whole upload when it is.
pub(crate) struct ChunkAccepted {
    pub(crate) held: u64,
    pub(crate) complete: Option<(Bytes, [u8; 32])>,
}

impl ServerState {
    /// State whose uploads all pass validation.
    pub fn new(config: StateConfig) -> Result<Arc<ServerState>, NetError> {
        ServerState::with_validator(config, Arc::new(|_, _, _| Ok(())))
    }

    /// State whose uploads pass `validator` before they are accepted.
    pub fn with_validator(
        config: StateConfig,
        validator: Validator,
    ) -> Result<Arc<ServerState>, NetError> {
        config.check()?;
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Ok(Arc::new(ServerState {
            config,
            validator,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                // Sessions of an earlier server process must not match this one's.
                next_session: seed | 1,
                rounds: BTreeMap::new(),
                finished: false,
            }),
            changed: Notify::new(),
        }))
    }

    /// The settings.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the clock: lapsed sessions, deadlines, rounds that can close.
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        let timeout = self.config.heartbeat_timeout();
        let lapsed: Vec<(u32, Duration)> = inner
            .sessions
            .iter()
            .map(|(d, s)| (*d, now.saturating_duration_since(s.last_seen)))
            .filter(|(_, silent)| *silent > timeout)
            .collect();
        let mut changed = false;
        for (device, silent) in &lapsed {
            inner.sessions.remove(device);
            net_log!(
                "device {device} disconnected: no heartbeat for {:.1} s",
                silent.as_secs_f64()
            );
            if let Some(round) = inner.open_round() {
                let number = round.round;
                if let Some(slot) = round.slots.get_mut(device) {
                    if matches!(slot.state, DeviceState::Waiting | DeviceState::Training) {
                        let reason = format!(
                            "no heartbeat for {:.1} s ({} missed intervals of {:.1} s)",
                            silent.as_secs_f64(),
                            self.config.missed_heartbeats,
                            self.config.heartbeat_interval.as_secs_f64()
                        );
                        slot.drop_for(*device, number, reason, now);
                    }
                }
            }
            changed = true;
        }
        if let Some(round) = inner.open_round() {
            if now >= round.deadline {
                let number = round.round;
                let len = round.deadline_len;
                for (device, slot) in round.slots.iter_mut() {
                    if matches!(slot.state, DeviceState::Waiting | DeviceState::Training) {
                        let reason = format!(
                            "missed the deadline of round {number} ({:.1} s)",
                            len.as_secs_f64()
                        );
                        slot.drop_for(*device, number, reason, now);
                    }
                }
                round.close(now, "deadline");
                changed = true;
            } else if round
                .slots
                .values()
                .all(|s| matches!(s.state, DeviceState::Uploaded | DeviceState::Dropped))
            {
                round.close(now, "every participant uploaded or was dropped");
                changed = true;
            }
        }
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn locked(&self) -> (MutexGuard<'_, Inner>, Instant) {
        let mut inner = self.lock();
        let now = Instant::now();
        self.sweep(&mut inner, now);
        (inner, now)
    }

    /// Opens `spec.round`: its participants may pull their tasks at once.
    ///
    /// Refused while another round is open, for a round number not above every earlier one, with
    /// no participants, or with a minimum above the number of participants.
    pub fn open_round(&self, spec: RoundSpec) -> Result<(), NetError> {
        let (mut inner, now) = self.locked();
        let refuse = |reason: String| NetError::Round {
            round: spec.round,
            reason,
        };
        if inner.finished {
            return Err(refuse("the run has finished".to_string()));
        }
        if let Some(open) = inner.open_round() {
            return Err(refuse(format!("round {} is still open", open.round)));
        }
        if let Some(last) = inner.rounds.keys().next_back() {
            if spec.round <= *last {
                return Err(refuse(format!(
                    "round numbers must grow; round {last} was already opened"
                )));
            }
        }
        if spec.tasks.is_empty() {
            return Err(refuse("has no participants".to_string()));
        }
        if spec.min_devices > spec.tasks.len() {
            return Err(refuse(format!(
                "minimum of {} devices is above its {} participants",
                spec.min_devices,
                spec.tasks.len()
            )));
        }
        let slots = spec
            .tasks
            .into_iter()
            .map(|(device, t)| {
                let sha: [u8; 32] = Sha256::digest(&t.download).into();
                (
                    device,
                    Slot {
                        task: t.task,
                        download: t.download,
                        download_sha256: sha,
                        state: DeviceState::Waiting,
                        started: None,
                        ended: None,
                        sent: 0,
                        received: 0,
                        largest: 0,
                        refusals: Vec::new(),
                        dropped: None,
                        partial: None,
                        validating: false,
                        accepted: None,
                        accepted_sha256: [0; 32],
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        net_log!(
            "round {} open for devices {} (deadline {:.1} s, minimum {})",
            spec.round,
            slots
                .keys()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            spec.deadline.as_secs_f64(),
            spec.min_devices
        );
        inner.rounds.insert(
            spec.round,
            Round {
                round: spec.round,
                opened: now,
                deadline: now + spec.deadline,
                deadline_len: spec.deadline,
                min_devices: spec.min_devices,
                slots,
                outcome: RoundOutcome::Open,
                closed: None,
            },
        );
        drop(inner);
        self.changed.notify_waiters();
        Ok(())
    }

    /// A snapshot of round `round` (open or closed), or `None` if it was never opened.
    pub fn report(&self, round: u64) -> Option<RoundReport> {
        let (inner, now) = self.locked();
        inner.rounds.get(&round).map(|r| r.report(now))
    }

    /// The open round's number, if one is open.
    pub fn open_round_number(&self) -> Option<u64> {
        let (mut inner, _) = self.locked();
        inner.open_round().map(|r| r.round)
    }

    /// Waits until round `round` closes (every participant uploaded or was dropped, or its
    /// deadline passed) and returns its report; a round never opened is an error.
    pub async fn wait_round(&self, round: u64) -> Result<RoundReport, NetError> {
        // Rechecked at least this often, so a lapsed heartbeat is seen without any RPC.
        let tick = (self.config.heartbeat_interval / 4).max(Duration::from_millis(5));
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let (inner, now) = self.locked();
                let Some(r) = inner.rounds.get(&round) else {
                    return Err(NetError::Round {
                        round,
                        reason: "was never opened".to_string(),
                    });
                };
                if !r.is_open() {
                    return Ok(r.report(now));
                }
                r.deadline.saturating_duration_since(now).min(tick)
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Ends the run: every device's next PullTask answers that the run finished.
    pub fn finish(&self) {
        let (mut inner, _) = self.locked();
        inner.finished = true;
        net_log!("run finished");
    }

    /// The devices with a live session, in index order.
    pub fn connected_devices(&self) -> Vec<u32> {
        let (inner, _) = self.locked();
        let mut devices: Vec<u32> = inner.sessions.keys().copied().collect();
        devices.sort_unstable();
        devices
    }

    // ----- RPC side -----

    pub(crate) fn register(&self, device: u32, instance: u64) -> Result<u64, Refusal> {
        let (mut inner, now) = self.locked();
        if let Some(s) = inner.sessions.get_mut(&device) {
            if s.instance == instance {
                s.last_seen = now;
                return Ok(s.id);
            }
            return Err(Refusal::AlreadyConnected(format!(
                "device {device} is already connected (its last call {:.1} s ago); \
                 a second connection with its certificate is refused until it stops for {:.1} s",
                now.saturating_duration_since(s.last_seen).as_secs_f64(),
                self.config.heartbeat_timeout().as_secs_f64()
            )));
        }
        inner.next_session = inner.next_session.wrapping_add(2);
        let id = inner.next_session;
        inner.sessions.insert(
            device,
            Session {
                id,
                instance,
                last_seen: now,
            },
        );
        net_log!("device {device} registered (session {id})");
        Ok(id)
    }

    fn touch(inner: &mut Inner, device: u32, session: u64, now: Instant) -> Result<(), Refusal> {
        match inner.sessions.get_mut(&device) {
            Some(s) if s.id == session => {
                s.last_seen = now;
                Ok(())
            }
            _ => Err(Refusal::Session(format!(
                "session {session} of device {device} is unknown or expired; register again"
            ))),
        }
    }

    pub(crate) fn heartbeat(&self, device: u32, session: u64) -> Result<(), Refusal> {
        let (mut inner, now) = self.locked();
        Self::touch(&mut inner, device, session, now)
    }

    pub(crate) fn pull_task(
        &self,
        device: u32,
        session: u64,
    ) -> Result<proto::PullTaskReply, Refusal> {
        let (mut inner, now) = self.locked();
        Self::touch(&mut inner, device, session, now)?;
        let wait = proto::PullTaskReply {
            reply: Some(pull_task_reply::Reply::Wait(proto::Wait {
                retry_after_ms: self.config.poll_interval.as_millis() as u64,
            })),
        };
        if inner.finished {
            return Ok(proto::PullTaskReply {
                reply: Some(pull_task_reply::Reply::Finished(proto::Finished {})),
            });
        }
        let Some(round) = inner.open_round() else {
            return Ok(wait);
        };
        let number = round.round;
        let deadline_in = round.deadline.saturating_duration_since(now);
        let Some(slot) = round.slots.get_mut(&device) else {
            return Ok(wait);
        };
        if !matches!(slot.state, DeviceState::Waiting | DeviceState::Training) {
            return Ok(wait);
        }
        if slot.state == DeviceState::Waiting {
            slot.state = DeviceState::Training;
            slot.started = Some(now);
        }
        let reply = proto::PullTaskReply {
            reply: Some(pull_task_reply::Reply::Task(proto::Task {
                round: number,
                task: slot.task.clone(),
                download_len: slot.download.len() as u64,
                download_sha256: Bytes::copy_from_slice(&slot.download_sha256),
                deadline_in_ms: deadline_in.as_millis() as u64,
            })),
        };
        slot.count_sent(wire_len(&reply));
        Ok(reply)
    }

    /// The participant's slot in the open round `round`, or why not.
    fn slot_in_open_round(
        inner: &mut Inner,
        device: u32,
        round: u64,
    ) -> Result<&mut Slot, Refusal> {
        let open = inner.open_round().map(|r| r.round);
        let Some(r) = inner.rounds.get_mut(&round) else {
            return Err(Refusal::Stale(format!("round {round} is unknown")));
        };
        if !r.is_open() {
            let now_open = open.map_or("none".to_string(), |o| o.to_string());
            return Err(Refusal::Stale(format!(
                "round {round} is closed (open round: {now_open})"
            )));
        }
        let Some(slot) = r.slots.get_mut(&device) else {
            return Err(Refusal::Stale(format!(
                "device {device} is not a participant of round {round}"
            )));
        };
        if slot.state == DeviceState::Dropped {
            return Err(Refusal::Stale(format!(
                "device {device} was dropped from round {round}: {}",
                slot.dropped.as_deref().unwrap_or("-")
            )));
        }
        Ok(slot)
    }

    /// The download payload of (device, round) and its sha256, for a stream from `offset`.
    pub(crate) fn download(
        &self,
        device: u32,
        session: u64,
        round: u64,
        offset: u64,
    ) -> Result<(Bytes, [u8; 32]), Refusal> {
        let (mut inner, now) = self.locked();
        Self::touch(&mut inner, device, session, now)?;
        let slot = Self::slot_in_open_round(&mut inner, device, round)?;
        if offset > slot.download.len() as u64 {
            return Err(Refusal::Offset(format!(
                "download offset {offset} is past the payload's {} bytes",
                slot.download.len()
            )));
        }
        if slot.state == DeviceState::Waiting {
            slot.state = DeviceState::Training;
            slot.started = Some(now);
        }
        Ok((slot.download.clone(), slot.download_sha256))
    }

    /// Counts a download chunk handed to the transport.
    pub(crate) fn count_sent(&self, device: u32, round: u64, wire: u64) {
        let mut inner = self.lock();
        if let Some(slot) = inner
            .rounds
            .get_mut(&round)
            .and_then(|r| r.slots.get_mut(&device))
        {
            slot.count_sent(wire);
        }
    }

    pub(crate) fn upload_status(
        &self,
        device: u32,
        session: u64,
        round: u64,
    ) -> Result<proto::UploadStatusReply, Refusal> {
        let (mut inner, now) = self.locked();
        Self::touch(&mut inner, device, session, now)?;
        let Some(r) = inner.rounds.get(&round) else {
            return Err(Refusal::Stale(format!("round {round} is unknown")));
        };
        let Some(slot) = r.slots.get(&device) else {
            return Err(Refusal::Stale(format!(
                "device {device} is not a participant of round {round}"
            )));
        };
        if let Some(accepted) = &slot.accepted {
            return Ok(proto::UploadStatusReply {
                held: accepted.len() as u64,
                sha256: Bytes::copy_from_slice(&slot.accepted_sha256),
                accepted: true,
            });
        }
        if !r.is_open() {
            return Err(Refusal::Stale(format!(
                "round {round} is closed without an upload from device {device}"
            )));
        }
        Ok(match &slot.partial {
            Some(p) => proto::UploadStatusReply {
                held: p.buf.len() as u64,
                sha256: Bytes::copy_from_slice(&p.sha256),
                accepted: false,
            },
            None => proto::UploadStatusReply {
                held: 0,
                sha256: Bytes::new(),
                accepted: false,
            },
        })
    }

    /// Records a refusal of (device, round)'s upload in its slot, if it has one, and logs it.
    pub(crate) fn record_refusal(&self, device: u32, round: u64, refusal: &Refusal) {
        net_log!(
            "upload of device {device} for round {round} refused: {}",
            refusal.reason()
        );
        let mut inner = self.lock();
        if let Some(slot) = inner
            .rounds
            .get_mut(&round)
            .and_then(|r| r.slots.get_mut(&device))
        {
            slot.refusals.push(refusal.reason().to_string());
        }
    }

    /// Takes one upload chunk (counted as `wire` bytes).
    pub(crate) fn upload_chunk(
        &self,
        device: u32,
        chunk: &proto::UploadChunk,
        wire: u64,
    ) -> Result<ChunkAccepted, Refusal> {
        let (mut inner, now) = self.locked();
        Self::touch(&mut inner, device, chunk.session, now)?;
        let max = self.config.max_upload_bytes;
        let round = chunk.round;
        let slot = Self::slot_in_open_round(&mut inner, device, round)?;
        slot.count_received(wire);
        if slot.state == DeviceState::Uploaded {
            return Err(Refusal::Stale(format!(
                "device {device} already has an accepted upload in round {round}"
            )));
        }
        if slot.validating {
            return Err(Refusal::Offset(format!(
                "the upload of device {device} for round {round} is being validated"
            )));
        }
        if chunk.total_len > max {
            return Err(Refusal::Invalid(format!(
                "upload of {} bytes is above the limit of {max} bytes",
                chunk.total_len
            )));
        }
        let Ok(sha256) = <[u8; 32]>::try_from(chunk.sha256.as_ref()) else {
            return Err(Refusal::Invalid(format!(
                "sha256 of {} bytes, not 32",
                chunk.sha256.len()
            )));
        };
        if slot.state == DeviceState::Waiting {
            slot.state = DeviceState::Training;
            slot.started = Some(now);
        }
        let same = slot
            .partial
            .as_ref()
            .is_some_and(|p| p.sha256 == sha256 && p.total == chunk.total_len);
        if !same {
            if chunk.offset != 0 {
                return Err(Refusal::Offset(format!(
                    "chunk at offset {} starts an upload the server holds no bytes of",
                    chunk.offset
                )));
            }
            slot.partial = Some(Partial {
                sha256,
                total: chunk.total_len,
                buf: BytesMut::new(),
            });
        }
        let Some(partial) = slot.partial.as_mut() else {
            unreachable!("set above");
        };
        let held = partial.buf.len() as u64;
        let end = chunk.offset + chunk.data.len() as u64;
        if chunk.offset > held {
            return Err(Refusal::Offset(format!(
                "chunk at offset {} leaves a gap: the server holds {held} bytes",
                chunk.offset
            )));
        }
        if end > partial.total {
            return Err(Refusal::Invalid(format!(
                "chunk ends at {end}, past the upload's {} bytes",
                partial.total
            )));
        }
        // A resent chunk may overlap what is held: keep only the new tail.
        if end > held {
            let skip = (held - chunk.offset) as usize;
            partial.buf.extend_from_slice(&chunk.data[skip..]);
        }
        let held = partial.buf.len() as u64;
        if held < partial.total {
            return Ok(ChunkAccepted {
                held,
                complete: None,
            });
        }
        let Some(partial) = slot.partial.take() else {
            unreachable!("present above");
        };
        let whole = partial.buf.freeze();
        let got: [u8; 32] = Sha256::digest(&whole).into();
        if got != partial.sha256 {
            return Err(Refusal::Invalid(format!(
                "the {} bytes received hash to sha256 {}, not the announced {}",
                whole.len(),
                hex(&got),
                hex(&partial.sha256)
            )));
        }
        slot.validating = true;
        Ok(ChunkAccepted {
            held,
            complete: Some((whole, got)),
        })
    }

    /// Runs the validator on a whole upload (outside the lock) and accepts or refuses it.
    pub(crate) fn validate_and_accept(
        &self,
        device: u32,
        round: u64,
        whole: Bytes,
        sha256: [u8; 32],
    ) -> Result<(), Refusal> {
        let verdict = (self.validator)(device, round, &whole);
        let (mut inner, now) = self.locked();
        // The round may have closed, or dropped the device, while the validator ran.
        let result = match Self::slot_in_open_round(&mut inner, device, round) {
            Err(refusal) => Err(refusal),
            Ok(slot) => {
                slot.validating = false;
                match verdict {
                    Err(reason) => Err(Refusal::Invalid(format!("validation: {reason}"))),
                    Ok(()) => {
                        slot.accepted_sha256 = sha256;
                        slot.accepted = Some(whole);
                        slot.state = DeviceState::Uploaded;
                        slot.ended = Some(now);
                        net_log!("upload of device {device} for round {round} accepted");
                        Ok(())
                    }
                }
            }
        };
        if let Some(slot) = inner
            .rounds
            .get_mut(&round)
            .and_then(|r| r.slots.get_mut(&device))
        {
            slot.validating = false;
        }
        // The round may close now.
        self.sweep(&mut inner, now);
        drop(inner);
        self.changed.notify_waiters();
        result
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
