//! Development certificates, their folders, and the device identity a client certificate
//! carries.
//!
//! [`make_certs`] writes a CA, a server certificate and one client certificate per device,
//! each party in a folder of its own that can be copied to its machine as it is:
//!
//! ```text
//! OUT/ca/ca.pem, ca.key          the CA; its key stays here (certs add-device signs with it)
//! OUT/ca/issued.txt              one line per certificate issued: its party and serial
//! OUT/server/ca.pem, server.pem, server.key
//! OUT/device-<i>/ca.pem, device.pem, device.key
//! ```
//!
//! Private keys are written with mode 0600 (on Unix) and never over an existing file. The server
//! certificate names the names given ([`ServerNames`]): by default `localhost`, `127.0.0.1`
//! and `::1`. A device certificate names its device twice: the subject's common name
//! `cotune-device-<i>` and a URI subject alternative name `urn:cotune:device:<i>`; the server
//! reads both and refuses a certificate where they disagree or one is missing
//! ([`device_of_certificate`]). [`add_device`] issues a certificate for one more device later,
//! with the kept CA key. The keys are unencrypted: protect the folders as you would any key.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};

use crate::NetError;

/// The revocation list's name in the server's certificate folder.
pub const REVOKED_FILE: &str = "revoked.txt";

/// The common-name prefix of a device certificate; the device index follows it.
pub const DEVICE_CN_PREFIX: &str = "cotune-device-";

/// The prefix of a device certificate's URI subject alternative name; the index follows it.
pub const DEVICE_URI_PREFIX: &str = "urn:cotune:device:";

/// The common name of the CA [`make_certs`] makes.
const CA_NAME: &str = "cotune development CA";

/// The names a server certificate carries: the DNS names and IP addresses devices dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNames {
    /// DNS names (`server.example.org`).
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl ServerNames {
    /// `localhost`, `127.0.0.1` and `::1`: the development certificate's names.
    pub fn loopback() -> ServerNames {
        ServerNames {
            dns: vec!["localhost".to_string()],
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }

    /// Every name, as a device would give it (`--server-name`).
    pub fn all(&self) -> Vec<String> {
        self.dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }

    fn check(&self) -> Result<(), NetError> {
        if self.dns.is_empty() && self.ips.is_empty() {
            return Err(NetError::Config {
                field: "server names",
                value: "none".to_string(),
                reason: "a server certificate needs at least one DNS name or IP address",
            });
        }
        for name in &self.dns {
            check_dns_name(name)?;
        }
        Ok(())
    }
}

/// Refuses what is not a DNS name a certificate can carry and a device can check.
pub fn check_dns_name(name: &str) -> Result<(), NetError> {
    let refuse = |reason| {
        Err(NetError::Config {
            field: "server name",
            value: format!("{name:?}"),
            reason,
        })
    };
    if name.parse::<IpAddr>().is_ok() {
        return refuse("is an IP address, not a DNS name (give it as an IP address)");
    }
    if rustls::pki_types::DnsName::try_from(name).is_err() || name.contains('*') {
        return refuse(
            "is not a DNS name (letters, digits and hyphens in dot-separated labels of at most \
             63 characters)",
        );
    }
    Ok(())
}

/// The PEM files of one party, in its own folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyFiles {
    /// The party's folder.
    pub dir: PathBuf,
    /// The CA certificate both sides trust (`ca.pem`).
    pub ca: PathBuf,
    /// The party's certificate (`server.pem` or `device.pem`).
    pub cert: PathBuf,
    /// The party's private key (`server.key` or `device.key`).
    pub key: PathBuf,
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

impl PartyFiles {
    /// The server's files in `dir`: `ca.pem`, `server.pem`, `server.key`.
    pub fn server(dir: &Path) -> PartyFiles {
        PartyFiles::named(dir, "server")
    }

    /// A device's files in `dir`: `ca.pem`, `device.pem`, `device.key`.
    pub fn device(dir: &Path) -> PartyFiles {
        PartyFiles::named(dir, "device")
    }

    fn named(dir: &Path, stem: &str) -> PartyFiles {
        PartyFiles {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    /// The server's files in `dir`, the server's own folder, or in `dir/server` (the folder
    /// `certs` wrote); an error names both places when neither holds `server.pem`.
    pub fn find_server(dir: &Path) -> Result<PartyFiles, NetError> {
        find(dir, "server", PartyFiles::server)
    }

    /// Device `device`'s files in `dir`, its own folder, or in `dir/device-<i>` (the folder
    /// `certs` wrote); an error names both places when neither holds `device.pem`.
    pub fn find_device(dir: &Path, device: usize) -> Result<PartyFiles, NetError> {
        find(dir, &format!("device-{device}"), PartyFiles::device)
    }

    /// The three files, read.
    pub fn read(&self) -> Result<TlsFiles, NetError> {
        Ok(TlsFiles {
            ca_pem: read(&self.ca, "CA certificate")?,
            cert_pem: read(&self.cert, "certificate")?,
            key_pem: read(&self.key, "private key")?,
        })
    }
}

fn find(
    dir: &Path,
    sub: &str,
    files: impl Fn(&Path) -> PartyFiles,
) -> Result<PartyFiles, NetError> {
    let own = files(dir);
    if own.cert.is_file() {
        return Ok(own);
    }
    let nested = files(&dir.join(sub));
    if nested.cert.is_file() {
        return Ok(nested);
    }
    Err(NetError::File {
        action: "find",
        what: "certificate",
        path: own.cert.clone(),
        cause: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "neither it nor {} exists (give the party's folder that `certs` wrote, or the \
                 folder holding it)",
                nested.cert.display()
            ),
        ),
    })
}

/// Where [`make_certs`] puts everything in its folder.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The folder.
    pub dir: PathBuf,
    /// The CA's certificate (`ca/ca.pem`).
    pub ca: PathBuf,
    /// The CA's private key (`ca/ca.key`).
    pub ca_key: PathBuf,
    /// The server's files (`server/`).
    pub server: PartyFiles,
    /// Each device's files (`device-<i>/`).
    pub devices: Vec<PartyFiles>,
}

