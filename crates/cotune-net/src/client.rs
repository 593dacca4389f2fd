//! The device side: connect with its certificate, register, heartbeat, pull tasks, download and
//! upload in chunks, retry what can be retried and resume from offsets.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::certs::TlsFiles;
use crate::proto::cotune_client::CotuneClient;
use crate::proto::{self, pull_task_reply};
use crate::state::{hex, net_log};
use crate::{
    check_chunk_size, check_keepalive, wire_len, NetError, DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES,
};

/// Capped exponential backoff for calls that fail with UNAVAILABLE (or a broken connection).
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// Waits double up to this.
    pub max: Duration,
    /// A call that has failed for this long gives up with [`NetError::Unavailable`].
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(20),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// Test hooks that break a transfer once, to exercise resumption.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Drop the first download stream after this many chunks.
    pub cut_download_after_chunks: Option<usize>,
    /// Cancel the first upload stream after this many chunks.
    pub cut_upload_after_chunks: Option<usize>,
}

/// How a device connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's URI, `https://host:port`.
    pub server: String,
    /// The name the server's certificate must carry (a DNS name or an IP address): the
    /// device's `--server-name`, by default the host of `server`.
    pub domain: String,
    /// The CA that signed the server's certificate.
    pub ca_pem: String,
    /// This device's certificate and key, PEM; `None` connects without one (and is refused).
    pub identity: Option<(String, String)>,
    /// The heartbeat interval; `None` uses the one the server names at Register.
    pub heartbeat_interval: Option<Duration>,
    /// Retries on UNAVAILABLE.
    pub backoff: Backoff,
    /// HTTP/2 keepalive ping interval (below four minutes).
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// Timeout of the TCP connect and of each unary call.
    pub call_timeout: Duration,
    /// Payload bytes per upload chunk.
    pub chunk_size: usize,
    /// Free text the server logs at Register.
    pub agent: String,
    #[doc(hidden)]
    pub faults: Faults,
}

impl ClientConfig {
    /// Defaults for `server` with the device's TLS files: the server's certificate checked
    /// against the host of `server` ([`host_of`]), 1 MiB chunks, keepalive every 60 s, backoff
    /// from 100 ms doubling to 20 s for up to 5 minutes.
    pub fn new(server: impl Into<String>, tls: TlsFiles) -> ClientConfig {
        let server = server.into();
        ClientConfig {
            domain: host_of(&server).unwrap_or_else(|| "localhost".to_string()),
            server,
            ca_pem: tls.ca_pem,
            identity: Some((tls.cert_pem, tls.key_pem)),
            heartbeat_interval: None,
            backoff: Backoff::default(),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            call_timeout: Duration::from_secs(30),
            chunk_size: DEFAULT_CHUNK_BYTES,
            agent: format!("cotune-net {}", env!("CARGO_PKG_VERSION")),
            faults: Faults::default(),
        }
    }
}

/// The host of a server address `https://HOST:PORT` (an IPv6 address without its brackets),
/// or `None` when it has none.
pub fn host_of(server: &str) -> Option<String> {
    let uri: tonic::transport::Uri = server.parse().ok()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

/// What the server answered to PullTask.
#[derive(Debug, Clone)]
pub enum Pull {
    /// No task for this device now; ask again after this long.
    Wait(Duration),
    /// The device's task for a round.
    Task(TaskAssignment),
    /// The run has finished.
    Finished,
}

/// A device's task for one round.
#[derive(Debug, Clone)]
pub struct TaskAssignment {
    /// The round.
    pub round: u64,
    /// The runner's instructions, opaque here.
    pub task: Bytes,
    /// Length of the round's download.
    pub download_len: u64,
    /// Its sha256.
    pub download_sha256: [u8; 32],
    /// Time left until the round's deadline when the server answered.
    pub deadline_in: Duration,
}

/// Counters of one client, for tests and logs.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Calls retried after a retryable failure.
    pub retries: u32,
    /// Registrations after the server forgot the session (a restart, a lapse).
    pub reregistrations: u32,
    /// Downloads continued from an offset.
    pub download_resumes: u32,
    /// Uploads continued from an offset.
    pub upload_resumes: u32,
    /// Download and upload bytes this client received / sent, framed as on the wire.
    pub received_wire_bytes: u64,
    /// See `received_wire_bytes`.
    pub sent_wire_bytes: u64,
    /// The largest message either way, framed.
    pub largest_message_bytes: u64,
}

