//! Matrix products through cotune's own CPU kernel, with their gradients.
//!
//! Half of a training step at the plugins' sizes is matrix products, and burn 0.22.1's CPU
//! backend (`flex`) runs them through the `gemm` crate at a fraction of the machine's speed
//! (measured in `docs/results.md`). [`matmul`] and [`linear`] compute the product with the
//! packed kernel in [`crate::sgemm`] on `flex` tensors, registering their own backward step with
//! burn's autodiff (both gradients are products through the same kernel). On any other backend,
//! dtype or layout they fall back to burn's own `matmul`, so plugins may call them everywhere.
//!
//! Every element of a product is summed by one thread in a fixed order, so the results do not
//! depend on the number of threads.

use burn::nn::Linear;
use burn::tensor::{Bool, Tensor};

/// `lhs · rhs` over the last two dimensions, broadcasting the leading ones (like
/// [`Tensor::matmul`]).
///
/// # Shapes
/// - lhs: `[..., m, k]`, rhs: `[..., k, n]` (leading dimensions equal or 1)
/// - output: `[..., m, n]`
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::matmul(&lhs, &rhs) {
        return out;
    }
    lhs.matmul(rhs)
}

/// A [`Linear`] layer applied to `x`, the product through [`matmul`] on the rows of `x`
/// flattened to one matrix (the adapted weight when the layer carries LoRA adapters).
///
/// # Shapes
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let [d_input, d_output] = weight.dims();
    let mut dims = x.dims();
    assert_eq!(
        dims[D - 1],
        d_input,
        "linear: input width {} differs from the weight's {d_input}",
        dims[D - 1]
    );
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut y = matmul(x.reshape([rows, d_input]), weight);
    if let Some(bias) = &layer.bias {
        y = y + bias.val().unsqueeze::<2>();
    }
    dims[D - 1] = d_output;
    y.reshape(dims)
}

/// Softmax over the last dimension, in one fused operation (burn's composes five, each with its
/// own backward step).
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::elementwise(&x, flex::Kind::Softmax) {
        return out;
    }
    burn::tensor::activation::softmax(x, D - 1)
}

/// Softmax over the last dimension of `scores` with the positions where `mask` is true left out
/// (weight zero, and no gradient), in one fused operation: what `scores.mask_fill(mask, -1e9)`
/// followed by a softmax gives, without the mask's expansion and fill as separate operations.
///
/// # Shapes
/// - scores: `[..., k]`, mask: broadcastable to the scores' shape
pub fn masked_softmax<const D: usize>(scores: Tensor<D>, mask: Tensor<D, Bool>) -> Tensor<D> {
    let dims = scores.dims();
    let mask = mask.expand(dims);
    #[cfg(feature = "flex")]
    if let Some(out) = flex::masked_softmax(&scores, &mask) {
        return out;
    }
    burn::tensor::activation::softmax(scores.mask_fill(mask, -1.0e9), D - 1)
}

/// Log-softmax over the last dimension, in one fused operation.
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::elementwise(&x, flex::Kind::LogSoftmax) {
        return out;
    }
    burn::tensor::activation::log_softmax(x, D - 1)
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`), in one fused operation; see
/// [`crate::nn::gelu_new`] for the formula.
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::elementwise(&x, flex::Kind::GeluNew) {
        return out;
    }
    crate::nn::gelu_new_composed(x)
}

/// SiLU, `x * sigmoid(x)`, in one fused operation.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::elementwise(&x, flex::Kind::Silu) {
        return out;
    }
    burn::tensor::activation::silu(x)
}

/// `silu(gate) * up`, the gated activation of LLaMA's feed-forward layer (SwiGLU), in one fused
/// operation with one backward step (composed, it is two operations forward and four backward).
///
/// # Shapes
/// - gate and up: the same shape; output: that shape
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    assert_eq!(
        gate.dims(),
        up.dims(),
        "swiglu: gate {:?} and up {:?} differ in shape",
        gate.dims(),
        up.dims()
    );
    #[cfg(feature = "flex")]
    if let Some(out) = flex::swiglu(&gate, &up) {
        return out;
    }
    silu(gate) * up
}

/// Layer normalisation over the last dimension (`(x - mean) / sqrt(var + eps) * gamma + beta`)
/// in one fused operation with one backward step, the scale and shift included. Burn's
/// `LayerNorm` module runs the same formula as nine operations in training.
///
/// # Shapes
/// - x: `[..., d]`, gamma and beta: `[d]`
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::affine_norm(&x, &gamma, beta.as_ref(), true, epsilon as f32) {
        return out;
    }
    let y = normalize(x, true, epsilon) * gamma.unsqueeze();
    match beta {
        Some(beta) => y + beta.unsqueeze(),
        None => y,
    }
}

/// Root-mean-square normalisation over the last dimension (`x / sqrt(mean(x^2) + eps) *
/// gamma`, LLaMA's and T5's) in one fused operation with one backward step, the scale included.
///
/// # Shapes
/// - x: `[..., d]`, gamma: `[d]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, epsilon: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::affine_norm(&x, &gamma, None, false, epsilon as f32) {
        return out;
    }
    normalize(x, false, epsilon) * gamma.unsqueeze()
}

/// `(x - mean) / sqrt(var + eps)` (centred) or `x / sqrt(mean(x^2) + eps)` over the last
/// dimension, composed from burn's operations (where the fused normalisation does not apply).
fn normalize<const D: usize>(x: Tensor<D>, centre: bool, epsilon: f64) -> Tensor<D> {
    let last = D - 1;
    let x = if centre {
        let mean = x.clone().mean_dim(last);
        x - mean
    } else {
        x
    };
    let rms = (x.clone().square().mean_dim(last) + epsilon).sqrt();
    x / rms
}

/// Keeps freed memory in the C allocator's heap instead of returning it to the system, once per
/// process (glibc on Linux; elsewhere nothing).
///
/// A training step allocates and frees buffers of hundreds of kilobytes to megabytes. glibc
/// serves those with `mmap` and returns them with `munmap`, and with the kernel threads of
/// [`matmul`] running, every `munmap` makes the kernel interrupt the other cores to flush their
/// address translations: in a profile of a LLaMA training step that took over a third of the
/// time. Raising glibc's mmap and trim thresholds (to 32 MiB and 1 GiB) lets the heap reuse the
/// memory instead; the process's peak memory did not change in the bench. The trainer calls
/// this when it builds a model; the thresholds apply to the whole process.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // glibc's mallopt parameters (malloc.h).
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_TOP_PAD: i32 = -2;
            const M_MMAP_THRESHOLD: i32 = -3;
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // SAFETY: mallopt only sets allocator parameters; it is thread-safe in glibc.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_TOP_PAD, 64 << 20);
            }
        });
    }
}

