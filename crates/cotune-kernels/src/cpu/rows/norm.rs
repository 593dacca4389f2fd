//! Layer (centred) and root-mean-square normalisation of rows with a learned scale and shift,
//! and their gradients.

use super::{dot_map, reduce, sum_map};

/// A row's mean (zero when not centring) and `1 / sqrt(var + eps)`.
#[inline(always)]
fn row_stats(x: &[f32], centre: bool, epsilon: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = if centre {
        reduce(x, 0.0, |a, b| a + b) / n
    } else {
        0.0
    };
    let var = sum_map(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + epsilon).sqrt())
}

dispatch! {
    /// Each row normalised (`(x - mean) / sqrt(var + eps)`, or `x / sqrt(mean(x^2) + eps)`
    /// when not centring), scaled by `gamma` and shifted by `beta` (none when empty).
    fn affine_norm(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32], width: usize, centre: bool, epsilon: f32) {
        for (x, y) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
            let (mean, rstd) = row_stats(x, centre, epsilon);
            for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                *y = (x - mean) * rstd * g;
            }
            for (y, &b) in y.iter_mut().zip(beta) {
                *y += b;
            }
        }
    }
}

dispatch! {
    /// The input gradient of [`affine_norm`] from the input `x` and the output gradient `g`:
    /// `rstd (g' - mean(g') - x^ mean(g' x^))` with `g' = g gamma`, without `mean(g')` when
    /// not centring.
    fn affine_norm_backward(x: &[f32], g: &[f32], gamma: &[f32], dx: &mut [f32], width: usize, centre: bool, epsilon: f32) {
        for ((x, g), dx) in x
            .chunks_exact(width)
            .zip(g.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
        {
            let n = width as f32;
            let (mean, rstd) = row_stats(x, centre, epsilon);
            // dx holds g' first.
            for ((d, &g), &s) in dx.iter_mut().zip(g).zip(gamma) {
                *d = g * s;
            }
            let mean_g = if centre {
                reduce(dx, 0.0, |a, b| a + b) / n
            } else {
                0.0
            };
            let mean_gx = dot_map(dx, x, |x| (x - mean) * rstd) / n;
            for (d, &x) in dx.iter_mut().zip(x) {
                *d = rstd * (*d - mean_g - (x - mean) * rstd * mean_gx);
            }
        }
    }
}

dispatch! {
    /// The scale's and shift's gradients of [`affine_norm`]: `Σ g x^` and `Σ g` over the
    /// rows, added in row order.
    fn affine_norm_params(x: &[f32], g: &[f32], dgamma: &mut [f32], dbeta: &mut [f32], width: usize, centre: bool, epsilon: f32) {
        for (x, g) in x.chunks_exact(width).zip(g.chunks_exact(width)) {
            let (mean, rstd) = row_stats(x, centre, epsilon);
            for (((dg, db), &x), &g) in dgamma.iter_mut().zip(dbeta.iter_mut()).zip(x).zip(g) {
                *dg += g * ((x - mean) * rstd);
                *db += g;
            }
        }
    }
}
