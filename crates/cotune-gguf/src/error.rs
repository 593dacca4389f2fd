//! The reader's and the writer's errors. A reader's error names the file (`<bytes>` for a
//! buffer) and the byte offset where the fault lies; its kind names the thing and the value.

use crate::types::GgmlType;

/// An error reading a GGUF file: where (the file and the byte offset) and what.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}: {kind}", at(.offset))]
pub struct Error {
    origin: String,
    offset: Option<u64>,
    kind: ErrorKind,
}

fn at(offset: &Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!(" at byte {o}"))
}

impl Error {
    pub(crate) fn new(origin: &str, offset: Option<u64>, kind: ErrorKind) -> Error {
        Error {
            origin: origin.to_string(),
            offset,
            kind,
        }
    }

    /// The file's path as given, or `<bytes>` for a buffer.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The byte offset in the file where the fault lies, when it lies at one place.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

/// What went wrong reading a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or read.
    #[error("cannot read: {cause}")]
    Io {
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic {} (expected \"GGUF\")", magic(.found))]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A version other than 2 and 3.
    #[error("GGUF version {version} is not supported (only versions 2 and 3 are){}", swapped(*.version))]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The file ends inside a field.
    #[error("the file ends inside {what}: {needed} bytes needed, {left} left")]
    Truncated {
        /// The field (`the tensor count`, `the value of metadata key general.name`).
        what: String,
        /// The bytes the field needs.
        needed: u64,
        /// The bytes left in the file.
        left: u64,
    },
    /// A declared count or length that the rest of the file cannot hold: refused before
    /// anything is allocated for it.
    #[error("{what} is {value}, more than the {left} bytes left can hold")]
    TooLarge {
        /// The count or length (`the tensor count`, `the string length of metadata key 3`).
        what: String,
        /// The value declared.
        value: u64,
        /// The bytes left in the file.
        left: u64,
    },
    /// A metadata value type number GGUF does not define.
    #[error("metadata key {key}: unknown value type {value_type}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type number found.
        value_type: u32,
    },
    /// A string that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The string (`a metadata key`, `a string of metadata key tokenizer.ggml.tokens`).
        what: String,
    },
    /// A bool byte other than 0 and 1.
    #[error("metadata key {key}: bool value {value} is neither 0 nor 1")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte found.
        value: u8,
    },
    /// Arrays of arrays nested deeper than the reader follows.
    #[error("metadata key {key}: arrays nested more than {limit} deep")]
    NestedTooDeep {
        /// The key.
        key: String,
        /// The deepest nesting read.
        limit: usize,
    },
    /// A metadata key that appears twice.
    #[error("metadata key {key} appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A tensor name that appears twice.
    #[error("tensor {name} appears twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// More dimensions than ggml's four.
    #[error("tensor {tensor}: {n_dims} dimensions (at most 4)")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The number found.
        n_dims: u32,
    },
    /// Dimensions whose product or byte size overflows.
    #[error("tensor {tensor}: dimensions ({dims}) are too large")]
    TensorTooLarge {
        /// The tensor.
        tensor: String,
        /// The dimensions, innermost first, joined with commas.
        dims: String,
    },
    /// A tensor type number ggml does not define.
    #[error("tensor {tensor}: unknown tensor type {type_id}")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The type number found.
        type_id: u32,
    },
    /// A row (the innermost dimension) that is not a whole number of blocks.
    #[error(
        "tensor {tensor}: a row of {row} values is not a whole number of {ty} blocks of {}",
        .ty.block_size()
    )]
    RowNotBlocks {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// The innermost dimension.
        row: u64,
    },
    /// `general.alignment` that is not a power of two `u32`.
    #[error("general.alignment must be a nonzero power of two u32, found {found}")]
    BadAlignment {
        /// The value found, with its type (`u32 48`).
        found: String,
    },
    /// A tensor data offset that is not a multiple of the alignment.
    #[error(
        "tensor {tensor}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        /// The tensor.
        tensor: String,
        /// The offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose bytes lie past the end of the file.
    #[error(
        "tensor {tensor}: data offset {offset} and size {size} reach byte {end}, past the end \
         of the file ({file_len} bytes)"
    )]
    OutOfBounds {
        /// The tensor.
        tensor: String,
        /// The offset, relative to the data section.
        offset: u64,
        /// The tensor's size in bytes.
        size: u64,
        /// The absolute end of its bytes (saturating).
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A metadata key that is not there.
    #[error("metadata key {key} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of another type than asked for.
    #[error("metadata key {key} is {found}, not {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for (`u32`, `array of string`).
        expected: String,
        /// The type found.
        found: String,
    },
    /// No tensor of that name.
    #[error("no tensor named {name}")]
    MissingTensor {
        /// The name asked for.
        name: String,
    },
    /// A tensor of a known type that this crate does not dequantise.
    #[error("tensor {tensor}: type {ty} ({}) cannot be dequantised here", .ty.id())]
    CannotDequantize {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
}

fn magic(found: &[u8; 4]) -> String {
    format!("\"{}\"", found.escape_ascii())
}

fn swapped(version: u32) -> &'static str {
    if (1..=3).contains(&version.swap_bytes()) {
        "; a big-endian file?"
    } else {
        ""
    }
}

/// An error building or writing a GGUF file with [`crate::GgufWriter`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A version other than 2 and 3.
    #[error("GGUF version {version} cannot be written (only versions 2 and 3)")]
    Version {
        /// The version asked for.
        version: u32,
    },
    /// Values that do not fill the dimensions.
    #[error("tensor {tensor}: {values} values do not fill dimensions ({dims})")]
    ValueCount {
        /// The tensor.
        tensor: String,
        /// The dimensions, innermost first.
        dims: String,
        /// The number of values given.
        values: usize,
    },
    /// Raw bytes that are not the size of the dimensions in the type.
    #[error("tensor {tensor}: {bytes} bytes given, {ty} dimensions ({dims}) take {expected}")]
    ByteCount {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// The dimensions, innermost first.
        dims: String,
        /// The bytes given.
        bytes: usize,
        /// The bytes the dimensions take.
        expected: u64,
    },
    /// A row (the innermost dimension) that is not a whole number of blocks.
    #[error(
        "tensor {tensor}: a row of {row} values is not a whole number of {ty} blocks of {}",
        .ty.block_size()
    )]
    RowNotBlocks {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// The innermost dimension.
        row: u64,
    },
    /// No dimensions, or more than four.
    #[error("tensor {tensor}: {n_dims} dimensions (1 to 4)")]
    Dims {
        /// The tensor.
        tensor: String,
        /// The number given.
        n_dims: usize,
    },
    /// A type this writer cannot quantise to (write its blocks with `add_raw_tensor`).
    #[error("tensor {tensor}: type {ty} cannot be quantised here (write its blocks raw)")]
    CannotQuantize {
        /// The tensor.
        tensor: String,
        /// The type asked for.
        ty: GgmlType,
    },
    /// A tensor name added twice.
    #[error("tensor {name} added twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// `general.alignment` that is not a power of two `u32`.
    #[error("general.alignment must be a nonzero power of two u32, found {found}")]
    BadAlignment {
        /// The value found, with its type.
        found: String,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {cause}")]
    Io {
        /// The path.
        path: String,
        /// The operating system's error.
        cause: std::io::Error,
    },
}
