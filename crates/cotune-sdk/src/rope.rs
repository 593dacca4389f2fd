//! Rotary position embeddings (RoPE, "RoFormer", Su et al., 2021) in Hugging Face's LLaMA
//! layout, as one fused operation with its own backward step.
//!
//! Composed from burn's operations, RoPE is two `narrow`s, a `neg`, a `cat`, two `mul`s and an
//! `add`, each with its own backward step, on the queries and the keys of every layer. On `flex`
//! float32 tensors [`rotary`] computes it in one pass that reads its input through the input's
//! strides (the heads of [`crate::nn::split_heads`] are a transposed view, and need no copy) and
//! registers one backward step with burn's autodiff. On any other backend or dtype it falls back
//! to [`rotary_composed`], the same formula from burn's operations.

use burn::tensor::Tensor;

/// `x * cos + rotate_half(x) * sin` over the last dimension, where
/// `rotate_half([x1, x2]) = [-x2, x1]` on the two halves of each head (Hugging Face's LLaMA
/// layout), in one fused operation. The tables are constants: they get no gradient.
///
/// # Shapes
/// - x: `[b, h, n, dh]` (any strides, e.g. a `swap_dims` view), `dh` even
/// - cos, sin: `[n, dh]`
/// - output: `[b, h, n, dh]`
pub fn rotary(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    check_shapes(&x, cos, sin);
    #[cfg(feature = "flex")]
    if let Some(out) = flex::rotary(&x, cos, sin) {
        return out;
    }
    rotary_composed(x, cos, sin)
}

/// [`rotary`] composed from burn's operations (`narrow`, `neg`, `cat`, `mul`, `add`): the
/// fallback off `flex`, and the reference the fused operation is tested against.
///
/// # Shapes
/// - x: `[b, h, n, dh]`, `dh` even
/// - cos, sin: `[n, dh]`
/// - output: `[b, h, n, dh]`
pub fn rotary_composed(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    check_shapes(&x, cos, sin);
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone().unsqueeze::<4>() + rotated * sin.clone().unsqueeze::<4>()
}

fn check_shapes(x: &Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) {
    let [_, _, n, dh] = x.dims();
    assert!(
        dh % 2 == 0,
        "rotary: the head width (last dimension of x, shape {:?}) is {dh}, which is odd; \
         rotate_half pairs its two halves",
        x.dims()
    );
    for (name, table) in [("cos", cos), ("sin", sin)] {
        assert_eq!(
            table.dims(),
            [n, dh],
            "rotary: the {name} table is {:?}, but x {:?} needs [n, dh] = [{n}, {dh}]",
            table.dims(),
            x.dims()
        );
    }
}

