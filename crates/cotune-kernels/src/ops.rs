//! Tensor operations with fused CPU kernels behind them, and their gradients: matrix products
//! ([`matmul`], [`linear`]), softmaxes ([`softmax`], [`masked_softmax`], [`log_softmax`]),
//! activations ([`gelu_new`], [`silu`], [`swiglu`]) and normalisations ([`layer_norm`],
//! [`rms_norm`]).
//!
//! Half of a training step at the plugins' sizes is matrix products, and burn 0.22.1's CPU
//! backend (`flex`) runs them through the `gemm` crate at a fraction of the machine's speed
//! (measured in `docs/results.md`). [`matmul`] and [`linear`] compute the product with the
//! packed kernel in [`crate::cpu::sgemm`] on `flex` tensors, registering their own backward
//! step with burn's autodiff (both gradients are products through the same kernel). The
//! element-wise operations likewise run one fused kernel forward and one backward where burn
//! composes several operations, each with its own backward step. On any other backend, dtype
//! or layout every operation here falls back to burn's own operations (composed as documented
//! on each), so plugins may call them everywhere.
//!
//! Every element of a result is computed by one thread in a fixed order, so the results do not
//! depend on the number of threads.

use burn::nn::Linear;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bool, Tensor};

/// `lhs · rhs` over the last two dimensions, broadcasting the leading ones (like
/// [`Tensor::matmul`]).
///
/// # Shapes
/// - lhs: `[..., m, k]`, rhs: `[..., k, n]` (leading dimensions equal or 1)
/// - output: `[..., m, n]`
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::product::matmul(&lhs, &rhs) {
        return out;
    }
    lhs.matmul(rhs)
}

/// A [`Linear`] layer applied to `x`, the product through [`matmul`] on the rows of `x`
/// flattened to one matrix (the adapted weight when the layer carries LoRA adapters).
///
/// # Shapes
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let [d_input, d_output] = weight.dims();
    let mut dims = x.dims();
    assert_eq!(
        dims[D - 1],
        d_input,
        "linear: input width {} differs from the weight's {d_input}",
        dims[D - 1]
    );
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut y = matmul(x.reshape([rows, d_input]), weight);
    if let Some(bias) = &layer.bias {
        y = y + bias.val().unsqueeze::<2>();
    }
    dims[D - 1] = d_output;
    y.reshape(dims)
}

/// Softmax over the last dimension, in one fused operation (burn's composes five, each with its
/// own backward step).
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::fused::elementwise(&x, crate::flex::fused::Kind::Softmax) {
        return out;
    }
    burn::tensor::activation::softmax(x, D - 1)
}

/// Softmax over the last dimension of `scores` with the positions where `mask` is true left out
/// (weight zero, and no gradient), in one fused operation: what `scores.mask_fill(mask, -1e9)`
/// followed by a softmax gives, without the mask's expansion and fill as separate operations.
///
/// # Shapes
/// - scores: `[..., k]`, mask: broadcastable to the scores' shape
pub fn masked_softmax<const D: usize>(scores: Tensor<D>, mask: Tensor<D, Bool>) -> Tensor<D> {
    let dims = scores.dims();
    let mask = mask.expand(dims);
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::fused::masked_softmax(&scores, &mask) {
        return out;
    }
    burn::tensor::activation::softmax(scores.mask_fill(mask, -1.0e9), D - 1)
}

/// Log-softmax over the last dimension, in one fused operation.
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::fused::elementwise(&x, crate::flex::fused::Kind::LogSoftmax) {
        return out;
    }
    burn::tensor::activation::log_softmax(x, D - 1)
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's `gelu(approximate="tanh")`):
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in one fused operation.
///
/// Computed as the equal `x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))`, with the cube as
/// `x * x^2`: burn's `gelu_approximate` spells out `powf` and `tanh`, which the CPU backends
/// evaluate element by element through `powf` and `tanhf` (and again in the backward pass);
/// here the only transcendental is the sigmoid. Off `flex` it is composed from burn's
/// operations ([`gelu_new_composed`]).
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::fused::elementwise(&x, crate::flex::fused::Kind::GeluNew) {
        return out;
    }
    gelu_new_composed(x)
}

/// [`gelu_new`] composed from burn's operations, `x * sigmoid(z)` with one fused `sigmoid`
/// whose backward step reuses its output.
pub fn gelu_new_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let two_c = 2.0 * SQRT_2_OVER_PI;
    let inner = x
        .clone()
        .square()
        .mul_scalar(two_c * 0.044715)
        .add_scalar(two_c);
    let z = x.clone() * inner;
    x * sigmoid(z)
}