/// The connection and the session, shared with the heartbeat task.
struct Link {
    rpc: CotuneClient<Channel>,
    server: String,
    agent: String,
    instance: u64,
    session: AtomicU64,
    device: AtomicU32,
    heartbeat_ms: AtomicU64,
    /// One registration at a time (the heartbeat task and the calls may both find the session
    /// forgotten).
    registering: tokio::sync::Mutex<()>,
    call_timeout: Duration,
}

impl Link {
    /// Registers (again, unless someone else already did since `stale` failed).
    async fn register(&self, stale: Option<u64>) -> Result<(), Status> {
        let _guard = self.registering.lock().await;
        if let Some(stale) = stale {
            if self.session.load(Ordering::SeqCst) != stale {
                return Ok(());
            }
        }
        let request = proto::RegisterRequest {
            agent: self.agent.clone(),
            instance: self.instance,
        };
        let reply = unary(self.call_timeout, self.rpc.clone().register(request)).await?;
        self.session.store(reply.session, Ordering::SeqCst);
        self.device.store(reply.device, Ordering::SeqCst);
        self.heartbeat_ms
            .store(reply.heartbeat_interval_ms, Ordering::SeqCst);
        Ok(())
    }
}

async fn unary<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {:.1} s",
            limit.as_secs_f64()
        ))),
    }
}

/// The TLS failure inside an error's chain, if any (rustls's error, possibly wrapped in an
/// `io::Error`, whose `source()` skips it).
fn tls_cause(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return Some(tls.to_string());
                }
                if let Some(found) = tls_cause(inner) {
                    return Some(found);
                }
            }
            // tokio-rustls hands rustls's error to hyper as text in an `InvalidData` error.
            if io.kind() == std::io::ErrorKind::InvalidData {
                let text = io.to_string();
                if text.contains("received fatal alert") {
                    return Some(format!(
                        "{text} (the server refused the handshake: this device sent no \
                         certificate, or one its CA did not sign)"
                    ));
                }
                return Some(text);
            }
        }
        depth += 1;
        if depth > 16 {
            break;
        }
        current = e.source();
    }
    None
}

/// An error's message with its whole chain, for a failure the client reports.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    let mut depth = 0;
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        depth += 1;
        if depth > 16 {
            break;
        }
        current = e.source();
    }
    text
}

/// What to do after a failed call.
enum Next {
    Retry(String),
    Register,
    Stop(NetError),
}

/// A boxed call on the link with the current session.
type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'a>>;

/// A device connected to the server.
pub struct DeviceClient {
    config: ClientConfig,
    link: Arc<Link>,
    heartbeat: JoinHandle<()>,
    stats: ClientStats,
}