#[cfg(feature = "flex")]
mod flex {
    use std::mem::MaybeUninit;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{
        BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
    };
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bytes, DType, Tensor};

    use crate::ops::flex::{f32_tensor, is_f32};

    /// The fused rotation when `x` is a `flex` float32 tensor (plain, or tracked by autodiff)
    /// and the tables are `flex` float32 tensors, `None` otherwise.
    pub(super) fn rotary(x: &Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Option<Tensor<4>> {
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

    /// The sine table of the transposed rotation. On each pair of positions `(i, i + dh/2)`
    /// the forward step multiplies by `[[c1, -s1], [s2, c2]]` (`s1`, `s2` the table's two
    /// halves at that row); the input gradient takes the transpose `[[c1, s2], [-s1, c2]]`,
    /// which is the forward form with the halves `[-s2, -s1]`. So the backward step is the
    /// same kernel with this table, and its values equal those of `g * cos +
    /// rotate_halfᵀ(g * sin)` exactly (negation does not round).
    fn transposed_sin(sin: &FlexTensor) -> FlexTensor {
        let shape = sin.layout().shape().clone();
        let dh = shape[1];
        let half = dh / 2;
        let s = sin.storage::<f32>();
        let mut out = Vec::with_capacity(shape.num_elements());
        for row in s[..shape.num_elements()].chunks_exact(dh.max(1)) {
            let (s1, s2) = row.split_at(half);
            out.extend(s2.iter().chain(s1).map(|&v| -v));
        }
        f32_tensor(shape, out)
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
        pub(super) static ROTATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
        let s: Vec<usize> = x.layout().strides().iter().map(|&s| s as usize).collect();
        let data = x.storage::<f32>();
        let (cos, sin) = (cos.storage::<f32>(), sin.storage::<f32>());
        // Rows in `[b, n, h]` order.
        let out = by_rows(b * n * h, dh, &|row, out| {
            let (head, p, batch) = (row % h, (row / h) % n, row / (h * n));
            let at = start + batch * s[0] + head * s[1] + p * s[2];
            let table = p * dh..(p + 1) * dh;
            rotate_row(&data[at..at + dh], &cos[table.clone()], &sin[table], out);
        });
        let strides = [n * h * dh, dh, h * dh, 1].map(|s| s as isize).to_vec();
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::new(shape, strides, 0),
            DType::F32,
        )
    }

    /// One row: `[x1 c1 - x2 s1, x2 c2 + x1 s2]` for the halves `x1, x2` of `x`, `c1, c2` of
    /// `cos` and `s1, s2` of `sin`. Writes every value of `out`.
    #[inline]
    fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [MaybeUninit<f32>]) {
        let half = out.len() / 2;
        let (x1, x2) = x.split_at(half);
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        let (o1, o2) = out.split_at_mut(half);
        for ((((o, &a), &b), &c), &s) in o1.iter_mut().zip(x1).zip(x2).zip(c1).zip(s1) {
            o.write(a * c - b * s);
        }
        for ((((o, &a), &b), &c), &s) in o2.iter_mut().zip(x1).zip(x2).zip(c2).zip(s2) {
            o.write(b * c + a * s);
        }
    }

    /// A row-writing kernel: `f(row, out)` writes every value of row `row`'s output `out`.
    type RowFn<'a> = dyn Fn(usize, &mut [MaybeUninit<f32>]) + Sync + 'a;

    /// `rows` contiguous rows of `width` values, each written by `f`. The output starts
    /// uninitialised rather than zeroed (zeroing would add a pass over memory to an operation
    /// that makes one), which is sound because `f` writes every value of its row. Large outputs
    /// are split over the kernel threads by whole rows; each value is computed the same way
    /// whoever runs it, so results do not depend on the thread count.
    fn by_rows(rows: usize, width: usize, f: &RowFn) -> Vec<f32> {
        let total = rows * width;
        let mut data = Vec::<f32>::with_capacity(total);
        if total == 0 {
            return data;
        }
        let out = &mut data.spare_capacity_mut()[..total];
        let rows_per = crate::pool::rows_per_part(rows, width);
        crate::pool::for_chunks(out, rows_per * width, &|part, out| {
            for (i, row) in out.chunks_exact_mut(width).enumerate() {
                f(part * rows_per + i, row);
            }
        });
        // SAFETY: the first `total` values were all written above: the row chunks cover them
        // (`total` is a whole number of rows) and `f` writes every value of each row. A panic
        // in `f` leaves the length at zero.
        unsafe { data.set_len(total) };
        data
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Device;

    use crate::testing::{random, values, worst};

    fn rotations() -> usize {
        flex::ROTATIONS.with(|c| c.get())
    }

    /// Value and input gradient of `rotary` against `rotary_composed` for an input built as
    /// `dims` and turned into `[b, h, n, dh]` by `view`, with the output passed through `after`
    /// (which may hand the backward step a strided gradient), under a fixed non-uniform upstream
    /// gradient. The tables are random rather than RoPE's, so that their two halves differ and
    /// a transposition mistake in the backward step shows.
    fn check(
        device: &Device,
        dims: [usize; 4],
        view: impl Fn(Tensor<4>) -> Tensor<4>,
        after: impl Fn(Tensor<4>) -> Tensor<4>,
    ) {
        let x = random(dims, device);
        let [_, _, n, dh] = view(x.clone()).dims();
        let (cos, sin) = (random([n, dh], device), random([n, dh], device));
        let run = |f: &dyn Fn(Tensor<4>, &Tensor<2>, &Tensor<2>) -> Tensor<4>| {
            let x = x.clone().require_grad();
            let out = after(f(view(x.clone()), &cos, &sin));
            let width = out.dims()[3] as f32;
            let weight = Tensor::<4>::ones(out.dims(), device)
                .cumsum(3)
                .div_scalar(width)
                + Tensor::<4>::ones(out.dims(), device).cumsum(1);
            let grads = (out.clone() * weight).sum().backward();
            (values(out.inner()), values(x.grad(&grads).unwrap()))
        };
        let before = rotations();
        let ours = run(&rotary);
        assert_eq!(
            rotations(),
            before + 2,
            "the fused forward and backward steps ran for {dims:?}"
        );
        let reference = run(&rotary_composed);
        assert!(
            worst(&ours.0, &reference.0) < 1e-6,
            "value {dims:?}: {}",
            worst(&ours.0, &reference.0)
        );
        assert!(
            worst(&ours.1, &reference.1) < 1e-6,
            "gradient {dims:?}: {}",
            worst(&ours.1, &reference.1)
        );
    }

    #[test]
    fn contiguous_input_matches_the_composed_formula() {
        let device = Device::flex().autodiff();
        for dims in [[1, 1, 1, 2], [2, 3, 5, 8], [1, 4, 7, 64]] {
            check(&device, dims, |x| x, |y| y);
        }
        // Above the size where the work is split over threads.
        check(&device, [2, 8, 64, 128], |x| x, |y| y);
    }

    #[test]
    fn strided_input_and_gradient_match_the_composed_formula() {
        let device = Device::flex().autodiff();
        // Heads split as `split_heads` does: [b, n, h, dh] viewed as [b, h, n, dh]; the output
        // swapped back, so the gradient reaching the backward step is a strided view too.
        let heads = |x: Tensor<4>| x.swap_dims(1, 2);
        for dims in [[2, 5, 3, 8], [3, 7, 4, 32], [2, 64, 8, 128]] {
            check(&device, dims, heads, |y| y);
            check(&device, dims, heads, |y| y.swap_dims(1, 2));
        }
        // A narrowed view (positions of a cache) starts inside its storage.
        check(&device, [2, 3, 9, 8], |x| x.narrow(2, 4, 5), |y| y);
    }

    #[test]
    fn the_checkpointing_autodiff_device_takes_the_fused_path() {
        let device = Device::flex().autodiff().gradient_checkpointing();
        check(&device, [2, 5, 3, 8], |x| x.swap_dims(1, 2), |y| y);
    }

    #[test]
    fn plain_and_untracked_tensors_match_the_composed_formula() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = random([2, 6, 3, 16], &device).swap_dims(1, 2);
            let (cos, sin) = (random([6, 16], &device), random([6, 16], &device));
            let before = rotations();
            let ours = values(rotary(x.clone(), &cos, &sin));
            assert_eq!(rotations(), before + 1, "fused on {device:?}");
            let reference = values(rotary_composed(x, &cos, &sin));
            assert!(worst(&ours, &reference) < 1e-6);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let device = Device::flex();
        let x = random([2, 64, 8, 128], &device).swap_dims(1, 2);
        let (cos, sin) = (random([64, 128], &device), random([64, 128], &device));
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let run = |n| pool(n).install(|| values(rotary(x.clone(), &cos, &sin)));
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[should_panic(expected = "odd")]
    fn an_odd_head_width_is_refused() {
        let device = Device::flex();
        let x = random([1, 2, 3, 5], &device);
        let (cos, sin) = (random([3, 5], &device), random([3, 5], &device));
        rotary(x, &cos, &sin);
    }

    #[test]
    #[should_panic(expected = "the sin table is [4, 8]")]
    fn a_table_of_the_wrong_shape_is_refused() {
        let device = Device::flex();
        let x = random([1, 2, 3, 8], &device);
        let (cos, sin) = (random([3, 8], &device), random([4, 8], &device));
        rotary(x, &cos, &sin);
    }
}
