//! Element-wise kernels over contiguous rows: softmaxes, normalisations and activations, with
//! their gradients. Each public function picks, once per call, the widest vector instructions
//! the CPU has, and runs the same scalar code compiled for them (the compiler vectorises the
//! loops), so the values do not depend on the thread count.
//!
//! Every kernel writes its whole output before it reads any of it: outputs may start
//! uninitialised (see [`crate::cpu::written`]).
//!
//! - `softmax.rs`: softmax, log-softmax and the masked softmax, and their gradients;
//! - `norm.rs`: layer and RMS normalisation with a learned scale and shift, and their gradients;
//! - `activation.rs`: GELU (tanh form), SiLU and SwiGLU, and their gradients;
//! - here: the vectorisable `exp`, the fixed-order row reductions they share, and [`for_rows`],
//!   which splits rows over the worker team.

macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

mod activation;
mod norm;
mod softmax;

pub(crate) use activation::*;
pub(crate) use norm::*;
pub(crate) use softmax::*;

/// `e^x` to about one unit in the last place (Cephes' `expf`: range reduction by `ln 2`
/// and a degree-5 polynomial), written branch-free so loops over it vectorise. Zero below
/// -87.3 (where `e^x` leaves the normal range), and `e^88` above 88.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let under = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the integer in `t`'s low mantissa bits, n in [-126, 128).
    let bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((bits.wrapping_add(127) as u32).wrapping_shl(23));
    if under {
        0.0
    } else {
        e * scale
    }
}

/// Lanes of the partial sums: row reductions keep this many running values side by side
/// (so the compiler can keep them in one vector register), then add them in a fixed order.
const LANES: usize = 16;

#[inline(always)]
fn reduce(v: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = op(*a, x);
        }
    }
    let mut total = acc.into_iter().fold(init, &op);
    for &x in rest {
        total = op(total, x);
    }
    total
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_map(a, b, |y| y)
}

/// `Σ a_i f(b_i)`.
#[inline(always)]
fn dot_map(a: &[f32], b: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ca, cb) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * f(y);
        }
    }
    let mut total: f32 = acc.into_iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        total += x * f(y);
    }
    total
}

#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let mut total: f32 = acc.into_iter().sum();
    for &x in rest {
        total += f(x);
    }
    total
}

/// `sigmoid(z)` and `sigmoid(z) (1 - sigmoid(z))`, the latter as `e s^2` with `e = e^-z`
/// (no cancellation where `s` is near 1).
#[inline(always)]
fn sigmoid_and_slope(z: f32) -> (f32, f32) {
    let e = exp(-z);
    let s = 1.0 / (1.0 + e);
    (s, e * s * s)
}

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    sigmoid_and_slope(z).0
}

/// A kernel over whole rows: input slices (same length as the output) and the output, which
/// it writes in full before reading any of it (the output starts uninitialised).
pub(crate) type RowFn<'a> = dyn Fn(&[&[f32]], &mut [f32]) + Sync + 'a;

/// Applies `f(input row(s), output row(s))` over rows of `width`, split over threads by
/// whole rows (so each value's computation is the same for any thread count).
pub(crate) fn for_rows(inputs: &[&[f32]], out: &mut [f32], width: usize, f: &RowFn) {
    let width = width.max(1);
    let chunk = crate::cpu::pool::rows_per_part(out.len() / width, width) * width;
    crate::cpu::pool::for_chunks(out, chunk, &|i, out| {
        let ins: Vec<&[f32]> = inputs
            .iter()
            .map(|x| &x[i * chunk..i * chunk + out.len()])
            .collect();
        f(&ins, out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fused kernel writes its whole output before reading it (outputs start
    /// uninitialised): starting from NaN or from zero gives the same bits.
    #[test]
    fn kernels_overwrite_whatever_the_output_held() {
        let width = 37;
        let x: Vec<f32> = (0..3 * width)
            .map(|i| ((i * 7) % 23) as f32 * 0.3 - 3.0)
            .collect();
        let g: Vec<f32> = (0..3 * width)
            .map(|i| ((i * 5) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let m: Vec<f32> = (0..3 * width).map(|i| (i % 5 == 0) as u8 as f32).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 * 0.03).collect();
        let beta: Vec<f32> = (0..width).map(|i| i as f32 * 0.01 - 0.2).collect();
        type Kernel<'a> = Box<dyn Fn(&mut [f32]) + 'a>;
        let kernels: Vec<(&str, Kernel)> = vec![
            ("softmax", Box::new(|y| softmax(&x, y, width, false))),
            ("log_softmax", Box::new(|y| softmax(&x, y, width, true))),
            (
                "softmax_backward",
                Box::new(|y| softmax_backward(&x, &g, y, width, false)),
            ),
            (
                "log_softmax_backward",
                Box::new(|y| softmax_backward(&x, &g, y, width, true)),
            ),
            (
                "masked_softmax",
                Box::new(|y| masked_softmax(&x, &m, y, width)),
            ),
            (
                "masked_softmax_backward",
                Box::new(|y| masked_softmax_backward(&x, &g, &m, y, width)),
            ),
            (
                "layer_norm",
                Box::new(|y| affine_norm(&x, &gamma, &[], y, width, true, 1e-5)),
            ),
            (
                "rms_norm",
                Box::new(|y| affine_norm(&x, &gamma, &[], y, width, false, 1e-5)),
            ),
            (
                "layer_norm_backward",
                Box::new(|y| affine_norm_backward(&x, &g, &gamma, y, width, true, 1e-5)),
            ),
            (
                "rms_norm_backward",
                Box::new(|y| affine_norm_backward(&x, &g, &gamma, y, width, false, 1e-5)),
            ),
            ("gelu_new", Box::new(|y| gelu_new(&x, y))),
            (
                "gelu_new_backward",
                Box::new(|y| gelu_new_backward(&x, &g, y)),
            ),
            ("silu", Box::new(|y| silu(&x, y))),
            ("silu_backward", Box::new(|y| silu_backward(&x, &g, y))),
            ("swiglu", Box::new(|y| swiglu(&x, &g, y))),
            (
                "swiglu_backward_gate",
                Box::new(|y| swiglu_backward_gate(&x, &g, &m, y)),
            ),
            ("silu_times", Box::new(|y| silu_times(&x, &g, y))),
            (
                "affine_norm",
                Box::new(|y| affine_norm(&x, &gamma, &beta, y, width, true, 1e-5)),
            ),
            (
                "affine_norm_backward",
                Box::new(|y| affine_norm_backward(&x, &g, &gamma, y, width, false, 1e-5)),
            ),
        ];
        for (name, kernel) in kernels {
            let (mut from_nan, mut from_zero) = (vec![f32::NAN; x.len()], vec![0.0; x.len()]);
            kernel(&mut from_nan);
            kernel(&mut from_zero);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&from_nan), bits(&from_zero), "{name}");
        }
    }

    #[test]
    fn the_vectorised_exp_is_accurate() {
        let mut worst_rel = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let ours = exp(x) as f64;
            let exact = (x as f64).exp();
            worst_rel = worst_rel.max((ours - exact).abs() / exact);
            x += 0.001_3;
        }
        assert!(worst_rel < 3e-7, "worst relative error {worst_rel}");
        assert_eq!(exp(-1.0e9), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }
}