impl DevCerts {
    /// The paths `make_certs` uses in `dir` for `devices` devices (the files need not exist).
    pub fn in_dir(dir: &Path, devices: usize) -> DevCerts {
        DevCerts {
            dir: dir.to_path_buf(),
            ca: dir.join("ca/ca.pem"),
            ca_key: dir.join("ca/ca.key"),
            server: PartyFiles::server(&dir.join("server")),
            devices: (0..devices)
                .map(|i| PartyFiles::device(&dir.join(format!("device-{i}"))))
                .collect(),
        }
    }

    /// The CA's folder (`ca/`), what [`add_device`] signs with.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The server's revocation list (`server/revoked.txt`; it need not exist).
    pub fn revoked(&self) -> PathBuf {
        self.server.dir.join(REVOKED_FILE)
    }

    /// The server's TLS files, read.
    pub fn server_tls(&self) -> Result<TlsFiles, NetError> {
        self.server.read()
    }

    /// Device `index`'s TLS files, read.
    pub fn device_tls(&self, index: usize) -> Result<TlsFiles, NetError> {
        let Some(files) = self.devices.get(index) else {
            return Err(NetError::Config {
                field: "device index",
                value: index.to_string(),
                reason: "no certificate was made for it",
            });
        };
        files.read()
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

fn create_dir(path: &Path, what: &'static str) -> Result<(), NetError> {
    std::fs::create_dir_all(path).map_err(|cause| NetError::File {
        action: "create",
        what,
        path: path.to_path_buf(),
        cause,
    })
}

/// Writes a new file (never over an existing one); a private key with mode 0600.
fn write_new(path: &Path, what: &'static str, text: &str, private: bool) -> Result<(), NetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let fail = |cause| NetError::File {
        action: "write",
        what,
        path: path.to_path_buf(),
        cause,
    };
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Appends a line to the CA's record of what it issued.
fn record_issued(ca_dir: &Path, line: &str) -> Result<(), NetError> {
    let path = ca_dir.join("issued.txt");
    let fail = |cause| NetError::File {
        action: "append to",
        what: "record of issued certificates",
        path: path.clone(),
        cause,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    writeln!(file, "{line}").map_err(fail)
}

fn made(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> NetError {
    let what = what.into();
    move |cause| NetError::MakeCertificate { what, cause }
}

/// The CA's parameters: the same every time, so the kept key signs as the same issuer.
fn ca_params() -> Result<CertificateParams, NetError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(made("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Writes a development CA, a server certificate for `localhost`, `127.0.0.1` and `::1`, and
/// `devices` device certificates into `out` ([`make_certs`] with [`ServerNames::loopback`]).
pub fn make_dev_certs(out: &Path, devices: usize) -> Result<DevCerts, NetError> {
    make_certs(out, devices, &ServerNames::loopback())
}

/// Writes a CA, a server certificate naming `names`, and `devices` device certificates into
/// `out` (created if missing), each party in its own folder (see the module's documentation).
///
/// Refuses a folder that already holds a CA: a new CA would orphan every certificate of the
/// old one. Every call makes a new CA, so certificates from two calls do not trust each other.
pub fn make_certs(out: &Path, devices: usize, names: &ServerNames) -> Result<DevCerts, NetError> {
    names.check()?;
    let paths = DevCerts::in_dir(out, devices);
    if paths.ca_dir().exists() {
        return Err(NetError::File {
            action: "write",
            what: "CA",
            path: paths.ca_dir(),
            cause: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the folder already holds a CA; add a device with `certs add-device`, or give \
                 an empty folder",
            ),
        });
    }
    create_dir(&paths.ca_dir(), "CA folder")?;

    let ca_key = KeyPair::generate().map_err(made("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params()?, ca_key).map_err(made("CA"))?;
    let ca_pem = ca.pem();
    write_new(&paths.ca, "CA certificate", &ca_pem, false)?;
    write_new(&paths.ca_key, "CA key", &ca.key().serialize_pem(), true)?;

    create_dir(&paths.server.dir, "server's certificate folder")?;
    let server_key = KeyPair::generate().map_err(made("server key"))?;
    let mut server_params =
        CertificateParams::new(Vec::<String>::new()).map_err(made("server certificate"))?;
    for name in &names.dns {
        let dns = name
            .clone()
            .try_into()
            .map_err(made(format!("server certificate for {name}")))?;
        server_params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for ip in &names.ips {
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(*ip));
    }
    server_params
        .distinguished_name
        .push(DnType::CommonName, "cotune server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .map_err(made("server certificate"))?;
    write_new(&paths.server.ca, "CA certificate", &ca_pem, false)?;
    write_new(
        &paths.server.cert,
        "server certificate",
        &server_cert.pem(),
        false,
    )?;
    write_new(
        &paths.server.key,
        "server key",
        &server_key.serialize_pem(),
        true,
    )?;
    record_issued(
        &paths.ca_dir(),
        &format!(
            "server {} ({})",
            serial_hex(server_cert.der()),
            names.all().join(", ")
        ),
    )?;

    for (i, files) in paths.devices.iter().enumerate() {
        issue_device(&ca, &ca_pem, i as u32, files)?;
        record_issued(
            &paths.ca_dir(),
            &format!("device {i} {}", serial_of_file(&files.cert)?),
        )?;
    }
    Ok(paths)
}

/// Signs a certificate for `device` with `issuer` and writes the device's folder.
fn issue_device<S: rcgen::SigningKey>(
    issuer: &Issuer<'_, S>,
    ca_pem: &str,
    device: u32,
    files: &PartyFiles,
) -> Result<(), NetError> {
    let what = format!("certificate of device {device}");
    create_dir(&files.dir, "device's certificate folder")?;
    let key = KeyPair::generate().map_err(made(what.clone()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(made(what.clone()))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{DEVICE_CN_PREFIX}{device}"));
    let uri = format!("{DEVICE_URI_PREFIX}{device}")
        .try_into()
        .map_err(made(what.clone()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer).map_err(made(what))?;
    write_new(&files.ca, "CA certificate", ca_pem, false)?;
    write_new(&files.cert, "device certificate", &cert.pem(), false)?;
    write_new(&files.key, "device key", &key.serialize_pem(), true)?;
    Ok(())
}

/// Issues a certificate for device `device` with the CA kept in `ca_dir` (`ca.pem`, `ca.key`:
/// the `ca/` folder of [`make_certs`], or the folder holding it), into `out/device-<i>/`
/// (`out` by default the folder holding the CA's folder). Refuses a device whose folder
/// exists, and a key that is not the CA certificate's.
pub fn add_device(ca_dir: &Path, out: Option<&Path>, device: u32) -> Result<PartyFiles, NetError> {
    let ca_dir = match ca_dir.join("ca.key").is_file() {
        true => ca_dir.to_path_buf(),
        false if ca_dir.join("ca/ca.key").is_file() => ca_dir.join("ca"),
        false => {
            return Err(NetError::File {
                action: "find",
                what: "CA key",
                path: ca_dir.join("ca.key"),
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "neither it nor {} exists (give the ca/ folder that `certs` wrote)",
                        ca_dir.join("ca/ca.key").display()
                    ),
                ),
            })
        }
    };
    let ca_pem = read(&ca_dir.join("ca.pem"), "CA certificate")?;
    let key_pem = read(&ca_dir.join("ca.key"), "CA key")?;
    let key = KeyPair::from_pem(&key_pem).map_err(made(format!(
        "CA key from {}",
        ca_dir.join("ca.key").display()
    )))?;
    let der = pem_der(&ca_pem, &ca_dir.join("ca.pem"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| NetError::Certificate {
            path: ca_dir.join("ca.pem"),
            reason: format!("cannot parse it: {e}"),
        })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(NetError::Certificate {
            path: ca_dir.join("ca.key"),
            reason: "is not the key of the CA certificate ca.pem beside it".to_string(),
        });
    }
    let cn_matches = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        == Some(CA_NAME);
    if !cn_matches {
        return Err(NetError::Certificate {
            path: ca_dir.join("ca.pem"),
            reason: format!("is not a CA `certs` made (its common name is not {CA_NAME})"),
        });
    }
    let out = match out {
        Some(out) => out.to_path_buf(),
        None => ca_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let files = PartyFiles::device(&out.join(format!("device-{device}")));
    if files.dir.exists() {
        return Err(NetError::File {
            action: "write",
            what: "device's certificate folder",
            path: files.dir.clone(),
            cause: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists; a device's key is never written over",
            ),
        });
    }
    let issuer = Issuer::new(ca_params()?, key);
    issue_device(&issuer, &ca_pem, device, &files)?;
    record_issued(
        &ca_dir,
        &format!("device {device} {}", serial_of_file(&files.cert)?),
    )?;
    Ok(files)
}

/// The DER bytes of the first PEM block of `text` (read from `path`).
pub fn pem_der(text: &str, path: &Path) -> Result<Vec<u8>, NetError> {
    x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map(|(_, pem)| pem.contents)
        .map_err(|e| NetError::Certificate {
            path: path.to_path_buf(),
            reason: format!("is not PEM: {e}"),
        })
}

fn serial_of_file(path: &Path) -> Result<String, NetError> {
    let text = read(path, "certificate")?;
    Ok(serial_hex(&pem_der(&text, path)?))
}

/// A certificate's serial number (DER) as lower-case hex, or `?` if it does not parse.
pub fn serial_hex(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => crate::state::hex(cert.raw_serial()),
        Err(_) => "?".to_string(),
    }
}

/// Who a verified client certificate (DER) is: its device and its serial (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device index both of its names give.
    pub device: u32,
    /// Its serial number, lower-case hex.
    pub serial: String,
}

/// The device a client certificate (DER) names: its common name `cotune-device-<i>` and its
/// URI subject alternative name `urn:cotune:device:<i>` must both be there and agree.
///
/// The server calls this on the certificate the TLS handshake verified, so a device is who its
/// certificate says, whatever its messages claim.
pub fn device_of_certificate(der: &[u8]) -> Result<u32, NetError> {
    identity_of_certificate(der).map(|id| id.device)
}

/// [`device_of_certificate`], with the certificate's serial.
pub fn identity_of_certificate(der: &[u8]) -> Result<DeviceIdentity, NetError> {
    let refuse = |reason: String| NetError::CertificateIdentity { reason };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| refuse(format!("cannot parse it: {e}")))?;
    let mut names = cert.subject().iter_common_name();
    let Some(cn) = names.next() else {
        return Err(refuse("its subject has no common name".to_string()));
    };
    let cn = cn
        .as_str()
        .map_err(|e| refuse(format!("its common name is not text: {e}")))?;
    if names.next().is_some() {
        return Err(refuse(format!(
            "its subject has more than one common name (the first is {cn})"
        )));
    }
    let by_cn = parse_index(cn, DEVICE_CN_PREFIX).ok_or_else(|| {
        refuse(format!(
            "its common name {cn:?} is not {DEVICE_CN_PREFIX}<index>"
        ))
    })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| refuse(format!("its subject alternative names do not parse: {e}")))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .filter(|uri| uri.starts_with(DEVICE_URI_PREFIX))
        .collect();
    let [uri] = uris[..] else {
        return Err(refuse(format!(
            "its common name names device {by_cn}, but it has {} subject alternative names \
             {DEVICE_URI_PREFIX}<index> (expected exactly one){}",
            uris.len(),
            match uris.is_empty() {
                true => String::new(),
                false => format!(": {}", uris.join(", ")),
            }
        )));
    };
    let by_uri = parse_index(uri, DEVICE_URI_PREFIX).ok_or_else(|| {
        refuse(format!(
            "its subject alternative name {uri:?} is not {DEVICE_URI_PREFIX}<index>"
        ))
    })?;
    if by_cn != by_uri {
        return Err(refuse(format!(
            "its common name {cn:?} names device {by_cn} but its subject alternative name \
             {uri:?} names device {by_uri}"
        )));
    }
    Ok(DeviceIdentity {
        device: by_cn,
        serial: crate::state::hex(cert.raw_serial()),
    })
}

/// The index after `prefix`: decimal digits only, without a sign or leading zeros.
fn parse_index(text: &str, prefix: &str) -> Option<u32> {
    let digits = text.strip_prefix(prefix)?;
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate with `cn` and `uris`, signed by a fresh CA (DER).
    fn cert_with(cn: Option<&str>, uris: &[&str]) -> Vec<u8> {
        let ca = CertifiedIssuer::self_signed(ca_params().unwrap(), KeyPair::generate().unwrap())
            .unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca).unwrap().der().to_vec()
    }

    #[test]
    fn a_device_is_named_by_both_its_common_name_and_its_uri() {
        let ok = cert_with(Some("cotune-device-3"), &["urn:cotune:device:3"]);
        assert_eq!(device_of_certificate(&ok).unwrap(), 3);
        for (cn, uris, expect) in [
            (
                Some("cotune-device-1"),
                &["urn:cotune:device:2"][..],
                "its common name \"cotune-device-1\" names device 1 but its subject \
                 alternative name \"urn:cotune:device:2\" names device 2",
            ),
            (
                Some("cotune-device-1"),
                &[],
                "names device 1, but it has 0 subject alternative names",
            ),
            (
                Some("cotune-device-1"),
                &["urn:cotune:device:1", "urn:cotune:device:2"],
                "2 subject alternative names urn:cotune:device:<index> (expected exactly one): \
                 urn:cotune:device:1, urn:cotune:device:2",
            ),
            (
                None,
                &["urn:cotune:device:1"],
                "its subject has no common name",
            ),
            (
                Some("cotune-device-01"),
                &["urn:cotune:device:1"],
                "its common name \"cotune-device-01\" is not cotune-device-<index>",
            ),
            (
                Some("cotune-device-1"),
                &["urn:cotune:device:+1"],
                "\"urn:cotune:device:+1\" is not urn:cotune:device:<index>",
            ),
            (
                Some("someone"),
                &["urn:cotune:device:1"],
                "its common name \"someone\" is not cotune-device-<index>",
            ),
        ] {
            let err = device_of_certificate(&cert_with(cn, uris))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("the client certificate does not name a cotune device"),
                "{err}"
            );
            assert!(err.contains(expect), "{cn:?} {uris:?}: {err}");
        }
        let err = device_of_certificate(b"junk").unwrap_err().to_string();
        assert!(err.contains("cannot parse it"), "{err}");
    }

    #[test]
    fn bad_server_names_are_refused_by_value() {
        for (name, expect) in [
            ("127.0.0.2", "is an IP address"),
            ("bad name", "is not a DNS name"),
            ("*.example.org", "is not a DNS name"),
            ("", "is not a DNS name"),
        ] {
            let err = check_dns_name(name).unwrap_err().to_string();
            assert!(err.contains(&format!("{name:?}")), "{err}");
            assert!(err.contains(expect), "{err}");
        }
        check_dns_name("server.cotune.test").unwrap();
        let none = ServerNames {
            dns: vec![],
            ips: vec![],
        };
        let err = none.check().unwrap_err().to_string();
        assert!(err.contains("at least one DNS name or IP address"), "{err}");
    }
}
