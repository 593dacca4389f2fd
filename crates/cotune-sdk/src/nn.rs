//! Small building blocks shared by model plugins: attention with masks and a key/value cache.

use burn::tensor::{Bool, Device, Tensor};

/// Per-layer keys and values of the tokens decoded so far.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// An empty cache for `layers` attention layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
        }
    }

    /// The number of cached positions (zero when empty).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys and values `[b, h, n, dh]` for `layer` and returns all of them.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let slot = &mut self.layers[layer];
        let (k_all, v_all) = match slot.take() {
            Some((k_old, v_old)) => (
                Tensor::cat(vec![k_old, k], 2),
                Tensor::cat(vec![v_old, v], 2),
            ),
            None => (k, v),
        };
        *slot = Some((k_all.clone(), v_all.clone()));
        (k_all, v_all)
    }

    /// Returns the stored keys and values of `layer`, computing them once with `init` (used for
    /// cross-attention, whose keys and values come from the encoder and never change).
    pub fn get_or_insert(
        &mut self,
        layer: usize,
        init: impl FnOnce() -> (Tensor<4>, Tensor<4>),
    ) -> (Tensor<4>, Tensor<4>) {
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            *slot = Some(init());
        }
        let (k, v) = slot.as_ref().expect("just filled");
        (k.clone(), v.clone())
    }
}

/// The causal mask for `queries` new positions attending over `keys` positions, where the
/// queries are the last `queries` of the keys: true where a query would see the future.
///
/// # Shapes
/// - output: `[queries, keys]`
pub fn causal_mask(queries: usize, keys: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2, Bool>::tril_mask([queries, keys], (keys - queries) as i64, device)
}

/// Scaled dot-product attention with an optional additive bias and an optional boolean mask
/// (true = blocked).
///
/// # Shapes
/// - q: `[b, h, tq, dh]`, k and v: `[b, h, tk, dh]`
/// - bias: broadcastable to `[b, h, tq, tk]`
/// - mask: broadcastable to `[b, h, tq, tk]`
/// - output: `[b, h, tq, dh]`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    bias: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    // Scaling the queries touches `tq * dh` values instead of the scores' `tq * tk`.
    let q = if scale != 1.0 { q.mul_scalar(scale) } else { q };
    let mut scores = crate::ops::matmul(q, k.swap_dims(2, 3));
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    // A large finite negative (-1e9) for masked positions keeps fully-masked rows (padding
    // queries) free of NaN.
    let weights = match mask {
        Some(mask) => crate::ops::masked_softmax(scores, mask),
        None => crate::ops::softmax(scores),
    };
    crate::ops::matmul(weights, v)
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's `gelu(approximate="tanh")`):
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
///
/// On the CPU backend this is one fused operation; elsewhere it is composed from burn's
/// operations ([`gelu_new_composed`]). Both are [`crate::ops::gelu_new`] and
/// [`crate::ops::gelu_new_composed`], which document how it is computed.
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    crate::ops::gelu_new(x)
}

pub use crate::ops::gelu_new_composed;

/// Splits `[b, t, h * dh]` into heads `[b, h, t, dh]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
}

/// Merges heads `[b, h, t, dh]` back into `[b, t, h * dh]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}

/// A padding mask `[b, t]` (true at padding) turned into a key mask `[b, 1, 1, t]`.
pub fn key_padding_mask(pad_mask: Tensor<2, Bool>) -> Tensor<4, Bool> {
    let [b, t] = pad_mask.dims();
    pad_mask.reshape([b, 1, 1, t])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::gelu_approximate;
    use burn::tensor::TensorData;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn gelu_new_equals_the_tanh_formula_and_its_gradient() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (-80..=80).map(|i| i as f32 * 0.1).collect();
        let input = || {
            Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device).require_grad()
        };
        let (a, b) = (input(), input());
        let ours = gelu_new(a.clone());
        let reference = gelu_approximate(b.clone());
        let worst = values(ours.clone().inner())
            .iter()
            .zip(values(reference.clone().inner()))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "forward differs by {worst}");
        let (ga, gb) = (ours.sum().backward(), reference.sum().backward());
        let (ga, gb) = (a.grad(&ga).unwrap(), b.grad(&gb).unwrap());
        let worst = values(ga)
            .iter()
            .zip(values(gb))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "gradient differs by {worst}");
    }
}
