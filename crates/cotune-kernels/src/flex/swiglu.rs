//! SwiGLU (`silu(gate) * up`) of `flex` tensors in one operation with one backward step.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;

#[cfg(test)]
use super::FUSED;
use super::{contiguous, f32_tensor, is_f32};
use crate::cpu::rows::{self, for_rows, RowFn};
use crate::cpu::written;

/// [`crate::ops::swiglu`] on `flex` float32 tensors (both plain, or both tracked by autodiff with
/// the same checkpointing), `None` otherwise.
pub(crate) fn swiglu<const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>> {
    if let (Ok(a), Ok(b)) = (
        gate.clone().try_into_primitive::<Flex>(),
        up.clone().try_into_primitive::<Flex>(),
    ) {
        if !(is_f32(&a) && is_f32(&b)) {
            return None;
        }
        return Some(Tensor::from_primitive::<Flex>(swiglu_forward(&a, &b)));
    }
    swiglu_tracked::<NoCheckpointing, D>(gate, up)
        .or_else(|| swiglu_tracked::<BalancedCheckpointing, D>(gate, up))
}

fn swiglu_tracked<C, const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let a = gate
        .clone()
        .try_into_primitive::<Autodiff<Flex, C>>()
        .ok()?;
    let b = up.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    if !(is_f32(a.primitive()) && is_f32(b.primitive())) {
        return None;
    }
    let out = match SwigluBackward
        .prepare::<C>([a.node(), b.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (a, b) = (contiguous(a.primitive()), contiguous(b.primitive()));
            let y = swiglu_forward(&a, &b);
            prep.finish((a, b), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(swiglu_forward(a.primitive(), b.primitive())),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
}

fn swiglu_forward(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    #[cfg(test)]
    FUSED.with(|c| c.set(c.get() + 1));
    let (a, b) = (contiguous(a), contiguous(b));
    let shape = a.layout().shape().clone();
    let inputs = [a.storage::<f32>(), b.storage::<f32>()];
    let width = shape[shape.num_dims() - 1].max(1);
    let out = written(shape.num_elements(), |out| {
        for_rows(&inputs, out, width, &|i, o| rows::swiglu(i[0], i[1], o))
    });
    f32_tensor(shape, out)
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// The gate and up inputs, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (a, b) = ops.state;
        let shape = a.layout().shape().clone();
        let width = shape[shape.num_dims() - 1].max(1);
        let gradient = |grad: &FlexTensor, f: &RowFn| {
            let grad = contiguous(grad);
            let inputs = [
                a.storage::<f32>(),
                b.storage::<f32>(),
                grad.storage::<f32>(),
            ];
            let out = written(shape.num_elements(), |out| for_rows(&inputs, out, width, f));
            f32_tensor(shape.clone(), out)
        };
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                gradient(&grad, &|i, o| {
                    rows::swiglu_backward_gate(i[0], i[1], i[2], o)
                })
            },
            |grad| gradient(&grad, &|i, o| rows::silu_times(i[0], i[2], o)),
        );
    }
}
