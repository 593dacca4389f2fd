//! Rotary position embeddings of `flex` tensors in one operation with one backward step (the
//! same rotation with the transposed table), the rows rotated by [`crate::cpu::rope`].

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bytes, DType, Tensor};

use super::{f32_tensor, is_f32};
use crate::cpu::rope;

/// The fused rotation when `x` is a `flex` float32 tensor (plain, or tracked by autodiff)
/// and the tables are `flex` float32 tensors, `None` otherwise.
pub(crate) fn rotary(x: &Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Option<Tensor<4>> {
    let (cos, sin) = (table(cos)?, table(sin)?);
    if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
        if !is_f32(&t) {
            return None;
        }
        return Some(Tensor::from_primitive::<Flex>(rotate(&t, &cos, &sin)));
    }
    tracked::<NoCheckpointing>(x, &cos, &sin)
        .or_else(|| tracked::<BalancedCheckpointing>(x, &cos, &sin))
}

/// A table as a plain contiguous `flex` float32 tensor starting at its storage's first
/// element (tables built on an autodiff device come wrapped; they take no gradient anyway).
fn table(t: &Tensor<2>) -> Option<FlexTensor> {
    let t = t.clone().inner().try_into_primitive::<Flex>().ok()?;
    if !is_f32(&t) {
        return None;
    }
    Some(if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    })
}

fn tracked<C>(x: &Tensor<4>, cos: &FlexTensor, sin: &FlexTensor) -> Option<Tensor<4>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let t = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    if !is_f32(t.primitive()) {
        return None;
    }
    let out = match RotaryBackward
        .prepare::<C>([t.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = rotate(t.primitive(), cos, sin);
            prep.finish((cos.clone(), transposed_sin(sin)), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(rotate(t.primitive(), cos, sin)),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
}

/// The sine table of the transposed rotation ([`rope::transposed_sin`]).
fn transposed_sin(sin: &FlexTensor) -> FlexTensor {
    let shape = sin.layout().shape().clone();
    let dh = shape[1];
    let s = sin.storage::<f32>();
    f32_tensor(
        shape.clone(),
        rope::transposed_sin(&s[..shape.num_elements()], dh),
    )
}

#[derive(Debug)]
struct RotaryBackward;

impl Backward<Flex, 1> for RotaryBackward {
    /// The cosine table and the transposed rotation's sine table ([`transposed_sin`]).
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (cos, sin) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            rotate(&grad, &cos, &sin)
        });
    }
}

#[cfg(test)]
thread_local! {
    /// Fused rotations (forward or backward) run on this thread: the tests check that the
    /// fused path and its backward step are taken.
    pub(crate) static ROTATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `x [b, h, n, dh]` rotated by the tables `[n, dh]`. `x` is read through its strides; a
/// copy is made only when its rows are not runs of adjacent values (a negative stride, or a
/// last-dimension stride other than 1: neither occurs for heads split by `swap_dims`).
///
/// The output is laid out in memory as `[b, n, h, dh]` (the layout of the projection the
/// heads were split from) and seen as `[b, h, n, dh]`: attention reads it through its
/// strides, and in the backward pass the gradient goes back through `swap_dims` and
/// `reshape` to the projection without a copy.
fn rotate(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> FlexTensor {
    #[cfg(test)]
    ROTATIONS.with(|c| c.set(c.get() + 1));
    let shape = x.layout().shape().clone();
    let [b, h, n, dh] = [shape[0], shape[1], shape[2], shape[3]];
    let readable = |t: &FlexTensor| {
        let strides = t.layout().strides();
        strides.iter().all(|&s| s >= 0) && (dh <= 1 || strides[3] == 1)
    };
    let x = if readable(x) {
        x.clone()
    } else {
        x.to_contiguous()
    };
    let start = x.layout().start_offset();
    let st = x.layout().strides();
    let s = [st[0], st[1], st[2], st[3]].map(|s| s as usize);
    let (cos, sin) = (cos.storage::<f32>(), sin.storage::<f32>());
    let out = rope::rotate(x.storage::<f32>(), start, s, [b, h, n, dh], cos, sin);
    let strides = [n * h * dh, dh, h * dh, 1].map(|s| s as isize).to_vec();
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::new(shape, strides, 0),
        DType::F32,
    )
}