impl Drop for DeviceClient {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl DeviceClient {
    /// Connects to `config.server` with the device's certificate, registers (retrying while the
    /// server is unavailable) and starts the heartbeat task.
    ///
    /// Stops at once on a TLS or authentication failure and when the certificate is already
    /// connected elsewhere.
    pub async fn connect(config: ClientConfig) -> Result<DeviceClient, NetError> {
        check_chunk_size(config.chunk_size)?;
        check_keepalive(config.keepalive_interval)?;
        if rustls::pki_types::ServerName::try_from(config.domain.as_str()).is_err() {
            return Err(NetError::Config {
                field: "server name",
                value: format!("{:?}", config.domain),
                reason: "is neither a DNS name nor an IP address",
            });
        }
        let mut tls = ClientTlsConfig::new()
            .domain_name(config.domain.clone())
            .ca_certificate(Certificate::from_pem(&config.ca_pem));
        if let Some((cert, key)) = &config.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let endpoint = Endpoint::from_shared(config.server.clone())
            .map_err(|_| NetError::Config {
                field: "server address",
                value: config.server.clone(),
                reason: "not a valid URI (expected https://host:port)",
            })?
            .tls_config(tls)
            .map_err(|cause| NetError::Tls {
                server: config.server.clone(),
                cause: chain(&cause),
            })?
            .connect_timeout(config.call_timeout)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let rpc = CotuneClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let instance = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            ^ (Arc::as_ptr(&Arc::new(0u8)) as u64).rotate_left(32);
        let link = Arc::new(Link {
            rpc,
            server: config.server.clone(),
            agent: config.agent.clone(),
            instance,
            session: AtomicU64::new(0),
            device: AtomicU32::new(u32::MAX),
            heartbeat_ms: AtomicU64::new(0),
            registering: tokio::sync::Mutex::new(()),
            call_timeout: config.call_timeout,
        });
        let mut client = DeviceClient {
            config,
            heartbeat: tokio::spawn(async {}),
            link,
            stats: ClientStats::default(),
        };
        client
            .retrying("Register", 0, |link, _| Box::pin(link.register(None)))
            .await?;
        let interval = client
            .config
            .heartbeat_interval
            .unwrap_or(Duration::from_millis(
                client.link.heartbeat_ms.load(Ordering::SeqCst).max(10),
            ));
        client.heartbeat = tokio::spawn(heartbeat_loop(client.link.clone(), interval));
        net_log!(
            "device {} connected to {} (heartbeat every {:.1} s)",
            client.device(),
            client.link.server,
            interval.as_secs_f64()
        );
        Ok(client)
    }

    /// The device index the server read from this client's certificate.
    pub fn device(&self) -> u32 {
        self.link.device.load(Ordering::SeqCst)
    }

