//! Multi-head attention of `flex` tensors as one operation with one backward step: the
//! tensors' storage and strides handed to [`crate::cpu::attention`], its outputs wrapped as
//! tensors (the gradients of the queries, keys and values as views in the projections' layout).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bool, Bytes, DType, Shape, Tensor};

use super::{f32_tensor, is_f32, mask_as_floats, non_negative};
use crate::cpu::attention::{sum_to, Dims, Input, Inputs, View};
use crate::cpu::written;

#[cfg(test)]
thread_local! {
    /// Fused attention forward passes on this thread (tests check the fast path ran).
    pub(crate) static FUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(crate) fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scale: f32,
    bias: Option<&Tensor<4>>,
    mask: Option<&Tensor<4, Bool>>,
) -> Option<Tensor<3>> {
    if q.dims().contains(&0) || k.dims().contains(&0) {
        return None;
    }
    let mask = match mask {
        // Small: it keeps its broadcasts.
        Some(mask) => Some(non_negative(&mask_as_floats(mask)?)),
        None => None,
    };
    if let (Ok(q), Ok(k), Ok(v)) = (
        q.clone().try_into_primitive::<Flex>(),
        k.clone().try_into_primitive::<Flex>(),
        v.clone().try_into_primitive::<Flex>(),
    ) {
        let bias = match bias {
            Some(bias) => Some(bias.clone().try_into_primitive::<Flex>().ok()?),
            None => None,
        };
        if ![&q, &k, &v].into_iter().chain(bias.as_ref()).all(is_f32) {
            return None;
        }
        let [q, k, v] = [&q, &k, &v].map(non_negative);
        let bias = bias.as_ref().map(non_negative);
        let inputs = inputs(&q, &k, &v, bias.as_ref(), mask.as_ref());
        return Some(Tensor::from_primitive::<Flex>(forward(&inputs, scale).0));
    }
    tracked::<NoCheckpointing>(q, k, v, scale, bias, mask.clone())
        .or_else(|| tracked::<BalancedCheckpointing>(q, k, v, scale, bias, mask))
}

fn tracked<C>(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scale: f32,
    bias: Option<&Tensor<4>>,
    mask: Option<FlexTensor>,
) -> Option<Tensor<3>>
where
    C: CheckpointStrategy,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let q = q.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let k = k.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let v = v.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let primitives = [q.primitive(), k.primitive(), v.primitive()];
    if !primitives.into_iter().all(is_f32) {
        return None;
    }
    let [q_p, k_p, v_p] = primitives.map(non_negative);
    match bias {
        None => Some(record::<C, 3>(
            [q.node(), k.node(), v.node()],
            [q_p, k_p, v_p],
            None,
            mask,
            scale,
        )),
        Some(bias) => {
            let bias = bias
                .clone()
                .try_into_primitive::<Autodiff<Flex, C>>()
                .ok()?;
            if !is_f32(bias.primitive()) {
                return None;
            }
            let bias_p = non_negative(bias.primitive());
            Some(record::<C, 4>(
                [q.node(), k.node(), v.node(), bias.node()],
                [q_p, k_p, v_p],
                Some(bias_p),
                mask,
                scale,
            ))
        }
    }
}

/// Runs the forward pass and records its backward step (inputs: queries, keys, values and,
/// when `N` is 4, the bias).
fn record<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    [q, k, v]: [FlexTensor; 3],
    bias: Option<FlexTensor>,
    mask: Option<FlexTensor>,
    scale: f32,
) -> Tensor<3>
where
    AttentionBackward: Backward<Flex, N, State = Saved>,
    burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
{
    let inputs = inputs(&q, &k, &v, bias.as_ref(), mask.as_ref());
    let out = match AttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, weights) = forward(&inputs, scale);
            let bias_dims = bias.as_ref().map(|b| dims4(b.layout().shape()));
            let saved = Saved {
                q,
                k,
                v,
                weights,
                mask,
                bias_dims,
                scale,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&inputs, scale).0),
    };
    Tensor::from_primitive::<Autodiff<Flex, C>>(out)
}

fn dims4(shape: &Shape) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

/// What the backward step needs.
#[derive(Debug, Clone)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// The softmax weights `[b, h, tq, tk]`, contiguous.
    weights: FlexTensor,
    mask: Option<FlexTensor>,
    /// The bias's shape, when it takes a gradient.
    bias_dims: Option<[usize; 4]>,
    scale: f32,
}

#[derive(Debug)]
struct AttentionBackward;

impl<const N: usize> Backward<Flex, N> for AttentionBackward {
    type State = Saved;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let saved = ops.state;
        let grad = non_negative(&grads.consume::<Flex>(&ops.node));
        let wants_bias = N == 4 && ops.parents[3].is_some();
        let inputs = inputs(&saved.q, &saved.k, &saved.v, None, saved.mask.as_ref());
        let [dq, dk, dv, dbias] = backward(
            &inputs,
            &saved,
            &grad,
            wants_bias.then_some(saved.bias_dims).flatten(),
        );
        for (parent, gradient) in ops.parents.iter().zip([dq, dk, dv, dbias]) {
            if let (Some(parent), Some(gradient)) = (parent, gradient) {
                grads.register::<Flex>(parent.id, gradient);
            }
        }
    }
}

