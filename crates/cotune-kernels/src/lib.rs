//! cotune's CPU kernels, and the tensor operations built on them.
//!
//! A training step at the plugins' sizes is mostly matrix products, softmaxes, normalisations,
//! activations and attention. burn's CPU backend (`flex`) composes most of these from several
//! operations, each with its own pass over memory and its own backward step, and runs its
//! products well below the machine's speed. This crate replaces them with fused kernels that
//! give the same values (within rounding) and the same gradients.
//!
//! What is where:
//!
//! - [`cpu`]: the kernels themselves, pure loops on `f32` slices with no burn type in them: the
//!   packed matrix product [`cpu::sgemm`] (AVX-512, AVX2 + FMA and portable micro-kernels from
//!   one generic family, chosen at run time), the row kernels (softmax, log-softmax, masked
//!   softmax, layer and RMS normalisation, GELU, SiLU, SwiGLU, and their gradients), attention,
//!   the rotary embedding, and the worker team they run on;
//! - `flex` (with the `flex` feature): the glue to burn. It recognises `flex` float32 tensors,
//!   plain or tracked by burn's autodiff, hands their storage to the kernels, wraps the results
//!   as tensors, and registers each fused operation's backward step with the autodiff graph;
//! - [`ops`], [`attention`], [`rope`]: the operations a model calls, on burn tensors. Each runs
//!   its fused kernel when its inputs are `flex` float32 tensors and otherwise falls back to the
//!   same formula composed from burn's operations (the `*_composed` functions are those
//!   fallbacks, and the references the kernels are tested against), so they work on every
//!   backend.
//!
//! Plugin authors reach all of this through the SDK, which re-exports [`ops`], [`attention`],
//! [`rope`] and [`cpu::sgemm`] as `cotune_sdk::ops`, `cotune_sdk::attention`,
//! `cotune_sdk::rope` and `cotune_sdk::sgemm`.
//!
//! Determinism: every value is computed by one thread in an order that does not depend on the
//! number of threads, so results are bit-identical for any thread count.

pub mod attention;
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;
pub mod ops;
pub mod rope;
#[cfg(all(test, feature = "flex"))]
mod testing;
