//! Multi-head attention as one operation: for every head the scores, the bias and mask, the
//! softmax and the weighted sum of the values, with the heads' outputs written straight into
//! `[b, t, h * dh]`, and one backward step for all of it.
//!
//! Composed from burn's operations, attention is a dozen operations per layer, each with its own
//! autodiff step: the queries' scaling, the mask's expansion to every head and its conversion to
//! floats, the merge of the heads (a layout copy forward and backward), and the gradients' copies
//! back into the projections' layout. Here the queries, keys and values are read where they lie
//! (any strides: heads split from a projection as views), the mask and bias are read with their
//! broadcasts, and the gradients of the queries, keys and values are written in the layout of
//! the projections they came from, so un-splitting the heads in the backward pass is free.
//!
//! Each head's products run through [`crate::sgemm`], batches split over threads by whole batch
//! entries; every value is computed the same way whichever thread runs it.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};

/// Scaled dot-product attention over heads, the output's heads merged: `softmax(scale q kᵀ +
/// bias, masked) v` per head, as `[b, tq, h * dh]`.
///
/// Positions where `mask` is true are left out (their score is set to -1e9, so a query that sees
/// nothing averages the values instead of producing NaN, and they pass no gradient). With fewer
/// key/value heads than query heads (grouped-query attention), query head `i` reads key/value
/// head `i / (h / hk)`.
///
/// On the CPU backend this is one fused operation; elsewhere it is composed from burn's
/// operations ([`multi_head_attention_composed`]).
///
/// # Shapes
/// - q: `[b, h, tq, dh]`; k and v: `[b, hk, tk, dh]`, `h` a multiple of `hk`
/// - bias and mask: broadcastable to `[b, h, tq, tk]`
/// - output: `[b, tq, h * dh]`
pub fn multi_head_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    bias: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<3> {
    let full = check_shapes(&q, &k, &v);
    if let Some(bias) = &bias {
        check_broadcast("bias", bias.dims(), full);
    }
    if let Some(mask) = &mask {
        check_broadcast("mask", mask.dims(), full);
    }
    #[cfg(feature = "flex")]
    if let Some(out) = flex::attention(&q, &k, &v, scale, bias.as_ref(), mask.as_ref()) {
        return out;
    }
    multi_head_attention_composed(q, k, v, scale, bias, mask)
}

/// [`multi_head_attention`] composed from burn's operations (the reference it is tested
/// against, and the path on other backends).
pub fn multi_head_attention_composed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    bias: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<3> {
    let [_, h, _, _] = check_shapes(&q, &k, &v);
    let group = h / k.dims()[1];
    let repeat = |x: Tensor<4>| {
        if group == 1 {
            return x;
        }
        let [b, hk, t, dh] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, hk, group, t, dh])
            .reshape([b, hk * group, t, dh])
    };
    let mut scores = q.matmul(repeat(k).swap_dims(2, 3)).mul_scalar(scale);
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    if let Some(mask) = mask {
        let dims = scores.dims();
        scores = scores.mask_fill(mask.expand(dims), -1.0e9);
    }
    crate::nn::merge_heads(softmax(scores, 3).matmul(repeat(v)))
}

