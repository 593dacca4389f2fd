//! What crosses the network between server and devices, as bytes.
//!
//! Parameters travel in a small little-endian format: the magic `CTPARAM1`, the tensor count,
//! then per tensor its name (length-prefixed UTF-8), its rank, its dimensions and its `f32`
//! values. Bytes up and down are the lengths of these buffers, so the accounting is the
//! message itself.

use cotune_host::NamedTensor;

const MAGIC: &[u8; 8] = b"CTPARAM1";

/// A message that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed parameter message at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

/// Serialises named tensors.
pub fn encode_params(params: &[NamedTensor]) -> Vec<u8> {
    let values: usize = params.iter().map(|p| p.data.len()).sum();
    let mut out = Vec::with_capacity(16 + values * 4 + params.len() * 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(params.len() as u64).to_le_bytes());
    for p in params {
        out.extend_from_slice(&(p.name.len() as u64).to_le_bytes());
        out.extend_from_slice(p.name.as_bytes());
        out.extend_from_slice(&(p.shape.len() as u64).to_le_bytes());
        for &d in p.shape.iter() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        for &v in p.data.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A cursor over a received message; every read checks the length first.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the first byte of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Where the next read starts.
    pub(crate) fn offset(&self) -> usize {
        self.at
    }

    /// How many bytes are left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.at.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(DecodeError {
                offset: self.at,
                reason: format!("needs {n} more bytes, {} left", self.bytes.len() - self.at),
            }),
        }
    }

    /// Checks the 8-byte magic of a `what` message.
    pub(crate) fn magic(&mut self, magic: &[u8; 8], what: &str) -> Result<(), DecodeError> {
        if self.take(8)? != magic {
            return Err(DecodeError {
                offset: 0,
                reason: format!("not a {what} message (bad magic)"),
            });
        }
        Ok(())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn u32s(&mut self, n: usize) -> Result<Vec<u32>, DecodeError> {
        Ok(self
            .take(n.saturating_mul(4))?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    pub(crate) fn f32s(&mut self, n: usize) -> Result<Vec<f32>, DecodeError> {
        Ok(self
            .take(n.saturating_mul(4))?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    /// Fails unless every byte was read.
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.at != self.bytes.len() {
            return Err(DecodeError {
                offset: self.at,
                reason: format!("{} trailing bytes", self.bytes.len() - self.at),
            });
        }
        Ok(())
    }
}

/// Reads a buffer written by [`encode_params`].
pub fn decode_params(bytes: &[u8]) -> Result<Vec<NamedTensor>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.magic(MAGIC, "parameter")?;
    let at = r.offset();
    let count = r.u64()?;
    // Every tensor takes at least 16 bytes (its name length and rank): a count the bytes left
    // cannot hold is refused before anything is allocated for it.
    let most = r.remaining() / 16;
    if count > most as u64 {
        return Err(DecodeError {
            offset: at,
            reason: format!(
                "declares {count} tensors, the {} bytes left hold at most {most}",
                r.remaining()
            ),
        });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u64()? as usize;
        let at = r.offset();
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|e| DecodeError {
                offset: at,
                reason: format!("tensor name is not UTF-8: {e}"),
            })?
            .to_string();
        let rank = r.u64()? as usize;
        let mut shape = Vec::with_capacity(rank.min(8));
        for _ in 0..rank {
            shape.push(r.u64()?);
        }
        // A zero dimension empties the tensor whatever the others claim.
        let n = if shape.contains(&0) {
            Some(0)
        } else {
            shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
        };
        let n = n
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| DecodeError {
                offset: r.offset(),
                reason: format!("tensor `{name}` has shape {shape:?}, too many values"),
            })?;
        let data = r.f32s(n)?;
        out.push(NamedTensor::new(name, shape, data));
    }
    r.end()?;
    Ok(out)
}

/// Weighted average of parameter sets with identical names and shapes (FedAvg).
pub fn weighted_average(sets: &[(Vec<NamedTensor>, f64)]) -> Result<Vec<NamedTensor>, String> {
    let (first, _) = sets.first().ok_or("nothing to average")?;
    let total: f64 = sets.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return Err(format!("weights sum to {total}"));
    }
    let mut out = first.clone();
    for (t, tensor) in out.iter_mut().enumerate() {
        let mut acc = vec![0f64; tensor.data.len()];
        for (i, (set, w)) in sets.iter().enumerate() {
            let other = set
                .get(t)
                .filter(|o| o.name == tensor.name && o.shape == tensor.shape)
                .ok_or_else(|| {
                    format!(
                        "upload {i} does not match tensor {} {:?} at position {t}",
                        tensor.name,
                        tensor.shape.as_slice()
                    )
                })?;
            for (a, &v) in acc.iter_mut().zip(other.data.iter()) {
                *a += w / total * f64::from(v);
            }
        }
        tensor.data = acc.into_iter().map(|v| v as f32).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[u64], data: &[f32]) -> NamedTensor {
        NamedTensor::new(name, shape.to_vec(), data.to_vec())
    }

    #[test]
    fn params_round_trip_and_reject_truncation() {
        let params = vec![
            tensor("a.weight", &[2, 2], &[1.0, -2.0, 3.5, f32::MIN_POSITIVE]),
            tensor("b", &[1], &[0.25]),
        ];
        let bytes = encode_params(&params);
        assert_eq!(decode_params(&bytes).unwrap(), params);
        assert!(decode_params(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_params(b"nonsense").is_err());
    }

    #[test]
    fn weighted_average_weighs_by_size() {
        let a = vec![tensor("w", &[2], &[0.0, 4.0])];
        let b = vec![tensor("w", &[2], &[3.0, 0.0])];
        let avg = weighted_average(&[(a, 1.0), (b, 3.0)]).unwrap();
        assert_eq!(avg[0].data.as_slice(), &[2.25, 1.0]);
        let c = vec![tensor("v", &[2], &[0.0, 0.0])];
        assert!(weighted_average(&[(avg, 1.0), (c, 1.0)]).is_err());
    }
}