#[cfg(feature = "flex")]
pub(crate) mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{
        BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
    };
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{binary, unary, Backward, Ops, OpsKind};
    use burn::backend::autodiff::NodeId;
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bool, Bytes, DType, Shape, Tensor};

    use super::kernels;

    /// Our product when both operands are `flex` float32 tensors (both plain or both tracked by
    /// autodiff with the same checkpointing), `None` otherwise.
    pub(super) fn matmul<const D: usize>(lhs: &Tensor<D>, rhs: &Tensor<D>) -> Option<Tensor<D>> {
        if D < 2 || plan(&lhs.dims(), &rhs.dims()).is_none() {
            return None;
        }
        if let (Ok(a), Ok(b)) = (
            lhs.clone().try_into_primitive::<Flex>(),
            rhs.clone().try_into_primitive::<Flex>(),
        ) {
            return product(&a, &b).map(Tensor::from_primitive::<Flex>);
        }
        tracked::<NoCheckpointing, D>(lhs, rhs)
            .or_else(|| tracked::<BalancedCheckpointing, D>(lhs, rhs))
    }

    fn tracked<C, const D: usize>(lhs: &Tensor<D>, rhs: &Tensor<D>) -> Option<Tensor<D>>
    where
        C: CheckpointStrategy,
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let a = lhs.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        let b = rhs.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        if !(is_f32(a.primitive()) && is_f32(b.primitive())) {
            return None;
        }
        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        let out = match MatmulBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // Each operand is kept only when the other one needs a gradient.
                let a_state = b_tracked.then(|| prep.checkpoint(&a));
                let b_state = a_tracked.then(|| prep.checkpoint(&b));
                let value = product(a.primitive(), b.primitive())?;
                let dims = |t: &FlexTensor| t.layout().shape().to_vec();
                prep.finish(
                    (a_state, b_state, dims(a.primitive()), dims(b.primitive())),
                    value,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(product(a.primitive(), b.primitive())?),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
    }

    #[derive(Debug)]
    struct MatmulBackward;

    impl Backward<Flex, 2> for MatmulBackward {
        /// The kept operands and the operands' shapes (a broadcast operand's gradient is
        /// summed back to its shape).
        type State = (Option<NodeId>, Option<NodeId>, Vec<usize>, Vec<usize>);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let (a_id, b_id, a_dims, b_dims) = ops.state;
            let a: Option<FlexTensor> = a_id.map(|id| checkpointer.retrieve_node_output(id));
            let b: Option<FlexTensor> = b_id.map(|id| checkpointer.retrieve_node_output(id));
            binary::<Flex, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| {
                    let b = b.expect("the right operand is kept when the left needs a gradient");
                    grad_lhs(&grad, &b, &a_dims)
                },
                |grad| {
                    let a = a.expect("the left operand is kept when the right needs a gradient");
                    grad_rhs(&a, &grad, &b_dims)
                },
            );
        }
    }

    /// A vector of `len` floats made by `fill`, which must write every element before it reads
    /// it: the kernels' outputs start uninitialised rather than zeroed (zeroing them was 6% of a
    /// training step, in `memset`). `f32` has no invalid bit patterns, and nothing is read before
    /// it is written.
    pub(crate) fn written(len: usize, fill: impl FnOnce(&mut [f32])) -> Vec<f32> {
        let mut data = Vec::<f32>::with_capacity(len);
        // SAFETY: the capacity is `len` floats, properly aligned; `fill` writes every one of them
        // before reading it (the contract above), and the length is set only after that.
        let out = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr(), len) };
        fill(out);
        // SAFETY: all `len` elements were written by `fill`.
        unsafe { data.set_len(len) };
        data
    }

    /// A contiguous float32 tensor owning `data`. (`FlexTensor::zeros` would allocate bytes and
    /// then copy them into an aligned buffer.)
    pub(crate) fn f32_tensor(shape: Shape, data: Vec<f32>) -> FlexTensor {
        FlexTensor::new(
            Bytes::from_elems(data),
            Layout::contiguous(shape),
            DType::F32,
        )
    }

    pub(crate) fn is_f32(t: &FlexTensor) -> bool {
        t.dtype() == DType::F32
    }

    /// The output's leading dimensions when `lhs [.., m, k]` and `rhs [.., k, n]` multiply.
    fn plan(lhs: &[usize], rhs: &[usize]) -> Option<Vec<usize>> {
        let d = lhs.len();
        if d < 2 || rhs.len() != d || lhs[d - 1] != rhs[d - 2] {
            return None;
        }
        lhs[..d - 2]
            .iter()
            .zip(&rhs[..d - 2])
            .map(|(&l, &r)| match (l, r) {
                _ if l == r => Some(l),
                (1, r) => Some(r),
                (l, 1) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// A strided matrix inside a tensor's storage: element `(i, j)` of batch `b` is at
    /// `offsets[b] + i * rs + j * cs`.
    struct Operand<'a> {
        data: &'a [f32],
        rs: usize,
        cs: usize,
        offsets: Vec<usize>,
    }

    /// Per-batch offsets of a tensor with leading dims `dims` (1 = broadcast) and `strides`,
    /// over the output's leading dims `out`.
    fn batch_offsets(start: usize, dims: &[usize], strides: &[usize], out: &[usize]) -> Vec<usize> {
        let count: usize = out.iter().product();
        (0..count)
            .map(|mut flat| {
                let mut offset = start;
                for d in (0..out.len()).rev() {
                    let i = flat % out[d];
                    flat /= out[d];
                    if dims[d] != 1 {
                        offset += i * strides[d];
                    }
                }
                offset
            })
            .collect()
    }

    /// The tensor itself, or a contiguous copy when a stride is negative (the kernel takes
    /// non-negative strides).
    pub(crate) fn non_negative(t: &FlexTensor) -> FlexTensor {
        if t.layout().strides().iter().any(|&s| s < 0) {
            t.to_contiguous()
        } else {
            t.clone()
        }
    }

    /// The matrices of `t` (its last two dimensions, transposed when asked) over the leading
    /// dims `over`; `t`'s strides must be non-negative (see [`non_negative`]).
    fn operand<'a>(
        t: &'a FlexTensor,
        transposed: bool,
        over: &[usize],
    ) -> (usize, usize, Operand<'a>) {
        let dims = t.layout().shape().to_vec();
        let strides: Vec<usize> = t.layout().strides().iter().map(|&s| s as usize).collect();
        let d = dims.len();
        let (mut rows, mut cols) = (dims[d - 2], dims[d - 1]);
        let (mut rs, mut cs) = (strides[d - 2], strides[d - 1]);
        if transposed {
            (rows, cols, rs, cs) = (cols, rows, cs, rs);
        }
        let offsets = batch_offsets(
            t.layout().start_offset(),
            &dims[..d - 2],
            &strides[..d - 2],
            over,
        );
        let data = t.storage::<f32>();
        (
            rows,
            cols,
            Operand {
                data,
                rs,
                cs,
                offsets,
            },
        )
    }

    /// `Σ a · b` of the matrices of `a` and `b` (each transposed when asked) over the leading
    /// dims `over`, into a contiguous tensor with leading dims `keep`: equal to `over`, or 1
    /// where the batches are summed (the gradient of a broadcast operand).
    fn batched_product(
        a: &FlexTensor,
        a_transposed: bool,
        b: &FlexTensor,
        b_transposed: bool,
        over: &[usize],
        keep: &[usize],
    ) -> FlexTensor {
        let (a, b) = (non_negative(a), non_negative(b));
        let (m, k, a) = operand(&a, a_transposed, over);
        let (_, n, b) = operand(&b, b_transposed, over);
        let mut dims = keep.to_vec();
        dims.extend([m, n]);
        let shape = Shape::from(dims);
        let c_offsets = contiguous_offsets(keep, over, m * n);
        let out = written(shape.num_elements(), |out| {
            run(m, n, k, &a, &b, out, &c_offsets, keep != over)
        });
        f32_tensor(shape, out)
    }

    /// `c[b] = a[b] · b[b]` for every output batch `b`; `c` has `m x n` matrices at the given
    /// offsets (row stride `n`) and is written before it is read, so it may start uninitialised
    /// (see [`written`]). Batches whose outputs are distinct run in parallel; when `summed`,
    /// several batches add into one output (a broadcast operand's gradient) and run in order,
    /// the first of each output writing it and the others adding to it.
    #[allow(clippy::too_many_arguments)]
    fn run(
        m: usize,
        n: usize,
        k: usize,
        a: &Operand,
        b: &Operand,
        c: &mut [f32],
        c_offsets: &[usize],
        summed: bool,
    ) {
        let batches = c_offsets.len();
        let threads = crate::pool::threads();
        let flops = 2 * m * n * k;
        // `c[batch] (+)= a[batch] · b[batch]` on `threads` threads.
        let product = |batch: usize, c: &mut [f32], add: bool, threads: usize| {
            crate::sgemm::sgemm(
                m,
                n,
                k,
                &a.data[a.offsets[batch]..],
                a.rs,
                a.cs,
                &b.data[b.offsets[batch]..],
                b.rs,
                b.cs,
                c,
                n,
                add,
                threads,
            )
        };
        if batches > 1 && !summed && threads > 1 && flops * batches >= 1 << 20 {
            // Output matrices are disjoint: hand each thread its own contiguous group.
            let per = batches.div_ceil(threads);
            let size = m * n;
            let base = c.as_mut_ptr() as usize;
            let len = c.len();
            crate::pool::run(threads, &|group| {
                let lo = (group * per).min(batches);
                let hi = ((group + 1) * per).min(batches);
                for (batch, &off) in c_offsets.iter().enumerate().take(hi).skip(lo) {
                    assert!(off + size <= len);
                    // SAFETY: the output offsets are distinct and `m * n` apart at
                    // least (they come from a contiguous output), so no two batches
                    // write the same elements, and each range lies inside `c`.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut((base as *mut f32).add(off), size)
                    };
                    product(batch, out, false, 1);
                }
            });
        } else {
            let size = (m * n).max(1);
            let mut seen = vec![false; c.len() / size];
            for (batch, &off) in c_offsets.iter().enumerate() {
                let add = std::mem::replace(&mut seen[off / size], true);
                product(batch, &mut c[off..], add, threads);
            }
            // An output no batch reached (summed over an empty dimension) is zero.
            for (i, _) in seen.iter().enumerate().filter(|(_, &s)| !s) {
                c[i * size..(i + 1) * size].fill(0.0);
            }
        }
    }

    fn contiguous_offsets(dims: &[usize], out: &[usize], size: usize) -> Vec<usize> {
        // Offsets of a contiguous tensor with leading dims `dims` (1 = summed over) seen from
        // the output's leading dims `out`.
        let mut strides = vec![0; dims.len()];
        let mut acc = size;
        for d in (0..dims.len()).rev() {
            strides[d] = acc;
            acc *= dims[d];
        }
        batch_offsets(0, dims, &strides, out)
    }

    #[cfg(test)]
    thread_local! {
        /// Products computed here on this thread (the tests check the kernel path is taken).
        pub(super) static PRODUCTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Fused element-wise forward passes on this thread, likewise.
        pub(super) static FUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// `run` never reads its output before writing it (outputs start uninitialised): a
        /// NaN-filled output gets exactly the products, or zero where no batch adds to it.
        #[test]
        fn products_overwrite_whatever_the_output_held() {
            let (m, k, n) = (3, 4, 5);
            let a: Vec<f32> = (0..2 * m * k).map(|i| i as f32 * 0.25 - 2.0).collect();
            let b: Vec<f32> = (0..2 * k * n).map(|i| 1.5 - i as f32 * 0.125).collect();
            let operand = |data, rows: usize, cols: usize| Operand {
                data,
                rs: cols,
                cs: 1,
                offsets: vec![0, rows * cols],
            };
            let (a, b) = (operand(&a[..], m, k), operand(&b[..], k, n));
            let expected = |batches: &[usize], i: usize, j: usize| -> f32 {
                let mut sum = 0.0;
                for &batch in batches {
                    for p in 0..k {
                        sum +=
                            a.data[batch * m * k + i * k + p] * b.data[batch * k * n + p * n + j];
                    }
                }
                sum
            };
            let check = |c: &[f32], batches: &[usize]| {
                for i in 0..m {
                    for j in 0..n {
                        let want = expected(batches, i, j);
                        assert!(
                            (c[i * n + j] - want).abs() < 1e-4,
                            "({i}, {j}): {}",
                            c[i * n + j]
                        );
                    }
                }
            };
            // Two distinct outputs.
            let mut c = vec![f32::NAN; 2 * m * n];
            run(m, n, k, &a, &b, &mut c, &[0, m * n], false);
            check(&c[..m * n], &[0]);
            check(&c[m * n..], &[1]);
            // Both batches summed into one output.
            let mut c = vec![f32::NAN; m * n];
            run(m, n, k, &a, &b, &mut c, &[0, 0], true);
            check(&c, &[0, 1]);
            // Summed over no batch at all: zero.
            let mut c = vec![f32::NAN; m * n];
            run(m, n, k, &a, &b, &mut c, &[], true);
            assert!(c.iter().all(|&v| v == 0.0));
        }
    }

    /// The forward product of two tensors, `None` when the shapes or dtypes do not fit.
    fn product(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
        if !(is_f32(lhs) && is_f32(rhs)) {
            return None;
        }
        #[cfg(test)]
        PRODUCTS.with(|c| c.set(c.get() + 1));
        let over = plan(lhs.layout().shape(), rhs.layout().shape())?;
        Some(batched_product(lhs, false, rhs, false, &over, &over))
    }

    /// `d lhs = d out · rhsᵀ`, summed over the leading dimensions where `lhs` was broadcast.
    fn grad_lhs(grad: &FlexTensor, rhs: &FlexTensor, lhs_dims: &[usize]) -> FlexTensor {
        let gd = grad.layout().shape();
        let over = &gd[..gd.num_dims() - 2];
        batched_product(
            grad,
            false,
            rhs,
            true,
            over,
            &lhs_dims[..lhs_dims.len() - 2],
        )
    }

    /// `d rhs = lhsᵀ · d out`, summed over the leading dimensions where `rhs` was broadcast.
    fn grad_rhs(lhs: &FlexTensor, grad: &FlexTensor, rhs_dims: &[usize]) -> FlexTensor {
        let gd = grad.layout().shape();
        let over = &gd[..gd.num_dims() - 2];
        batched_product(
            lhs,
            true,
            grad,
            false,
            over,
            &rhs_dims[..rhs_dims.len() - 2],
        )
    }

    /// A normalisation with its scale (and shift) on `flex` float32 tensors, `None` otherwise.
    pub(super) fn affine_norm<const D: usize>(
        x: &Tensor<D>,
        gamma: &Tensor<1>,
        beta: Option<&Tensor<1>>,
        centre: bool,
        epsilon: f32,
    ) -> Option<Tensor<D>> {
        let width = x.dims()[D - 1];
        if gamma.dims()[0] != width || beta.is_some_and(|b| b.dims()[0] != width) {
            return None;
        }
        let norm = Norm { centre, epsilon };
        if let (Ok(x), Ok(gamma)) = (
            x.clone().try_into_primitive::<Flex>(),
            gamma.clone().try_into_primitive::<Flex>(),
        ) {
            let beta = match beta {
                Some(beta) => Some(beta.clone().try_into_primitive::<Flex>().ok()?),
                None => None,
            };
            if ![&x, &gamma].into_iter().chain(beta.as_ref()).all(is_f32) {
                return None;
            }
            let y = norm.forward(&x, &gamma, beta.as_ref());
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        affine_norm_tracked::<NoCheckpointing, D>(x, gamma, beta, norm)
            .or_else(|| affine_norm_tracked::<BalancedCheckpointing, D>(x, gamma, beta, norm))
    }

    fn affine_norm_tracked<C, const D: usize>(
        x: &Tensor<D>,
        gamma: &Tensor<1>,
        beta: Option<&Tensor<1>>,
        norm: Norm,
    ) -> Option<Tensor<D>>
    where
        C: CheckpointStrategy,
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let x = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        let gamma = gamma
            .clone()
            .try_into_primitive::<Autodiff<Flex, C>>()
            .ok()?;
        if !(is_f32(x.primitive()) && is_f32(gamma.primitive())) {
            return None;
        }
        Some(match beta {
            None => norm.record::<C, 2, D>(
                [x.node(), gamma.node()],
                x.primitive(),
                gamma.primitive(),
                None,
            ),
            Some(beta) => {
                let beta = beta
                    .clone()
                    .try_into_primitive::<Autodiff<Flex, C>>()
                    .ok()?;
                if !is_f32(beta.primitive()) {
                    return None;
                }
                norm.record::<C, 3, D>(
                    [x.node(), gamma.node(), beta.node()],
                    x.primitive(),
                    gamma.primitive(),
                    Some(beta.primitive()),
                )
            }
        })
    }

    /// Layer (centred) or root-mean-square normalisation with a learned scale and shift.
    #[derive(Debug, Clone, Copy)]
    struct Norm {
        centre: bool,
        epsilon: f32,
    }

    impl Norm {
        /// `norm(x) * gamma (+ beta)`.
        fn forward(
            self,
            x: &FlexTensor,
            gamma: &FlexTensor,
            beta: Option<&FlexTensor>,
        ) -> FlexTensor {
            #[cfg(test)]
            FUSED.with(|c| c.set(c.get() + 1));
            let (x, gamma) = (contiguous(x), contiguous(gamma));
            let beta = beta.map(contiguous);
            let shape = x.layout().shape().clone();
            let width = shape[shape.num_dims() - 1].max(1);
            let (g, b) = (
                gamma.storage::<f32>(),
                beta.as_ref().map(|b| b.storage::<f32>()),
            );
            let Norm { centre, epsilon } = self;
            let out = written(shape.num_elements(), |out| {
                for_rows(&[x.storage::<f32>()], out, width, &|i, o| {
                    kernels::affine_norm(i[0], g, b.unwrap_or(&[]), o, width, centre, epsilon)
                })
            });
            f32_tensor(shape, out)
        }

        /// Runs the forward pass and records the backward step (inputs: x, gamma and, when `N`
        /// is 3, beta).
        fn record<C: CheckpointStrategy, const N: usize, const D: usize>(
            self,
            nodes: [burn::backend::autodiff::ops::NodeGuard; N],
            x: &FlexTensor,
            gamma: &FlexTensor,
            beta: Option<&FlexTensor>,
        ) -> Tensor<D>
        where
            NormBackward: Backward<Flex, N, State = (FlexTensor, FlexTensor)>,
            burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
        {
            let out = match (NormBackward { norm: self })
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let y = self.forward(x, gamma, beta);
                    prep.finish((contiguous(x), contiguous(gamma)), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(self.forward(x, gamma, beta)),
            };
            Tensor::from_primitive::<Autodiff<Flex, C>>(out)
        }
    }

    #[derive(Debug)]
    struct NormBackward {
        norm: Norm,
    }

    impl<const N: usize> Backward<Flex, N> for NormBackward {
        /// The input and the scale, contiguous.
        type State = (FlexTensor, FlexTensor);

        fn backward(
            self,
            ops: Ops<Self::State, N>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (x, gamma) = ops.state;
            let Norm { centre, epsilon } = self.norm;
            let grad = contiguous(&grads.consume::<Flex>(&ops.node));
            let shape = x.layout().shape().clone();
            let width = shape[shape.num_dims() - 1].max(1);
            let (xs, gs, gamma_s) = (
                x.storage::<f32>(),
                grad.storage::<f32>(),
                gamma.storage::<f32>(),
            );
            let mut parents = ops.parents.into_iter();
            if let Some(Some(node)) = parents.next() {
                let dx = written(shape.num_elements(), |dx| {
                    for_rows(&[xs, gs], dx, width, &|i, o| {
                        kernels::affine_norm_backward(
                            i[0], i[1], gamma_s, o, width, centre, epsilon,
                        )
                    })
                });
                grads.register::<Flex>(node.id, f32_tensor(shape.clone(), dx));
            }
            let (gamma_node, beta_node) = (parents.next().flatten(), parents.next().flatten());
            if gamma_node.is_some() || beta_node.is_some() {
                // Summed over the rows in order, on this thread: the same sums for any thread
                // count.
                let (mut dgamma, mut dbeta) = (vec![0.0f32; width], vec![0.0f32; width]);
                kernels::affine_norm_params(
                    xs,
                    gs,
                    &mut dgamma,
                    &mut dbeta,
                    width,
                    centre,
                    epsilon,
                );
                let param = |v: Vec<f32>| f32_tensor(Shape::from(vec![width]), v);
                if let Some(node) = gamma_node {
                    grads.register::<Flex>(node.id, param(dgamma));
                }
                if let Some(node) = beta_node {
                    grads.register::<Flex>(node.id, param(dbeta));
                }
            }
        }
    }

    /// [`super::swiglu`] on `flex` float32 tensors (both plain, or both tracked by autodiff with
    /// the same checkpointing), `None` otherwise.
    pub(super) fn swiglu<const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>> {
        if let (Ok(a), Ok(b)) = (
            gate.clone().try_into_primitive::<Flex>(),
            up.clone().try_into_primitive::<Flex>(),
        ) {
            if !(is_f32(&a) && is_f32(&b)) {
                return None;
            }
            return Some(Tensor::from_primitive::<Flex>(swiglu_forward(&a, &b)));
        }
        swiglu_tracked::<NoCheckpointing, D>(gate, up)
            .or_else(|| swiglu_tracked::<BalancedCheckpointing, D>(gate, up))
    }

    fn swiglu_tracked<C, const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>>
    where
        C: CheckpointStrategy,
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let a = gate
            .clone()
            .try_into_primitive::<Autodiff<Flex, C>>()
            .ok()?;
        let b = up.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        if !(is_f32(a.primitive()) && is_f32(b.primitive())) {
            return None;
        }
        let out = match SwigluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (a, b) = (contiguous(a.primitive()), contiguous(b.primitive()));
                let y = swiglu_forward(&a, &b);
                prep.finish((a, b), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(swiglu_forward(a.primitive(), b.primitive())),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
    }

    fn swiglu_forward(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
        #[cfg(test)]
        FUSED.with(|c| c.set(c.get() + 1));
        let (a, b) = (contiguous(a), contiguous(b));
        let shape = a.layout().shape().clone();
        let inputs = [a.storage::<f32>(), b.storage::<f32>()];
        let width = shape[shape.num_dims() - 1].max(1);
        let out = written(shape.num_elements(), |out| {
            for_rows(&inputs, out, width, &|i, o| kernels::swiglu(i[0], i[1], o))
        });
        f32_tensor(shape, out)
    }

    #[derive(Debug)]
    struct SwigluBackward;

    impl Backward<Flex, 2> for SwigluBackward {
        /// The gate and up inputs, contiguous.
        type State = (FlexTensor, FlexTensor);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (a, b) = ops.state;
            let shape = a.layout().shape().clone();
            let width = shape[shape.num_dims() - 1].max(1);
            let gradient = |grad: &FlexTensor, f: &RowFn| {
                let grad = contiguous(grad);
                let inputs = [
                    a.storage::<f32>(),
                    b.storage::<f32>(),
                    grad.storage::<f32>(),
                ];
                let out = written(shape.num_elements(), |out| for_rows(&inputs, out, width, f));
                f32_tensor(shape.clone(), out)
            };
            binary::<Flex, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| {
                    gradient(&grad, &|i, o| {
                        kernels::swiglu_backward_gate(i[0], i[1], i[2], o)
                    })
                },
                |grad| gradient(&grad, &|i, o| kernels::silu_times(i[0], i[2], o)),
            );
        }
    }

    /// The fused element-wise operations.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) enum Kind {
        Softmax,
        /// Softmax of the scores with a second input, 1 where a position is left out.
        MaskedSoftmax,
        LogSoftmax,
        GeluNew,
        Silu,
    }

    impl Kind {
        /// Whether the backward step needs the output (else the input).
        fn keeps_output(self) -> bool {
            matches!(self, Kind::Softmax | Kind::MaskedSoftmax | Kind::LogSoftmax)
        }
    }

    /// A fused element-wise operation on a `flex` float32 tensor, `None` on anything else.
    pub(super) fn elementwise<const D: usize>(x: &Tensor<D>, kind: Kind) -> Option<Tensor<D>> {
        elementwise_with(x, kind, None)
    }

    /// [`Kind::MaskedSoftmax`]: the mask (already expanded to the scores' shape) becomes a
    /// plain float32 input, 1 where left out.
    pub(super) fn masked_softmax<const D: usize>(
        scores: &Tensor<D>,
        mask: &Tensor<D, Bool>,
    ) -> Option<Tensor<D>> {
        let mask = mask_as_floats(mask)?;
        elementwise_with(scores, Kind::MaskedSoftmax, Some(contiguous(&mask)))
    }

    /// A boolean mask as a plain `flex` float32 tensor, 1 where true (masks carry no gradient:
    /// one made on an autodiff device is unwrapped). `None` on another backend.
    pub(crate) fn mask_as_floats<const D: usize>(mask: &Tensor<D, Bool>) -> Option<FlexTensor> {
        let mask = mask.clone().float();
        let mask = match mask.clone().try_into_primitive::<Flex>() {
            Ok(m) => m,
            Err(_) if mask.device().is_autodiff() => {
                mask.inner().try_into_primitive::<Flex>().ok()?
            }
            Err(_) => return None,
        };
        is_f32(&mask).then_some(mask)
    }

    fn elementwise_with<const D: usize>(
        x: &Tensor<D>,
        kind: Kind,
        extra: Option<FlexTensor>,
    ) -> Option<Tensor<D>> {
        if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
            if !is_f32(&t) {
                return None;
            }
            let y = forward(&t, kind, extra.as_ref());
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        elementwise_tracked::<NoCheckpointing, D>(x, kind, extra.clone())
            .or_else(|| elementwise_tracked::<BalancedCheckpointing, D>(x, kind, extra))
    }

    fn elementwise_tracked<C, const D: usize>(
        x: &Tensor<D>,
        kind: Kind,
        extra: Option<FlexTensor>,
    ) -> Option<Tensor<D>>
    where
        C: CheckpointStrategy,
        burn::tensor::DispatchTensor: burn::backend::DispatchKindConversion<Autodiff<Flex, C>>,
    {
        let t = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
        if !is_f32(t.primitive()) {
            return None;
        }
        let out = match (ElementwiseBackward { kind })
            .prepare::<C>([t.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward(t.primitive(), kind, extra.as_ref());
                let kept = if kind.keeps_output() {
                    y.clone()
                } else {
                    t.primitive().clone()
                };
                prep.finish((kept, extra), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(t.primitive(), kind, extra.as_ref())),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex, C>>(out))
    }

    #[derive(Debug)]
    struct ElementwiseBackward {
        kind: Kind,
    }

    impl Backward<Flex, 1> for ElementwiseBackward {
        /// The output (softmaxes) or the input (activations), and the extra input if any.
        type State = (FlexTensor, Option<FlexTensor>);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (kept, extra) = ops.state;
            let kind = self.kind;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                backward(&kept, &grad, kind, extra.as_ref())
            });
        }
    }

    fn contiguous(t: &FlexTensor) -> FlexTensor {
        if t.is_contiguous() && t.layout().start_offset() == 0 {
            t.clone()
        } else {
            t.to_contiguous()
        }
    }

    /// A kernel over whole rows: input slices (same length as the output) and the output, which
    /// it writes in full before reading any of it (the output starts uninitialised).
    type RowFn<'a> = dyn Fn(&[&[f32]], &mut [f32]) + Sync + 'a;

    /// Applies `f(input row(s), output row(s))` over rows of `width`, split over threads by
    /// whole rows (so each value's computation is the same for any thread count).
    fn for_rows(inputs: &[&[f32]], out: &mut [f32], width: usize, f: &RowFn) {
        let width = width.max(1);
        let chunk = crate::pool::rows_per_part(out.len() / width, width) * width;
        crate::pool::for_chunks(out, chunk, &|i, out| {
            let ins: Vec<&[f32]> = inputs
                .iter()
                .map(|x| &x[i * chunk..i * chunk + out.len()])
                .collect();
            f(&ins, out);
        });
    }

    fn forward(x: &FlexTensor, kind: Kind, extra: Option<&FlexTensor>) -> FlexTensor {
        #[cfg(test)]
        FUSED.with(|c| c.set(c.get() + 1));
        let x = contiguous(x);
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let mut inputs = vec![x.storage::<f32>()];
        inputs.extend(extra.map(|e| e.storage::<f32>()));
        let f: &RowFn = match kind {
            Kind::Softmax => &|i, o| kernels::softmax(i[0], o, width, false),
            Kind::MaskedSoftmax => &|i, o| kernels::masked_softmax(i[0], i[1], o, width),
            Kind::LogSoftmax => &|i, o| kernels::softmax(i[0], o, width, true),
            Kind::GeluNew => &|i, o| kernels::gelu_new(i[0], o),
            Kind::Silu => &|i, o| kernels::silu(i[0], o),
        };
        let out = written(shape.num_elements(), |out| {
            for_rows(&inputs, out, width.max(1), f)
        });
        f32_tensor(shape, out)
    }

    fn backward(
        kept: &FlexTensor,
        grad: &FlexTensor,
        kind: Kind,
        extra: Option<&FlexTensor>,
    ) -> FlexTensor {
        let (kept, grad) = (contiguous(kept), contiguous(grad));
        let shape = kept.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let f: &RowFn = match kind {
            Kind::Softmax => &|i, o| kernels::softmax_backward(i[0], i[1], o, width, false),
            Kind::MaskedSoftmax => {
                &|i, o| kernels::masked_softmax_backward(i[0], i[1], i[2], o, width)
            }
            Kind::LogSoftmax => &|i, o| kernels::softmax_backward(i[0], i[1], o, width, true),
            Kind::GeluNew => &|i, o| kernels::gelu_new_backward(i[0], i[1], o),
            Kind::Silu => &|i, o| kernels::silu_backward(i[0], i[1], o),
        };
        let mut inputs = vec![kept.storage::<f32>(), grad.storage::<f32>()];
        inputs.extend(extra.map(|e| e.storage::<f32>()));
        let out = written(shape.num_elements(), |out| {
            for_rows(&inputs, out, width.max(1), f)
        });
        f32_tensor(shape, out)
    }
}