/// The scores' shape `[b, h, tq, tk]`; panics naming the mismatch.
fn check_shapes(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> [usize; 4] {
    let [b, h, tq, dh] = q.dims();
    let [kb, hk, tk, kdh] = k.dims();
    assert!(
        kb == b && kdh == dh,
        "attention: keys {:?} do not fit queries {:?} (batch and head width must agree)",
        k.dims(),
        q.dims()
    );
    assert_eq!(
        v.dims(),
        k.dims(),
        "attention: values {:?} differ from keys {:?}",
        v.dims(),
        k.dims()
    );
    assert!(
        hk > 0 && h % hk == 0,
        "attention: {h} query heads are not a multiple of {hk} key/value heads"
    );
    [b, h, tq, tk]
}

fn check_broadcast(what: &str, dims: [usize; 4], full: [usize; 4]) {
    assert!(
        dims.iter().zip(full).all(|(&d, f)| d == f || d == 1),
        "attention: {what} {dims:?} does not broadcast to the scores {full:?}"
    );
}

#[cfg(feature = "flex")]
mod flex {
    use std::sync::Mutex;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{
        BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
    };
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bool, Bytes, DType, Shape, Tensor};

    use crate::ops::flex::{f32_tensor, is_f32, mask_as_floats, non_negative, written};
    use crate::ops::kernels;
    use crate::sgemm::sgemm;

    /// A matrix inside a slice: element `(i, j)` at `data[i * rs + j * cs]`.
    #[derive(Clone, Copy)]
    struct Mat<'a> {
        data: &'a [f32],
        rs: usize,
        cs: usize,
    }

    impl<'a> Mat<'a> {
        /// Rows of `width` values one after another.
        fn rows(data: &'a [f32], width: usize) -> Self {
            Self {
                data,
                rs: width,
                cs: 1,
            }
        }

        /// The transpose (the same values read the other way).
        fn t(self) -> Self {
            Self {
                rs: self.cs,
                cs: self.rs,
                ..self
            }
        }
    }

    /// `c = a · b`, or `c += a · b` when `add`, on the calling thread: `a` is `m x k`, `b` is
    /// `k x n`, `c` has row stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    fn product(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, add: bool) {
        sgemm(
            m, n, k, a.data, a.rs, a.cs, b.data, b.rs, b.cs, c, ldc, add, 1,
        );
    }

    #[cfg(test)]
    thread_local! {
        /// Fused attention forward passes on this thread (tests check the fast path ran).
        pub(super) static FUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The sizes of one call.
    #[derive(Debug, Clone, Copy)]
    struct Dims {
        b: usize,
        h: usize,
        hk: usize,
        tq: usize,
        tk: usize,
        dh: usize,
    }

    impl Dims {
        fn group(self) -> usize {
            self.h / self.hk
        }
    }

    /// Where element `[i0, i1, i2, i3]` of a 4-D tensor lies in its storage; stride 0 along a
    /// broadcast (size 1) dimension.
    #[derive(Debug, Clone, Copy)]
    struct View {
        start: usize,
        strides: [usize; 4],
    }

    impl View {
        /// `t`'s strides must be non-negative (see [`non_negative`]).
        fn of(t: &FlexTensor) -> Self {
            let layout = t.layout();
            let shape = layout.shape();
            let mut strides = [0; 4];
            for (d, stride) in strides.iter_mut().enumerate() {
                if shape[d] != 1 {
                    *stride = layout.strides()[d] as usize;
                }
            }
            Self {
                start: layout.start_offset(),
                strides,
            }
        }

        fn at(self, i: [usize; 4]) -> usize {
            self.start + (0..4).map(|d| i[d] * self.strides[d]).sum::<usize>()
        }
    }

    /// A float32 input with its view.
    #[derive(Clone, Copy)]
    struct Input<'a> {
        data: &'a [f32],
        view: View,
    }

    impl<'a> Input<'a> {
        fn of(t: &'a FlexTensor) -> Self {
            Self {
                data: t.storage::<f32>(),
                view: View::of(t),
            }
        }

        /// The storage from element `i` on.
        fn from(self, i: [usize; 4]) -> &'a [f32] {
            &self.data[self.view.at(i)..]
        }

        /// The `[t, dh]` matrix of batch entry `bi`, head `head`.
        fn head(self, bi: usize, head: usize) -> Mat<'a> {
            Mat {
                data: self.from([bi, head, 0, 0]),
                rs: self.view.strides[2],
                cs: self.view.strides[3],
            }
        }

        /// Row `[i0, i1, i2]` along the last dimension.
        fn row(self, [i0, i1, i2]: [usize; 3]) -> Row<'a> {
            Row {
                data: self.from([i0, i1, i2, 0]),
                stride: self.view.strides[3],
            }
        }
    }

    /// One row of a mask or bias: value `j` at `data[j * stride]` (stride 0 when broadcast).
    #[derive(Clone, Copy)]
    struct Row<'a> {
        data: &'a [f32],
        stride: usize,
    }

    impl Row<'_> {
        fn get(self, j: usize) -> f32 {
            self.data[j * self.stride]
        }
    }

    /// The fused operation when every input is a `flex` float32 tensor (all plain, or all
    /// tracked by autodiff with the same checkpointing), `None` otherwise.
    pub(super) fn attention(
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
            let inputs = Inputs::new(&q, &k, &v, bias.as_ref(), mask.as_ref());
            return Some(Tensor::from_primitive::<Flex>(inputs.forward(scale).0));
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
        let inputs = Inputs::new(&q, &k, &v, bias.as_ref(), mask.as_ref());
        let out = match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, weights) = inputs.forward(scale);
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
            OpsKind::UnTracked(prep) => prep.finish(inputs.forward(scale).0),
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
            let inputs = Inputs::new(&saved.q, &saved.k, &saved.v, None, saved.mask.as_ref());
            let [dq, dk, dv, dbias] = inputs.backward(
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

    /// The inputs of one call, read through their views.
    struct Inputs<'a> {
        dims: Dims,
        q: Input<'a>,
        k: Input<'a>,
        v: Input<'a>,
        bias: Option<Input<'a>>,
        mask: Option<Input<'a>>,
    }

    /// Batch entries per thread, or all on one when the work is small.
    fn batch_parts(d: Dims) -> usize {
        let flops = 4 * d.b * d.h * d.tq * d.tk * d.dh;
        if flops < 1 << 20 {
            1
        } else {
            crate::pool::threads().min(d.b).max(1)
        }
    }

    /// `data` split into runs of `per` whole batch entries (`per_batch` values each), one lock
    /// each so every thread takes its own.
    fn by_batch(data: &mut [f32], per_batch: usize, per: usize) -> Vec<Mutex<&mut [f32]>> {
        data.chunks_mut((per * per_batch).max(1))
            .map(Mutex::new)
            .collect()
    }

    /// A part's own slice out of its lock.
    fn take<'s>(slot: &Mutex<&'s mut [f32]>) -> &'s mut [f32] {
        std::mem::take(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    impl<'a> Inputs<'a> {
        fn new(
            q: &'a FlexTensor,
            k: &'a FlexTensor,
            v: &'a FlexTensor,
            bias: Option<&'a FlexTensor>,
            mask: Option<&'a FlexTensor>,
        ) -> Self {
            let [b, h, tq, dh] = dims4(q.layout().shape());
            let [_, hk, tk, _] = dims4(k.layout().shape());
            Self {
                dims: Dims {
                    b,
                    h,
                    hk,
                    tq,
                    tk,
                    dh,
                },
                q: Input::of(q),
                k: Input::of(k),
                v: Input::of(v),
                bias: bias.map(Input::of),
                mask: mask.map(Input::of),
            }
        }

        /// Row `i` of the mask of batch entry `bi`, head `hi`: whether key `j` is left out.
        fn mask_row(&self, bi: usize, hi: usize, i: usize) -> impl Fn(usize) -> bool + '_ {
            let row = self.mask.map(|m| m.row([bi, hi, i]));
            move |j| row.is_some_and(|m| m.get(j) > 0.5)
        }

        /// The output `[b, tq, h * dh]` and the softmax weights `[b, h, tq, tk]`.
        fn forward(&self, scale: f32) -> (FlexTensor, FlexTensor) {
            #[cfg(test)]
            FUSED.with(|c| c.set(c.get() + 1));
            let d = self.dims;
            let parts = batch_parts(d);
            let (out_batch, w_batch) = (d.tq * d.h * d.dh, d.h * d.tq * d.tk);
            let mut weights = Vec::new();
            let out = written(d.b * out_batch, |out| {
                weights = written(d.b * w_batch, |w| {
                    let per = d.b.div_ceil(parts);
                    let outs = by_batch(out, out_batch, per);
                    let ws = by_batch(w, w_batch, per);
                    crate::pool::run(outs.len(), &|part| {
                        let (out, w) = (take(&outs[part]), take(&ws[part]));
                        let first = part * per;
                        for (local, bi) in (first..(first + per).min(d.b)).enumerate() {
                            self.forward_batch(
                                bi,
                                scale,
                                &mut out[local * out_batch..(local + 1) * out_batch],
                                &mut w[local * w_batch..(local + 1) * w_batch],
                            );
                        }
                    });
                })
            });
            (
                f32_tensor(Shape::from(vec![d.b, d.tq, d.h * d.dh]), out),
                f32_tensor(Shape::from(vec![d.b, d.h, d.tq, d.tk]), weights),
            )
        }

        /// Batch entry `bi`: `out` is its `[tq, h * dh]`, `w` its `[h, tq, tk]` weights.
        fn forward_batch(&self, bi: usize, scale: f32, out: &mut [f32], w: &mut [f32]) {
            let d = self.dims;
            let mut row = vec![0.0f32; d.tk];
            for hi in 0..d.h {
                let kh = hi / d.group();
                let w = &mut w[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk];
                // Scores: q · kᵀ (keys read transposed through their strides).
                product(
                    d.tq,
                    d.tk,
                    d.dh,
                    self.q.head(bi, hi),
                    self.k.head(bi, kh).t(),
                    w,
                    d.tk,
                    false,
                );
                for (i, w) in w.chunks_exact_mut(d.tk.max(1)).enumerate() {
                    let masked = self.mask_row(bi, hi, i);
                    let bias = self.bias.map(|b| b.row([bi, hi, i]));
                    for (j, (r, &s)) in row.iter_mut().zip(w.iter()).enumerate() {
                        *r = if masked(j) {
                            -1.0e9
                        } else {
                            s * scale + bias.map_or(0.0, |b| b.get(j))
                        };
                    }
                    kernels::softmax(&row, w, d.tk, false);
                }
                // This head's output: weights · v, into its columns of `[tq, h * dh]`.
                product(
                    d.tq,
                    d.dh,
                    d.tk,
                    Mat::rows(w, d.tk),
                    self.v.head(bi, kh),
                    &mut out[hi * d.dh..],
                    d.h * d.dh,
                    false,
                );
            }
        }

        /// The gradients of the queries, keys and values (laid out as the projections they
        /// came from: `[b, t, heads, dh]` in memory) and, when `bias_dims` is given, of the
        /// bias (summed over its broadcast dimensions).
        fn backward(
            &self,
            saved: &Saved,
            grad: &FlexTensor,
            bias_dims: Option<[usize; 4]>,
        ) -> [Option<FlexTensor>; 4] {
            let d = self.dims;
            let parts = batch_parts(d);
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
            let (q_batch, kv_batch, s_batch) =
                (d.tq * d.h * d.dh, d.tk * d.hk * d.dh, d.h * d.tq * d.tk);
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
                            let per = d.b.div_ceil(parts);
                            let dqs = by_batch(dq, q_batch, per);
                            let dks = by_batch(dk, kv_batch, per);
                            let dvs = by_batch(dv, kv_batch, per);
                            let dss = by_batch(ds_all, s_batch, per);
                            crate::pool::run(dqs.len(), &|part| {
                                let (dq, dk, dv) =
                                    (take(&dqs[part]), take(&dks[part]), take(&dvs[part]));
                                let mut ds_all = dss.get(part).map(take);
                                let first = part * per;
                                for (local, bi) in (first..(first + per).min(d.b)).enumerate() {
                                    self.backward_batch(
                                        bi,
                                        saved.scale,
                                        &weights[bi * s_batch..(bi + 1) * s_batch],
                                        g,
                                        &mut dq[local * q_batch..(local + 1) * q_batch],
                                        &mut dk[local * kv_batch..(local + 1) * kv_batch],
                                        &mut dv[local * kv_batch..(local + 1) * kv_batch],
                                        ds_all.as_mut().map(|s| {
                                            &mut s[local * s_batch..(local + 1) * s_batch]
                                        }),
                                    );
                                }
                            });
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
            let dbias = bias_dims.map(|dims| sum_to(&scores, [d.b, d.h, d.tq, d.tk], dims));
            [
                Some(heads_view(dq, d.h, d.tq)),
                Some(heads_view(dk, d.hk, d.tk)),
                Some(heads_view(dv, d.hk, d.tk)),
                dbias,
            ]
        }

        /// Batch entry `bi` of the backward pass: `w` its weights `[h, tq, tk]`; `dq` its
        /// `[tq, h * dh]`, `dk` and `dv` its `[tk, hk * dh]`; `ds_all`, when kept, its scores'
        /// gradient `[h, tq, tk]`.
        #[allow(clippy::too_many_arguments)]
        fn backward_batch(
            &self,
            bi: usize,
            scale: f32,
            w: &[f32],
            g: Input,
            dq: &mut [f32],
            dk: &mut [f32],
            dv: &mut [f32],
            mut ds_all: Option<&mut [f32]>,
        ) {
            let d = self.dims;
            let mut ds = vec![0.0f32; d.tq * d.tk];
            for kh in 0..d.hk {
                for member in 0..d.group() {
                    let hi = kh * d.group() + member;
                    let w = &w[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk];
                    // The weights' gradient: d out · vᵀ.
                    product(
                        d.tq,
                        d.tk,
                        d.dh,
                        g.head(bi, hi),
                        self.v.head(bi, kh).t(),
                        &mut ds,
                        d.tk,
                        false,
                    );
                    // The scores' gradient through the softmax; none where masked.
                    for (i, (ds, w)) in ds
                        .chunks_exact_mut(d.tk.max(1))
                        .zip(w.chunks_exact(d.tk.max(1)))
                        .enumerate()
                    {
                        let dot: f32 = w.iter().zip(ds.iter()).map(|(p, s)| p * s).sum();
                        let masked = self.mask_row(bi, hi, i);
                        for (j, (s, &p)) in ds.iter_mut().zip(w).enumerate() {
                            *s = if masked(j) { 0.0 } else { p * (*s - dot) };
                        }
                    }
                    if let Some(all) = ds_all.as_deref_mut() {
                        all[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk].copy_from_slice(&ds);
                    }
                    if scale != 1.0 {
                        ds.iter_mut().for_each(|s| *s *= scale);
                    }
                    // d q = d scores · k, into this head's columns.
                    product(
                        d.tq,
                        d.dh,
                        d.tk,
                        Mat::rows(&ds, d.tk),
                        self.k.head(bi, kh),
                        &mut dq[hi * d.dh..],
                        d.h * d.dh,
                        false,
                    );
                    // d k += d scoresᵀ · q and d v += weightsᵀ · d out, over the heads sharing
                    // this key/value head, in order.
                    product(
                        d.tk,
                        d.dh,
                        d.tq,
                        Mat::rows(&ds, d.tk).t(),
                        self.q.head(bi, hi),
                        &mut dk[kh * d.dh..],
                        d.hk * d.dh,
                        member > 0,
                    );
                    product(
                        d.tk,
                        d.dh,
                        d.tq,
                        Mat::rows(w, d.tk).t(),
                        g.head(bi, hi),
                        &mut dv[kh * d.dh..],
                        d.hk * d.dh,
                        member > 0,
                    );
                }
            }
        }
    }

    /// `values` (contiguous, shape `full`) summed over the dimensions where `dims` is 1, in a
    /// fixed order.
    fn sum_to(values: &[f32], full: [usize; 4], dims: [usize; 4]) -> FlexTensor {
        if dims == full {
            return f32_tensor(Shape::from(dims.to_vec()), values.to_vec());
        }
        let mut out = vec![0.0f32; dims.iter().product()];
        let mut i = 0;
        for i0 in 0..full[0] {
            for i1 in 0..full[1] {
                for i2 in 0..full[2] {
                    for i3 in 0..full[3] {
                        let at = [i0, i1, i2, i3];
                        let mut o = 0;
                        for dim in 0..4 {
                            o = o * dims[dim] + if dims[dim] == 1 { 0 } else { at[dim] };
                        }
                        out[o] += values[i];
                        i += 1;
                    }
                }
            }
        }
        f32_tensor(Shape::from(dims.to_vec()), out)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    use crate::testing::{random, values, worst};

    /// Output and input gradients of `f(inputs, fused)` with the fused operation and with the
    /// composed one, under a fixed non-uniform upstream gradient; checks the fused path ran.
    fn compare<const N: usize>(
        inputs: [Tensor<3>; N],
        f: impl Fn(&[Tensor<3>; N], bool) -> Tensor<3>,
    ) {
        let run = |fused: bool| {
            let inputs = inputs.clone().map(|t| t.require_grad());
            let before = flex::FUSED.with(|c| c.get());
            let out = f(&inputs, fused);
            let ran = flex::FUSED.with(|c| c.get()) - before;
            assert_eq!(ran, usize::from(fused), "fused path ran {ran} times");
            let weight = Tensor::<3>::ones(out.dims(), &out.device())
                .cumsum(2)
                .div_scalar(7.0)
                .sin();
            let grads = (out.clone() * weight).sum().backward();
            let grads: Vec<Vec<f32>> = inputs
                .iter()
                .map(|t| values(t.grad(&grads).expect("every input takes a gradient")))
                .collect();
            (values(out.inner()), grads)
        };
        let (fused, reference) = (run(true), run(false));
        assert!(worst(&fused.0, &reference.0) < 1e-5, "output");
        for (i, (a, b)) in fused.1.iter().zip(&reference.1).enumerate() {
            assert!(worst(a, b) < 1e-4, "gradient of input {i}: {}", worst(a, b));
        }
    }

    fn either(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        scale: f32,
        bias: Option<Tensor<4>>,
        mask: Option<Tensor<4, Bool>>,
        fused: bool,
    ) -> Tensor<3> {
        if fused {
            multi_head_attention(q, k, v, scale, bias, mask)
        } else {
            multi_head_attention_composed(q, k, v, scale, bias, mask)
        }
    }

    #[test]
    fn causal_self_attention_from_a_fused_projection_matches() {
        // GPT-2's layout: q, k and v are column ranges of one projection, split into heads as
        // views.
        let device = Device::flex().autodiff();
        let (b, t, h, dh) = (3, 7, 4, 5);
        let mask = crate::nn::causal_mask(t, t, &device).reshape([1, 1, t, t]);
        compare([random([b, t, 3 * h * dh], &device)], |[qkv], fused| {
            let mut parts = qkv.clone().chunk(3, 2).into_iter();
            let mut next = || crate::nn::split_heads(parts.next().unwrap(), h);
            let (q, k, v) = (next(), next(), next());
            either(q, k, v, 0.4, None, Some(mask.clone()), fused)
        });
    }

    #[test]
    fn grouped_query_attention_matches() {
        // LLaMA's layout: fewer key/value heads, separate projections.
        let device = Device::flex().autodiff();
        let (b, tq, tk, dh) = (2, 6, 9, 4);
        let mask = crate::nn::causal_mask(tq, tk, &device).reshape([1, 1, tq, tk]);
        compare(
            [
                random([b, tq, 6 * dh], &device),
                random([b, tk, 2 * dh], &device),
                random([b, tk, 2 * dh], &device),
            ],
            |[q, k, v], fused| {
                let split = |x: &Tensor<3>, heads| crate::nn::split_heads(x.clone(), heads);
                either(
                    split(q, 6),
                    split(k, 2),
                    split(v, 2),
                    0.5,
                    None,
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn a_learned_bias_and_a_padding_mask_match() {
        // T5's layout: an unscaled score plus a learned bias shared over the batch (a permuted
        // view, as T5 builds it), and a padding mask over keys; the last batch entry has every
        // key padded, so its queries see nothing.
        let device = Device::flex().autodiff();
        let (b, tq, tk, h, dh) = (3, 5, 6, 2, 4);
        let pad: Vec<bool> = (0..b * tk)
            .map(|i| i % 4 == 3 || i >= (b - 1) * tk)
            .collect();
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, tk]), &device)
            .reshape([b, 1, 1, tk]);
        compare(
            [
                random([b, tq, h * dh], &device),
                random([b, tk, h * dh], &device),
                random([b, tk, h * dh], &device),
                random([tq, tk, h], &device),
            ],
            |[q, k, v, table], fused| {
                let split = |x: &Tensor<3>| crate::nn::split_heads(x.clone(), h);
                let bias = table.clone().permute([2, 0, 1]).unsqueeze::<4>();
                either(
                    split(q),
                    split(k),
                    split(v),
                    1.0,
                    Some(bias),
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn the_checkpointing_autodiff_device_takes_the_fused_path() {
        let device = Device::flex().autodiff().gradient_checkpointing();
        let (b, t, h, dh) = (2, 5, 2, 3);
        let mask = crate::nn::causal_mask(t, t, &device).reshape([1, 1, t, t]);
        compare(
            [random([b, t, h * dh], &device), random([h, t, t], &device)],
            |[x, bias], fused| {
                let heads = crate::nn::split_heads(x.clone(), h);
                let bias = bias.clone().unsqueeze::<4>();
                either(
                    heads.clone(),
                    heads.clone(),
                    heads,
                    0.6,
                    Some(bias),
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        // Large enough to be split over threads (see `batch_parts`).
        let device = Device::flex().autodiff();
        let (b, t, h, dh) = (8, 64, 4, 16);
        let x = random([b, t, 3 * h * dh], &device);
        let mask = crate::nn::causal_mask(t, t, &device).reshape([1, 1, t, t]);
        let run = || {
            let x = x.clone().require_grad();
            let mut parts = x.clone().chunk(3, 2).into_iter();
            let mut next = || crate::nn::split_heads(parts.next().unwrap(), h);
            let (q, k, v) = (next(), next(), next());
            let out = multi_head_attention(q, k, v, 0.3, None, Some(mask.clone()));
            let grads = out.clone().sin().sum().backward();
            (values(out.inner()), values(x.grad(&grads).unwrap()))
        };
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(run);
        let three = pool(3).install(run);
        assert_eq!(one, three);
    }

    #[test]
    fn plain_tensors_match_and_other_backends_compose() {
        let device = Device::flex();
        let (q, k, v) = (
            random([2, 4, 5, 3], &device),
            random([2, 2, 8, 3], &device),
            random([2, 2, 8, 3], &device),
        );
        let before = flex::FUSED.with(|c| c.get());
        let fused = values(multi_head_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            0.7,
            None,
            None,
        ));
        assert_eq!(flex::FUSED.with(|c| c.get()), before + 1);
        let reference = values(multi_head_attention_composed(q, k, v, 0.7, None, None));
        assert!(worst(&fused, &reference) < 1e-5);
    }

    #[test]
    #[should_panic(expected = "3 query heads are not a multiple of 2 key/value heads")]
    fn query_heads_must_be_a_multiple_of_key_value_heads() {
        let device = Device::flex();
        let q = random([1, 3, 4, 2], &device);
        let k = random([1, 2, 4, 2], &device);
        multi_head_attention(q, k.clone(), k, 1.0, None, None);
    }

    #[test]
    #[should_panic(expected = "mask [1, 2, 4, 4] does not broadcast to the scores [1, 4, 4, 4]")]
    fn a_mask_must_broadcast_to_the_scores() {
        let device = Device::flex();
        let q = random([1, 4, 4, 2], &device);
        let mask = Tensor::<4, Bool>::empty([1, 2, 4, 4], &device);
        multi_head_attention(q.clone(), q.clone(), q, 1.0, None, Some(mask));
    }
}
