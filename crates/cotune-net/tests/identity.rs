//! Names and identities: a server certificate for a real host name checked against the
//! device's server name; keys in per-party folders with mode 0600; a device added later with
//! the kept CA key; the revocation list; a certificate whose two device names disagree.
//! Loopback only, every step bounded in time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use cotune_net::{
    add_device, make_certs, DevCerts, DeviceClient, NetError, NetServer, Pull, ServerConfig,
    ServerNames,
};

const LIMIT: Duration = Duration::from_secs(20);

/// Certificates whose server certificate names only `server.cotune.test`.
fn named_certs(devices: usize) -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let names = ServerNames {
        dns: vec!["server.cotune.test".to_string()],
        ips: vec![],
    };
    let paths = make_certs(dir.path(), devices, &names).unwrap();
    Certs { dir, paths }
}

#[tokio::test]
async fn a_certificate_for_a_real_name_holds_on_loopback_only_with_that_server_name() {
    let certs = named_certs(1);
    let server = server(&certs, state()).await;

    // Dialled on 127.0.0.1 without a server name, the device checks the certificate against
    // 127.0.0.1, which it does not carry: refused at once, both names in the error.
    let config = client_config(&server, &certs, 0);
    assert_eq!(
        config.domain, "127.0.0.1",
        "the host of --server by default"
    );
    let start = Instant::now();
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(matches!(err, NetError::Tls { .. }), "{text}");
    for expect in [
        "not valid for name \"127.0.0.1\"",
        "server.cotune.test",
        "against the name 127.0.0.1",
        "--server-name",
    ] {
        assert!(text.contains(expect), "{expect:?} not in: {text}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no retries: {text}"
    );

    // With the name the certificate carries, the same address works.
    let mut config = client_config(&server, &certs, 0);
    config.domain = "server.cotune.test".to_string();
    let client = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .unwrap();
    assert_eq!(client.device(), 0);

    // A name that is neither a DNS name nor an address is refused before dialling.
    let mut config = client_config(&server, &certs, 0);
    config.domain = "bad name".to_string();
    let err = DeviceClient::connect(config).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("invalid server name \"bad name\": is neither a DNS name nor an IP address"),
        "{err}"
    );
}

