//! Every payload of a deployment (a task's download, a device's upload) is one file in the
//! safetensors format: an 8-byte little-endian header length, a JSON header, then the data.
//! A payload is a list of typed parts ([`Part`]), each a method's message: a message that is a
//! parameter set (a DPM's shared part) is stored as `F32` tensors named
//! `param/<part>/<tensor>`, any other as one `U8` tensor named `blob/<part>`; what the runner
//! says in words is the JSON text in the header's `__metadata__` under `cotune`. Any
//! safetensors reader opens it. Decoding checks every length, offset and shape against the
//! bytes it has, refuses any name that is not a known part, and never panics.

use std::collections::BTreeMap;

use cotune_host::NamedTensor;
use cotune_protocol::message::{decode_params, encode_params};

/// The header may not be larger than this (a bound against a hostile length prefix).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// What a part of a payload is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The `k`-th message of the method's server setup for this device.
    Setup(usize),
    /// The download of an earlier round the device missed.
    Pending,
    /// The broadcast of the round of [`Part::Pending`].
    PendingBroadcast,
    /// The round's broadcast.
    Broadcast,
    /// The server's message for this device this round.
    Download,
    /// The device's message for the server.
    Upload,
    /// A prediction file the device sends, by its plain file name.
    Prediction(String),
}

impl Part {
    /// The name in the file (no `/`: tensor names follow it).
    fn name(&self) -> String {
        match self {
            Part::Setup(k) => format!("setup-{k}"),
            Part::Pending => "pending".into(),
            Part::PendingBroadcast => "pending-broadcast".into(),
            Part::Broadcast => "broadcast".into(),
            Part::Download => "download".into(),
            Part::Upload => "upload".into(),
            Part::Prediction(file) => format!("pred:{file}"),
        }
    }

    /// The part named `name`, or why it is none.
    fn parse(name: &str) -> Result<Part, String> {
        Ok(match name {
            "pending" => Part::Pending,
            "pending-broadcast" => Part::PendingBroadcast,
            "broadcast" => Part::Broadcast,
            "download" => Part::Download,
            "upload" => Part::Upload,
            other => {
                if let Some(k) = other.strip_prefix("setup-") {
                    let k = k
                        .parse()
                        .map_err(|_| format!("part {other:?} has no setup message number"))?;
                    Part::Setup(k)
                } else if let Some(file) = other.strip_prefix("pred:") {
                    if !is_plain_file_name(file) {
                        return Err(format!(
                            "prediction file name {file:?} is not a plain file name"
                        ));
                    }
                    Part::Prediction(file.to_string())
                } else {
                    return Err(format!("{other:?} is not a part of a payload"));
                }
            }
        })
    }
}

/// A name without folders or hidden files: letters, digits, `.`, `_`, `-`.
pub(crate) fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A payload: words, and messages as typed parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// JSON text.
    pub meta: String,
    /// The parts, in their order, each at most once.
    parts: Vec<(Part, Vec<u8>)>,
}

impl Payload {
    /// A payload saying `meta`, with no part.
    pub fn new(meta: String) -> Payload {
        Payload {
            meta,
            parts: Vec::new(),
        }
    }

    /// Sets `part` to `message` (replacing it if present).
    pub fn put(&mut self, part: Part, message: Vec<u8>) {
        match self.parts.iter_mut().find(|(p, _)| *p == part) {
            Some(slot) => slot.1 = message,
            None => self.parts.push((part, message)),
        }
    }

