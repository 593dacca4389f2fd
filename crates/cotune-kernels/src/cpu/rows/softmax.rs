//! Softmax and log-softmax of rows, the masked softmax, and their gradients.

use super::{dot, exp, reduce};

dispatch! {
    /// Softmax (or log-softmax) of each row of `width` values.
    fn softmax(x: &[f32], y: &mut [f32], width: usize, log: bool) {
        for (x, y) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
            let max = reduce(x, f32::NEG_INFINITY, f32::max);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = exp(x - max);
            }
            let sum = reduce(y, 0.0, |a, b| a + b);
            if log {
                let shift = max + sum.ln();
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x - shift;
                }
            } else {
                let inv = 1.0 / sum;
                for y in y.iter_mut() {
                    *y *= inv;
                }
            }
        }
    }
}

dispatch! {
    /// Softmax of each row with the positions where `m` is 1 set to -1e9 first.
    fn masked_softmax(x: &[f32], m: &[f32], y: &mut [f32], width: usize) {
        for ((x, m), y) in x
            .chunks_exact(width)
            .zip(m.chunks_exact(width))
            .zip(y.chunks_exact_mut(width))
        {
            for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
                *y = if m > 0.5 { -1.0e9 } else { x };
            }
            let max = reduce(y, f32::NEG_INFINITY, f32::max);
            for y in y.iter_mut() {
                *y = exp(*y - max);
            }
            let inv = 1.0 / reduce(y, 0.0, |a, b| a + b);
            for y in y.iter_mut() {
                *y *= inv;
            }
        }
    }
}

dispatch! {
    /// The gradient of [`masked_softmax`]: the softmax one, zero where `m` is 1.
    fn masked_softmax_backward(y: &[f32], g: &[f32], m: &[f32], dx: &mut [f32], width: usize) {
        for (((y, g), m), dx) in y
            .chunks_exact(width)
            .zip(g.chunks_exact(width))
            .zip(m.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
        {
            let dot = dot(y, g);
            for (((dx, &y), &g), &m) in dx.iter_mut().zip(y).zip(g).zip(m) {
                *dx = if m > 0.5 { 0.0 } else { y * (g - dot) };
            }
        }
    }
}

dispatch! {
    /// The input gradient of softmax (`y (g - sum(g y))`) or log-softmax
    /// (`g - e^y sum(g)`) from the output `y` and the output gradient `g`.
    fn softmax_backward(y: &[f32], g: &[f32], dx: &mut [f32], width: usize, log: bool) {
        for ((y, g), dx) in y
            .chunks_exact(width)
            .zip(g.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
        {
            if log {
                let sum = reduce(g, 0.0, |a, b| a + b);
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = g - exp(y) * sum;
                }
            } else {
                let dot = dot(y, g);
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            }
        }
    }
}
