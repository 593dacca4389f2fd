//! Helpers shared by the unit tests of the CPU kernels (`ops`, `rope`, `attention`).

use burn::tensor::{Device, Distribution, Tensor};

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

/// Uniform values in [-1, 1), as a fresh leaf on `device`.
pub(crate) fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
    let t = Tensor::<D>::random(dims, Distribution::Uniform(-1.0, 1.0), device);
    // Rebuild from data so the tensor is a fresh leaf on `device`.
    Tensor::from_data(t.into_data(), device)
}