    /// The message of `part`, byte for byte as it was put.
    pub fn get(&self, part: &Part) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(p, _)| p == part)
            .map(|(_, m)| m.as_slice())
    }

    /// Every part, in order.
    pub fn parts(&self) -> impl Iterator<Item = (&Part, &[u8])> {
        self.parts.iter().map(|(p, m)| (p, m.as_slice()))
    }

    /// The setup messages, in order (`Part::Setup(0)`, `1`, ...).
    pub fn setup_messages(&self) -> Vec<Vec<u8>> {
        let mut setup: Vec<(usize, &[u8])> = self
            .parts()
            .filter_map(|(p, m)| match p {
                Part::Setup(k) => Some((*k, m)),
                _ => None,
            })
            .collect();
        setup.sort_by_key(|(k, _)| *k);
        setup.into_iter().map(|(_, m)| m.to_vec()).collect()
    }

    /// The safetensors bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut params: Vec<NamedTensor> = Vec::new();
        let mut blobs: Vec<(String, &[u8])> = Vec::new();
        for (part, message) in &self.parts {
            match decode_params(message) {
                Ok(set) if !set.is_empty() && encode_params(&set) == *message => {
                    for mut p in set {
                        p.name = format!("{}/{}", part.name(), p.name).into();
                        params.push(p);
                    }
                }
                _ => blobs.push((part.name(), message)),
            }
        }
        encode_raw(&self.meta, &params, &blobs)
    }

    /// Reads what [`encode`](Self::encode) wrote; `what` names the payload in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Payload, String> {
        let (meta, params, blobs) = decode_raw(bytes, what)?;
        let bad = |reason: String| Err(format!("{what}: {reason}"));
        let mut payload = Payload::new(meta);
        let mut groups: Vec<(String, Vec<NamedTensor>)> = Vec::new();
        for p in params {
            let Some((part, tensor)) = p.name.split_once('/') else {
                return bad(format!("parameter {:?} names no part", p.name.as_str()));
            };
            let t = NamedTensor::new(tensor, p.shape.to_vec(), p.data.to_vec());
            match groups.iter_mut().find(|(g, _)| g == part) {
                Some((_, set)) => set.push(t),
                None => groups.push((part.to_string(), vec![t])),
            }
        }
        for (name, set) in groups {
            let part = Part::parse(&name).map_err(|e| format!("{what}: {e}"))?;
            if payload.get(&part).is_some() {
                return bad(format!("part {name:?} appears twice"));
            }
            payload.parts.push((part, encode_params(&set)));
        }
        for (name, bytes) in blobs {
            let part = Part::parse(&name).map_err(|e| format!("{what}: {e}"))?;
            if payload.get(&part).is_some() {
                return bad(format!("part {name:?} appears twice"));
            }
            payload.parts.push((part, bytes));
        }
        Ok(payload)
    }
}

