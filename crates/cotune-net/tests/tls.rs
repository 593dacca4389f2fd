//! Mutual TLS: a device is who its certificate says; missing, foreign and doubled certificates
//! are refused with clear errors, without retrying.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cotune_net::{DeviceClient, NetError};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn mtls_handshake_registers_the_device_its_certificate_names() {
    let certs = certs(3);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let client = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 2)),
    )
    .await
    .unwrap();
    assert_eq!(client.device(), 2);
    assert_eq!(state.connected_devices(), vec![2]);
    // The server's certificate also holds for ::1 when the host has IPv6 loopback.
    if let Ok(listener) = std::net::TcpListener::bind("[::1]:0") {
        drop(listener);
        let v6 = server_on("[::1]:0".parse().unwrap(), &certs, state.clone()).await;
        let mut config = client_config(&v6, &certs, 1);
        config.domain = "::1".to_string();
        let c = within("connect over ::1", LIMIT, DeviceClient::connect(config))
            .await
            .unwrap();
        assert_eq!(c.device(), 1);
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let certs = certs(1);
    let server = server(&certs, state()).await;
    let mut config = client_config(&server, &certs, 0);
    config.identity = None;
    let start = Instant::now();
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(matches!(err, NetError::Tls { .. }), "{text}");
    assert!(text.contains("TLS or authentication"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopped at once, not after the retry budget: {text}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let certs = certs(1);
    let stranger = common::certs(1);
    let server = server(&certs, state()).await;
    let mut config = client_config(&server, &certs, 0);
    let foreign = stranger.paths.device_tls(0).unwrap();
    config.identity = Some((foreign.cert_pem, foreign.key_pem));
    let start = Instant::now();
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(matches!(err, NetError::Tls { .. }), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5), "{text}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_servers_ca_stops() {
    let certs = certs(1);
    let stranger = common::certs(1);
    let server = server(&certs, state()).await;
    let mut config = client_config(&server, &certs, 0);
    config.ca_pem = stranger.paths.device_tls(0).unwrap().ca_pem;
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn a_second_connection_with_a_connected_certificate_is_refused() {
    let certs = certs(2);
    let state = state();
    let server = server(&certs, state.clone()).await;
    let first = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 1)),
    )
    .await
    .unwrap();
    // Alive by heartbeat, well past the 600 ms a silent device keeps its session.
    tokio::time::sleep(HEARTBEAT * 5).await;
    let err = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 1)),
    )
    .await
    .err()
    .expect("refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(matches!(err, NetError::AlreadyConnected { .. }), "{text}");
    assert!(text.contains("device 1 is already connected"), "{text}");
    // Once the first stops, its session lapses and the certificate can connect again.
    drop(first);
    tokio::time::sleep(HEARTBEAT * 5).await;
    let again = within(
        "reconnect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 1)),
    )
    .await
    .unwrap();
    assert_eq!(again.device(), 1);
}
