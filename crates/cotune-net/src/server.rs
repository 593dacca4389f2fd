//! The gRPC server: mutual TLS, the six RPCs, each handled against [`ServerState`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::certs::{identity_of_certificate, TlsFiles};
use crate::proto::cotune_server::{Cotune, CotuneServer};
use crate::proto::{self};
use crate::revoke::Revocations;
use crate::state::{net_log, ChunkAccepted, Refusal, ServerState};
use crate::{
    check_chunk_size, check_keepalive, wire_len, NetError, DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES,
};

/// How the server listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (port 0 picks a free port; see [`NetServer::local_addr`]).
    pub addr: SocketAddr,
    /// The server's certificate and key, and the CA whose client certificates it accepts.
    pub tls: TlsFiles,
    /// Payload bytes per download chunk.
    pub chunk_size: usize,
    /// HTTP/2 keepalive ping interval; below four minutes, since some networks cut idle TCP
    /// connections at four.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// The revocation list ([`crate::revoke`]): read at start (an error if it does not parse;
    /// a missing file revokes nothing) and again whenever it changes. `None`: nothing revoked.
    pub revoked: Option<std::path::PathBuf>,
}

impl ServerConfig {
    /// Defaults: 1 MiB chunks, keepalive every 60 s with a 20 s timeout, no revocation list.
    pub fn new(addr: SocketAddr, tls: TlsFiles) -> ServerConfig {
        ServerConfig {
            addr,
            tls,
            chunk_size: DEFAULT_CHUNK_BYTES,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            revoked: None,
        }
    }
}

/// A running server; dropping it asks it to stop.
pub struct NetServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl NetServer {
    /// Binds `config.addr` and serves `state` over mutual TLS.
    pub async fn start(
        config: ServerConfig,
        state: Arc<ServerState>,
    ) -> Result<NetServer, NetError> {
        check_chunk_size(config.chunk_size)?;
        check_keepalive(config.keepalive_interval)?;
        let revocations = match &config.revoked {
            Some(path) => Revocations::load(path)?,
            None => Revocations::none(),
        };
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|cause| NetError::Bind {
                addr: config.addr.to_string(),
                cause: cause.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|cause| NetError::Bind {
            addr: config.addr.to_string(),
            cause: cause.to_string(),
        })?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &config.tls.cert_pem,
                &config.tls.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&config.tls.ca_pem))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10));
        let service = CotuneServer::new(CotuneService {
            state,
            chunk_size: config.chunk_size,
            revocations,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let router = Server::builder()
            .tls_config(tls)
            .map_err(|cause| NetError::Tls {
                server: addr.to_string(),
                cause: format!("the server's TLS files: {cause}"),
            })?
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .tcp_nodelay(true)
            .add_service(service);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        net_log!("server listening on {addr}");
        Ok(NetServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets calls in flight finish for up to `grace`, then cuts the rest.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), NetError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        let result = match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(cause))) => Err(NetError::Serve {
                addr: self.addr.to_string(),
                cause: cause.to_string(),
            }),
            Ok(Err(join)) => Err(NetError::Serve {
                addr: self.addr.to_string(),
                cause: join.to_string(),
            }),
            Err(_) => {
                task.abort();
                Ok(())
            }
        };
        net_log!("server on {} stopped", self.addr);
        result
    }
}

impl Drop for NetServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct CotuneService {
    state: Arc<ServerState>,
    chunk_size: usize,
    revocations: Revocations,
}

impl CotuneService {
    /// The device the verified client certificate names (its common name and its URI name
    /// agreeing), unless the certificate or the device is revoked.
    fn device_of<T>(&self, request: &Request<T>) -> Result<u32, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate on this connection"))?;
        let first = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate on this connection"))?;
        let id = identity_of_certificate(first.as_ref()).map_err(|e| {
            net_log!("refused a call: {e}");
            Status::unauthenticated(e.to_string())
        })?;
        if let Some(reason) = self.revocations.refusal(&id) {
            net_log!("refused a call: {reason}");
            return Err(Status::permission_denied(reason));
        }
        Ok(id.device)
    }
}

