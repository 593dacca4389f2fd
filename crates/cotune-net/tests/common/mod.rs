//! Helpers shared by the transport tests: certificates, a fast server state, a loopback server
//! and fast client settings.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cotune_net::{
    make_dev_certs, Backoff, ClientConfig, DevCerts, DeviceTask, NetServer, RoundSpec,
    ServerConfig, ServerState, StateConfig, Validator,
};

/// Heartbeats every 200 ms; a device silent for 600 ms is dropped.
pub const HEARTBEAT: Duration = Duration::from_millis(200);

pub struct Certs {
    pub dir: tempfile::TempDir,
    pub paths: DevCerts,
}

pub fn certs(devices: usize) -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_dev_certs(dir.path(), devices).unwrap();
    Certs { dir, paths }
}

pub fn state_config() -> StateConfig {
    StateConfig {
        heartbeat_interval: HEARTBEAT,
        missed_heartbeats: 3,
        poll_interval: Duration::from_millis(50),
        max_upload_bytes: 64 << 20,
    }
}

pub fn state() -> Arc<ServerState> {
    ServerState::new(state_config()).unwrap()
}

pub fn state_with(validator: Validator) -> Arc<ServerState> {
    ServerState::with_validator(state_config(), validator).unwrap()
}

pub async fn server_on(addr: SocketAddr, certs: &Certs, state: Arc<ServerState>) -> NetServer {
    let config = ServerConfig::new(addr, certs.paths.server_tls().unwrap());
    NetServer::start(config, state).await.unwrap()
}

pub async fn server(certs: &Certs, state: Arc<ServerState>) -> NetServer {
    server_on("127.0.0.1:0".parse().unwrap(), certs, state).await
}

pub fn client_config(server: &NetServer, certs: &Certs, device: usize) -> ClientConfig {
    client_config_at(server.local_addr(), certs, device)
}

pub fn client_config_at(addr: SocketAddr, certs: &Certs, device: usize) -> ClientConfig {
    let mut config = ClientConfig::new(
        format!("https://{addr}"),
        certs.paths.device_tls(device).unwrap(),
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        give_up_after: Duration::from_secs(15),
    };
    config.call_timeout = Duration::from_secs(5);
    config
}

/// `len` bytes that differ by `seed`.
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    Bytes::from(v)
}

/// A round for `devices`, each with a small task and `download`.
pub fn round(
    round: u64,
    devices: &[u32],
    download: Bytes,
    deadline: Duration,
    min_devices: usize,
) -> RoundSpec {
    RoundSpec {
        round,
        tasks: devices
            .iter()
            .map(|d| {
                (
                    *d,
                    DeviceTask {
                        task: Bytes::from(format!("round {round} device {d}")),
                        download: download.clone(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        deadline,
        min_devices,
    }
}

/// Bounds a test step in time.
pub async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} took longer than {:.1} s", limit.as_secs_f64()),
    }
}
