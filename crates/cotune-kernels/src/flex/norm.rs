//! Layer and RMS normalisation of `flex` tensors, fused with their scale and shift: one
//! operation and one backward step, which also gives the scale and shift their gradients.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Shape, Tensor};

#[cfg(test)]
use super::FUSED;
use super::{contiguous, f32_tensor, is_f32};
use crate::cpu::rows::{self, for_rows};
use crate::cpu::written;

/// A normalisation with its scale (and shift) on `flex` float32 tensors, `None` otherwise.
pub(crate) fn affine_norm<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: Option<&Tensor<1>>,
    centre: bool,
    epsilon: f32,
) -> Option<Tensor<D>> {
    let width = x.dims()[D - 1];
    if gamma.dims()[0] != width || beta.is_some_and(|b| b.dims()[0] != width) {
        return None;
    }
    let norm = Norm { centre, epsilon };
    if let (Ok(x), Ok(gamma)) = (
        x.clone().try_into_primitive::<Flex>(),
        gamma.clone().try_into_primitive::<Flex>(),
    ) {
        let beta = match beta {
            Some(beta) => Some(beta.clone().try_into_primitive::<Flex>().ok()?),
            None => None,
        };
        if ![&x, &gamma].into_iter().chain(beta.as_ref()).all(is_f32) {
            return None;
        }
        let y = norm.forward(&x, &gamma, beta.as_ref());
        return Some(Tensor::from_primitive::<Flex>(y));
    }
    affine_norm_tracked::<NoCheckpointing, D>(x, gamma, beta, norm)
        .or_else(|| affine_norm_tracked::<BalancedCheckpointing, D>(x, gamma, beta, norm))
}

fn affine_norm_tracked<C, const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: Option<&Tensor<1>>,
    norm: Norm,
) -> Option<Tensor<D>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let x = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let gamma = gamma
        .clone()
        .try_into_primitive::<Autodiff<Flex, C>>()
        .ok()?;
    if !(is_f32(x.primitive()) && is_f32(gamma.primitive())) {
        return None;
    }
    Some(match beta {
        None => norm.record::<C, 2, D>(
            [x.node(), gamma.node()],
            x.primitive(),
            gamma.primitive(),
            None,
        ),
        Some(beta) => {
            let beta = beta
                .clone()
                .try_into_primitive::<Autodiff<Flex, C>>()
                .ok()?;
            if !is_f32(beta.primitive()) {
                return None;
            }
            norm.record::<C, 3, D>(
                [x.node(), gamma.node(), beta.node()],
                x.primitive(),
                gamma.primitive(),
                Some(beta.primitive()),
            )
        }
    })
}

/// Layer (centred) or root-mean-square normalisation with a learned scale and shift.
#[derive(Debug, Clone, Copy)]
struct Norm {
    centre: bool,
    epsilon: f32,
}

impl Norm {
    /// `norm(x) * gamma (+ beta)`.
    fn forward(self, x: &FlexTensor, gamma: &FlexTensor, beta: Option<&FlexTensor>) -> FlexTensor {
        #[cfg(test)]
        FUSED.with(|c| c.set(c.get() + 1));
        let (x, gamma) = (contiguous(x), contiguous(gamma));
        let beta = beta.map(contiguous);
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1].max(1);
        let (g, b) = (
            gamma.storage::<f32>(),
            beta.as_ref().map(|b| b.storage::<f32>()),
        );
        let Norm { centre, epsilon } = self;
        let out = written(shape.num_elements(), |out| {
            for_rows(&[x.storage::<f32>()], out, width, &|i, o| {
                rows::affine_norm(i[0], g, b.unwrap_or(&[]), o, width, centre, epsilon)
            })
        });
        f32_tensor(shape, out)
    }

    /// Runs the forward pass and records the backward step (inputs: x, gamma and, when `N`
    /// is 3, beta).
    fn record<C: CheckpointStrategy, const N: usize, const D: usize>(
        self,
        nodes: [burn::backend::autodiff::ops::NodeGuard; N],
        x: &FlexTensor,
        gamma: &FlexTensor,
        beta: Option<&FlexTensor>,
    ) -> Tensor<D>
    where
        NormBackward: Backward<Flex, N, State = (FlexTensor, FlexTensor)>,
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let out = match (NormBackward { norm: self })
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = self.forward(x, gamma, beta);
                prep.finish((contiguous(x), contiguous(gamma)), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(self.forward(x, gamma, beta)),
        };
        Tensor::from_primitive::<Autodiff<Flex, C>>(out)
    }
}

#[derive(Debug)]
struct NormBackward {
    norm: Norm,
}

impl<const N: usize> Backward<Flex, N> for NormBackward {
    /// The input and the scale, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (x, gamma) = ops.state;
        let Norm { centre, epsilon } = self.norm;
        let grad = contiguous(&grads.consume::<Flex>(&ops.node));
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1].max(1);
        let (xs, gs, gamma_s) = (
            x.storage::<f32>(),
            grad.storage::<f32>(),
            gamma.storage::<f32>(),
        );
        let mut parents = ops.parents.into_iter();
        if let Some(Some(node)) = parents.next() {
            let dx = written(shape.num_elements(), |dx| {
                for_rows(&[xs, gs], dx, width, &|i, o| {
                    rows::affine_norm_backward(i[0], i[1], gamma_s, o, width, centre, epsilon)
                })
            });
            grads.register::<Flex>(node.id, f32_tensor(shape.clone(), dx));
        }
        let (gamma_node, beta_node) = (parents.next().flatten(), parents.next().flatten());
        if gamma_node.is_some() || beta_node.is_some() {
            // Summed over the rows in order, on this thread: the same sums for any thread
            // count.
            let (mut dgamma, mut dbeta) = (vec![0.0f32; width], vec![0.0f32; width]);
            rows::affine_norm_params(xs, gs, &mut dgamma, &mut dbeta, width, centre, epsilon);
            let param = |v: Vec<f32>| f32_tensor(Shape::from(vec![width]), v);
            if let Some(node) = gamma_node {
                grads.register::<Flex>(node.id, param(dgamma));
            }
            if let Some(node) = beta_node {
                grads.register::<Flex>(node.id, param(dbeta));
            }
        }
    }
}
