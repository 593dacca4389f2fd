//! Activations: GELU in its tanh form (GPT-2's `gelu_new`), SiLU and SwiGLU, and their
//! gradients.

use super::{sigmoid, sigmoid_and_slope};

const GELU_A: f32 = 2.0 * 0.797_884_6; // 2 sqrt(2 / pi)
const GELU_B: f32 = GELU_A * 0.044_715;

dispatch! {
    /// `x * sigmoid(a x + b x^3)`, equal to `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    fn gelu_new(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x * (GELU_A + GELU_B * x * x));
        }
    }
}

dispatch! {
    /// `g * d/dx [x s(z)] = g (s + x s (1 - s) (a + 3 b x^2))`.
    fn gelu_new_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let (s, slope) = sigmoid_and_slope(x * (GELU_A + GELU_B * x * x));
            *dx = g * (s + x * slope * (GELU_A + 3.0 * GELU_B * x * x));
        }
    }
}

dispatch! {
    /// `silu(a) * b`.
    fn swiglu(a: &[f32], b: &[f32], y: &mut [f32]) {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = a * sigmoid(a) * b;
        }
    }
}

dispatch! {
    /// The gate's gradient of `silu(a) * b`: `g b (s + a s (1 - s))`, `s = sigmoid(a)`.
    fn swiglu_backward_gate(a: &[f32], b: &[f32], g: &[f32], da: &mut [f32]) {
        for (((da, &a), &b), &g) in da.iter_mut().zip(a).zip(b).zip(g) {
            let (s, slope) = sigmoid_and_slope(a);
            *da = g * b * (s + a * slope);
        }
    }
}

dispatch! {
    /// `silu(a) * g`: the up input's gradient of `silu(a) * b`.
    fn silu_times(a: &[f32], g: &[f32], y: &mut [f32]) {
        for ((y, &a), &g) in y.iter_mut().zip(a).zip(g) {
            *y = a * sigmoid(a) * g;
        }
    }
}

dispatch! {
    /// `x * sigmoid(x)`.
    fn silu(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x);
        }
    }
}

dispatch! {
    /// `g * (s + x s (1 - s))` with `s = sigmoid(x)`.
    fn silu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let (s, slope) = sigmoid_and_slope(x);
            *dx = g * (s + x * slope);
        }
    }
}
