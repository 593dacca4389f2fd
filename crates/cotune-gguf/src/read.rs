//! The reader: the header, metadata and tensor infos are parsed at once; a tensor's bytes are
//! read when it is asked for.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, ErrorKind};
use crate::quant;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// The alignment of tensor data when `general.alignment` is not set.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The deepest nesting of arrays of arrays the reader follows (each level is a recursion).
pub const MAX_ARRAY_DEPTH: usize = 16;

/// ggml's limit on a tensor's dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// The fewest bytes a tensor info takes: an empty name (8), no dimensions (4), the type (4)
/// and the offset (8).
const MIN_TENSOR_INFO: u64 = 24;

/// The fewest bytes a metadata entry takes: an empty key (8), the type (4), a one-byte value.
const MIN_METADATA_ENTRY: u64 = 13;

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its dimensions, innermost (contiguous) first, as ggml's `ne`: a PyTorch matrix of shape
    /// `[rows, cols]` is stored with dims `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Its element type.
    pub ty: GgmlType,
    /// The offset of its bytes from the start of the data section.
    pub offset: u64,
    /// The size of its bytes.
    pub size: u64,
    /// Where its offset field lies in the file, for errors that concern the data.
    offset_at: u64,
}

impl TensorInfo {
    /// The number of values (the product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

struct Entry {
    key: String,
    value: Value,
    /// Where the value's type lies in the file.
    at: u64,
}

enum Data {
    Bytes(Vec<u8>),
    File(Mutex<File>),
}

/// A parsed GGUF file: its metadata and tensor infos, with the tensors' bytes read on demand
/// (from the buffer given to [`Gguf::parse`], or from the file opened by [`Gguf::open`]).
pub struct Gguf {
    origin: String,
    version: u32,
    metadata: Vec<Entry>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
    file_len: u64,
    data: Data,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("origin", &self.origin)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .finish()
    }
}

