//! The glue between burn's `flex` CPU backend and the kernels in [`crate::cpu`]: recognising
//! `flex` float32 tensors (plain, or tracked by burn's autodiff with either checkpointing
//! strategy), reading their storage as slices, wrapping the kernels' outputs as tensors, and
//! registering each fused operation's backward step with the autodiff graph.
//!
//! Every function here returns `None` when its inputs are not `flex` float32 tensors; the public
//! operations ([`crate::ops`], [`crate::attention`], [`crate::rope`]) then fall back to burn's
//! own operations.
//!
//! - `product`: matrix products and their gradients;
//! - `fused`: softmaxes and activations (one input, one output);
//! - `norm`: layer and RMS normalisation with scale and shift;
//! - `swiglu`: the gated activation of LLaMA's feed-forward layer;
//! - `attention`: multi-head attention;
//! - `rope`: rotary position embeddings.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::Flex;
use burn::tensor::{Bool, Bytes, DType, Shape, Tensor};

pub(crate) mod attention;
pub(crate) mod fused;
pub(crate) mod norm;
pub(crate) mod product;
pub(crate) mod rope;
pub(crate) mod swiglu;

#[cfg(test)]
thread_local! {
    /// Fused element-wise, normalisation and SwiGLU forward passes on this thread (the tests
    /// check the kernel path is taken).
    pub(crate) static FUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A contiguous float32 tensor owning `data`. (`FlexTensor::zeros` would allocate bytes and
/// then copy them into an aligned buffer.)
pub(crate) fn f32_tensor(shape: Shape, data: Vec<f32>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

pub(crate) fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
}

/// The tensor itself, or a contiguous copy when a stride is negative (the kernel takes
/// non-negative strides).
pub(crate) fn non_negative(t: &FlexTensor) -> FlexTensor {
    if t.layout().strides().iter().any(|&s| s < 0) {
        t.to_contiguous()
    } else {
        t.clone()
    }
}

/// A boolean mask as a plain `flex` float32 tensor, 1 where true (masks carry no gradient:
/// one made on an autodiff device is unwrapped). `None` on another backend.
pub(crate) fn mask_as_floats<const D: usize>(mask: &Tensor<D, Bool>) -> Option<FlexTensor> {
    let mask = mask.clone().float();
    let mask = match mask.clone().try_into_primitive::<Flex>() {
        Ok(m) => m,
        Err(_) if mask.device().is_autodiff() => mask.inner().try_into_primitive::<Flex>().ok()?,
        Err(_) => return None,
    };
    is_f32(&mask).then_some(mask)
}

/// The tensor itself when contiguous from its storage's first element, else a contiguous copy.
pub(crate) fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t.clone()
    } else {
        t.to_contiguous()
    }
}
