//! Matrix products of `flex` tensors through [`sgemm`](crate::cpu::sgemm::sgemm), with their
//! backward step: both gradients are products through the same kernel, a broadcast operand's
//! summed back over the batches it was broadcast to.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Shape, Tensor};

use super::{f32_tensor, is_f32, non_negative};
use crate::cpu::batched::{batch_offsets, contiguous_offsets, run, Operand};
use crate::cpu::written;

#[cfg(test)]
thread_local! {
    /// Products computed here on this thread (the tests check the kernel path is taken).
    pub(crate) static PRODUCTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Our product when both operands are `flex` float32 tensors (both plain or both tracked by
/// autodiff with the same checkpointing), `None` otherwise.
pub(crate) fn matmul<const D: usize>(lhs: &Tensor<D>, rhs: &Tensor<D>) -> Option<Tensor<D>> {
    if D < 2 || plan(&lhs.dims(), &rhs.dims()).is_none() {
        return None;
    }
    if let (Ok(a), Ok(b)) = (
        lhs.clone().try_into_primitive::<Flex>(),
        rhs.clone().try_into_primitive::<Flex>(),
    ) {
        return product(&a, &b).map(Tensor::from_primitive::<Flex>);
    }
    tracked::<NoCheckpointing, D>(lhs, rhs)
        .or_else(|| tracked::<BalancedCheckpointing, D>(lhs, rhs))
}

fn tracked<C, const D: usize>(lhs: &Tensor<D>, rhs: &Tensor<D>) -> Option<Tensor<D>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let a = lhs.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let b = rhs.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    if !(is_f32(a.primitive()) && is_f32(b.primitive())) {
        return None;
    }
    let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
    let out = match MatmulBackward
        .prepare::<C>([a.node(), b.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            // Each operand is kept only when the other one needs a gradient.
            let a_state = b_tracked.then(|| prep.checkpoint(&a));
            let b_state = a_tracked.then(|| prep.checkpoint(&b));
            let value = product(a.primitive(), b.primitive())?;
            let dims = |t: &FlexTensor| t.layout().shape().to_vec();
            prep.finish(
                (a_state, b_state, dims(a.primitive()), dims(b.primitive())),
                value,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(product(a.primitive(), b.primitive())?),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
}

#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    /// The kept operands and the operands' shapes (a broadcast operand's gradient is
    /// summed back to its shape).
    type State = (Option<NodeId>, Option<NodeId>, Vec<usize>, Vec<usize>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (a_id, b_id, a_dims, b_dims) = ops.state;
        let a: Option<FlexTensor> = a_id.map(|id| checkpointer.retrieve_node_output(id));
        let b: Option<FlexTensor> = b_id.map(|id| checkpointer.retrieve_node_output(id));
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let b = b.expect("the right operand is kept when the left needs a gradient");
                grad_lhs(&grad, &b, &a_dims)
            },
            |grad| {
                let a = a.expect("the left operand is kept when the right needs a gradient");
                grad_rhs(&a, &grad, &b_dims)
            },
        );
    }
}

/// The output's leading dimensions when `lhs [.., m, k]` and `rhs [.., k, n]` multiply.
fn plan(lhs: &[usize], rhs: &[usize]) -> Option<Vec<usize>> {
    let d = lhs.len();
    if d < 2 || rhs.len() != d || lhs[d - 1] != rhs[d - 2] {
        return None;
    }
    lhs[..d - 2]
        .iter()
        .zip(&rhs[..d - 2])
        .map(|(&l, &r)| match (l, r) {
            _ if l == r => Some(l),
            (1, r) => Some(r),
            (l, 1) => Some(l),
            _ => None,
        })
        .collect()
}

/// The matrices of `t` (its last two dimensions, transposed when asked) over the leading
/// dims `over`; `t`'s strides must be non-negative (see [`non_negative`]).
fn operand<'a>(t: &'a FlexTensor, transposed: bool, over: &[usize]) -> (usize, usize, Operand<'a>) {
    let dims = t.layout().shape().to_vec();
    let strides: Vec<usize> = t.layout().strides().iter().map(|&s| s as usize).collect();
    let d = dims.len();
    let (mut rows, mut cols) = (dims[d - 2], dims[d - 1]);
    let (mut rs, mut cs) = (strides[d - 2], strides[d - 1]);
    if transposed {
        (rows, cols, rs, cs) = (cols, rows, cs, rs);
    }
    let offsets = batch_offsets(
        t.layout().start_offset(),
        &dims[..d - 2],
        &strides[..d - 2],
        over,
    );
    let data = t.storage::<f32>();
    (
        rows,
        cols,
        Operand {
            data,
            rs,
            cs,
            offsets,
        },
    )
}

/// `Σ a · b` of the matrices of `a` and `b` (each transposed when asked) over the leading
/// dims `over`, into a contiguous tensor with leading dims `keep`: equal to `over`, or 1
/// where the batches are summed (the gradient of a broadcast operand).
fn batched_product(
    a: &FlexTensor,
    a_transposed: bool,
    b: &FlexTensor,
    b_transposed: bool,
    over: &[usize],
    keep: &[usize],
) -> FlexTensor {
    let (a, b) = (non_negative(a), non_negative(b));
    let (m, k, a) = operand(&a, a_transposed, over);
    let (_, n, b) = operand(&b, b_transposed, over);
    let mut dims = keep.to_vec();
    dims.extend([m, n]);
    let shape = Shape::from(dims);
    let c_offsets = contiguous_offsets(keep, over, m * n);
    let out = written(shape.num_elements(), |out| {
        run(m, n, k, &a, &b, out, &c_offsets, keep != over)
    });
    f32_tensor(shape, out)
}

/// The forward product of two tensors, `None` when the shapes or dtypes do not fit.
fn product(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
    if !(is_f32(lhs) && is_f32(rhs)) {
        return None;
    }
    #[cfg(test)]
    PRODUCTS.with(|c| c.set(c.get() + 1));
    let over = plan(lhs.layout().shape(), rhs.layout().shape())?;
    Some(batched_product(lhs, false, rhs, false, &over, &over))
}

/// `d lhs = d out · rhsᵀ`, summed over the leading dimensions where `lhs` was broadcast.
fn grad_lhs(grad: &FlexTensor, rhs: &FlexTensor, lhs_dims: &[usize]) -> FlexTensor {
    let gd = grad.layout().shape();
    let over = &gd[..gd.num_dims() - 2];
    batched_product(
        grad,
        false,
        rhs,
        true,
        over,
        &lhs_dims[..lhs_dims.len() - 2],
    )
}

/// `d rhs = lhsᵀ · d out`, summed over the leading dimensions where `rhs` was broadcast.
fn grad_rhs(lhs: &FlexTensor, grad: &FlexTensor, rhs_dims: &[usize]) -> FlexTensor {
    let gd = grad.layout().shape();
    let over = &gd[..gd.num_dims() - 2];
    batched_product(
        lhs,
        true,
        grad,
        false,
        over,
        &rhs_dims[..rhs_dims.len() - 2],
    )
}
