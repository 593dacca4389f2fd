//! The server's revocation list: devices and certificates it refuses although the CA signed
//! them.
//!
//! The list is a text file (`revoked.txt` in the server's certificate folder by default), one
//! entry a line: `device <i>` refuses every certificate of device `i`, `serial <hex>` one
//! certificate (its serial as `certs` printed it and `ca/issued.txt` records it; colons and
//! case do not matter). Empty lines and lines starting with `#` are skipped. A missing file
//! revokes nothing.
//!
//! A running server reads the file again when it changes (checked at most every
//! [`RELOAD_INTERVAL`]), so a revocation takes effect without a restart: every call with a
//! revoked certificate is refused with `PERMISSION_DENIED` naming the device, the serial and the
//! line. A file that stops parsing while the server runs is logged and the last good list kept;
//! at start it is an error.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::certs::DeviceIdentity;
use crate::state::net_log;
use crate::NetError;

/// The revocation list's name in the server's certificate folder (defined beside the folder
/// layout, in `certs`).
pub use crate::certs::REVOKED_FILE;

/// How often a running server looks at the file for a change, at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Every certificate of this device.
    Device(u32),
    /// The certificate with this serial (lower-case hex without leading zeros).
    Serial(String),
}

/// The entries of a revocation list, each with its line number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// `(entry, line)`, in file order.
    pub entries: Vec<(Revoked, usize)>,
}

/// A serial as lower-case hex without colons or leading zeros (`0` for zero).
fn normal_serial(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    Some(match trimmed.is_empty() {
        true => "0".to_string(),
        false => trimmed.to_string(),
    })
}

impl RevocationList {
    /// Parses the text of `path`; an error names the file, the line and what is wrong.
    pub fn parse(text: &str, path: &Path) -> Result<RevocationList, NetError> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| NetError::Certificate {
                path: path.to_path_buf(),
                reason: format!("line {}: {line:?} {reason}", n + 1),
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let entry = match words[..] {
                ["device", i] => Revoked::Device(
                    i.parse()
                        .ok()
                        .filter(|_| i.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or_else(|| bad(format!("names device {i:?}, not a device number")))?,
                ),
                ["serial", s] => Revoked::Serial(
                    normal_serial(s)
                        .ok_or_else(|| bad(format!("names serial {s:?}, not hexadecimal")))?,
                ),
                _ => {
                    return Err(bad(
                        "is not `device <number>` or `serial <hex>` (or a # comment)".to_string(),
                    ))
                }
            };
            entries.push((entry, n + 1));
        }
        Ok(RevocationList { entries })
    }

    /// Reads `path`; a missing file is an empty list.
    pub fn read(path: &Path) -> Result<RevocationList, NetError> {
        match std::fs::read_to_string(path) {
            Ok(text) => RevocationList::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevocationList::default()),
            Err(cause) => Err(NetError::File {
                action: "read",
                what: "revocation list",
                path: path.to_path_buf(),
                cause,
            }),
        }
    }

    /// The entry that revokes `id`, with its line, if any.
    pub fn revokes(&self, id: &DeviceIdentity) -> Option<&(Revoked, usize)> {
        let serial = normal_serial(&id.serial);
        self.entries.iter().find(|(entry, _)| match entry {
            Revoked::Device(d) => *d == id.device,
            Revoked::Serial(s) => Some(s) == serial.as_ref(),
        })
    }
}

/// The file's modification time and length: a change of either is a change of the file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Held {
    list: RevocationList,
    stamp: Stamp,
    checked: Instant,
}

/// The revocation list a running server holds, read again when its file changes.
pub struct Revocations {
    path: Option<PathBuf>,
    held: Mutex<Held>,
}

impl Revocations {
    /// Nothing revoked, and no file to watch.
    pub fn none() -> Revocations {
        Revocations {
            path: None,
            held: Mutex::new(Held {
                list: RevocationList::default(),
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }

    /// The list in `path` (missing: empty), watched for changes; a file that does not parse is
    /// an error.
    pub fn load(path: &Path) -> Result<Revocations, NetError> {
        let stamp = stamp(path);
        let list = RevocationList::read(path)?;
        if !list.entries.is_empty() {
            net_log!(
                "{} revokes {} certificates or devices",
                path.display(),
                list.entries.len()
            );
        }
        Ok(Revocations {
            path: Some(path.to_path_buf()),
            held: Mutex::new(Held {
                list,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// Why `id` is refused, if its certificate or device is revoked.
    pub fn refusal(&self, id: &DeviceIdentity) -> Option<String> {
        let path = self.path.as_ref()?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.checked.elapsed() >= RELOAD_INTERVAL {
            held.checked = Instant::now();
            let now = stamp(path);
            if now != held.stamp {
                match RevocationList::read(path) {
                    Ok(list) => {
                        net_log!(
                            "revocation list {} read again: {} entries",
                            path.display(),
                            list.entries.len()
                        );
                        held.list = list;
                        held.stamp = now;
                    }
                    // Keep the last good list; say so once per change of the file.
                    Err(e) => {
                        net_log!("revocation list kept as it was: {e}");
                        held.stamp = now;
                    }
                }
            }
        }
        let (entry, line) = held.list.revokes(id)?;
        let what = match entry {
            Revoked::Device(d) => format!("device {d}"),
            Revoked::Serial(s) => format!("serial {s}"),
        };
        Some(format!(
            "the certificate of device {} (serial {}) is revoked: {} line {line} revokes {what}",
            id.device,
            id.serial,
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(device: u32, serial: &str) -> DeviceIdentity {
        DeviceIdentity {
            device,
            serial: serial.to_string(),
        }
    }

    #[test]
    fn devices_and_serials_are_revoked_by_line() {
        let path = Path::new("revoked.txt");
        let list = RevocationList::parse(
            "# compromised\n\ndevice 3\nserial 00:AB:cd\n  serial 7f  \n",
            path,
        )
        .unwrap();
        assert_eq!(
            list.entries,
            vec![
                (Revoked::Device(3), 3),
                (Revoked::Serial("abcd".into()), 4),
                (Revoked::Serial("7f".into()), 5)
            ]
        );
        assert_eq!(list.revokes(&id(3, "01")).map(|e| e.1), Some(3));
        assert_eq!(list.revokes(&id(1, "abcd")).map(|e| e.1), Some(4));
        assert_eq!(list.revokes(&id(1, "007f")).map(|e| e.1), Some(5));
        assert!(list.revokes(&id(1, "abce")).is_none());
    }

    #[test]
    fn a_bad_line_is_named_with_its_number_and_text() {
        let path = Path::new("certs/server/revoked.txt");
        for (text, expect) in [
            (
                "device 1\ndevice one\n",
                "line 2: \"device one\" names device \"one\", not a device number",
            ),
            ("device -1", "names device \"-1\", not a device number"),
            (
                "serial xyz",
                "line 1: \"serial xyz\" names serial \"xyz\", not hexadecimal",
            ),
            (
                "revoke 3",
                "line 1: \"revoke 3\" is not `device <number>` or `serial <hex>`",
            ),
            ("device 1 2", "\"device 1 2\" is not `device <number>`"),
        ] {
            let err = RevocationList::parse(text, path).unwrap_err().to_string();
            assert!(err.starts_with("certs/server/revoked.txt: "), "{err}");
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }
}
