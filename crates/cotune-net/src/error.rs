//! The one error type of the crate.
//!
//! Following the workspace's convention (docs/architecture.md, "Errors and log lines"), an error
//! prints its cause in its own message, in a field named `cause`, and never returns it from
//! `source()`.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in the transport: certificates, configuration, the connection, a refusal.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A file could not be read or written.
    #[error("cannot {action} {what} {}: {cause}", path.display())]
    File {
        action: &'static str,
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// rcgen could not make a certificate or key.
    #[error("cannot make the {what}: {cause}")]
    MakeCertificate { what: String, cause: rcgen::Error },
    /// A certificate or key file is not what it should be.
    #[error("{}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    /// A client certificate does not name a device (`CN=cotune-device-<i>`).
    #[error("the client certificate does not name a cotune device: {reason}")]
    CertificateIdentity { reason: String },
    /// A configuration value is out of range.
    #[error("invalid {field} {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The server could not listen.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: String },
    /// The server stopped with an error.
    #[error("the server on {addr} stopped: {cause}")]
    Serve { addr: String, cause: String },
    /// The TLS handshake or the certificate check failed: retrying would not help.
    #[error("TLS or authentication with {server} failed: {cause}")]
    Tls { server: String, cause: String },
    /// Another connection holds this device's certificate and is alive.
    #[error("{server} refused the connection: {cause}")]
    AlreadyConnected { server: String, cause: String },
    /// The server stayed unreachable for the whole retry budget.
    #[error(
        "{server} unavailable for {call} after {attempts} attempts in {:.1} s: {cause}",
        elapsed.as_secs_f64()
    )]
    Unavailable {
        server: String,
        call: &'static str,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },
    /// The server refused a request (a stale round, a failed validation, a wrong offset).
    #[error("{call} for round {round} refused: {reason}")]
    Refused {
        call: &'static str,
        round: u64,
        reason: String,
    },
    /// A call failed in a way the client does not retry.
    #[error("{call} failed with {code}: {cause}")]
    Rpc {
        call: &'static str,
        code: String,
        cause: String,
    },
    /// The peer broke the protocol (an unexpected offset, a payload that does not hash).
    #[error("{call} for round {round}: {reason}")]
    Protocol {
        call: &'static str,
        round: u64,
        reason: String,
    },
    /// The server's round state refused an operation of the runner.
    #[error("round {round}: {reason}")]
    Round { round: u64, reason: String },
    /// A round closed without enough accepted uploads.
    #[error("round {round} failed: {reason}")]
    RoundFailed { round: u64, reason: String },
}
