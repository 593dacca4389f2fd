//! Rotary position embeddings (RoPE, "RoFormer", Su et al., 2021) in Hugging Face's LLaMA
//! layout, as one fused operation with its own backward step.
//!
//! Composed from burn's operations, RoPE is two `narrow`s, a `neg`, a `cat`, two `mul`s and an
//! `add`, each with its own backward step, on the queries and the keys of every layer. On `flex`
//! float32 tensors [`rotary`] computes it in one pass that reads its input through the input's
//! strides (heads split from a projection by `swap_dims` are a transposed view, and need no copy) and
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
    if let Some(out) = crate::flex::rope::rotary(&x, cos, sin) {
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

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Device;

    use crate::testing::{random, values, worst};

    fn rotations() -> usize {
        crate::flex::rope::ROTATIONS.with(|c| c.get())
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