/// SiLU, `x * sigmoid(x)`, in one fused operation.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::fused::elementwise(&x, crate::flex::fused::Kind::Silu) {
        return out;
    }
    burn::tensor::activation::silu(x)
}

/// `silu(gate) * up`, the gated activation of LLaMA's feed-forward layer (SwiGLU), in one fused
/// operation with one backward step (composed, it is two operations forward and four backward).
///
/// # Shapes
/// - gate and up: the same shape; output: that shape
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    assert_eq!(
        gate.dims(),
        up.dims(),
        "swiglu: gate {:?} and up {:?} differ in shape",
        gate.dims(),
        up.dims()
    );
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::swiglu::swiglu(&gate, &up) {
        return out;
    }
    silu(gate) * up
}

/// Layer normalisation over the last dimension (`(x - mean) / sqrt(var + eps) * gamma + beta`)
/// in one fused operation with one backward step, the scale and shift included. Burn's
/// `LayerNorm` module runs the same formula as nine operations in training.
///
/// # Shapes
/// - x: `[..., d]`, gamma and beta: `[d]`
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) =
        crate::flex::norm::affine_norm(&x, &gamma, beta.as_ref(), true, epsilon as f32)
    {
        return out;
    }
    let y = normalize(x, true, epsilon) * gamma.unsqueeze();
    match beta {
        Some(beta) => y + beta.unsqueeze(),
        None => y,
    }
}

/// Root-mean-square normalisation over the last dimension (`x / sqrt(mean(x^2) + eps) *
/// gamma`, LLaMA's and T5's) in one fused operation with one backward step, the scale included.
///
/// # Shapes
/// - x: `[..., d]`, gamma: `[d]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, epsilon: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex::norm::affine_norm(&x, &gamma, None, false, epsilon as f32) {
        return out;
    }
    normalize(x, false, epsilon) * gamma.unsqueeze()
}

/// `(x - mean) / sqrt(var + eps)` (centred) or `x / sqrt(mean(x^2) + eps)` over the last
/// dimension, composed from burn's operations (where the fused normalisation does not apply).
fn normalize<const D: usize>(x: Tensor<D>, centre: bool, epsilon: f64) -> Tensor<D> {
    let last = D - 1;
    let x = if centre {
        let mean = x.clone().mean_dim(last);
        x - mean
    } else {
        x
    };
    let rms = (x.clone().square().mean_dim(last) + epsilon).sqrt();
    x / rms
}