/// The safetensors bytes of `meta`, `params` (`param/<name>`) and `blobs` (`blob/<name>`).
fn encode_raw(meta_text: &str, params: &[NamedTensor], blobs: &[(String, &[u8])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("cotune".into(), meta_text.to_string().into());
    header.insert("__metadata__".into(), meta.into());
    let mut offset = 0u64;
    let mut entry = |name: String, dtype: &str, shape: Vec<u64>, len: u64| {
        header.insert(
            name,
            serde_json::json!({
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    };
    for p in params {
        entry(
            format!("param/{}", p.name),
            "F32",
            p.shape.to_vec(),
            4 * p.data.len() as u64,
        );
    }
    for (name, bytes) in blobs {
        entry(
            format!("blob/{name}"),
            "U8",
            vec![bytes.len() as u64],
            bytes.len() as u64,
        );
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    // The data starts 8-byte aligned; the format allows trailing spaces in the header.
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset as usize);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for p in params {
        for v in p.data.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (_, bytes) in blobs {
        out.extend_from_slice(bytes);
    }
    out
}

/// What a safetensors file of `F32` `param/` and `U8` `blob/` tensors holds: the metadata
/// text, the parameters and the blobs, in file order.
#[allow(clippy::type_complexity)]
fn decode_raw(
    bytes: &[u8],
    what: &str,
) -> Result<(String, Vec<NamedTensor>, Vec<(String, Vec<u8>)>), String> {
    let bad = |reason: String| Err(format!("{what}: {reason}"));
    if bytes.len() < 8 {
        return bad(format!(
            "{} bytes, shorter than a safetensors header length",
            bytes.len()
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_BYTES || n > (bytes.len() - 8) as u64 {
        return bad(format!(
            "header length {n} does not fit the {} bytes after it (at most {MAX_HEADER_BYTES})",
            bytes.len() - 8
        ));
    }
    let data = &bytes[8 + n as usize..];
    let header: BTreeMap<String, serde_json::Value> =
        match serde_json::from_slice(&bytes[8..8 + n as usize]) {
            Ok(h) => h,
            Err(e) => return bad(format!("header is not a JSON object: {e}")),
        };
    let (mut meta, mut params, mut blobs) = (String::new(), Vec::new(), Vec::new());
    let mut entries: Vec<(u64, u64, String, String, Vec<u64>)> = Vec::new();
    for (name, value) in header {
        if name == "__metadata__" {
            meta = value
                .get("cotune")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            continue;
        }
        let dtype = value.get("dtype").and_then(|v| v.as_str()).unwrap_or("");
        let shape: Option<Vec<u64>> = value
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = value
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return bad(format!("tensor {name:?} lacks a shape or data offsets"));
        };
        let [start, end] = offsets[..] else {
            return bad(format!(
                "tensor {name:?} has {} data offsets, not 2",
                offsets.len()
            ));
        };
        let size = match dtype {
            "F32" => 4,
            "U8" => 1,
            other => {
                return bad(format!(
                    "tensor {name:?} has dtype {other:?}, expected F32 or U8"
                ))
            }
        };
        let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let expected = elements.and_then(|e| e.checked_mul(size));
        if start > end || end > data.len() as u64 || expected != Some(end - start) {
            return bad(format!(
                "tensor {name:?} ({dtype}, shape {shape:?}) has data offsets [{start}, {end}] \
                 that do not match its size within the {} data bytes",
                data.len()
            ));
        }
        entries.push((start, end, name, dtype.to_string(), shape));
    }
    // Written in order: the data offsets give the order back.
    entries.sort();
    for (start, end, name, dtype, shape) in entries {
        let slice = &data[start as usize..end as usize];
        if let (Some(param), "F32") = (name.strip_prefix("param/"), dtype.as_str()) {
            let values = slice
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            params.push(NamedTensor::new(param, shape, values));
        } else if let (Some(blob), "U8") = (name.strip_prefix("blob/"), dtype.as_str()) {
            blobs.push((blob.to_string(), slice.to_vec()));
        } else {
            return bad(format!(
                "tensor {name:?} ({dtype}) is neither an F32 param/ nor a U8 blob/"
            ));
        }
    }
    Ok((meta, params, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        let params = vec![
            NamedTensor::new("b.weight", vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]),
            NamedTensor::new("a.bias", vec![2], vec![0.25, -0.5]),
        ];
        let mut p = Payload::new(r#"{"kind":"step","round":3}"#.into());
        p.put(Part::Download, encode_params(&params));
        p.put(Part::Broadcast, b"fedmkt knowledge".to_vec());
        p.put(Part::Setup(1), Vec::new());
        p.put(Part::Setup(0), encode_params(&params[..1]));
        p.put(
            Part::Prediction("geography-slm.jsonl".into()),
            b"{}\n".to_vec(),
        );
        p
    }

    #[test]
    fn every_part_goes_through_a_payload_byte_for_byte() {
        let p = sample();
        let back = Payload::decode(&p.encode(), "test").unwrap();
        for (part, message) in p.parts() {
            assert_eq!(back.get(part), Some(message), "{part:?}");
        }
        assert_eq!(back.parts().count(), p.parts().count());
        assert_eq!(back.meta, p.meta);
        assert_eq!(back.get(&Part::Pending), None);
        let setup = back.setup_messages();
        assert_eq!(setup.len(), 2);
        assert_eq!(setup[1], Vec::<u8>::new());
        // A parameter set is stored as tensors any safetensors reader names.
        let (_, params, _) = decode_raw(&p.encode(), "raw").unwrap();
        assert!(params
            .iter()
            .any(|t| t.name.as_str() == "download/b.weight"));
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                Payload::decode(&bytes[..cut], "cut").is_err(),
                "cut at {cut}"
            );
        }
        for k in 0..bytes.len() {
            let mut b = bytes.clone();
            b[k] ^= 0xa5;
            let _ = Payload::decode(&b, "flipped");
        }
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = Payload::decode(&huge, "the upload of device 2").unwrap_err();
        assert!(
            err.starts_with("the upload of device 2: header length"),
            "{err}"
        );
    }

    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        bytes
    }

    #[test]
    fn a_wrong_dtype_size_or_part_is_named() {
        let bytes = raw(
            r#"{"param/upload/x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("dtype \"F16\""), "{err}");
        let bytes = raw(
            r#"{"param/upload/x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("do not match its size"), "{err}");
        let bytes = raw(
            r#"{"blob/setup-public":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(
            err.contains("\"setup-public\" has no setup message number"),
            "{err}"
        );
        let bytes = raw(
            r#"{"blob/pred:../x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("not a plain file name"), "{err}");
        let bytes = raw(
            r#"{"blob/secrets":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(
            err.contains("\"secrets\" is not a part of a payload"),
            "{err}"
        );
        let bytes = raw(
            r#"{"param/x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            4,
        );
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("names no part"), "{err}");
    }
}