fn status_of(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Session(m) => Status::not_found(m),
        Refusal::AlreadyConnected(m) => Status::already_exists(m),
        Refusal::Stale(m) => Status::failed_precondition(m),
        Refusal::Invalid(m) => Status::invalid_argument(m),
        Refusal::Offset(m) => Status::out_of_range(m),
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<proto::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Cotune for CotuneService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterReply>, Status> {
        let device = self.device_of(&request)?;
        let instance = request.get_ref().instance;
        let session = self.state.register(device, instance).map_err(|r| {
            net_log!("register of device {device} refused: {}", r.reason());
            status_of(r)
        })?;
        Ok(Response::new(proto::RegisterReply {
            session,
            device,
            heartbeat_interval_ms: self.state.config().heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatReply>, Status> {
        let device = self.device_of(&request)?;
        self.state
            .heartbeat(device, request.get_ref().session)
            .map_err(status_of)?;
        Ok(Response::new(proto::HeartbeatReply {}))
    }

    async fn pull_task(
        &self,
        request: Request<proto::PullTaskRequest>,
    ) -> Result<Response<proto::PullTaskReply>, Status> {
        let device = self.device_of(&request)?;
        let reply = self
            .state
            .pull_task(device, request.get_ref().session)
            .map_err(status_of)?;
        Ok(Response::new(reply))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<proto::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let device = self.device_of(&request)?;
        let req = request.into_inner();
        let (payload, sha256) = self
            .state
            .download(device, req.session, req.round, req.offset)
            .map_err(status_of)?;
        let total = payload.len() as u64;
        let chunk = self.chunk_size as u64;
        let sha = bytes::Bytes::copy_from_slice(&sha256);
        let round = req.round;
        // Offsets of the chunks; one empty chunk when nothing is left (it still carries the
        // length and the hash).
        let offsets: Vec<u64> = if req.offset >= total {
            vec![total]
        } else {
            (req.offset..total).step_by(chunk as usize).collect()
        };
        let state = self.state.clone();
        let stream = tokio_stream::iter(offsets).map(move |offset| {
            let end = (offset + chunk).min(total);
            let message = proto::DownloadChunk {
                round,
                offset,
                total_len: total,
                sha256: sha.clone(),
                data: payload.slice(offset as usize..end as usize),
            };
            state.count_sent(device, round, wire_len(&message));
            Ok(message)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn upload_status(
        &self,
        request: Request<proto::UploadStatusRequest>,
    ) -> Result<Response<proto::UploadStatusReply>, Status> {
        let device = self.device_of(&request)?;
        let req = request.get_ref();
        let reply = self
            .state
            .upload_status(device, req.session, req.round)
            .map_err(status_of)?;
        Ok(Response::new(reply))
    }

    async fn upload(
        &self,
        request: Request<Streaming<proto::UploadChunk>>,
    ) -> Result<Response<proto::UploadReply>, Status> {
        let device = self.device_of(&request)?;
        let mut stream = request.into_inner();
        let mut held = 0;
        let mut round = None;
        loop {
            let chunk = match stream.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(status) => {
                    net_log!(
                        "upload of device {device} for round {} broke with {held} bytes held: {}",
                        round.map_or("-".to_string(), |r: u64| r.to_string()),
                        status.message()
                    );
                    return Err(status);
                }
            };
            round = Some(chunk.round);
            let wire = wire_len(&chunk);
            match self.state.upload_chunk(device, &chunk, wire) {
                Err(refusal) => return Err(self.refuse(device, chunk.round, refusal)),
                Ok(ChunkAccepted {
                    held: now_held,
                    complete: None,
                }) => held = now_held,
                Ok(ChunkAccepted {
                    held: now_held,
                    complete: Some((whole, sha256)),
                }) => {
                    let state = self.state.clone();
                    let r = chunk.round;
                    let verdict = tokio::task::spawn_blocking(move || {
                        state.validate_and_accept(device, r, whole, sha256)
                    })
                    .await
                    .map_err(|e| Status::internal(format!("the validator panicked: {e}")))?;
                    if let Err(refusal) = verdict {
                        return Err(self.refuse(device, r, refusal));
                    }
                    let reply = proto::UploadReply {
                        held: now_held,
                        accepted: true,
                    };
                    self.state.count_sent(device, r, wire_len(&reply));
                    return Ok(Response::new(reply));
                }
            }
        }
        let reply = proto::UploadReply {
            held,
            accepted: false,
        };
        if let Some(r) = round {
            self.state.count_sent(device, r, wire_len(&reply));
        }
        Ok(Response::new(reply))
    }
}

impl CotuneService {
    /// Logs a refusal, records it in the round when it is about the upload itself, and turns
    /// it into a status.
    fn refuse(&self, device: u32, round: u64, refusal: Refusal) -> Status {
        match &refusal {
            Refusal::Stale(_) | Refusal::Invalid(_) => {
                self.state.record_refusal(device, round, &refusal)
            }
            _ => net_log!(
                "upload chunk of device {device} for round {round} refused: {}",
                refusal.reason()
            ),
        }
        status_of(refusal)
    }
}