/// Keeps freed memory in the C allocator's heap instead of returning it to the system, once per
/// process (glibc on Linux; elsewhere nothing).
///
/// A training step allocates and frees buffers of hundreds of kilobytes to megabytes. glibc
/// serves those with `mmap` and returns them with `munmap`, and with the kernel threads of
/// [`matmul`] running, every `munmap` makes the kernel interrupt the other cores to flush their
/// address translations: in a profile of a LLaMA training step that took over a third of the
/// time. Raising glibc's mmap and trim thresholds (to 32 MiB and 1 GiB) lets the heap reuse the
/// memory instead; the process's peak memory did not change in the bench. The trainer calls
/// this when it builds a model; the thresholds apply to the whole process.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // glibc's mallopt parameters (malloc.h).
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_TOP_PAD: i32 = -2;
            const M_MMAP_THRESHOLD: i32 = -3;
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // SAFETY: mallopt only sets allocator parameters; it is thread-safe in glibc.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_TOP_PAD, 64 << 20);
            }
        });
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    use crate::testing::{random, values, worst};

    /// Value and both gradients of `f(a, b).sum()` with our product and with burn's.
    fn check<const D: usize>(
        a_dims: [usize; D],
        b_dims: [usize; D],
        f: impl Fn(Tensor<D>, Tensor<D>, bool) -> Tensor<D>,
    ) {
        let device = Device::flex().autodiff();
        let (a, b) = (random(a_dims, &device), random(b_dims, &device));
        // A fixed, non-uniform upstream gradient.
        let run = |ours: bool| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let out = f(a.clone(), b.clone(), ours);
            let weight = Tensor::<D>::ones(out.dims(), &device)
                .cumsum(D - 1)
                .div_scalar(10.0);
            let grads = (out.clone() * weight).sum().backward();
            (
                values(out.inner()),
                values(a.grad(&grads).unwrap()),
                values(b.grad(&grads).unwrap()),
            )
        };
        let before = crate::flex::product::PRODUCTS.with(|c| c.get());
        let ours = run(true);
        assert_eq!(
            crate::flex::product::PRODUCTS.with(|c| c.get()),
            before + 1,
            "the kernel computed {a_dims:?} x {b_dims:?}"
        );
        let reference = run(false);
        assert!(
            worst(&ours.0, &reference.0) < 1e-5,
            "value {a_dims:?} x {b_dims:?}"
        );
        assert!(
            worst(&ours.1, &reference.1) < 1e-4,
            "lhs grad {a_dims:?} x {b_dims:?}"
        );
        assert!(
            worst(&ours.2, &reference.2) < 1e-4,
            "rhs grad {a_dims:?} x {b_dims:?}"
        );
    }

    fn either<const D: usize>(a: Tensor<D>, b: Tensor<D>, ours: bool) -> Tensor<D> {
        if ours {
            matmul(a, b)
        } else {
            a.matmul(b)
        }
    }

    #[test]
    fn products_and_gradients_match_burns() {
        for (m, k, n) in [(1, 1, 1), (5, 7, 3), (33, 17, 65), (64, 128, 100)] {
            check([m, k], [k, n], either);
        }
        check([2, 3, 9, 8], [2, 3, 8, 11], either);
        // Broadcast leading dimensions on either side: the gradient is summed back.
        check([4, 9, 8], [1, 8, 11], either);
        check([1, 9, 8], [4, 8, 11], either);
        check([2, 1, 5, 6], [1, 3, 6, 7], either);
    }

    #[test]
    fn a_gradient_summed_over_an_empty_batch_is_zero() {
        // (burn's own matmul crashes on this shape, so there is no reference to compare with.)
        let device = Device::flex().autodiff();
        let a = random([1, 9, 8], &device).require_grad();
        let b = random([0, 8, 11], &device).require_grad();
        let out = matmul(a.clone(), b);
        assert_eq!(out.dims(), [0, 9, 11]);
        let grads = out.sum().backward();
        assert_eq!(values(a.grad(&grads).unwrap()), vec![0.0; 72]);
    }

    #[test]
    fn transposed_and_sliced_operands_match_burns() {
        // Attention-style scores: keys transposed as a view.
        check([2, 4, 10, 8], [2, 4, 12, 8], |q, k, ours| {
            either(q, k.swap_dims(2, 3), ours)
        });
        // A left operand that is a transposed view, and a narrowed right one.
        check([7, 5], [7, 20], |a, b, ours| {
            either(a.transpose(), b.narrow(1, 3, 9), ours)
        });
    }

    #[test]
    fn plain_tensors_match_burns_and_other_cases_fall_back() {
        let device = Device::flex();
        let (a, b) = (random([3, 6, 5], &device), random([3, 5, 4], &device));
        let before = crate::flex::product::PRODUCTS.with(|c| c.get());
        let ours = values(matmul(a.clone(), b.clone()));
        assert_eq!(crate::flex::product::PRODUCTS.with(|c| c.get()), before + 1);
        let reference = values(a.clone().matmul(b.clone()));
        assert!(worst(&ours, &reference) < 1e-5);
        // Mismatched leading dimensions are not ours: burn's matmul reports them.
        let c = random([2, 5, 4], &device);
        let outcome = std::panic::catch_unwind(|| matmul(a.clone(), c.clone()));
        assert!(outcome.is_err());
    }

    #[test]
    fn linear_matches_the_layer() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(12, 7).init(&device);
        let x = random([3, 5, 12], &device);
        let ours = values(linear(&layer, x.clone()).inner());
        let reference = values(layer.forward(x).inner());
        assert!(worst(&ours, &reference) < 1e-5);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let device = Device::flex();
        let (a, b) = (random([8, 40, 70], &device), random([8, 70, 50], &device));
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| values(matmul(a.clone(), b.clone())));
        let three = pool(3).install(|| values(matmul(a.clone(), b.clone())));
        assert_eq!(one, three);
    }

    /// Value and input gradient of `ours(x)` against `reference(x)` under a fixed upstream
    /// gradient.
    fn check_unary<const D: usize>(
        dims: [usize; D],
        scale: f32,
        ours: impl Fn(Tensor<D>) -> Tensor<D>,
        reference: impl Fn(Tensor<D>) -> Tensor<D>,
        tolerance: f32,
    ) {
        let device = Device::flex().autodiff();
        let x = random(dims, &device).mul_scalar(scale);
        let run = |f: &dyn Fn(Tensor<D>) -> Tensor<D>| {
            let x = x.clone().require_grad();
            let out = f(x.clone());
            // Upstream gradients in (0, 1], different at every position of a row.
            let width = out.dims()[D - 1] as f32;
            let weight = Tensor::<D>::ones(out.dims(), &device)
                .cumsum(D - 1)
                .div_scalar(width);
            let grads = (out.clone() * weight).sum().backward();
            (values(out.inner()), values(x.grad(&grads).unwrap()))
        };
        let (a, b) = (run(&ours), run(&reference));
        assert!(
            worst(&a.0, &b.0) < tolerance,
            "value {dims:?}: {}",
            worst(&a.0, &b.0)
        );
        assert!(
            worst(&a.1, &b.1) < tolerance,
            "gradient {dims:?}: {}",
            worst(&a.1, &b.1)
        );
        // And without autodiff.
        let plain = Device::flex();
        let xp = Tensor::<D>::from_data(x.clone().inner().into_data(), &plain);
        assert!(worst(&values(ours(xp.clone())), &values(reference(xp))) < tolerance);
    }

    #[test]
    fn fused_softmaxes_match_burns() {
        use burn::tensor::activation as act;
        for dims in [[1, 1, 1], [2, 3, 5], [4, 31, 512], [3, 70, 700]] {
            check_unary(dims, 8.0, softmax, |x| act::softmax(x, 2), 1e-5);
            check_unary(dims, 8.0, log_softmax, |x| act::log_softmax(x, 2), 1e-5);
        }
        // A masked score (-1e9) gets exactly zero weight, as with burn's softmax.
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5, -1.0e9, 2.0], [1, 3]), &device);
        let y = values(softmax(x));
        assert_eq!(y[1], 0.0);
        assert!((y[0] + y[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fused_activations_match_burns() {
        use burn::tensor::activation as act;
        for dims in [[1, 1, 1], [2, 3, 5], [4, 63, 512]] {
            check_unary(dims, 6.0, gelu_new, act::gelu_approximate, 2e-6);
            check_unary(dims, 6.0, silu, act::silu, 2e-6);
        }
    }

    #[test]
    fn fused_swiglu_matches_burns() {
        use burn::tensor::activation::silu as burn_silu;
        let device = Device::flex().autodiff();
        for dims in [[1, 1, 1], [2, 3, 5], [4, 63, 344]] {
            let (gate, up) = (
                random(dims, &device).mul_scalar(6.0),
                random(dims, &device).mul_scalar(2.0),
            );
            let run = |fused: bool| {
                let (gate, up) = (gate.clone().require_grad(), up.clone().require_grad());
                let before = crate::flex::FUSED.with(|c| c.get());
                let out = if fused {
                    swiglu(gate.clone(), up.clone())
                } else {
                    burn_silu(gate.clone()) * up.clone()
                };
                assert_eq!(
                    crate::flex::FUSED.with(|c| c.get()) - before,
                    usize::from(fused)
                );
                let weight = Tensor::<3>::ones(out.dims(), &device)
                    .cumsum(2)
                    .div_scalar(9.0);
                let grads = (out.clone() * weight).sum().backward();
                [
                    values(out.inner()),
                    values(gate.grad(&grads).unwrap()),
                    values(up.grad(&grads).unwrap()),
                ]
            };
            let (ours, reference) = (run(true), run(false));
            for (what, (a, b)) in ["value", "gate gradient", "up gradient"]
                .iter()
                .zip(ours.iter().zip(&reference))
            {
                assert!(worst(a, b) < 1e-5, "{what} {dims:?}: {}", worst(a, b));
            }
        }
    }

    #[test]
    #[should_panic(expected = "swiglu: gate [2, 3] and up [2, 4] differ in shape")]
    fn swiglu_inputs_must_share_a_shape() {
        let device = Device::flex();
        swiglu(random([2, 3], &device), random([2, 4], &device));
    }
    #[test]
    fn fused_norms_match_burns() {
        use burn::nn::{LayerNormConfig, RmsNormConfig};
        let device = Device::flex().autodiff();
        let ln = LayerNormConfig::new(128).with_epsilon(1e-5).init(&device);
        let gamma = random([128], &device).add_scalar(1.0);
        let beta = random([128], &device);
        for dims in [[2, 3, 128], [4, 63, 128]] {
            check_unary(
                dims,
                3.0,
                |x| layer_norm(x, ln.gamma.val(), ln.beta.as_ref().map(|b| b.val()), 1e-5),
                |x| ln.forward(x),
                1e-5,
            );
            check_unary(
                dims,
                3.0,
                |x| layer_norm(x, gamma.clone(), Some(beta.clone()), 1e-5),
                |x| {
                    let mean = x.clone().mean_dim(2);
                    let c = x - mean;
                    let var = c.clone().square().mean_dim(2);
                    c / (var + 1e-5).sqrt() * gamma.clone().unsqueeze() + beta.clone().unsqueeze()
                },
                1e-5,
            );
            let rms = RmsNormConfig::new(128).with_epsilon(1e-6).init(&device);
            check_unary(
                dims,
                3.0,
                |x| rms_norm(x, rms.gamma.val(), 1e-6),
                |x| rms.forward(x),
                1e-5,
            );
        }
    }

    /// The scale's and shift's gradients too (the fused normalisation registers them itself),
    /// with the scale trained or frozen.
    #[test]
    fn fused_norms_give_the_scale_and_shift_their_gradients() {
        let device = Device::flex().autodiff();
        let (x, gamma, beta) = (
            random([4, 63, 128], &device).mul_scalar(3.0),
            random([128], &device).add_scalar(1.0),
            random([128], &device),
        );
        for (centre, with_beta, train_gamma) in [
            (true, true, true),
            (false, false, true),
            (true, true, false),
            (false, false, false),
        ] {
            let run = |fused: bool| {
                let x = x.clone().require_grad();
                let gamma = if train_gamma {
                    gamma.clone().require_grad()
                } else {
                    gamma.clone()
                };
                let beta = with_beta.then(|| beta.clone().require_grad());
                let before = crate::flex::FUSED.with(|c| c.get());
                let out = match (fused, centre) {
                    (true, true) => layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5),
                    (true, false) => rms_norm(x.clone(), gamma.clone(), 1e-5),
                    (false, _) => {
                        let c = if centre {
                            x.clone() - x.clone().mean_dim(2)
                        } else {
                            x.clone()
                        };
                        let ms = c.clone().square().mean_dim(2);
                        let y = c / (ms + 1e-5).sqrt() * gamma.clone().unsqueeze();
                        match &beta {
                            Some(b) => y + b.clone().unsqueeze(),
                            None => y,
                        }
                    }
                };
                assert_eq!(
                    crate::flex::FUSED.with(|c| c.get()) - before,
                    usize::from(fused)
                );
                let weight = Tensor::<3>::ones(out.dims(), &device)
                    .cumsum(2)
                    .div_scalar(50.0);
                let grads = (out.clone() * weight).sum().backward();
                let mut found = vec![values(out.inner()), values(x.grad(&grads).unwrap())];
                found.push(gamma.grad(&grads).map(values).unwrap_or_default());
                found.push(
                    beta.and_then(|b| b.grad(&grads))
                        .map(values)
                        .unwrap_or_default(),
                );
                found
            };
            let (ours, reference) = (run(true), run(false));
            for (what, (a, b)) in ["value", "x gradient", "gamma gradient", "beta gradient"]
                .iter()
                .zip(ours.iter().zip(&reference))
            {
                assert!(
                    worst(a, b) < 1e-4,
                    "{what} (centre {centre}, beta {with_beta}, trained gamma {train_gamma}): {}",
                    worst(a, b)
                );
            }
            assert_eq!(ours[2].is_empty(), !train_gamma);
        }
    }

    #[test]
    fn masked_softmax_matches_mask_fill_then_softmax() {
        use burn::tensor::activation as act;
        let device = Device::flex().autodiff();
        // A causal mask broadcast over batch and heads, plus a fully masked row (padding).
        let causal = Tensor::<2, Bool>::tril_mask([6, 6], 0, &device).reshape([1, 1, 6, 6]);
        let full = Tensor::<2, Bool>::from_data(
            TensorData::new(
                (0..36)
                    .map(|i| i < 6 || (i % 6) > i / 6)
                    .collect::<Vec<bool>>(),
                [6, 6],
            ),
            &device,
        )
        .reshape([1, 1, 6, 6]);
        for mask in [causal, full] {
            let m = mask.clone();
            check_unary(
                [2, 3, 6, 6],
                4.0,
                |x| masked_softmax(x, m.clone()),
                |x| act::softmax(x.mask_fill(m.clone().expand([2, 3, 6, 6]), -1.0e9), 3),
                1e-5,
            );
        }
    }
}
