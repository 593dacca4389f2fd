//! The fused one-input operations on `flex` tensors: softmax, the masked softmax,
//! log-softmax, GELU (tanh form) and SiLU, each one operation with one backward step.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bool, Tensor};

#[cfg(test)]
use super::FUSED;
use super::{contiguous, f32_tensor, is_f32, mask_as_floats};
use crate::cpu::rows::{self, for_rows, RowFn};
use crate::cpu::written;

/// The fused element-wise operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Softmax,
    /// Softmax of the scores with a second input, 1 where a position is left out.
    MaskedSoftmax,
    LogSoftmax,
    GeluNew,
    Silu,
}

impl Kind {
    /// Whether the backward step needs the output (else the input).
    fn keeps_output(self) -> bool {
        matches!(self, Kind::Softmax | Kind::MaskedSoftmax | Kind::LogSoftmax)
    }
}

/// A fused element-wise operation on a `flex` float32 tensor, `None` on anything else.
pub(crate) fn elementwise<const D: usize>(x: &Tensor<D>, kind: Kind) -> Option<Tensor<D>> {
    elementwise_with(x, kind, None)
}

/// [`Kind::MaskedSoftmax`]: the mask (already expanded to the scores' shape) becomes a
/// plain float32 input, 1 where left out.
pub(crate) fn masked_softmax<const D: usize>(
    scores: &Tensor<D>,
    mask: &Tensor<D, Bool>,
) -> Option<Tensor<D>> {
    let mask = mask_as_floats(mask)?;
    elementwise_with(scores, Kind::MaskedSoftmax, Some(contiguous(&mask)))
}

fn elementwise_with<const D: usize>(
    x: &Tensor<D>,
    kind: Kind,
    extra: Option<FlexTensor>,
) -> Option<Tensor<D>> {
    if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
        if !is_f32(&t) {
            return None;
        }
        let y = forward(&t, kind, extra.as_ref());
        return Some(Tensor::from_primitive::<Flex>(y));
    }
    elementwise_tracked::<NoCheckpointing, D>(x, kind, extra.clone())
        .or_else(|| elementwise_tracked::<BalancedCheckpointing, D>(x, kind, extra))
}

fn elementwise_tracked<C, const D: usize>(
    x: &Tensor<D>,
    kind: Kind,
    extra: Option<FlexTensor>,
) -> Option<Tensor<D>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let t = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    if !is_f32(t.primitive()) {
        return None;
    }
    let out = match (ElementwiseBackward { kind })
        .prepare::<C>([t.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = forward(t.primitive(), kind, extra.as_ref());
            let kept = if kind.keeps_output() {
                y.clone()
            } else {
                t.primitive().clone()
            };
            prep.finish((kept, extra), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(t.primitive(), kind, extra.as_ref())),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
}

#[derive(Debug)]
struct ElementwiseBackward {
    kind: Kind,
}

impl Backward<Flex, 1> for ElementwiseBackward {
    /// The output (softmaxes) or the input (activations), and the extra input if any.
    type State = (FlexTensor, Option<FlexTensor>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (kept, extra) = ops.state;
        let kind = self.kind;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            backward(&kept, &grad, kind, extra.as_ref())
        });
    }
}

fn forward(x: &FlexTensor, kind: Kind, extra: Option<&FlexTensor>) -> FlexTensor {
    #[cfg(test)]
    FUSED.with(|c| c.set(c.get() + 1));
    let x = contiguous(x);
    let shape = x.layout().shape().clone();
    let width = shape[shape.num_dims() - 1];
    let mut inputs = vec![x.storage::<f32>()];
    inputs.extend(extra.map(|e| e.storage::<f32>()));
    let f: &RowFn = match kind {
        Kind::Softmax => &|i, o| rows::softmax(i[0], o, width, false),
        Kind::MaskedSoftmax => &|i, o| rows::masked_softmax(i[0], i[1], o, width),
        Kind::LogSoftmax => &|i, o| rows::softmax(i[0], o, width, true),
        Kind::GeluNew => &|i, o| rows::gelu_new(i[0], o),
        Kind::Silu => &|i, o| rows::silu(i[0], o),
    };
    let out = written(shape.num_elements(), |out| {
        for_rows(&inputs, out, width.max(1), f)
    });
    f32_tensor(shape, out)
}

fn backward(
    kept: &FlexTensor,
    grad: &FlexTensor,
    kind: Kind,
    extra: Option<&FlexTensor>,
) -> FlexTensor {
    let (kept, grad) = (contiguous(kept), contiguous(grad));
    let shape = kept.layout().shape().clone();
    let width = shape[shape.num_dims() - 1];
    let f: &RowFn = match kind {
        Kind::Softmax => &|i, o| rows::softmax_backward(i[0], i[1], o, width, false),
        Kind::MaskedSoftmax => &|i, o| rows::masked_softmax_backward(i[0], i[1], i[2], o, width),
        Kind::LogSoftmax => &|i, o| rows::softmax_backward(i[0], i[1], o, width, true),
        Kind::GeluNew => &|i, o| rows::gelu_new_backward(i[0], i[1], o),
        Kind::Silu => &|i, o| rows::silu_backward(i[0], i[1], o),
    };
    let mut inputs = vec![kept.storage::<f32>(), grad.storage::<f32>()];
    inputs.extend(extra.map(|e| e.storage::<f32>()));
    let out = written(shape.num_elements(), |out| {
        for_rows(&inputs, out, width.max(1), f)
    });
    f32_tensor(shape, out)
}
