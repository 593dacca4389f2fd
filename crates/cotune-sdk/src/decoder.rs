//! The parts of a [`LanguageModel`] that every decoder writes the same way: `decode`,
//! `decode_cached` and `new_cache` from one forward pass ([`Decoder`] with
//! [`decoder_methods!`](crate::decoder_methods)), and the language-model head, tied to the
//! token embedding or not ([`logits`]).
//!
//! ```ignore
//! impl Decoder for MyModel {
//!     fn forward(&self, tokens: Tensor<2, Int>, _memory: Option<&Memory>,
//!                cache: Option<&mut KvCache>) -> Tensor<3> {
//!         let offset = cache.as_ref().map_or(0, |c| c.len());
//!         // ... positions offset.., blocks appending to the cache, final norm
//!     }
//!     fn empty_cache(&self) -> KvCache {
//!         KvCache::new(self.blocks.len())
//!     }
//! }
//!
//! impl LanguageModel for MyModel {
//!     // ... config, init, sizes
//!     cotune_sdk::decoder_methods!();
//!
//!     fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
//!         cotune_sdk::decoder::logits(hidden, self.lm_head.as_ref(), &self.embed)
//!     }
//! }
//! ```

use burn::nn::{Embedding, Linear};
use burn::tensor::{Int, Tensor};

use crate::ops::{linear, matmul};
use crate::{LanguageModel, Memory};

/// A decoder stack whose one forward pass serves both the full pass and cached generation.
///
/// Implement it, then write [`decoder_methods!()`](crate::decoder_methods) inside `impl
/// LanguageModel` to get [`decode`](LanguageModel::decode),
/// [`decode_cached`](LanguageModel::decode_cached) and [`new_cache`](LanguageModel::new_cache)
/// from it.
pub trait Decoder: LanguageModel {
    /// The (decoder) stack's hidden states for `tokens`, causally masked. Without a cache they
    /// sit at positions `0..n`; with one, at `cache_len..cache_len + n`, and their keys and
    /// values extend it. `memory` is the encoder output of an encoder-decoder (`None` for a
    /// decoder-only model).
    ///
    /// # Shapes
    /// - tokens: `[b, n]`
    /// - output: `[b, n, d]`
    fn forward(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<&Memory>,
        cache: Option<&mut Self::Cache>,
    ) -> Tensor<3>;

    /// An empty cache (for a [`KvCache`](crate::nn::KvCache), one slot per attention layer).
    fn empty_cache(&self) -> Self::Cache;
}

/// Inside `impl LanguageModel for M`, where `M` implements [`Decoder`](crate::decoder::Decoder):
/// defines `decode` (a forward pass without a cache), `decode_cached` (with the cache) and
/// `new_cache` ([`Decoder::empty_cache`](crate::decoder::Decoder::empty_cache)).
#[macro_export]
macro_rules! decoder_methods {
    () => {
        fn decode(
            &self,
            tokens: $crate::burn::tensor::Tensor<2, $crate::burn::tensor::Int>,
            memory: ::core::option::Option<&$crate::Memory>,
        ) -> $crate::burn::tensor::Tensor<3> {
            <Self as $crate::decoder::Decoder>::forward(
                self,
                tokens,
                memory,
                ::core::option::Option::None,
            )
        }

        fn decode_cached(
            &self,
            tokens: $crate::burn::tensor::Tensor<2, $crate::burn::tensor::Int>,
            memory: ::core::option::Option<&$crate::Memory>,
            cache: &mut <Self as $crate::LanguageModel>::Cache,
        ) -> $crate::burn::tensor::Tensor<3> {
            <Self as $crate::decoder::Decoder>::forward(
                self,
                tokens,
                memory,
                ::core::option::Option::Some(cache),
            )
        }

        fn new_cache(&self) -> <Self as $crate::LanguageModel>::Cache {
            <Self as $crate::decoder::Decoder>::empty_cache(self)
        }
    };
}

/// The language-model head: `head` when the model has its own (`[d, v]`), otherwise the token
/// embedding's table (`[v, d]`) used transposed, a tied head ([`tied_logits`]).
///
/// # Shapes
/// - hidden: `[b, t, d]`
/// - output: `[b, t, v]`
pub fn logits(hidden: Tensor<3>, head: Option<&Linear>, embedding: &Embedding) -> Tensor<3> {
    match head {
        Some(head) => linear(head, hidden),
        None => tied_logits(hidden, embedding),
    }
}

/// Logits from the token embedding's table `[v, d]`, transposed: a head tied to the embedding.
///
/// # Shapes
/// - hidden: `[b, t, d]`
/// - output: `[b, t, v]`
pub fn tied_logits(hidden: Tensor<3>, embedding: &Embedding) -> Tensor<3> {
    let [b, t, d] = hidden.dims();
    let weight = embedding.weight.val();
    let v = weight.dims()[0];
    matmul(hidden.reshape([b * t, d]), weight.transpose()).reshape([b, t, v])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{EmbeddingConfig, LinearConfig};
    use burn::tensor::{Device, TensorData};

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn the_tied_head_is_the_embedding_transposed_and_an_own_head_is_linear() {
        let device = Device::flex();
        let embedding = EmbeddingConfig::new(5, 3).init(&device);
        let hidden = Tensor::<3>::from_data(
            TensorData::new((0..12).map(|i| i as f32 * 0.25 - 1.0).collect(), [2, 2, 3]),
            &device,
        );
        let tied = values(logits(hidden.clone(), None, &embedding));
        let table: Vec<f32> = embedding
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        let h = values(hidden.clone());
        assert_eq!(tied.len(), 4 * 5);
        for row in 0..4 {
            for token in 0..5 {
                let expected: f32 = (0..3).map(|k| h[row * 3 + k] * table[token * 3 + k]).sum();
                assert!((tied[row * 5 + token] - expected).abs() < 1e-5);
            }
        }

        let head = LinearConfig::new(3, 5).init(&device);
        assert_eq!(
            values(logits(hidden.clone(), Some(&head), &embedding)),
            values(linear(&head, hidden))
        );
    }
}
