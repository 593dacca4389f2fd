//! Normalisation layers through the SDK's fused kernels ([`crate::ops::layer_norm`],
//! [`crate::ops::rms_norm`]).
//!
//! - [`RmsNorm`]: root-mean-square normalisation whose learned scale is named `weight`, as
//!   Hugging Face checkpoints name it (burn's `RmsNorm` calls it `gamma`), so parameter names
//!   match the checkpoint's;
//! - [`layer_norm`] and [`rms_norm`]: burn's own `LayerNorm` and `RmsNorm` modules (parameters
//!   `gamma` and `beta`) run through the fused kernels instead of burn's chain of operations.

use burn::module::{Initializer, Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};

/// Root-mean-square layer normalisation with a learned scale named `weight` (initialised to
/// ones): `x / sqrt(mean(x²) + eps) * weight` over the last dimension, in one fused operation.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The scale, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm over `d` features with scale ones.
    pub fn new(d: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Initializer::Ones.init([d], device),
            eps,
        }
    }

    /// # Shapes
    /// - x: `[..., d]`
    /// - output: `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::ops::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// burn's `LayerNorm` applied to `x` through the fused kernel. burn keeps the module's epsilon
/// private, so the caller passes it.
pub fn layer_norm<const D: usize>(ln: &LayerNorm, x: Tensor<D>, eps: f64) -> Tensor<D> {
    crate::ops::layer_norm(x, ln.gamma.val(), ln.beta.as_ref().map(|b| b.val()), eps)
}

/// burn's `RmsNorm` applied to `x` through the fused kernel.
pub fn rms_norm<const D: usize>(norm: &burn::nn::RmsNorm, x: Tensor<D>) -> Tensor<D> {
    crate::ops::rms_norm(x, norm.gamma.val(), norm.epsilon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::RmsNormConfig;
    use burn::tensor::TensorData;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn the_scale_is_named_weight_and_matches_burns_gamma_bit_for_bit() {
        let device = Device::flex();
        let ours = RmsNorm::new(4, 1e-6, &device);
        let names: Vec<String> = crate::params::list(&ours)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["weight"]);

        let scale =
            Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0, 3.0], [4]), &device);
        let ours = RmsNorm {
            weight: Param::from_tensor(scale.clone()),
            eps: 1e-6,
        };
        let mut burns = RmsNormConfig::new(4).with_epsilon(1e-6).init(&device);
        burns.gamma = Param::from_tensor(scale);
        let x = Tensor::<3>::from_data(
            TensorData::new((0..24).map(|i| i as f32 * 0.37 - 4.0).collect(), [2, 3, 4]),
            &device,
        );
        assert_eq!(
            values(ours.forward(x.clone())),
            values(rms_norm(&burns, x.clone()))
        );
        assert_eq!(
            values(ours.forward(x.clone())),
            values(crate::ops::rms_norm(x, burns.gamma.val(), 1e-6))
        );
    }
}
