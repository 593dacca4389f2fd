//! A reader (and a small writer) for GGUF, the model file format of llama.cpp, versions 2 and 3,
//! with dequantisation of the common tensor types to `f32`.
//!
//! The layouts follow llama.cpp: `ggml/include/gguf.h` and `ggml/src/gguf.cpp` for the file,
//! `ggml/src/ggml-common.h` (the `block_*` structs) and `ggml/src/ggml-quants.c`
//! (`dequantize_row_*`, `quantize_row_*_ref`) for the blocks, checked against gguf-py's
//! `constants.py` and `quants.py`.
//!
//! # The file
//!
//! Everything is little-endian. A file is a header, the metadata, the tensor infos, padding to
//! the alignment, and the data section:
//!
//! | field | type |
//! |---|---|
//! | magic | the four bytes `GGUF` |
//! | version | `u32`: 3 (current) or 2; version 1 used `u32` counts and lengths and is refused |
//! | tensor count | `u64` |
//! | metadata count | `u64` |
//! | metadata | that many key/value pairs |
//! | tensor infos | that many |
//! | padding | zeros up to a multiple of the alignment: the data section starts there |
//! | data | each tensor's bytes at its offset, padded to the alignment |
//!
//! A *string* is a `u64` byte length and that many bytes of UTF-8 (no terminator).
//!
//! A *metadata pair* is the key (a string, `general.architecture`), the value type (`u32`) and
//! the value. The value types ([`ValueType`]) are numbered: 0 `u8`, 1 `i8`, 2 `u16`, 3 `i16`,
//! 4 `u32`, 5 `i32`, 6 `f32`, 7 `bool` (one byte, 0 or 1), 8 string, 9 array, 10 `u64`,
//! 11 `i64`, 12 `f64`. An *array* is the element type (`u32`), the element count (`u64`) and
//! the elements, each written without its type; an array of arrays repeats that for each
//! element, so each inner array has its own element type and length.
//!
//! A *tensor info* is the name (a string), the number of dimensions (`u32`, at most 4), the
//! dimensions (`u64` each, innermost first: ggml's `ne`, so a matrix with rows of `n` values has
//! dims `[n, rows]`), the tensor type ([`GgmlType`], `u32`) and the offset of its bytes from
//! the start of the data section (`u64`, a multiple of the alignment).
//!
//! The *alignment* is metadata `general.alignment` (a `u32`, a power of two) or 32. The data
//! section starts at the first multiple of it after the tensor infos. A tensor's size is
//! `n_elements / block_size * type_size`; its innermost dimension is a whole number of blocks.
//!
//! # Blocks
//!
//! Each quantised type stores blocks of values; `d` and `m`/`dmin` are IEEE half floats unless
//! said otherwise, and nibble `q & 0xf` is a byte's low half.
//!
//! | type | values | bytes | layout | value |
//! |---|---|---|---|---|
//! | F32, F16, BF16 | 1 | 4, 2, 2 | the float | |
//! | Q4_0 | 32 | 18 | `d`, 16 bytes: value `j` in byte `j`'s low nibble, value `j + 16` in its high nibble | `(q - 8) * d` |
//! | Q4_1 | 32 | 20 | `d`, `m`, 16 nibble bytes as Q4_0 | `q * d + m` |
//! | Q5_0 | 32 | 22 | `d`, `qh` (`u32`: bit `j` is value `j`'s fifth bit), 16 nibble bytes | `(q - 16) * d` |
//! | Q5_1 | 32 | 24 | `d`, `m`, `qh`, 16 nibble bytes | `q * d + m` |
//! | Q8_0 | 32 | 34 | `d`, 32 `i8` | `q * d` |
//! | Q2_K | 256 | 84 | 16 scale bytes (low nibble scale, high nibble min, one per 16 values), 64 bytes of 2-bit values, `d`, `dmin` | `d * sc * q - dmin * m` |
//! | Q3_K | 256 | 110 | 32 bytes `hmask` (third bits), 64 bytes of 2-bit values, 12 bytes of 16 6-bit scales, `d` | `d * (sc - 32) * (q - 4 if the hmask bit is clear)` |
//! | Q4_K | 256 | 144 | `d`, `dmin`, 12 bytes of 8 6-bit scales and 8 6-bit mins, 128 nibble bytes | `d * sc * q - dmin * m` |
//! | Q5_K | 256 | 176 | `d`, `dmin`, 12 scale bytes, 32 bytes `qh` (fifth bits), 128 nibble bytes | `d * sc * q - dmin * m` |
//! | Q6_K | 256 | 210 | 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 `i8` scales, `d` | `d * sc * (q - 32)` |
//! | Q8_K | 256 | 292 | `d` (`f32`), 256 `i8`, 16 `i16` block sums | `d * q` |
//!
//! In the K-quants, each 256-value *super-block* has sub-blocks with their own scale (and min).
//! Q4_K and Q5_K: 8 sub-blocks of 32. Each group of 64 values uses 32 bytes of nibbles: its
//! first 32 values are the low nibbles, the next 32 the high ones. Scale and min `j` are 6-bit
//! numbers packed into the 12 bytes by `get_scale_min_k4` ([`quant::get_scale_min_k4`]): for
//! `j < 4`, the low 6 bits of bytes `j` (scale) and `j + 4` (min); for `j >= 4`, the low and
//! high nibbles of byte `j + 4` give their low 4 bits, and the top 2 bits of bytes `j - 4`
//! (scale) and `j` (min) their high 2 bits. Q5_K's fifth bit of value `i` is bit `i / 32` of
//! `qh[i % 32]`.
//! Q6_K: 16 sub-blocks of 16. Each half (128 values) uses 64 bytes of `ql` and 32 of `qh`:
//! within it, value `32 * k + l` (`k` in 0..4, `l` in 0..32) takes the low nibble (`k` 0, 1) or
//! the high nibble (`k` 2, 3) of `ql[l + 32 * (k % 2)]`, and bits `2k..2k + 2` of `qh[l]`.
//! Q2_K and Q3_K: each half (128 values) uses 32 bytes of 2-bit values: value `32 * k + l`
//! is bits `2k..2k + 2` of byte `l`; Q3_K's third bit of value `i` is bit `i / 32` of
//! `hmask[i % 32]`, and its scale `k` takes its low 4 bits from byte `k % 8` (the high nibble
//! when `k >= 8`) and its high 2 bits from bits `2 * (k / 4)` of byte `8 + k % 4`.
//!
//! # Errors
//!
//! Every error names the file (`<bytes>` for a buffer) and the byte offset at fault
//! ([`Error`]). Decoding never panics on outside bytes, and every declared count or length is
//! checked against the bytes left before anything is allocated for it.
//!
//! # Example
//!
//! ```
//! use cotune_gguf::{Gguf, GgmlType, GgufWriter};
//!
//! let mut w = GgufWriter::new();
//! w.set("general.architecture", "llama");
//! w.add_tensor("output.weight", &[32, 2], GgmlType::Q8_0, &[0.5; 64]).unwrap();
//! let file = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
//! assert_eq!(file.architecture().unwrap(), "llama");
//! let (dims, values) = file.tensor_f32("output.weight").unwrap();
//! assert_eq!(dims, [32, 2]);
//! assert!(values.iter().all(|&v| (v - 0.5).abs() < 1e-3));
//! ```

#![warn(missing_docs)]

mod error;
pub mod quant;
mod read;
mod types;
mod value;
mod write;

pub use error::{Error, ErrorKind, WriteError};
pub use read::{Gguf, TensorInfo, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS};
pub use types::{GgmlType, QK_K};
pub use value::{Array, Value, ValueType};
pub use write::GgufWriter;

/// The file name extension of GGUF files.
pub const EXTENSION: &str = "gguf";

/// Whether `path` is a GGUF file: a file named `*.gguf`, or any file that starts with the magic
/// bytes `GGUF` (so that a misnamed or damaged file is opened as one, and refused with what is
/// wrong with it).
pub fn is_gguf_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    if !path.is_file() {
        return false;
    }
    let named = (path.extension().and_then(|e| e.to_str()))
        .is_some_and(|e| e.eq_ignore_ascii_case(EXTENSION));
    named || {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"GGUF"
    }
}

/// The Hugging Face class llama.cpp's converter writes as `general.architecture`, for the
/// architectures cotune reads from GGUF files (`llama`: `LlamaForCausalLM`).
pub fn hf_class(architecture: &str) -> Option<&'static str> {
    match architecture {
        "llama" => Some("LlamaForCausalLM"),
        _ => None,
    }
}
