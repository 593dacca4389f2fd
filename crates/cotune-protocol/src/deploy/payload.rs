//! Every payload of a deployment (a task's download, a device's upload) is one file in the
//! safetensors format: an 8-byte little-endian header length, a JSON header, then the data.
//! Parameters are `F32` tensors named `param/<name>`; other bytes (a method's own message,
//! prediction files) are `U8` tensors named `blob/<name>`; what the runner says in words is
//! the JSON text in the header's `__metadata__` under `cotune`. Any safetensors reader opens
//! it. Decoding checks every length, offset and shape against the bytes it has and never
//! panics.

use std::collections::BTreeMap;

use cotune_host::NamedTensor;

/// The header may not be larger than this (a bound against a hostile length prefix).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// A payload: words, parameters and byte blobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// JSON text.
    pub meta: String,
    /// Parameters, in their order.
    pub params: Vec<NamedTensor>,
    /// Named bytes, in their order.
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl Payload {
    /// The blob named `name`, if any.
    pub fn blob(&self, name: &str) -> Option<&[u8]> {
        self.blobs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// The safetensors bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut meta = serde_json::Map::new();
        meta.insert("cotune".into(), self.meta.clone().into());
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
        for p in &self.params {
            entry(
                format!("param/{}", p.name),
                "F32",
                p.shape.to_vec(),
                4 * p.data.len() as u64,
            );
        }
        for (name, bytes) in &self.blobs {
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
        for p in &self.params {
            for v in p.data.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (_, bytes) in &self.blobs {
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads what [`encode`](Self::encode) wrote (or any safetensors file of `F32` and `U8`
    /// tensors so named); `what` names the payload in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Payload, String> {
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
        let mut payload = Payload::default();
        let mut entries: Vec<(u64, u64, String, String, Vec<u64>)> = Vec::new();
        for (name, value) in header {
            if name == "__metadata__" {
                payload.meta = value
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
                payload.params.push(NamedTensor::new(param, shape, values));
            } else if let (Some(blob), "U8") = (name.strip_prefix("blob/"), dtype.as_str()) {
                payload.blobs.push((blob.to_string(), slice.to_vec()));
            } else {
                return bad(format!(
                    "tensor {name:?} ({dtype}) is neither an F32 param/ nor a U8 blob/"
                ));
            }
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            meta: r#"{"kind":"step","round":3}"#.into(),
            params: vec![
                NamedTensor::new("b.weight", vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]),
                NamedTensor::new("a.bias", vec![2], vec![0.25, -0.5]),
            ],
            blobs: vec![("z".into(), vec![1, 2, 3]), ("a".into(), Vec::new())],
        }
    }

    #[test]
    fn a_payload_round_trips_in_order() {
        let p = sample();
        let bytes = p.encode();
        assert_eq!(Payload::decode(&bytes, "test").unwrap(), p);
        assert_eq!(p.blob("z"), Some(&[1u8, 2, 3][..]));
        assert_eq!(p.blob("y"), None);
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

    #[test]
    fn a_wrong_dtype_or_size_is_named() {
        let header = r#"{"param/x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("dtype \"F16\""), "{err}");
        let header = r#"{"param/x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let err = Payload::decode(&bytes, "p").unwrap_err();
        assert!(err.contains("do not match its size"), "{err}");
    }
}
