//! A writer for small GGUF files (tests, tiny models): metadata of every type, tensors from
//! `f32` values quantised here, and tensors given as raw blocks.

use std::path::Path;

use crate::error::WriteError;
use crate::quant;
use crate::read::{DEFAULT_ALIGNMENT, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{Array, Value};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

/// Builds a GGUF file in memory: `set` metadata, add tensors, then `to_bytes` or `write`.
///
/// Metadata keys and tensors are written in the order they were first added; tensor data is
/// padded to the alignment (`general.alignment` when set, 32 otherwise), as llama.cpp's and
/// gguf-py's writers do.
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

fn join(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl GgufWriter {
    /// A writer of version 3 files.
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A writer of `version` files (2 or 3, which share their layout).
    pub fn with_version(version: u32) -> Result<GgufWriter, WriteError> {
        if version != 2 && version != 3 {
            return Err(WriteError::Version { version });
        }
        Ok(GgufWriter {
            version,
            ..GgufWriter::new()
        })
    }

    /// Sets metadata `key` to `value` (replacing a value set before, in its place).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds a tensor of dimensions `dims` (innermost first, as in the file) from `values`,
    /// converted to `ty` with llama.cpp's reference quantiser: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
    /// Q5_0 or Q5_1 (other types: [`GgufWriter::add_raw_tensor`]).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[usize],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<&mut Self, WriteError> {
        let name = name.into();
        self.check_shape(&name, dims, ty)?;
        if dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(values.len()) {
            return Err(WriteError::ValueCount {
                tensor: name,
                dims: join(dims),
                values: values.len(),
            });
        }
        let Some(bytes) = quant::quantize(ty, values) else {
            return Err(WriteError::CannotQuantize { tensor: name, ty });
        };
        self.push(name, dims, ty, bytes);
        Ok(self)
    }

    /// Adds a tensor of any type from its raw bytes (whole blocks, as stored): how tests write
    /// hand-made K-quant blocks.
    pub fn add_raw_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[usize],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<&mut Self, WriteError> {
        let name = name.into();
        self.check_shape(&name, dims, ty)?;
        let n = (dims.iter()).fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let expected = n / ty.block_size() as u64 * ty.type_size() as u64;
        if bytes.len() as u64 != expected {
            return Err(WriteError::ByteCount {
                tensor: name,
                ty,
                dims: join(dims),
                bytes: bytes.len(),
                expected,
            });
        }
        self.push(name, dims, ty, bytes);
        Ok(self)
    }

    fn check_shape(&self, name: &str, dims: &[usize], ty: GgmlType) -> Result<(), WriteError> {
        if dims.is_empty() || dims.len() > MAX_DIMS as usize {
            let (tensor, n_dims) = (name.to_string(), dims.len());
            return Err(WriteError::Dims { tensor, n_dims });
        }
        if !dims[0].is_multiple_of(ty.block_size()) {
            return Err(WriteError::RowNotBlocks {
                tensor: name.to_string(),
                ty,
                row: dims[0] as u64,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            let name = name.to_string();
            return Err(WriteError::DuplicateTensor { name });
        }
        Ok(())
    }

    fn push(&mut self, name: String, dims: &[usize], ty: GgmlType, bytes: Vec<u8>) {
        let dims = dims.iter().map(|&d| d as u64).collect();
        self.tensors.push(PendingTensor {
            name,
            dims,
            ty,
            bytes,
        });
    }

    fn alignment(&self) -> Result<usize, WriteError> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT as usize),
            Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(*a as usize),
            Some((_, Value::U32(a))) => Err(WriteError::BadAlignment {
                found: format!("u32 {a}"),
            }),
            Some((_, other)) => Err(WriteError::BadAlignment {
                found: other.type_description(),
            }),
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let alignment = self.alignment()?;
        let padded = |n: usize| n.div_ceil(alignment) * alignment;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += padded(t.bytes.len());
        }
        out.resize(padded(out.len()), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.bytes);
            out.resize(padded(out.len()), 0);
        }
        Ok(out)
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), WriteError> {
        let bytes = self.to_bytes()?;
        std::fs::write(path.as_ref(), bytes).map_err(|cause| WriteError::Io {
            path: path.as_ref().display().to_string(),
            cause,
        })
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A value's bytes after its type.
fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(v) => put_string(out, v),
        Value::Array(v) => put_array(out, v),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// An array: element type, count, elements.
fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&array.element_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! numbers {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => numbers!(v),
        Array::U16(v) => numbers!(v),
        Array::I16(v) => numbers!(v),
        Array::U32(v) => numbers!(v),
        Array::I32(v) => numbers!(v),
        Array::F32(v) => numbers!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => numbers!(v),
        Array::I64(v) => numbers!(v),
        Array::F64(v) => numbers!(v),
    }
}