/// A tensor's storage read through its view; `t`'s strides must be non-negative (see
/// [`non_negative`]).
fn input(t: &FlexTensor) -> Input<'_> {
    let layout = t.layout();
    let shape = layout.shape();
    let mut strides = [0; 4];
    for (d, stride) in strides.iter_mut().enumerate() {
        if shape[d] != 1 {
            *stride = layout.strides()[d] as usize;
        }
    }
    Input {
        data: t.storage::<f32>(),
        view: View {
            start: layout.start_offset(),
            strides,
        },
    }
}

/// The inputs of one call, read through their views.
fn inputs<'a>(
    q: &'a FlexTensor,
    k: &'a FlexTensor,
    v: &'a FlexTensor,
    bias: Option<&'a FlexTensor>,
    mask: Option<&'a FlexTensor>,
) -> Inputs<'a> {
    let [b, h, tq, dh] = dims4(q.layout().shape());
    let [_, hk, tk, _] = dims4(k.layout().shape());
    Inputs {
        dims: Dims {
            b,
            h,
            hk,
            tq,
            tk,
            dh,
        },
        q: input(q),
        k: input(k),
        v: input(v),
        bias: bias.map(input),
        mask: mask.map(input),
    }
}

/// The output `[b, tq, h * dh]` and the softmax weights `[b, h, tq, tk]`.
fn forward(inputs: &Inputs, scale: f32) -> (FlexTensor, FlexTensor) {
    #[cfg(test)]
    FUSED.with(|c| c.set(c.get() + 1));
    let d = inputs.dims;
    let (out_batch, w_batch) = (d.tq * d.h * d.dh, d.h * d.tq * d.tk);
    let mut weights = Vec::new();
    let out = written(d.b * out_batch, |out| {
        weights = written(d.b * w_batch, |w| inputs.forward(scale, out, w))
    });
    (
        f32_tensor(Shape::from(vec![d.b, d.tq, d.h * d.dh]), out),
        f32_tensor(Shape::from(vec![d.b, d.h, d.tq, d.tk]), weights),
    )
}

/// The gradients of the queries, keys and values (laid out as the projections they came from:
/// `[b, t, heads, dh]` in memory) and, when `bias_dims` is given, of the bias (summed over its
/// broadcast dimensions).
fn backward(
    inputs: &Inputs,
    saved: &Saved,
    grad: &FlexTensor,
    bias_dims: Option<[usize; 4]>,
) -> [Option<FlexTensor>; 4] {
    let d = inputs.dims;
    let weights = saved.weights.storage::<f32>();
    // The output gradient `[b, tq, h * dh]`, as the matrix of each (batch, head).
    let g_layout = grad.layout();
    let g_strides: Vec<usize> = g_layout.strides().iter().map(|&s| s as usize).collect();
    let g = Input {
        data: grad.storage::<f32>(),
        view: View {
            start: g_layout.start_offset(),
            strides: [
                g_strides[0],
                d.dh * g_strides[2],
                g_strides[1],
                g_strides[2],
            ],
        },
    };
    let (q_batch, kv_batch, s_batch) = (d.tq * d.h * d.dh, d.tk * d.hk * d.dh, d.h * d.tq * d.tk);
    let mut dk = Vec::new();
    let mut dv = Vec::new();
    let mut scores = Vec::new();
    let dq = written(d.b * q_batch, |dq| {
        dk = written(d.b * kv_batch, |dk| {
            dv = written(d.b * kv_batch, |dv| {
                // The scores' gradient of every head, kept only for the bias.
                let keep = if bias_dims.is_some() {
                    d.b * s_batch
                } else {
                    0
                };
                scores = written(keep, |ds_all| {
                    inputs.backward(saved.scale, weights, g, dq, dk, dv, ds_all)
                });
            });
        });
    });
    // Memory `[b, t, heads, dh]` seen as `[b, heads, t, dh]`.
    let heads_view = |data: Vec<f32>, heads: usize, t: usize| {
        let shape = Shape::from(vec![d.b, heads, t, d.dh]);
        let strides = vec![
            (t * heads * d.dh) as isize,
            d.dh as isize,
            (heads * d.dh) as isize,
            1,
        ];
        FlexTensor::new(
            Bytes::from_elems(data),
            Layout::new(shape, strides, 0),
            DType::F32,
        )
    };
    let dbias = bias_dims.map(|dims| {
        f32_tensor(
            Shape::from(dims.to_vec()),
            sum_to(&scores, [d.b, d.h, d.tq, d.tk], dims),
        )
    });
    [
        Some(heads_view(dq, d.h, d.tq)),
        Some(heads_view(dk, d.hk, d.tk)),
        Some(heads_view(dv, d.hk, d.tk)),
        dbias,
    ]
}