/// Element-wise kernels over contiguous rows. Each public function picks, once per call, the
/// widest vector instructions the CPU has, and runs the same scalar code compiled for them (the
/// compiler vectorises the loops), so the values do not depend on the thread count.
#[cfg(feature = "flex")]
pub(crate) mod kernels {
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

    const GELU_A: f32 = 2.0 * 0.797_884_6; // 2 sqrt(2 / pi)
    const GELU_B: f32 = GELU_A * 0.044_715;

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
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    use crate::testing::{random, values, worst};

    /// Value and both gradients of `f(a, b).sum()` with our product and with burn's.
    fn check<const D: usize>(
        a_dims: [usize; D],
        b_dims: [usize; D],
        f: impl Fn(Tensor<D>, Tensor<D>, bool) -> Tensor<D>,
    ) {
        let device = Device::flex().autodiff();
        let (a, b) = (random(a_dims, &device), random(b_dims, &device));
        // A fixed, non-uniform upstream gradient.
        let run = |ours: bool| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let out = f(a.clone(), b.clone(), ours);
            let weight = Tensor::<D>::ones(out.dims(), &device)
                .cumsum(D - 1)
                .div_scalar(10.0);
            let grads = (out.clone() * weight).sum().backward();
            (
                values(out.inner()),
                values(a.grad(&grads).unwrap()),
                values(b.grad(&grads).unwrap()),
            )
        };
        let before = flex::PRODUCTS.with(|c| c.get());
        let ours = run(true);
        assert_eq!(
            flex::PRODUCTS.with(|c| c.get()),
            before + 1,
            "the kernel computed {a_dims:?} x {b_dims:?}"
        );
        let reference = run(false);
        assert!(
            worst(&ours.0, &reference.0) < 1e-5,
            "value {a_dims:?} x {b_dims:?}"
        );
        assert!(
            worst(&ours.1, &reference.1) < 1e-4,
            "lhs grad {a_dims:?} x {b_dims:?}"
        );
        assert!(
            worst(&ours.2, &reference.2) < 1e-4,
            "rhs grad {a_dims:?} x {b_dims:?}"
        );
    }

    fn either<const D: usize>(a: Tensor<D>, b: Tensor<D>, ours: bool) -> Tensor<D> {
        if ours {
            matmul(a, b)
        } else {
            a.matmul(b)
        }
    }

    #[test]
    fn products_and_gradients_match_burns() {
        for (m, k, n) in [(1, 1, 1), (5, 7, 3), (33, 17, 65), (64, 128, 100)] {
            check([m, k], [k, n], either);
        }
        check([2, 3, 9, 8], [2, 3, 8, 11], either);
        // Broadcast leading dimensions on either side: the gradient is summed back.
        check([4, 9, 8], [1, 8, 11], either);
        check([1, 9, 8], [4, 8, 11], either);
        check([2, 1, 5, 6], [1, 3, 6, 7], either);
    }

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
            (
                "softmax",
                Box::new(|y| kernels::softmax(&x, y, width, false)),
            ),
            (
                "log_softmax",
                Box::new(|y| kernels::softmax(&x, y, width, true)),
            ),
            (
                "softmax_backward",
                Box::new(|y| kernels::softmax_backward(&x, &g, y, width, false)),
            ),
            (
                "log_softmax_backward",
                Box::new(|y| kernels::softmax_backward(&x, &g, y, width, true)),
            ),
            (
                "masked_softmax",
                Box::new(|y| kernels::masked_softmax(&x, &m, y, width)),
            ),
            (
                "masked_softmax_backward",
                Box::new(|y| kernels::masked_softmax_backward(&x, &g, &m, y, width)),
            ),
            (
                "layer_norm",
                Box::new(|y| kernels::affine_norm(&x, &gamma, &[], y, width, true, 1e-5)),
            ),
            (
                "rms_norm",
                Box::new(|y| kernels::affine_norm(&x, &gamma, &[], y, width, false, 1e-5)),
            ),
            (
                "layer_norm_backward",
                Box::new(|y| kernels::affine_norm_backward(&x, &g, &gamma, y, width, true, 1e-5)),
            ),
            (
                "rms_norm_backward",
                Box::new(|y| kernels::affine_norm_backward(&x, &g, &gamma, y, width, false, 1e-5)),
            ),
            ("gelu_new", Box::new(|y| kernels::gelu_new(&x, y))),
            (
                "gelu_new_backward",
                Box::new(|y| kernels::gelu_new_backward(&x, &g, y)),
            ),
            ("silu", Box::new(|y| kernels::silu(&x, y))),
            (
                "silu_backward",
                Box::new(|y| kernels::silu_backward(&x, &g, y)),
            ),
            ("swiglu", Box::new(|y| kernels::swiglu(&x, &g, y))),
            (
                "swiglu_backward_gate",
                Box::new(|y| kernels::swiglu_backward_gate(&x, &g, &m, y)),
            ),
            ("silu_times", Box::new(|y| kernels::silu_times(&x, &g, y))),
            (
                "affine_norm",
                Box::new(|y| kernels::affine_norm(&x, &gamma, &beta, y, width, true, 1e-5)),
            ),
            (
                "affine_norm_backward",
                Box::new(|y| kernels::affine_norm_backward(&x, &g, &gamma, y, width, false, 1e-5)),
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
    fn a_gradient_summed_over_an_empty_batch_is_zero() {
        // (burn's own matmul crashes on this shape, so there is no reference to compare with.)
        let device = Device::flex().autodiff();
        let a = random([1, 9, 8], &device).require_grad();
        let b = random([0, 8, 11], &device).require_grad();
        let out = matmul(a.clone(), b);
        assert_eq!(out.dims(), [0, 9, 11]);
        let grads = out.sum().backward();
        assert_eq!(values(a.grad(&grads).unwrap()), vec![0.0; 72]);
    }

    #[test]
    fn transposed_and_sliced_operands_match_burns() {
        // Attention-style scores: keys transposed as a view.
        check([2, 4, 10, 8], [2, 4, 12, 8], |q, k, ours| {
            either(q, k.swap_dims(2, 3), ours)
        });
        // A left operand that is a transposed view, and a narrowed right one.
        check([7, 5], [7, 20], |a, b, ours| {
            either(a.transpose(), b.narrow(1, 3, 9), ours)
        });
    }

    #[test]
    fn plain_tensors_match_burns_and_other_cases_fall_back() {
        let device = Device::flex();
        let (a, b) = (random([3, 6, 5], &device), random([3, 5, 4], &device));
        let before = flex::PRODUCTS.with(|c| c.get());
        let ours = values(matmul(a.clone(), b.clone()));
        assert_eq!(flex::PRODUCTS.with(|c| c.get()), before + 1);
        let reference = values(a.clone().matmul(b.clone()));
        assert!(worst(&ours, &reference) < 1e-5);
        // Mismatched leading dimensions are not ours: burn's matmul reports them.
        let c = random([2, 5, 4], &device);
        let outcome = std::panic::catch_unwind(|| matmul(a.clone(), c.clone()));
        assert!(outcome.is_err());
    }

    #[test]
    fn linear_matches_the_layer() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(12, 7).init(&device);
        let x = random([3, 5, 12], &device);
        let ours = values(linear(&layer, x.clone()).inner());
        let reference = values(layer.forward(x).inner());
        assert!(worst(&ours, &reference) < 1e-5);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let device = Device::flex();
        let (a, b) = (random([8, 40, 70], &device), random([8, 70, 50], &device));
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| values(matmul(a.clone(), b.clone())));
        let three = pool(3).install(|| values(matmul(a.clone(), b.clone())));
        assert_eq!(one, three);
    }

    /// Value and input gradient of `ours(x)` against `reference(x)` under a fixed upstream
    /// gradient.
    fn check_unary<const D: usize>(
        dims: [usize; D],
        scale: f32,
        ours: impl Fn(Tensor<D>) -> Tensor<D>,
        reference: impl Fn(Tensor<D>) -> Tensor<D>,
        tolerance: f32,
    ) {
        let device = Device::flex().autodiff();
        let x = random(dims, &device).mul_scalar(scale);
        let run = |f: &dyn Fn(Tensor<D>) -> Tensor<D>| {
            let x = x.clone().require_grad();
            let out = f(x.clone());
            // Upstream gradients in (0, 1], different at every position of a row.
            let width = out.dims()[D - 1] as f32;
            let weight = Tensor::<D>::ones(out.dims(), &device)
                .cumsum(D - 1)
                .div_scalar(width);
            let grads = (out.clone() * weight).sum().backward();
            (values(out.inner()), values(x.grad(&grads).unwrap()))
        };
        let (a, b) = (run(&ours), run(&reference));
        assert!(
            worst(&a.0, &b.0) < tolerance,
            "value {dims:?}: {}",
            worst(&a.0, &b.0)
        );
        assert!(
            worst(&a.1, &b.1) < tolerance,
            "gradient {dims:?}: {}",
            worst(&a.1, &b.1)
        );
        // And without autodiff.
        let plain = Device::flex();
        let xp = Tensor::<D>::from_data(x.clone().inner().into_data(), &plain);
        assert!(worst(&values(ours(xp.clone())), &values(reference(xp))) < tolerance);
    }

    #[test]
    fn fused_softmaxes_match_burns() {
        use burn::tensor::activation as act;
        for dims in [[1, 1, 1], [2, 3, 5], [4, 31, 512], [3, 70, 700]] {
            check_unary(dims, 8.0, softmax, |x| act::softmax(x, 2), 1e-5);
            check_unary(dims, 8.0, log_softmax, |x| act::log_softmax(x, 2), 1e-5);
        }
        // A masked score (-1e9) gets exactly zero weight, as with burn's softmax.
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5, -1.0e9, 2.0], [1, 3]), &device);
        let y = values(softmax(x));
        assert_eq!(y[1], 0.0);
        assert!((y[0] + y[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fused_activations_match_burns() {
        use burn::tensor::activation as act;
        for dims in [[1, 1, 1], [2, 3, 5], [4, 63, 512]] {
            check_unary(dims, 6.0, gelu_new, act::gelu_approximate, 2e-6);
            check_unary(dims, 6.0, silu, act::silu, 2e-6);
        }
    }

    #[test]
    fn fused_swiglu_matches_burns() {
        use burn::tensor::activation::silu as burn_silu;
        let device = Device::flex().autodiff();
        for dims in [[1, 1, 1], [2, 3, 5], [4, 63, 344]] {
            let (gate, up) = (
                random(dims, &device).mul_scalar(6.0),
                random(dims, &device).mul_scalar(2.0),
            );
            let run = |fused: bool| {
                let (gate, up) = (gate.clone().require_grad(), up.clone().require_grad());
                let before = flex::FUSED.with(|c| c.get());
                let out = if fused {
                    swiglu(gate.clone(), up.clone())
                } else {
                    burn_silu(gate.clone()) * up.clone()
                };
                assert_eq!(flex::FUSED.with(|c| c.get()) - before, usize::from(fused));
                let weight = Tensor::<3>::ones(out.dims(), &device)
                    .cumsum(2)
                    .div_scalar(9.0);
                let grads = (out.clone() * weight).sum().backward();
                [
                    values(out.inner()),
                    values(gate.grad(&grads).unwrap()),
                    values(up.grad(&grads).unwrap()),
                ]
            };
            let (ours, reference) = (run(true), run(false));
            for (what, (a, b)) in ["value", "gate gradient", "up gradient"]
                .iter()
                .zip(ours.iter().zip(&reference))
            {
                assert!(worst(a, b) < 1e-5, "{what} {dims:?}: {}", worst(a, b));
            }
        }
    }

    #[test]
    #[should_panic(expected = "swiglu: gate [2, 3] and up [2, 4] differ in shape")]
    fn swiglu_inputs_must_share_a_shape() {
        let device = Device::flex();
        swiglu(random([2, 3], &device), random([2, 4], &device));
    }

    #[test]
    fn the_vectorised_exp_is_accurate() {
        let mut worst_rel = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let ours = kernels::exp(x) as f64;
            let exact = (x as f64).exp();
            worst_rel = worst_rel.max((ours - exact).abs() / exact);
            x += 0.001_3;
        }
        assert!(worst_rel < 3e-7, "worst relative error {worst_rel}");
        assert_eq!(kernels::exp(-1.0e9), 0.0);
        assert_eq!(kernels::exp(0.0), 1.0);
    }

    #[test]
    fn fused_norms_match_burns() {
        use burn::nn::{LayerNormConfig, RmsNormConfig};
        let device = Device::flex().autodiff();
        let ln = LayerNormConfig::new(128).with_epsilon(1e-5).init(&device);
        let gamma = random([128], &device).add_scalar(1.0);
        let beta = random([128], &device);
        for dims in [[2, 3, 128], [4, 63, 128]] {
            check_unary(
                dims,
                3.0,
                |x| layer_norm(x, ln.gamma.val(), ln.beta.as_ref().map(|b| b.val()), 1e-5),
                |x| ln.forward(x),
                1e-5,
            );
            check_unary(
                dims,
                3.0,
                |x| layer_norm(x, gamma.clone(), Some(beta.clone()), 1e-5),
                |x| {
                    let mean = x.clone().mean_dim(2);
                    let c = x - mean;
                    let var = c.clone().square().mean_dim(2);
                    c / (var + 1e-5).sqrt() * gamma.clone().unsqueeze() + beta.clone().unsqueeze()
                },
                1e-5,
            );
            let rms = RmsNormConfig::new(128).with_epsilon(1e-6).init(&device);
            check_unary(
                dims,
                3.0,
                |x| rms_norm(x, rms.gamma.val(), 1e-6),
                |x| rms.forward(x),
                1e-5,
            );
        }
    }

    /// The scale's and shift's gradients too (the fused normalisation registers them itself),
    /// with the scale trained or frozen.
    #[test]
    fn fused_norms_give_the_scale_and_shift_their_gradients() {
        let device = Device::flex().autodiff();
        let (x, gamma, beta) = (
            random([4, 63, 128], &device).mul_scalar(3.0),
            random([128], &device).add_scalar(1.0),
            random([128], &device),
        );
        for (centre, with_beta, train_gamma) in [
            (true, true, true),
            (false, false, true),
            (true, true, false),
            (false, false, false),
        ] {
            let run = |fused: bool| {
                let x = x.clone().require_grad();
                let gamma = if train_gamma {
                    gamma.clone().require_grad()
                } else {
                    gamma.clone()
                };
                let beta = with_beta.then(|| beta.clone().require_grad());
                let before = flex::FUSED.with(|c| c.get());
                let out = match (fused, centre) {
                    (true, true) => layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5),
                    (true, false) => rms_norm(x.clone(), gamma.clone(), 1e-5),
                    (false, _) => {
                        let c = if centre {
                            x.clone() - x.clone().mean_dim(2)
                        } else {
                            x.clone()
                        };
                        let ms = c.clone().square().mean_dim(2);
                        let y = c / (ms + 1e-5).sqrt() * gamma.clone().unsqueeze();
                        match &beta {
                            Some(b) => y + b.clone().unsqueeze(),
                            None => y,
                        }
                    }
                };
                assert_eq!(flex::FUSED.with(|c| c.get()) - before, usize::from(fused));
                let weight = Tensor::<3>::ones(out.dims(), &device)
                    .cumsum(2)
                    .div_scalar(50.0);
                let grads = (out.clone() * weight).sum().backward();
                let mut found = vec![values(out.inner()), values(x.grad(&grads).unwrap())];
                found.push(gamma.grad(&grads).map(values).unwrap_or_default());
                found.push(
                    beta.and_then(|b| b.grad(&grads))
                        .map(values)
                        .unwrap_or_default(),
                );
                found
            };
            let (ours, reference) = (run(true), run(false));
            for (what, (a, b)) in ["value", "x gradient", "gamma gradient", "beta gradient"]
                .iter()
                .zip(ours.iter().zip(&reference))
            {
                assert!(
                    worst(a, b) < 1e-4,
                    "{what} (centre {centre}, beta {with_beta}, trained gamma {train_gamma}): {}",
                    worst(a, b)
                );
            }
            assert_eq!(ours[2].is_empty(), !train_gamma);
        }
    }

    #[test]
    fn masked_softmax_matches_mask_fill_then_softmax() {
        use burn::tensor::activation as act;
        let device = Device::flex().autodiff();
        // A causal mask broadcast over batch and heads, plus a fully masked row (padding).
        let causal = Tensor::<2, Bool>::tril_mask([6, 6], 0, &device).reshape([1, 1, 6, 6]);
        let full = Tensor::<2, Bool>::from_data(
            TensorData::new(
                (0..36)
                    .map(|i| i < 6 || (i % 6) > i / 6)
                    .collect::<Vec<bool>>(),
                [6, 6],
            ),
            &device,
        )
        .reshape([1, 1, 6, 6]);
        for mask in [causal, full] {
            let m = mask.clone();
            check_unary(
                [2, 3, 6, 6],
                4.0,
                |x| masked_softmax(x, m.clone()),
                |x| act::softmax(x.mask_fill(m.clone().expand([2, 3, 6, 6]), -1.0e9), 3),
                1e-5,
            );
        }
    }
}
