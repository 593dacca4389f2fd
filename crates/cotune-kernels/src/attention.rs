//! Multi-head attention as one operation: for every head the scores, the bias and mask, the
//! softmax and the weighted sum of the values, with the heads' outputs written straight into
//! `[b, t, h * dh]`, and one backward step for all of it.
//!
//! Composed from burn's operations, attention is a dozen operations per layer, each with its own
//! autodiff step: the queries' scaling, the mask's expansion to every head and its conversion to
//! floats, the merge of the heads (a layout copy forward and backward), and the gradients' copies
//! back into the projections' layout. Here the queries, keys and values are read where they lie
//! (any strides: heads split from a projection as views), the mask and bias are read with their
//! broadcasts, and the gradients of the queries, keys and values are written in the layout of
//! the projections they came from, so un-splitting the heads in the backward pass is free.
//!
//! Each head's products run through [`crate::cpu::sgemm`], batches split over threads by whole batch
//! entries; every value is computed the same way whichever thread runs it.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};

/// Scaled dot-product attention over heads, the output's heads merged: `softmax(scale q kᵀ +
/// bias, masked) v` per head, as `[b, tq, h * dh]`.
///
/// Positions where `mask` is true are left out (their score is set to -1e9, so a query that sees
/// nothing averages the values instead of producing NaN, and they pass no gradient). With fewer
/// key/value heads than query heads (grouped-query attention), query head `i` reads key/value
/// head `i / (h / hk)`.
///
/// On the CPU backend this is one fused operation; elsewhere it is composed from burn's
/// operations ([`multi_head_attention_composed`]).
///
/// # Shapes
/// - q: `[b, h, tq, dh]`; k and v: `[b, hk, tk, dh]`, `h` a multiple of `hk`
/// - bias and mask: broadcastable to `[b, h, tq, tk]`
/// - output: `[b, tq, h * dh]`
pub fn multi_head_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    bias: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<3> {
    let full = check_shapes(&q, &k, &v);
    if let Some(bias) = &bias {
        check_broadcast("bias", bias.dims(), full);
    }
    if let Some(mask) = &mask {
        check_broadcast("mask", mask.dims(), full);
    }
    #[cfg(feature = "flex")]
    if let Some(out) =
        crate::flex::attention::attention(&q, &k, &v, scale, bias.as_ref(), mask.as_ref())
    {
        return out;
    }
    multi_head_attention_composed(q, k, v, scale, bias, mask)
}

/// [`multi_head_attention`] composed from burn's operations (the reference it is tested
/// against, and the path on other backends).
pub fn multi_head_attention_composed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    bias: Option<Tensor<4>>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<3> {
    let [_, h, _, _] = check_shapes(&q, &k, &v);
    let group = h / k.dims()[1];
    let repeat = |x: Tensor<4>| {
        if group == 1 {
            return x;
        }
        let [b, hk, t, dh] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, hk, group, t, dh])
            .reshape([b, hk * group, t, dh])
    };
    let mut scores = q.matmul(repeat(k).swap_dims(2, 3)).mul_scalar(scale);
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    if let Some(mask) = mask {
        let dims = scores.dims();
        scores = scores.mask_fill(mask.expand(dims), -1.0e9);
    }
    // The heads merged: `[b, h, tq, dh]` to `[b, tq, h * dh]`.
    let out = softmax(scores, 3).matmul(repeat(v));
    let [b, h, tq, dh] = out.dims();
    out.swap_dims(1, 2).reshape([b, tq, h * dh])
}

