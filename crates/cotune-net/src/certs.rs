//! Development certificates and the device identity a client certificate carries.
//!
//! [`make_dev_certs`] writes a development CA, a server certificate for `localhost`, `127.0.0.1`
//! and `::1`, and one client certificate per device. A device certificate names its device twice:
//! the subject's common name `cotune-device-<i>` (which the server reads, see
//! [`device_of_certificate`]) and a URI subject alternative name `urn:cotune:device:<i>`.
//! The keys are written unencrypted: these files are for development and tests, not production.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::NetError;

/// The common-name prefix of a device certificate; the device index follows it.
pub const DEVICE_CN_PREFIX: &str = "cotune-device-";

/// The PEM files [`make_dev_certs`] wrote.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The development CA's certificate (`ca.pem`): both sides trust it.
    pub ca: PathBuf,
    /// The server's certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// The server's private key (`server.key`).
    pub server_key: PathBuf,
    /// Per device, its certificate and key (`device-<i>.pem`, `device-<i>.key`).
    pub devices: Vec<(PathBuf, PathBuf)>,
}

/// PEM text of a certificate, its key and the CA that both sides trust.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// This side's certificate, PEM.
    pub cert_pem: String,
    /// This side's private key, PEM.
    pub key_pem: String,
}

impl DevCerts {
    /// The paths `make_dev_certs` uses in `dir` for `devices` devices (the files need not exist).
    pub fn in_dir(dir: &Path, devices: usize) -> DevCerts {
        DevCerts {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            devices: (0..devices)
                .map(|i| {
                    (
                        dir.join(format!("device-{i}.pem")),
                        dir.join(format!("device-{i}.key")),
                    )
                })
                .collect(),
        }
    }

    /// The server's TLS files, read.
    pub fn server_tls(&self) -> Result<TlsFiles, NetError> {
        Ok(TlsFiles {
            ca_pem: read(&self.ca, "CA certificate")?,
            cert_pem: read(&self.server_cert, "server certificate")?,
            key_pem: read(&self.server_key, "server key")?,
        })
    }

    /// Device `index`'s TLS files, read.
    pub fn device_tls(&self, index: usize) -> Result<TlsFiles, NetError> {
        let Some((cert, key)) = self.devices.get(index) else {
            return Err(NetError::Config {
                field: "device index",
                value: index.to_string(),
                reason: "no certificate was made for it",
            });
        };
        Ok(TlsFiles {
            ca_pem: read(&self.ca, "CA certificate")?,
            cert_pem: read(cert, "device certificate")?,
            key_pem: read(key, "device key")?,
        })
    }
}

fn read(path: &Path, what: &'static str) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|cause| NetError::File {
        action: "read",
        what,
        path: path.to_path_buf(),
        cause,
    })
}

fn write(path: &Path, what: &'static str, text: &str) -> Result<(), NetError> {
    std::fs::write(path, text).map_err(|cause| NetError::File {
        action: "write",
        what,
        path: path.to_path_buf(),
        cause,
    })
}

fn made(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> NetError {
    let what = what.into();
    move |cause| NetError::MakeCertificate { what, cause }
}

/// Writes a development CA, a server certificate and `devices` device certificates into `out`
/// (created if missing): `ca.pem`, `server.pem`, `server.key`, `device-<i>.pem`, `device-<i>.key`.
///
/// Every call makes a new CA, so certificates from two calls do not trust each other.
pub fn make_dev_certs(out: &Path, devices: usize) -> Result<DevCerts, NetError> {
    std::fs::create_dir_all(out).map_err(|cause| NetError::File {
        action: "create",
        what: "certificate folder",
        path: out.to_path_buf(),
        cause,
    })?;
    let paths = DevCerts::in_dir(out, devices);

    let ca_key = KeyPair::generate().map_err(made("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(made("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cotune development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(made("CA"))?;
    write(&paths.ca, "CA certificate", &ca.pem())?;

    let server_key = KeyPair::generate().map_err(made("server key"))?;
    let mut server_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(made("server certificate"))?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "cotune server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .map_err(made("server certificate"))?;
    write(&paths.server_cert, "server certificate", &server_cert.pem())?;
    write(&paths.server_key, "server key", &server_key.serialize_pem())?;

    for (i, (cert_path, key_path)) in paths.devices.iter().enumerate() {
        let what = format!("certificate of device {i}");
        let key = KeyPair::generate().map_err(made(what.clone()))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(made(what.clone()))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{DEVICE_CN_PREFIX}{i}"));
        let uri = format!("urn:cotune:device:{i}")
            .try_into()
            .map_err(made(what.clone()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca).map_err(made(what))?;
        write(cert_path, "device certificate", &cert.pem())?;
        write(key_path, "device key", &key.serialize_pem())?;
    }
    Ok(paths)
}

/// The device index a client certificate (DER) names in its common name `cotune-device-<i>`.
///
/// The server calls this on the certificate the TLS handshake verified, so a device is who its
/// certificate says, whatever its messages claim.
pub fn device_of_certificate(der: &[u8]) -> Result<u32, NetError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| NetError::CertificateIdentity {
            reason: format!("cannot parse it: {e}"),
        })?;
    let mut names = cert.subject().iter_common_name();
    let Some(cn) = names.next() else {
        return Err(NetError::CertificateIdentity {
            reason: "its subject has no common name".to_string(),
        });
    };
    let cn = cn.as_str().map_err(|e| NetError::CertificateIdentity {
        reason: format!("its common name is not text: {e}"),
    })?;
    let index = cn
        .strip_prefix(DEVICE_CN_PREFIX)
        .and_then(|i| i.parse::<u32>().ok())
        .ok_or_else(|| NetError::CertificateIdentity {
            reason: format!("its common name {cn} is not {DEVICE_CN_PREFIX}<index>"),
        })?;
    Ok(index)
}
