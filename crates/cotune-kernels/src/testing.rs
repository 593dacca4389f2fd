//! Helpers shared by the unit tests of the tensor operations (`ops`, `rope`, `attention`).

use burn::tensor::{Device, Tensor, TensorData};

/// A tensor's values, in order.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The largest difference between `a` and the reference `b`, relative to `1 + |b|`.
pub(crate) fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

/// Uniform values in [-1, 1), as a fresh leaf on `device`: the same values on every run (each
/// thread draws from its own fixed-seed sequence), so the tests' tolerances are not a matter of
/// luck.
pub(crate) fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
    }
    let count = dims.iter().product::<usize>();
    let values: Vec<f32> = STATE.with(|state| {
        (0..count)
            .map(|_| {
                let next = state
                    .get()
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                state.set(next);
                // The top 24 bits as a fraction in [0, 1), then scaled to [-1, 1).
                ((next >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    });
    Tensor::from_data(TensorData::new(values, dims), device)
}

/// The causal mask `[queries, keys]` (true where a query would see the future), as
/// `cotune_sdk::nn::causal_mask` builds it.
pub(crate) fn causal_mask(
    queries: usize,
    keys: usize,
    device: &Device,
) -> Tensor<2, burn::tensor::Bool> {
    Tensor::<2, burn::tensor::Bool>::tril_mask([queries, keys], (keys - queries) as i64, device)
}

/// `[b, t, h * dh]` split into heads `[b, h, t, dh]` (a view), as `cotune_sdk::nn::split_heads`
/// does.
pub(crate) fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
}
