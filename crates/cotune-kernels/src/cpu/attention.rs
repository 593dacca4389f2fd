//! Multi-head attention on slices: per head the scores `q kᵀ`, the scale, bias and mask, the
//! softmax and the weighted sum of the values, and the backward pass of all of it.
//!
//! Queries, keys, values, mask and bias are read where they lie, through a [`View`] of their
//! storage (any non-negative strides; stride 0 along a broadcast dimension). The output and the
//! gradients of the queries, keys and values are written in the layout of the projections the
//! heads came from (`[b, t, heads, dh]` in memory), so merging or un-splitting the heads costs
//! nothing. Each head's products run through [`sgemm`] on the calling thread; batch entries are
//! split over the worker team, and every value is computed the same way whichever thread runs
//! it.

use std::sync::Mutex;

use crate::cpu::sgemm::sgemm;

/// A matrix inside a slice: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Rows of `width` values one after another.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: width,
            cs: 1,
        }
    }

    /// The transpose (the same values read the other way).
    fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `c = a · b`, or `c += a · b` when `add`, on the calling thread: `a` is `m x k`, `b` is
/// `k x n`, `c` has row stride `ldc`.
#[allow(clippy::too_many_arguments)]
fn product(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, add: bool) {
    sgemm(
        m, n, k, a.data, a.rs, a.cs, b.data, b.rs, b.cs, c, ldc, add, 1,
    );
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) hk: usize,
    pub(crate) tq: usize,
    pub(crate) tk: usize,
    pub(crate) dh: usize,
}

impl Dims {
    fn group(self) -> usize {
        self.h / self.hk
    }
}

/// Where element `[i0, i1, i2, i3]` of a 4-D tensor lies in its storage; stride 0 along a
/// broadcast (size 1) dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub(crate) start: usize,
    pub(crate) strides: [usize; 4],
}

impl View {
    fn at(self, i: [usize; 4]) -> usize {
        self.start + (0..4).map(|d| i[d] * self.strides[d]).sum::<usize>()
    }
}

/// A float32 input with its view.
#[derive(Clone, Copy)]
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) view: View,
}

impl<'a> Input<'a> {
    /// The storage from element `i` on.
    fn from(self, i: [usize; 4]) -> &'a [f32] {
        &self.data[self.view.at(i)..]
    }

    /// The `[t, dh]` matrix of batch entry `bi`, head `head`.
    fn head(self, bi: usize, head: usize) -> Mat<'a> {
        Mat {
            data: self.from([bi, head, 0, 0]),
            rs: self.view.strides[2],
            cs: self.view.strides[3],
        }
    }

    /// Row `[i0, i1, i2]` along the last dimension.
    fn row(self, [i0, i1, i2]: [usize; 3]) -> Row<'a> {
        Row {
            data: self.from([i0, i1, i2, 0]),
            stride: self.view.strides[3],
        }
    }
}

/// One row of a mask or bias: value `j` at `data[j * stride]` (stride 0 when broadcast).
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    data: &'a [f32],
    stride: usize,
}

impl Row<'_> {
    fn get(self, j: usize) -> f32 {
        self.data[j * self.stride]
    }
}

/// The inputs of one call, read through their views.
pub(crate) struct Inputs<'a> {
    pub(crate) dims: Dims,
    pub(crate) q: Input<'a>,
    pub(crate) k: Input<'a>,
    pub(crate) v: Input<'a>,
    pub(crate) bias: Option<Input<'a>>,
    pub(crate) mask: Option<Input<'a>>,
}

/// Batch entries per thread, or all on one when the work is small.
fn batch_parts(d: Dims) -> usize {
    let flops = 4 * d.b * d.h * d.tq * d.tk * d.dh;
    if flops < 1 << 20 {
        1
    } else {
        crate::cpu::pool::threads().min(d.b).max(1)
    }
}

/// `data` split into runs of `per` whole batch entries (`per_batch` values each), one lock
/// each so every thread takes its own.
fn by_batch(data: &mut [f32], per_batch: usize, per: usize) -> Vec<Mutex<&mut [f32]>> {
    data.chunks_mut((per * per_batch).max(1))
        .map(Mutex::new)
        .collect()
}

/// A part's own slice out of its lock.
fn take<'s>(slot: &Mutex<&'s mut [f32]>) -> &'s mut [f32] {
    std::mem::take(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()))
}

