//! The pure kernels: loops on `f32` slices, with no tensor type in sight.
//!
//! - [`sgemm`]: the packed single-precision matrix product (AVX-512, AVX2 + FMA and portable
//!   micro-kernels, chosen at run time), the kernel behind every product below;
//! - `batched`: the batches of a broadcasting `[..., m, k] x [..., k, n]` product over strided
//!   storage, and the batch sums of a broadcast operand's gradient;
//! - `rows`: element-wise kernels over contiguous rows (softmaxes, normalisations,
//!   activations, and their gradients);
//! - `attention`: multi-head attention forward and backward over strided query, key, value,
//!   mask and bias storage;
//! - `rope`: the rotary position embedding of one row, over strided input;
//! - `pool`: the worker team every parallel section above runs on.
//!
//! Determinism: every value is computed by one thread in a fixed order whatever the thread
//! count, so results are bit-identical for any number of threads.

// Without the `flex` backend nothing calls the kernels but sgemm (they stay compiled and tested).
#![cfg_attr(not(feature = "flex"), allow(dead_code))]

pub(crate) mod attention;
pub(crate) mod batched;
pub(crate) mod pool;
pub(crate) mod rope;
pub(crate) mod rows;
pub mod sgemm;

/// A vector of `len` floats made by `fill`, which must write every element before it reads
/// it: the kernels' outputs start uninitialised rather than zeroed (zeroing them was 6% of a
/// training step, in `memset`). `f32` has no invalid bit patterns, and nothing is read before
/// it is written.
pub(crate) fn written(len: usize, fill: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut data = Vec::<f32>::with_capacity(len);
    // SAFETY: the capacity is `len` floats, properly aligned; `fill` writes every one of them
    // before reading it (the contract above), and the length is set only after that.
    let out = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr(), len) };
    fill(out);
    // SAFETY: all `len` elements were written by `fill`.
    unsafe { data.set_len(len) };
    data
}