#[tokio::test]
async fn ip_addresses_named_with_the_certificate_hold_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let names = ServerNames {
        dns: vec!["server.cotune.test".to_string()],
        ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let certs = Certs {
        paths: make_certs(dir.path(), 1, &names).unwrap(),
        dir,
    };
    let server = server(&certs, state()).await;
    // 127.0.0.1 is named: the default server name holds.
    let client = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 0)),
    )
    .await
    .unwrap();
    assert_eq!(client.device(), 0);
    drop(client);
    // localhost is not (the development names are replaced, not added to).
    let mut config = client_config(&server, &certs, 0);
    config.domain = "localhost".to_string();
    // The first client's session must lapse before this one could register anyway; the
    // handshake fails first.
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("not valid for name \"localhost\""),
        "{err}"
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_party_has_its_folder_keys_are_private_and_nothing_is_written_over() {
    let certs = certs(2);
    let p = &certs.paths;
    let dir = certs.dir.path();
    for file in [
        "ca/ca.pem",
        "ca/ca.key",
        "ca/issued.txt",
        "server/ca.pem",
        "server/server.pem",
        "server/server.key",
        "device-0/ca.pem",
        "device-0/device.pem",
        "device-0/device.key",
        "device-1/device.key",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    assert_eq!(p.server.key, dir.join("server/server.key"));
    assert_eq!(p.devices[1].cert, dir.join("device-1/device.pem"));
    // Each party trusts the one CA.
    let ca = std::fs::read_to_string(&p.ca).unwrap();
    assert_eq!(std::fs::read_to_string(&p.server.ca).unwrap(), ca);
    assert_eq!(std::fs::read_to_string(&p.devices[0].ca).unwrap(), ca);
    #[cfg(unix)]
    {
        for key in [
            &p.ca_key,
            &p.server.key,
            &p.devices[0].key,
            &p.devices[1].key,
        ] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
    }
    // The record of what the CA issued names every party with its serial.
    let issued = std::fs::read_to_string(dir.join("ca/issued.txt")).unwrap();
    let lines: Vec<&str> = issued.lines().collect();
    assert_eq!(lines.len(), 3, "{issued}");
    assert!(
        lines[0].starts_with("server ") && lines[0].ends_with("(localhost, 127.0.0.1, ::1)"),
        "{issued}"
    );
    assert!(lines[2].starts_with("device 1 "), "{issued}");
    // A second call on the same folder is refused: a new CA would orphan every certificate.
    let err = cotune_net::make_dev_certs(dir, 2).unwrap_err().to_string();
    assert!(
        err.contains(&dir.join("ca").display().to_string()) && err.contains("already holds a CA"),
        "{err}"
    );
    // The folders of one party are found from the party's own folder or the one above it.
    let server = cotune_net::PartyFiles::find_server(dir).unwrap();
    assert_eq!(server, p.server);
    assert_eq!(
        cotune_net::PartyFiles::find_server(&p.server.dir).unwrap(),
        p.server
    );
    assert_eq!(
        cotune_net::PartyFiles::find_device(dir, 1).unwrap(),
        p.devices[1]
    );
    let err = cotune_net::PartyFiles::find_device(dir, 5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("device.pem") && err.contains("device-5/device.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn the_kept_ca_key_adds_a_device_that_connects() {
    let certs = certs(1);
    let dir = certs.dir.path();
    let state = state();
    let server = server(&certs, state.clone()).await;
    let added = add_device(&dir.join("ca"), None, 3).unwrap();
    assert_eq!(added.dir, dir.join("device-3"));
    #[cfg(unix)]
    assert_eq!(mode(&added.key), 0o600);
    let issued = std::fs::read_to_string(dir.join("ca/issued.txt")).unwrap();
    assert!(
        issued.lines().last().unwrap().starts_with("device 3 "),
        "{issued}"
    );
    let mut config = client_config(&server, &certs, 0);
    let tls = added.read().unwrap();
    config.identity = Some((tls.cert_pem, tls.key_pem));
    let client = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .unwrap();
    assert_eq!(client.device(), 3);
    // The folder holding the CA's folder is accepted too.
    let again = add_device(dir, None, 4).unwrap();
    assert_eq!(again.dir, dir.join("device-4"));

    // An existing device folder is never written over.
    let err = add_device(&dir.join("ca"), None, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&dir.join("device-0").display().to_string()) && err.contains("never written"),
        "{err}"
    );
    // A key that is not the CA certificate's is refused by name.
    let other = common::certs(2);
    std::fs::copy(other.paths.ca_key.clone(), &certs.paths.ca_key).unwrap();
    let err = add_device(&dir.join("ca"), None, 5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ca.key") && err.contains("is not the key of the CA certificate"),
        "{err}"
    );
    // No CA at all.
    let empty = tempfile::tempdir().unwrap();
    let err = add_device(empty.path(), None, 5).unwrap_err().to_string();
    assert!(err.contains("ca.key") && err.contains("ca/ca.key"), "{err}");
}

async fn server_with_revoked(certs: &Certs, revoked: &Path) -> NetServer {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        certs.paths.server_tls().unwrap(),
    );
    config.revoked = Some(revoked.to_path_buf());
    NetServer::start(config, state()).await.unwrap()
}

fn serial_of(paths: &DevCerts, device: usize) -> String {
    let pem = std::fs::read_to_string(&paths.devices[device].cert).unwrap();
    let der = cotune_net::certs::pem_der(&pem, &paths.devices[device].cert).unwrap();
    cotune_net::identity_of_certificate(&der).unwrap().serial
}

#[tokio::test]
async fn revoked_devices_and_serials_are_refused_also_while_the_server_runs() {
    let certs = certs(3);
    let revoked = certs.paths.revoked();
    std::fs::write(&revoked, "# lost laptop\ndevice 1\n").unwrap();
    let server = server_with_revoked(&certs, &revoked).await;
    let start = Instant::now();
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
    assert!(matches!(err, NetError::Tls { .. }), "{text}");
    assert!(
        text.contains("the certificate of device 1 (serial ")
            && text.contains("is revoked")
            && text.contains("revoked.txt line 2 revokes device 1"),
        "{text}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no retries: {text}"
    );
    let mut zero = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 0)),
    )
    .await
    .unwrap();
    let two = within(
        "connect",
        LIMIT,
        DeviceClient::connect(client_config(&server, &certs, 2)),
    )
    .await
    .unwrap();
    assert_eq!((zero.device(), two.device()), (0, 2));
    // Revoking device 0's certificate by serial while it is connected: its next calls fail.
    let serial = serial_of(&certs.paths, 0);
    std::fs::write(&revoked, format!("device 1\nserial {serial}\n")).unwrap();
    let err = within("a refused call", LIMIT, async {
        loop {
            match zero.pull_task().await {
                Ok(Pull::Wait(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        }
    })
    .await;
    let text = err.to_string();
    assert!(
        text.contains(&format!("is revoked: {}", revoked.display()))
            // The list names serials without leading zeros.
            && text.contains(&format!(
                "line 2 revokes serial {}",
                serial.trim_start_matches('0')
            )),
        "{text}"
    );
}

#[tokio::test]
async fn a_revocation_list_that_does_not_parse_stops_the_server_from_starting() {
    let certs = certs(1);
    let revoked = certs.paths.revoked();
    std::fs::write(&revoked, "device 0\ndevice zero\n").unwrap();
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        certs.paths.server_tls().unwrap(),
    );
    config.revoked = Some(revoked.clone());
    let err = NetServer::start(config, state())
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&revoked.display().to_string())
            && text.contains("line 2: \"device zero\" names device \"zero\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_certificate_whose_two_device_names_disagree_is_refused() {
    let certs = certs(1);
    let server = server(&certs, state()).await;
    // Signed by the run's own CA (its kept key), so the handshake passes: the server refuses it.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&certs.paths.ca_key).unwrap()).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cotune development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cotune-device-1");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:cotune:device:2".to_string().try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let mut config = client_config(&server, &certs, 0);
    config.identity = Some((cert.pem(), key.serialize_pem()));
    let err = within("connect", LIMIT, DeviceClient::connect(config))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(matches!(err, NetError::Tls { .. }), "{text}");
    assert!(
        text.contains(
            "its common name \"cotune-device-1\" names device 1 but its subject alternative \
             name \"urn:cotune:device:2\" names device 2"
        ),
        "{text}"
    );
}
