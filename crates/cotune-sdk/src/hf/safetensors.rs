//! The `model.safetensors` format: reading F32, F16 and BF16 tensors (every offset and size
//! checked, so a damaged file is refused and never panics), and writing F32 tensors.

use std::collections::BTreeMap;
use std::path::Path;

use cotune_abi::{ErrorKind, PluginError};
use serde_json::{json, Map, Value};

use super::err;

/// A tensor read from a safetensors file, converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the fraction.
            let mut e: i32 = -14;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(out)
}

/// Reads every tensor of the safetensors file at `path`, converted to `f32`.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, StoredTensor>, PluginError> {
    let shown = path.display();
    let bad = |why: String| err(ErrorKind::Io, format!("reading {shown}: {why}"));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes is too short for a safetensors file",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = bytes
        .get(8..8usize.saturating_add(header_len))
        .ok_or_else(|| {
            bad(format!(
                "the header length {header_len} runs past the end of the file ({} bytes)",
                bytes.len()
            ))
        })?;
    let header: Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let data = &bytes[8 + header_len..];
    let mut out = BTreeMap::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad_tensor = |why: String| bad(format!("tensor `{name}`: {why}"));
        let dtype = info["dtype"]
            .as_str()
            .ok_or_else(|| bad_tensor("no dtype".into()))?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .ok_or_else(|| bad_tensor(format!("shape {} is not a list of sizes", info["shape"])))?;
        let offsets: Vec<usize> = info["data_offsets"]
            .as_array()
            .and_then(|o| o.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .filter(|o: &Vec<usize>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| {
                bad_tensor(format!(
                    "data_offsets {} are not [begin, end]",
                    info["data_offsets"]
                ))
            })?;
        let raw = data.get(offsets[0]..offsets[1]).ok_or_else(|| {
            bad_tensor(format!(
                "data_offsets {offsets:?} run past the data ({} bytes)",
                data.len()
            ))
        })?;
        let width = match dtype {
            "F32" => 4,
            "F16" | "BF16" => 2,
            "F64" => 8,
            other => {
                return Err(bad_tensor(format!(
                    "dtype {other} is not supported (F32, F16, BF16 and F64 are)"
                )))
            }
        };
        // A zero dimension empties the tensor whatever the others claim.
        let needed = if shape.contains(&0) {
            Some(0)
        } else {
            shape
                .iter()
                .try_fold(width, |n: usize, &d| n.checked_mul(d))
        };
        if needed != Some(raw.len()) {
            return Err(bad_tensor(format!(
                "shape {shape:?} of {dtype} needs {} bytes, the file gives {}",
                needed.map_or("more than 2^64".to_string(), |n| n.to_string()),
                raw.len()
            )));
        }
        let values: Vec<f32> = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            _ => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        };
        out.insert(
            name.clone(),
            StoredTensor {
                shape,
                data: values,
            },
        );
    }
    Ok(out)
}

/// Writes `tensors` (name, shape, values) as an `F32` safetensors file at `path`, with the
/// `{"format": "pt"}` metadata `transformers` expects.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<(), PluginError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        if shape.iter().product::<usize>() != data.len() {
            return Err(err(
                ErrorKind::ShapeMismatch,
                format!(
                    "writing {}: tensor `{name}` has shape {shape:?} but {} values",
                    path.display(),
                    data.len()
                ),
            ));
        }
        let end = offset + 4 * data.len();
        header.insert(
            name.clone(),
            json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).expect("JSON of plain values");
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut buf = Vec::with_capacity(8 + header.len() + offset);
    buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
    buf.extend_from_slice(&header);
    for (_, _, data) in tensors {
        for v in data {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, buf)
        .map_err(|e| err(ErrorKind::Io, format!("writing {}: {e}", path.display())))
}
