//! The transport of a cloud-edge deployment: gRPC over mutual TLS between the cotune server
//! (the cloud, with the LLM) and its devices (the edge, with the small models).
//!
//! Payloads are opaque bytes here; the runner decides what a task, a download and an upload
//! mean. The crate has five parts: [`certs`] (certificates, their folders and the identity a
//! device certificate carries), [`revoke`] (the server's revocation list), [`state`] (the server's sessions and rounds, which the runner
//! drives), [`server`] (the gRPC service) and [`client`] (a device).
//!
//! # Identities and mutual TLS
//!
//! Both sides trust one CA. The server presents a certificate for the names devices dial
//! (`localhost`, `127.0.0.1` and `::1` for the development one; [`make_certs`] with
//! [`ServerNames`] for others), and a device checks it against its `domain`
//! ([`ClientConfig::domain`]: `--server-name`, by default the host of the server's address). A
//! name the certificate does not carry stops the device at once with an error naming both. The
//! server requires a client certificate signed by that CA: a connection without one, or with
//! one from another CA, fails in the TLS handshake. A device is identified by its certificate,
//! read by the server from the verified connection, never from a message: its common name
//! `cotune-device-<i>` and its URI name `urn:cotune:device:<i>` must agree
//! ([`certs::device_of_certificate`]). A certificate or device on the server's revocation list
//! ([`revoke`]) is refused on every call with `PERMISSION_DENIED`. [`make_certs`] writes each
//! party's files into a folder of its own (`ca/`, `server/`, `device-<i>/`), keys with mode
//! 0600, and keeps the CA key so that [`add_device`] can issue a certificate later.
//!
//! # The RPCs (`proto/cotune_net.proto`, service `cotune.net.v1.Cotune`)
//!
//! Devices dial out and pull; the server never calls a device.
//!
//! - **Register** opens a session for the certificate's device and answers the device index,
//!   a session number and the heartbeat interval. While the device's session is alive, a
//!   Register from another client process with the same certificate is refused with
//!   `ALREADY_EXISTS`; the same process registering again (its reply lost) gets its session back
//!   (the request's random `instance`).
//! - **Heartbeat** keeps the session alive. The client sends it from its own task every
//!   interval (the server's, or the client's setting), apart from training. Every other call
//!   also counts. A device silent for `missed_heartbeats` intervals (3 by default) loses its
//!   session and is dropped from the open round.
//! - **PullTask** answers `Wait` (ask again after a delay), `Task` (round, opaque task bytes,
//!   the download's length and sha256, time to the deadline) or `Finished`. Pulling the task
//!   moves the device from waiting to training; pulling again while training answers the same
//!   task (a device that reconnected continues).
//! - **Download** streams the round's payload for this device from an offset, in chunks of
//!   `chunk_size` (1 MiB by default), each with its offset, the total length and the sha256 of
//!   the whole. A device whose stream broke asks again from the length it holds, and checks the
//!   hash at the end.
//! - **UploadStatus** answers how many bytes of (this device, round) the server holds, the
//!   sha256 they belong to, and whether the upload was accepted.
//! - **Upload** is a client stream of chunks, each with the round, its offset, the total length
//!   and the sha256 of the whole. The server appends a chunk that continues what it holds
//!   (overlap is skipped; a gap is `OUT_OF_RANGE`), keeps partial bytes across broken streams,
//!   and when the whole has arrived checks the hash, then the runner's validator
//!   ([`state::Validator`]), then accepts. A stream that ends early answers the bytes held.
//!
//! Every call after Register carries the session; a session the server does not know (after a
//! restart, or after it lapsed) is `NOT_FOUND`, and the client registers again and repeats the
//! call.
//!
//! # Message sizes
//!
//! No message exceeds 4 MiB ([`MAX_MESSAGE_BYTES`], set explicitly on both sides for encoding
//! and decoding); chunk sizes are checked to leave room for the framing. Traffic is measured as
//! prost's `encoded_len` of every message plus the 5-byte gRPC frame header ([`wire_len`]).
//!
//! # Rounds, deadlines and failures
//!
//! The runner opens a round ([`ServerState::open_round`]) with each participant's task and
//! download, a deadline and a minimum number of devices, then waits for it
//! ([`ServerState::wait_round`]). The round closes when every participant has uploaded or been
//! dropped, or at the deadline, when every device that has not uploaded is dropped. It
//! completes with at least the minimum of accepted uploads and fails otherwise, with the counts
//! in its reason. Uploads for an unknown, closed or other round, from a device dropped from it
//! or not in it, are refused (`FAILED_PRECONDITION`); a failed hash or validation is
//! `INVALID_ARGUMENT`. Refusals are logged and recorded per device and round
//! ([`DeviceRound::refusals`]). A dropped device joins the next round it is a participant of.
//!
//! # Retries
//!
//! The client retries UNAVAILABLE and broken connections with capped exponential backoff
//! ([`client::Backoff`]: 100 ms doubling to 20 s, for up to 5 minutes), resuming transfers from
//! the server's offsets; it stops at once on a TLS or authentication failure, on a certificate
//! already connected, and on a refusal. HTTP/2 keepalive pings run every 60 s on both sides
//! (configurable, and refused at four minutes or more).

pub mod certs;
pub mod client;
mod error;
pub mod revoke;
pub mod server;
pub mod state;

/// The generated protobuf messages and gRPC stubs.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("cotune.net.v1");
}

use std::time::Duration;

pub use certs::{
    add_device, device_of_certificate, identity_of_certificate, make_certs, make_dev_certs,
    DevCerts, DeviceIdentity, PartyFiles, ServerNames, TlsFiles,
};
pub use client::{host_of, Backoff, ClientConfig, ClientStats, DeviceClient, Pull, TaskAssignment};
pub use error::NetError;
pub use revoke::{RevocationList, Revocations};
pub use server::{NetServer, ServerConfig};
pub use state::{
    DeviceRound, DeviceState, DeviceTask, RoundOutcome, RoundReport, RoundSpec, ServerState,
    StateConfig, Validator,
};

/// The largest gRPC message either side sends or accepts: gRPC's default of 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Payload bytes per chunk by default.
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

/// Room a chunk message needs beyond its payload (fields, hash, frame header).
const CHUNK_OVERHEAD_BYTES: usize = 1024;

/// The bytes a message takes on the wire: its encoding plus the 5-byte gRPC frame header.
pub fn wire_len(message: &impl prost::Message) -> u64 {
    message.encoded_len() as u64 + 5
}

fn check_chunk_size(chunk_size: usize) -> Result<(), NetError> {
    if chunk_size == 0 || chunk_size + CHUNK_OVERHEAD_BYTES > MAX_MESSAGE_BYTES {
        return Err(NetError::Config {
            field: "chunk size",
            value: chunk_size.to_string(),
            reason: "must be between 1 byte and 4 MiB less 1 KiB",
        });
    }
    Ok(())
}

fn check_keepalive(interval: Duration) -> Result<(), NetError> {
    if interval >= Duration::from_secs(240) || interval < Duration::from_secs(1) {
        return Err(NetError::Config {
            field: "keepalive interval",
            value: format!("{:.1} s", interval.as_secs_f64()),
            reason: "must be at least 1 s and below 4 minutes (idle connections are cut at 4)",
        });
    }
    Ok(())
}