/// The scores' shape `[b, h, tq, tk]`; panics naming the mismatch.
fn check_shapes(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> [usize; 4] {
    let [b, h, tq, dh] = q.dims();
    let [kb, hk, tk, kdh] = k.dims();
    assert!(
        kb == b && kdh == dh,
        "attention: keys {:?} do not fit queries {:?} (batch and head width must agree)",
        k.dims(),
        q.dims()
    );
    assert_eq!(
        v.dims(),
        k.dims(),
        "attention: values {:?} differ from keys {:?}",
        v.dims(),
        k.dims()
    );
    assert!(
        hk > 0 && h % hk == 0,
        "attention: {h} query heads are not a multiple of {hk} key/value heads"
    );
    [b, h, tq, tk]
}

fn check_broadcast(what: &str, dims: [usize; 4], full: [usize; 4]) {
    assert!(
        dims.iter().zip(full).all(|(&d, f)| d == f || d == 1),
        "attention: {what} {dims:?} does not broadcast to the scores {full:?}"
    );
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    use crate::testing::{causal_mask, random, split_heads, values, worst};

    /// Output and input gradients of `f(inputs, fused)` with the fused operation and with the
    /// composed one, under a fixed non-uniform upstream gradient; checks the fused path ran.
    fn compare<const N: usize>(
        inputs: [Tensor<3>; N],
        f: impl Fn(&[Tensor<3>; N], bool) -> Tensor<3>,
    ) {
        let run = |fused: bool| {
            let inputs = inputs.clone().map(|t| t.require_grad());
            let before = crate::flex::attention::FUSED.with(|c| c.get());
            let out = f(&inputs, fused);
            let ran = crate::flex::attention::FUSED.with(|c| c.get()) - before;
            assert_eq!(ran, usize::from(fused), "fused path ran {ran} times");
            let weight = Tensor::<3>::ones(out.dims(), &out.device())
                .cumsum(2)
                .div_scalar(7.0)
                .sin();
            let grads = (out.clone() * weight).sum().backward();
            let grads: Vec<Vec<f32>> = inputs
                .iter()
                .map(|t| values(t.grad(&grads).expect("every input takes a gradient")))
                .collect();
            (values(out.inner()), grads)
        };
        let (fused, reference) = (run(true), run(false));
        assert!(worst(&fused.0, &reference.0) < 1e-5, "output");
        for (i, (a, b)) in fused.1.iter().zip(&reference.1).enumerate() {
            assert!(worst(a, b) < 1e-4, "gradient of input {i}: {}", worst(a, b));
        }
    }

    fn either(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        scale: f32,
        bias: Option<Tensor<4>>,
        mask: Option<Tensor<4, Bool>>,
        fused: bool,
    ) -> Tensor<3> {
        if fused {
            multi_head_attention(q, k, v, scale, bias, mask)
        } else {
            multi_head_attention_composed(q, k, v, scale, bias, mask)
        }
    }

    #[test]
    fn causal_self_attention_from_a_fused_projection_matches() {
        // GPT-2's layout: q, k and v are column ranges of one projection, split into heads as
        // views.
        let device = Device::flex().autodiff();
        let (b, t, h, dh) = (3, 7, 4, 5);
        let mask = causal_mask(t, t, &device).reshape([1, 1, t, t]);
        compare([random([b, t, 3 * h * dh], &device)], |[qkv], fused| {
            let mut parts = qkv.clone().chunk(3, 2).into_iter();
            let mut next = || split_heads(parts.next().unwrap(), h);
            let (q, k, v) = (next(), next(), next());
            either(q, k, v, 0.4, None, Some(mask.clone()), fused)
        });
    }

    #[test]
    fn grouped_query_attention_matches() {
        // LLaMA's layout: fewer key/value heads, separate projections.
        let device = Device::flex().autodiff();
        let (b, tq, tk, dh) = (2, 6, 9, 4);
        let mask = causal_mask(tq, tk, &device).reshape([1, 1, tq, tk]);
        compare(
            [
                random([b, tq, 6 * dh], &device),
                random([b, tk, 2 * dh], &device),
                random([b, tk, 2 * dh], &device),
            ],
            |[q, k, v], fused| {
                let split = |x: &Tensor<3>, heads| split_heads(x.clone(), heads);
                either(
                    split(q, 6),
                    split(k, 2),
                    split(v, 2),
                    0.5,
                    None,
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn a_learned_bias_and_a_padding_mask_match() {
        // T5's layout: an unscaled score plus a learned bias shared over the batch (a permuted
        // view, as T5 builds it), and a padding mask over keys; the last batch entry has every
        // key padded, so its queries see nothing.
        let device = Device::flex().autodiff();
        let (b, tq, tk, h, dh) = (3, 5, 6, 2, 4);
        let pad: Vec<bool> = (0..b * tk)
            .map(|i| i % 4 == 3 || i >= (b - 1) * tk)
            .collect();
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, tk]), &device)
            .reshape([b, 1, 1, tk]);
        compare(
            [
                random([b, tq, h * dh], &device),
                random([b, tk, h * dh], &device),
                random([b, tk, h * dh], &device),
                random([tq, tk, h], &device),
            ],
            |[q, k, v, table], fused| {
                let split = |x: &Tensor<3>| split_heads(x.clone(), h);
                let bias = table.clone().permute([2, 0, 1]).unsqueeze::<4>();
                either(
                    split(q),
                    split(k),
                    split(v),
                    1.0,
                    Some(bias),
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn the_checkpointing_autodiff_device_takes_the_fused_path() {
        let device = Device::flex().autodiff().gradient_checkpointing();
        let (b, t, h, dh) = (2, 5, 2, 3);
        let mask = causal_mask(t, t, &device).reshape([1, 1, t, t]);
        compare(
            [random([b, t, h * dh], &device), random([h, t, t], &device)],
            |[x, bias], fused| {
                let heads = split_heads(x.clone(), h);
                let bias = bias.clone().unsqueeze::<4>();
                either(
                    heads.clone(),
                    heads.clone(),
                    heads,
                    0.6,
                    Some(bias),
                    Some(mask.clone()),
                    fused,
                )
            },
        );
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        // Large enough to be split over threads (see `batch_parts`).
        let device = Device::flex().autodiff();
        let (b, t, h, dh) = (8, 64, 4, 16);
        let x = random([b, t, 3 * h * dh], &device);
        let mask = causal_mask(t, t, &device).reshape([1, 1, t, t]);
        let run = || {
            let x = x.clone().require_grad();
            let mut parts = x.clone().chunk(3, 2).into_iter();
            let mut next = || split_heads(parts.next().unwrap(), h);
            let (q, k, v) = (next(), next(), next());
            let out = multi_head_attention(q, k, v, 0.3, None, Some(mask.clone()));
            let grads = out.clone().sin().sum().backward();
            (values(out.inner()), values(x.grad(&grads).unwrap()))
        };
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(run);
        let three = pool(3).install(run);
        assert_eq!(one, three);
    }

    #[test]
    fn plain_tensors_match_and_other_backends_compose() {
        let device = Device::flex();
        let (q, k, v) = (
            random([2, 4, 5, 3], &device),
            random([2, 2, 8, 3], &device),
            random([2, 2, 8, 3], &device),
        );
        let before = crate::flex::attention::FUSED.with(|c| c.get());
        let fused = values(multi_head_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            0.7,
            None,
            None,
        ));
        assert_eq!(crate::flex::attention::FUSED.with(|c| c.get()), before + 1);
        let reference = values(multi_head_attention_composed(q, k, v, 0.7, None, None));
        assert!(worst(&fused, &reference) < 1e-5);
    }

    #[test]
    #[should_panic(expected = "3 query heads are not a multiple of 2 key/value heads")]
    fn query_heads_must_be_a_multiple_of_key_value_heads() {
        let device = Device::flex();
        let q = random([1, 3, 4, 2], &device);
        let k = random([1, 2, 4, 2], &device);
        multi_head_attention(q, k.clone(), k, 1.0, None, None);
    }

    #[test]
    #[should_panic(expected = "mask [1, 2, 4, 4] does not broadcast to the scores [1, 4, 4, 4]")]
    fn a_mask_must_broadcast_to_the_scores() {
        let device = Device::flex();
        let q = random([1, 4, 4, 2], &device);
        let mask = Tensor::<4, Bool>::empty([1, 2, 4, 4], &device);
        multi_head_attention(q.clone(), q.clone(), q, 1.0, None, Some(mask));
    }
}