impl Gguf {
    /// Opens the GGUF file at `path` and parses its header; tensor data stays on disk until a
    /// tensor is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, Error> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let io = |cause| Error::new(&origin, None, ErrorKind::Io { cause });
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let header = parse_header(BufReader::new(&file), len, &origin)?;
        Ok(header.into_gguf(origin, len, Data::File(Mutex::new(file))))
    }

    /// Parses a GGUF file held in memory (errors name it `<bytes>`); the bytes are copied.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, Error> {
        let origin = "<bytes>".to_string();
        let len = bytes.len() as u64;
        let header = parse_header(bytes, len, &origin)?;
        Ok(header.into_gguf(origin, len, Data::Bytes(bytes.to_vec())))
    }

    /// The file's path as given, or `<bytes>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, 32 by default).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute offset of the data section (tensor offsets are relative to it).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Every metadata key and value, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|e| (e.key.as_str(), &e.value))
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].value)
    }

    fn error(&self, offset: Option<u64>, kind: ErrorKind) -> Error {
        Error::new(&self.origin, offset, kind)
    }

    /// The value of `key` through `pick`, or an error naming the key and the type found.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, Error> {
        let Some(&i) = self.keys.get(key) else {
            let key = key.to_string();
            return Err(self.error(None, ErrorKind::MissingKey { key }));
        };
        let entry = &self.metadata[i];
        pick(&entry.value).ok_or_else(|| {
            self.error(
                Some(entry.at),
                ErrorKind::WrongType {
                    key: key.to_string(),
                    expected: expected.to_string(),
                    found: entry.value.type_description(),
                },
            )
        })
    }

    /// A `u32` value.
    pub fn get_u32(&self, key: &str) -> Result<u32, Error> {
        self.typed(key, "u32", |v| match v {
            Value::U32(x) => Some(*x),
            _ => None,
        })
    }

    /// An `i32` value.
    pub fn get_i32(&self, key: &str) -> Result<i32, Error> {
        self.typed(key, "i32", |v| match v {
            Value::I32(x) => Some(*x),
            _ => None,
        })
    }

    /// A `u64` value.
    pub fn get_u64(&self, key: &str) -> Result<u64, Error> {
        self.typed(key, "u64", |v| match v {
            Value::U64(x) => Some(*x),
            _ => None,
        })
    }

    /// An `f32` value.
    pub fn get_f32(&self, key: &str) -> Result<f32, Error> {
        self.typed(key, "f32", |v| match v {
            Value::F32(x) => Some(*x),
            _ => None,
        })
    }

    /// A `bool` value.
    pub fn get_bool(&self, key: &str) -> Result<bool, Error> {
        self.typed(key, "bool", |v| match v {
            Value::Bool(x) => Some(*x),
            _ => None,
        })
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, Error> {
        self.typed(key, "string", |v| match v {
            Value::String(x) => Some(x.as_str()),
            _ => None,
        })
    }

    /// An array of strings (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    pub fn get_str_array(&self, key: &str) -> Result<&[String], Error> {
        self.typed(key, "array of string", |v| match v {
            Value::Array(Array::String(x)) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// An array of `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<&[u32], Error> {
        self.typed(key, "array of u32", |v| match v {
            Value::Array(Array::U32(x)) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// An array of `i32` (`tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], Error> {
        self.typed(key, "array of i32", |v| match v {
            Value::Array(Array::I32(x)) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// An array of `f32` (`tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], Error> {
        self.typed(key, "array of f32", |v| match v {
            Value::Array(Array::F32(x)) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// The model's architecture (`general.architecture`: `llama`, `gpt2`).
    pub fn architecture(&self) -> Result<&str, Error> {
        self.get_str("general.architecture")
    }

    /// Every tensor's description, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The description of the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    fn find(&self, name: &str) -> Result<&TensorInfo, Error> {
        self.tensor(name).ok_or_else(|| {
            let name = name.to_string();
            self.error(None, ErrorKind::MissingTensor { name })
        })
    }

    /// A tensor too large for this machine's `usize`.
    fn too_large(&self, info: &TensorInfo) -> Error {
        self.error(
            Some(info.offset_at),
            ErrorKind::TensorTooLarge {
                tensor: info.name.clone(),
                dims: join(&info.dims),
            },
        )
    }

    /// The raw bytes of the tensor named `name` (its blocks, as stored).
    pub fn tensor_bytes(&self, name: &str) -> Result<Vec<u8>, Error> {
        let info = self.find(name)?;
        self.read_data(info)
    }

    fn read_data(&self, info: &TensorInfo) -> Result<Vec<u8>, Error> {
        // Both fit: the header's checks put every tensor inside the file.
        let start = self.data_start + info.offset;
        let too_large = || self.too_large(info);
        let size = usize::try_from(info.size).map_err(|_| too_large())?;
        match &self.data {
            Data::Bytes(bytes) => {
                let from = usize::try_from(start).map_err(|_| too_large())?;
                Ok(bytes[from..from + size].to_vec())
            }
            Data::File(file) => {
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut buf = vec![0u8; size];
                file.seek(SeekFrom::Start(start))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|cause| self.error(Some(start), ErrorKind::Io { cause }))?;
                Ok(buf)
            }
        }
    }

    /// The tensor named `name` as `f32`: its dimensions (innermost first, as in the file) and
    /// its values, dequantised.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let info = self.find(name)?;
        if !quant::can_dequantize(info.ty) {
            return Err(self.error(
                Some(self.data_start + info.offset),
                ErrorKind::CannotDequantize {
                    tensor: info.name.clone(),
                    ty: info.ty,
                },
            ));
        }
        let dims = (info.dims.iter())
            .map(|&d| usize::try_from(d).map_err(|_| self.too_large(info)))
            .collect::<Result<_, _>>()?;
        let bytes = self.read_data(info)?;
        let values = quant::dequantize(info.ty, &bytes)
            .expect("a tensor's size is a whole number of blocks of a type dequantised here");
        Ok((dims, values))
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
}

fn join(dims: &[u64]) -> String {
    dims.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the header says, before the data source is attached.
struct Header {
    version: u32,
    metadata: Vec<Entry>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl Header {
    fn into_gguf(self, origin: String, file_len: u64, data: Data) -> Gguf {
        Gguf {
            origin,
            version: self.version,
            metadata: self.metadata,
            keys: self.keys,
            tensors: self.tensors,
            names: self.names,
            alignment: self.alignment,
            data_start: self.data_start,
            file_len,
            data,
        }
    }
}

/// A reader that knows where it is and how much is left, and checks every declared length
/// against what is left before allocating for it.
struct Parser<'o, R> {
    r: R,
    pos: u64,
    len: u64,
    origin: &'o str,
}

impl<R: Read> Parser<'_, R> {
    fn err(&self, at: u64, kind: ErrorKind) -> Error {
        Error::new(self.origin, Some(at), kind)
    }

    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self, needed: u64, what: impl FnOnce() -> String) -> Error {
        let (what, left) = (what(), self.left());
        self.err(self.pos, ErrorKind::Truncated { what, needed, left })
    }

    /// Fills `buf`, or refuses naming `what` when the file ends first.
    fn read_into(&mut self, buf: &mut [u8], what: impl FnOnce() -> String) -> Result<(), Error> {
        let n = buf.len() as u64;
        if n > self.left() {
            return Err(self.truncated(n, what));
        }
        self.r
            .read_exact(buf)
            .map_err(|cause| self.err(self.pos, ErrorKind::Io { cause }))?;
        self.pos += n;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N], Error> {
        let mut buf = [0u8; N];
        self.read_into(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, Error> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, Error> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// A count that needs at least `unit` bytes per item: refused when the rest of the file
    /// cannot hold it, so that it can be allocated for.
    fn count(&mut self, unit: u64, what: impl Fn() -> String) -> Result<usize, Error> {
        let at = self.pos;
        let value = self.u64(&what)?;
        let left = self.left();
        match value.checked_mul(unit) {
            Some(bytes) if bytes <= left => Ok(value as usize),
            _ => Err(self.err(
                at,
                ErrorKind::TooLarge {
                    what: what(),
                    value,
                    left,
                },
            )),
        }
    }

    /// `n` bytes, `n` checked against what is left before the buffer is allocated.
    fn vec(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<Vec<u8>, Error> {
        if n as u64 > self.left() {
            return Err(self.truncated(n as u64, what));
        }
        let mut buf = vec![0u8; n];
        self.read_into(&mut buf, what)?;
        Ok(buf)
    }

    /// A string: a `u64` length and that many bytes of UTF-8; `what` names it (`the name of
    /// tensor 3`).
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, Error> {
        let n = self.count(1, || format!("the string length of {}", what()))?;
        let at = self.pos;
        let bytes = self.vec(n, &what)?;
        String::from_utf8(bytes).map_err(|_| self.err(at, ErrorKind::InvalidUtf8 { what: what() }))
    }

    fn value_type(&mut self, key: &str, what: &str) -> Result<ValueType, Error> {
        let at = self.pos;
        let id = self.u32(|| format!("the {what} of metadata key {key}"))?;
        ValueType::from_id(id).ok_or_else(|| {
            self.err(
                at,
                ErrorKind::UnknownValueType {
                    key: key.to_string(),
                    value_type: id,
                },
            )
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, Error> {
        let at = self.pos;
        match self.fixed::<1>(|| format!("the value of metadata key {key}"))? {
            [0] => Ok(false),
            [1] => Ok(true),
            [value] => Err(self.err(
                at,
                ErrorKind::InvalidBool {
                    key: key.to_string(),
                    value,
                },
            )),
        }
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, Error> {
        let what = || format!("the value of metadata key {key}");
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.fixed(what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.fixed(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.fixed(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.fixed(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.fixed(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.fixed(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.fixed(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.fixed(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.fixed(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.fixed(what)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => Value::Array(self.array(key, 1)?),
        })
    }

    /// An array (its element type, count and elements) at nesting `depth` (1 for a value).
    fn array(&mut self, key: &str, depth: usize) -> Result<Array, Error> {
        let type_at = self.pos;
        let ty = self.value_type(key, "array element type")?;
        let n = self.count(ty.min_encoded_size(), || {
            format!("the array length of metadata key {key}")
        })?;
        let what = || format!("the array of metadata key {key}");
        macro_rules! numbers {
            ($t:ty, $variant:ident) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                let bytes = self.vec(n * SIZE, what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(SIZE)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("SIZE bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.vec(n, what)?),
            ValueType::I8 => numbers!(i8, I8),
            ValueType::U16 => numbers!(u16, U16),
            ValueType::I16 => numbers!(i16, I16),
            ValueType::U32 => numbers!(u32, U32),
            ValueType::I32 => numbers!(i32, I32),
            ValueType::F32 => numbers!(f32, F32),
            ValueType::U64 => numbers!(u64, U64),
            ValueType::I64 => numbers!(i64, I64),
            ValueType::F64 => numbers!(f64, F64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(|| format!("a string of metadata key {key}"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    let (key, limit) = (key.to_string(), MAX_ARRAY_DEPTH);
                    return Err(self.err(type_at, ErrorKind::NestedTooDeep { key, limit }));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    fn tensor_info(&mut self, index: usize) -> Result<TensorInfo, Error> {
        let name = self.string(|| format!("the name of tensor {index}"))?;
        let dims_at = self.pos;
        let n_dims = self.u32(|| format!("the number of dimensions of tensor {name}"))?;
        if n_dims > MAX_DIMS {
            let tensor = name.clone();
            return Err(self.err(dims_at, ErrorKind::TooManyDims { tensor, n_dims }));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(|| format!("the dimensions of tensor {name}"))?);
        }
        let type_at = self.pos;
        let type_id = self.u32(|| format!("the type of tensor {name}"))?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            let tensor = name.clone();
            return Err(self.err(type_at, ErrorKind::UnknownTensorType { tensor, type_id }));
        };
        let offset_at = self.pos;
        let offset = self.u64(|| format!("the data offset of tensor {name}"))?;

        let row = dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(ty.block_size() as u64) {
            let tensor = name.clone();
            return Err(self.err(dims_at, ErrorKind::RowNotBlocks { tensor, ty, row }));
        }
        // ggml counts values in int64_t: refuse what does not fit there.
        let size = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .and_then(|n| (n / ty.block_size() as u64).checked_mul(ty.type_size() as u64));
        let Some(size) = size else {
            let (tensor, dims) = (name.clone(), join(&dims));
            return Err(self.err(dims_at, ErrorKind::TensorTooLarge { tensor, dims }));
        };
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
            offset_at,
        })
    }
}

fn parse_header<R: Read>(r: R, len: u64, origin: &str) -> Result<Header, Error> {
    let mut p = Parser {
        r,
        pos: 0,
        len,
        origin,
    };
    let found = p.fixed::<4>(|| "the magic".to_string())?;
    if &found != b"GGUF" {
        return Err(p.err(0, ErrorKind::BadMagic { found }));
    }
    let version = p.u32(|| "the version".to_string())?;
    if version != 2 && version != 3 {
        return Err(p.err(4, ErrorKind::UnsupportedVersion { version }));
    }
    let n_tensors = p.count(MIN_TENSOR_INFO, || "the tensor count".to_string())?;
    let n_metadata = p.count(MIN_METADATA_ENTRY, || "the metadata count".to_string())?;

    let mut metadata = Vec::with_capacity(n_metadata);
    let mut keys = HashMap::with_capacity(n_metadata);
    for i in 0..n_metadata {
        let key_at = p.pos;
        let key = p.string(|| format!("the name of metadata key {i}"))?;
        if keys.contains_key(&key) {
            return Err(p.err(key_at, ErrorKind::DuplicateKey { key }));
        }
        let at = p.pos;
        let ty = p.value_type(&key, "value type")?;
        let value = p.value(ty, &key)?;
        keys.insert(key.clone(), metadata.len());
        metadata.push(Entry { key, value, at });
    }

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let at = p.pos;
        let info = p.tensor_info(i)?;
        if names.contains_key(&info.name) {
            let name = info.name;
            return Err(p.err(at, ErrorKind::DuplicateTensor { name }));
        }
        names.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    let alignment = match keys.get("general.alignment").map(|&i| &metadata[i]) {
        None => DEFAULT_ALIGNMENT,
        Some(Entry {
            value: Value::U32(a),
            ..
        }) if a.is_power_of_two() => u64::from(*a),
        Some(e) => {
            let found = match &e.value {
                Value::U32(a) => format!("u32 {a}"),
                other => other.type_description(),
            };
            return Err(p.err(e.at, ErrorKind::BadAlignment { found }));
        }
    };
    // The header is shorter than the file, and the alignment at most 2^31: no overflow.
    let data_start = p.pos.div_ceil(alignment) * alignment;
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            let (tensor, offset) = (t.name.clone(), t.offset);
            let kind = ErrorKind::Misaligned {
                tensor,
                offset,
                alignment,
            };
            return Err(p.err(t.offset_at, kind));
        }
        let end = data_start.saturating_add(t.offset).saturating_add(t.size);
        if end > len {
            let kind = ErrorKind::OutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                end,
                file_len: len,
            };
            return Err(p.err(t.offset_at, kind));
        }
    }
    Ok(Header {
        version,
        metadata,
        keys,
        tensors,
        names,
        alignment,
        data_start,
    })
}