impl<'a> Inputs<'a> {
    /// Row `i` of the mask of batch entry `bi`, head `hi`: whether key `j` is left out.
    fn mask_row(&self, bi: usize, hi: usize, i: usize) -> impl Fn(usize) -> bool + '_ {
        let row = self.mask.map(|m| m.row([bi, hi, i]));
        move |j| row.is_some_and(|m| m.get(j) > 0.5)
    }

    /// The forward pass: `out` receives the output `[b, tq, h * dh]` and `w` the softmax
    /// weights `[b, h, tq, tk]`, both written in full (they may start uninitialised). Batch
    /// entries are split over the worker team when the work is large enough.
    pub(crate) fn forward(&self, scale: f32, out: &mut [f32], w: &mut [f32]) {
        let d = self.dims;
        let parts = batch_parts(d);
        let (out_batch, w_batch) = (d.tq * d.h * d.dh, d.h * d.tq * d.tk);
        let per = d.b.div_ceil(parts);
        let outs = by_batch(out, out_batch, per);
        let ws = by_batch(w, w_batch, per);
        crate::cpu::pool::run(outs.len(), &|part| {
            let (out, w) = (take(&outs[part]), take(&ws[part]));
            let first = part * per;
            for (local, bi) in (first..(first + per).min(d.b)).enumerate() {
                self.forward_batch(
                    bi,
                    scale,
                    &mut out[local * out_batch..(local + 1) * out_batch],
                    &mut w[local * w_batch..(local + 1) * w_batch],
                );
            }
        });
    }

    /// Batch entry `bi`: `out` is its `[tq, h * dh]`, `w` its `[h, tq, tk]` weights.
    fn forward_batch(&self, bi: usize, scale: f32, out: &mut [f32], w: &mut [f32]) {
        let d = self.dims;
        let mut row = vec![0.0f32; d.tk];
        for hi in 0..d.h {
            let kh = hi / d.group();
            let w = &mut w[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk];
            // Scores: q · kᵀ (keys read transposed through their strides).
            product(
                d.tq,
                d.tk,
                d.dh,
                self.q.head(bi, hi),
                self.k.head(bi, kh).t(),
                w,
                d.tk,
                false,
            );
            for (i, w) in w.chunks_exact_mut(d.tk.max(1)).enumerate() {
                let masked = self.mask_row(bi, hi, i);
                let bias = self.bias.map(|b| b.row([bi, hi, i]));
                for (j, (r, &s)) in row.iter_mut().zip(w.iter()).enumerate() {
                    *r = if masked(j) {
                        -1.0e9
                    } else {
                        s * scale + bias.map_or(0.0, |b| b.get(j))
                    };
                }
                crate::cpu::rows::softmax(&row, w, d.tk, false);
            }
            // This head's output: weights · v, into its columns of `[tq, h * dh]`.
            product(
                d.tq,
                d.dh,
                d.tk,
                Mat::rows(w, d.tk),
                self.v.head(bi, kh),
                &mut out[hi * d.dh..],
                d.h * d.dh,
                false,
            );
        }
    }

    /// The backward pass from the softmax `weights` `[b, h, tq, tk]` of the forward pass and
    /// the output gradient `g` (`[b, tq, h * dh]` seen as `[b, h, tq, dh]` through its view).
    /// Writes in full (they may start uninitialised) the gradients of the queries `dq`
    /// (`[b, tq, h, dh]` in memory), of the keys `dk` and values `dv` (`[b, tk, hk, dh]`: the
    /// layout of the projections they came from) and, unless `ds_all` is empty, the scores'
    /// gradient `[b, h, tq, tk]` (for the bias).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        scale: f32,
        weights: &[f32],
        g: Input,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        ds_all: &mut [f32],
    ) {
        let d = self.dims;
        let parts = batch_parts(d);
        let (q_batch, kv_batch, s_batch) =
            (d.tq * d.h * d.dh, d.tk * d.hk * d.dh, d.h * d.tq * d.tk);
        let per = d.b.div_ceil(parts);
        let dqs = by_batch(dq, q_batch, per);
        let dks = by_batch(dk, kv_batch, per);
        let dvs = by_batch(dv, kv_batch, per);
        let dss = by_batch(ds_all, s_batch, per);
        crate::cpu::pool::run(dqs.len(), &|part| {
            let (dq, dk, dv) = (take(&dqs[part]), take(&dks[part]), take(&dvs[part]));
            let mut ds_all = dss.get(part).map(take);
            let first = part * per;
            for (local, bi) in (first..(first + per).min(d.b)).enumerate() {
                self.backward_batch(
                    bi,
                    scale,
                    &weights[bi * s_batch..(bi + 1) * s_batch],
                    g,
                    &mut dq[local * q_batch..(local + 1) * q_batch],
                    &mut dk[local * kv_batch..(local + 1) * kv_batch],
                    &mut dv[local * kv_batch..(local + 1) * kv_batch],
                    ds_all
                        .as_mut()
                        .map(|s| &mut s[local * s_batch..(local + 1) * s_batch]),
                );
            }
        });
    }

    /// Batch entry `bi` of the backward pass: `w` its weights `[h, tq, tk]`; `dq` its
    /// `[tq, h * dh]`, `dk` and `dv` its `[tk, hk * dh]`; `ds_all`, when kept, its scores'
    /// gradient `[h, tq, tk]`.
    #[allow(clippy::too_many_arguments)]
    fn backward_batch(
        &self,
        bi: usize,
        scale: f32,
        w: &[f32],
        g: Input,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        mut ds_all: Option<&mut [f32]>,
    ) {
        let d = self.dims;
        let mut ds = vec![0.0f32; d.tq * d.tk];
        for kh in 0..d.hk {
            for member in 0..d.group() {
                let hi = kh * d.group() + member;
                let w = &w[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk];
                // The weights' gradient: d out · vᵀ.
                product(
                    d.tq,
                    d.tk,
                    d.dh,
                    g.head(bi, hi),
                    self.v.head(bi, kh).t(),
                    &mut ds,
                    d.tk,
                    false,
                );
                // The scores' gradient through the softmax; none where masked.
                for (i, (ds, w)) in ds
                    .chunks_exact_mut(d.tk.max(1))
                    .zip(w.chunks_exact(d.tk.max(1)))
                    .enumerate()
                {
                    let dot: f32 = w.iter().zip(ds.iter()).map(|(p, s)| p * s).sum();
                    let masked = self.mask_row(bi, hi, i);
                    for (j, (s, &p)) in ds.iter_mut().zip(w).enumerate() {
                        *s = if masked(j) { 0.0 } else { p * (*s - dot) };
                    }
                }
                if let Some(all) = ds_all.as_deref_mut() {
                    all[hi * d.tq * d.tk..(hi + 1) * d.tq * d.tk].copy_from_slice(&ds);
                }
                if scale != 1.0 {
                    ds.iter_mut().for_each(|s| *s *= scale);
                }
                // d q = d scores · k, into this head's columns.
                product(
                    d.tq,
                    d.dh,
                    d.tk,
                    Mat::rows(&ds, d.tk),
                    self.k.head(bi, kh),
                    &mut dq[hi * d.dh..],
                    d.h * d.dh,
                    false,
                );
                // d k += d scoresᵀ · q and d v += weightsᵀ · d out, over the heads sharing
                // this key/value head, in order.
                product(
                    d.tk,
                    d.dh,
                    d.tq,
                    Mat::rows(&ds, d.tk).t(),
                    self.q.head(bi, hi),
                    &mut dk[kh * d.dh..],
                    d.hk * d.dh,
                    member > 0,
                );
                product(
                    d.tk,
                    d.dh,
                    d.tq,
                    Mat::rows(w, d.tk).t(),
                    g.head(bi, hi),
                    &mut dv[kh * d.dh..],
                    d.hk * d.dh,
                    member > 0,
                );
            }
        }
    }
}

/// `values` (contiguous, shape `full`) summed over the dimensions where `dims` is 1, in a
/// fixed order.
pub(crate) fn sum_to(values: &[f32], full: [usize; 4], dims: [usize; 4]) -> Vec<f32> {
    if dims == full {
        return values.to_vec();
    }
    let mut out = vec![0.0f32; dims.iter().product()];
    let mut i = 0;
    for i0 in 0..full[0] {
        for i1 in 0..full[1] {
            for i2 in 0..full[2] {
                for i3 in 0..full[3] {
                    let at = [i0, i1, i2, i3];
                    let mut o = 0;
                    for dim in 0..4 {
                        o = o * dims[dim] + if dims[dim] == 1 { 0 } else { at[dim] };
                    }
                    out[o] += values[i];
                    i += 1;
                }
            }
        }
    }
    out
}