    /// The counters so far.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    fn classify(&self, call: &'static str, round: u64, status: &Status) -> Next {
        if let Some(mut cause) = tls_cause(status) {
            if cause.contains("not valid for name") {
                cause.push_str(&format!(
                    " (this device checks the server's certificate against the name {}: \
                     --server-name, by default the host of --server; `certs --server-name` \
                     and `--server-ip` choose the names the certificate carries)",
                    self.config.domain
                ));
            }
            return Next::Stop(NetError::Tls {
                server: self.link.server.clone(),
                cause,
            });
        }
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::OutOfRange => Next::Retry(chain(status)),
            Code::NotFound => Next::Register,
            Code::AlreadyExists => Next::Stop(NetError::AlreadyConnected {
                server: self.link.server.clone(),
                cause: status.message().to_string(),
            }),
            Code::Unauthenticated | Code::PermissionDenied => Next::Stop(NetError::Tls {
                server: self.link.server.clone(),
                cause: status.message().to_string(),
            }),
            Code::FailedPrecondition | Code::InvalidArgument => Next::Stop(NetError::Refused {
                call,
                round,
                reason: status.message().to_string(),
            }),
            code => Next::Stop(NetError::Rpc {
                call,
                code: format!("{code:?}"),
                cause: status.message().to_string(),
            }),
        }
    }

    /// Runs `op` until it succeeds, retrying with backoff and registering again when the server
    /// forgot the session; stops on errors retrying cannot fix.
    async fn retrying<T>(
        &mut self,
        call: &'static str,
        round: u64,
        mut op: impl for<'a> FnMut(&'a Link, u64) -> Call<'a, T>,
    ) -> Result<T, NetError> {
        let start = Instant::now();
        let mut delay = self.config.backoff.initial;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let session = self.link.session.load(Ordering::SeqCst);
            let status = match op(&self.link, session).await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            match self.classify(call, round, &status) {
                Next::Stop(e) => return Err(e),
                Next::Register => {
                    self.stats.reregistrations += 1;
                    net_log!(
                        "device {}: {call}: {}; registering again",
                        self.device(),
                        status.message()
                    );
                    if let Err(status) = self.link.register(Some(session)).await {
                        if let Next::Stop(e) = self.classify("Register", round, &status) {
                            return Err(e);
                        }
                    }
                }
                Next::Retry(cause) => {
                    let elapsed = start.elapsed();
                    if elapsed + delay > self.config.backoff.give_up_after {
                        return Err(NetError::Unavailable {
                            server: self.link.server.clone(),
                            call,
                            attempts,
                            elapsed,
                            cause,
                        });
                    }
                    self.stats.retries += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.backoff.max);
                }
            }
            // Bounded by give_up_after for retries; registrations are bounded by the same clock.
            if start.elapsed() > self.config.backoff.give_up_after {
                return Err(NetError::Unavailable {
                    server: self.link.server.clone(),
                    call,
                    attempts,
                    elapsed: start.elapsed(),
                    cause: status.message().to_string(),
                });
            }
        }
    }

    /// Asks the server for work once.
    pub async fn pull_task(&mut self) -> Result<Pull, NetError> {
        let timeout = self.config.call_timeout;
        let reply = self
            .retrying("PullTask", 0, |link, session| {
                Box::pin(async move {
                    let mut rpc = link.rpc.clone();
                    unary(timeout, rpc.pull_task(proto::PullTaskRequest { session })).await
                })
            })
            .await?;
        Ok(match reply.reply {
            Some(pull_task_reply::Reply::Task(t)) => {
                let sha: [u8; 32] =
                    t.download_sha256
                        .as_ref()
                        .try_into()
                        .map_err(|_| NetError::Protocol {
                            call: "PullTask",
                            round: t.round,
                            reason: format!(
                                "download sha256 of {} bytes, not 32",
                                t.download_sha256.len()
                            ),
                        })?;
                Pull::Task(TaskAssignment {
                    round: t.round,
                    task: t.task,
                    download_len: t.download_len,
                    download_sha256: sha,
                    deadline_in: Duration::from_millis(t.deadline_in_ms),
                })
            }
            Some(pull_task_reply::Reply::Finished(_)) => Pull::Finished,
            Some(pull_task_reply::Reply::Wait(w)) => {
                Pull::Wait(Duration::from_millis(w.retry_after_ms.clamp(10, 60_000)))
            }
            None => Pull::Wait(Duration::from_millis(500)),
        })
    }

    /// Pulls until the server gives a task or says the run finished, for at most `max_wait`
    /// (then answers `Pull::Wait`).
    pub async fn next_task(&mut self, max_wait: Duration) -> Result<Pull, NetError> {
        let start = Instant::now();
        loop {
            match self.pull_task().await? {
                Pull::Wait(d) => {
                    let left = max_wait.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Ok(Pull::Wait(d));
                    }
                    tokio::time::sleep(d.min(left)).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Downloads the round's payload in chunks, resuming from the bytes already held after a
    /// broken stream, and checks its sha256.
    pub async fn download(&mut self, task: &TaskAssignment) -> Result<Bytes, NetError> {
        let round = task.round;
        let total = task.download_len;
        let mut buf = BytesMut::with_capacity(total.min(1 << 30) as usize);
        let mut cut = self.config.faults.cut_download_after_chunks.take();
        let mut first = true;
        let start = Instant::now();
        while first || (buf.len() as u64) < total {
            if !first {
                if start.elapsed() > self.config.backoff.give_up_after {
                    return Err(NetError::Unavailable {
                        server: self.link.server.clone(),
                        call: "Download",
                        attempts: self.stats.download_resumes + 1,
                        elapsed: start.elapsed(),
                        cause: format!("{} of {total} bytes arrived", buf.len()),
                    });
                }
                tokio::time::sleep(self.config.backoff.initial).await;
                self.stats.download_resumes += 1;
                net_log!(
                    "device {}: download of round {round} resumes at {} of {total} bytes",
                    self.device(),
                    buf.len()
                );
            }
            first = false;
            let offset = buf.len() as u64;
            let timeout = self.config.call_timeout;
            let mut stream = self
                .retrying("Download", round, |link, session| {
                    Box::pin(async move {
                        let mut rpc = link.rpc.clone();
                        let request = proto::DownloadRequest {
                            session,
                            round,
                            offset,
                        };
                        unary(timeout, rpc.download(request)).await
                    })
                })
                .await?;
            let mut chunks = 0usize;
            loop {
                if cut.is_some_and(|n| chunks >= n) {
                    cut = None;
                    break; // dropping the stream cancels it
                }
                let message = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => match self.classify("Download", round, &status) {
                        Next::Stop(e) => return Err(e),
                        _ => break,
                    },
                };
                chunks += 1;
                let wire = wire_len(&message);
                self.stats.received_wire_bytes += wire;
                self.stats.largest_message_bytes = self.stats.largest_message_bytes.max(wire);
                let bad = |reason: String| NetError::Protocol {
                    call: "Download",
                    round,
                    reason,
                };
                if message.round != round || message.total_len != total {
                    return Err(bad(format!(
                        "chunk of round {} and length {}, expected round {round} and length {total}",
                        message.round, message.total_len
                    )));
                }
                if message.sha256.as_ref() != task.download_sha256 {
                    return Err(bad(format!(
                        "chunk announces sha256 {}, the task {}",
                        hex(&message.sha256),
                        hex(&task.download_sha256)
                    )));
                }
                if message.offset != buf.len() as u64 {
                    return Err(bad(format!(
                        "chunk at offset {}, expected {}",
                        message.offset,
                        buf.len()
                    )));
                }
                if buf.len() as u64 + message.data.len() as u64 > total {
                    return Err(bad(format!(
                        "chunk at offset {} of {} bytes runs past the {total} bytes",
                        message.offset,
                        message.data.len()
                    )));
                }
                buf.extend_from_slice(&message.data);
            }
        }
        let whole = buf.freeze();
        let got: [u8; 32] = Sha256::digest(&whole).into();
        if got != task.download_sha256 {
            return Err(NetError::Protocol {
                call: "Download",
                round,
                reason: format!(
                    "the {} bytes hash to sha256 {}, not {}",
                    whole.len(),
                    hex(&got),
                    hex(&task.download_sha256)
                ),
            });
        }
        Ok(whole)
    }

    /// Uploads `payload` for `round` in chunks: asks the server how much it holds, sends the
    /// rest, and repeats after a broken stream. Returns when the server accepted it; a refusal
    /// (closed round, failed validation) is [`NetError::Refused`] with the server's reason.
    pub async fn upload(&mut self, round: u64, payload: Bytes) -> Result<(), NetError> {
        let sha256: [u8; 32] = Sha256::digest(&payload).into();
        let total = payload.len() as u64;
        let chunk = self.config.chunk_size as u64;
        let mut cut = self.config.faults.cut_upload_after_chunks.take();
        let start = Instant::now();
        let mut passes = 0u32;
        loop {
            passes += 1;
            if start.elapsed() > self.config.backoff.give_up_after {
                return Err(NetError::Unavailable {
                    server: self.link.server.clone(),
                    call: "Upload",
                    attempts: passes,
                    elapsed: start.elapsed(),
                    cause: "the upload did not complete".to_string(),
                });
            }
            let timeout = self.config.call_timeout;
            let status = self
                .retrying("UploadStatus", round, |link, session| {
                    Box::pin(async move {
                        let mut rpc = link.rpc.clone();
                        let request = proto::UploadStatusRequest { session, round };
                        unary(timeout, rpc.upload_status(request)).await
                    })
                })
                .await?;
            if status.accepted && status.sha256.as_ref() == sha256 {
                return Ok(());
            }
            let offset = if status.sha256.as_ref() == sha256 {
                status.held.min(total)
            } else {
                0
            };
            if passes > 1 {
                self.stats.upload_resumes += 1;
                net_log!(
                    "device {}: upload of round {round} resumes at {offset} of {total} bytes",
                    self.device()
                );
            }
            let session = self.link.session.load(Ordering::SeqCst);
            let offsets: Vec<u64> = if offset >= total {
                vec![total]
            } else {
                (offset..total).step_by(chunk as usize).collect()
            };
            let (tx, rx) = mpsc::channel::<proto::UploadChunk>(2);
            let (cut_tx, cut_rx) = oneshot::channel::<()>();
            let stop_after = cut.take();
            let payload_for = payload.clone();
            let sha = Bytes::copy_from_slice(&sha256);
            let mut cut_tx = Some(cut_tx);
            let producer = tokio::spawn(async move {
                let mut sent = (0u64, 0u64);
                for (i, o) in offsets.into_iter().enumerate() {
                    if stop_after == Some(i) {
                        // Let the chunks already handed over leave, then cut the call.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Some(cut) = cut_tx.take() {
                            let _ = cut.send(());
                        }
                        std::future::pending::<()>().await;
                    }
                    let end = (o + chunk).min(total);
                    let message = proto::UploadChunk {
                        session,
                        round,
                        offset: o,
                        total_len: total,
                        sha256: sha.clone(),
                        data: payload_for.slice(o as usize..end as usize),
                    };
                    let wire = wire_len(&message);
                    if tx.send(message).await.is_err() {
                        break;
                    }
                    sent = (sent.0 + wire, sent.1.max(wire));
                }
                sent
            });
            let mut rpc = self.link.rpc.clone();
            let call = rpc.upload(ReceiverStream::new(rx));
            let outcome = tokio::select! {
                r = call => Some(r),
                // Only a sent signal cuts; a sender dropped by a finished producer does not.
                Ok(()) = cut_rx => None,
            };
            producer.abort();
            if let Ok((bytes, largest)) = producer.await {
                self.stats.sent_wire_bytes += bytes;
                self.stats.largest_message_bytes = self.stats.largest_message_bytes.max(largest);
            }
            let Some(result) = outcome else {
                continue; // the test hook cut the stream
            };
            match result {
                Ok(reply) if reply.get_ref().accepted => return Ok(()),
                Ok(_) => continue, // incomplete: ask again and resume
                Err(status) => match self.classify("Upload", round, &status) {
                    Next::Stop(e) => return Err(e),
                    Next::Register => {
                        self.stats.reregistrations += 1;
                        if let Err(status) = self.link.register(Some(session)).await {
                            if let Next::Stop(e) = self.classify("Register", round, &status) {
                                return Err(e);
                            }
                        }
                    }
                    Next::Retry(_) => {
                        self.stats.retries += 1;
                        tokio::time::sleep(self.config.backoff.initial).await;
                    }
                },
            }
        }
    }
}

async fn heartbeat_loop(link: Arc<Link>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let session = link.session.load(Ordering::SeqCst);
        let mut rpc = link.rpc.clone();
        let call = rpc.heartbeat(proto::HeartbeatRequest { session });
        if let Err(status) = unary(interval.max(Duration::from_millis(200)) * 2, call).await {
            if status.code() == Code::NotFound {
                // The server forgot the session (restarted, or it lapsed): register again so the
                // device is not dropped while it trains without other calls.
                let _ = link.register(Some(session)).await;
            }
        }
    }
}
