//! Batched matrix products on strided slices: the batches of a `[..., m, k] x [..., k, n]`
//! product, broadcast leading dimensions included, through [`sgemm`](crate::cpu::sgemm::sgemm).
//!
//! A broadcast operand's gradient sums several batches into one output; those run in order on
//! the calling thread (the sgemm itself threaded), so the sums do not depend on the thread count.

/// A strided matrix inside a tensor's storage: element `(i, j)` of batch `b` is at
/// `offsets[b] + i * rs + j * cs`.
pub(crate) struct Operand<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    pub(crate) offsets: Vec<usize>,
}

/// Per-batch offsets of a tensor with leading dims `dims` (1 = broadcast) and `strides`,
/// over the output's leading dims `out`.
pub(crate) fn batch_offsets(
    start: usize,
    dims: &[usize],
    strides: &[usize],
    out: &[usize],
) -> Vec<usize> {
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

/// `c[b] = a[b] · b[b]` for every output batch `b`; `c` has `m x n` matrices at the given
/// offsets (row stride `n`) and is written before it is read, so it may start uninitialised
/// (see [`written`](crate::cpu::written)). Batches whose outputs are distinct run in parallel; when `summed`,
/// several batches add into one output (a broadcast operand's gradient) and run in order,
/// the first of each output writing it and the others adding to it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
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
    let threads = crate::cpu::pool::threads();
    let flops = 2 * m * n * k;
    // `c[batch] (+)= a[batch] · b[batch]` on `threads` threads.
    let product = |batch: usize, c: &mut [f32], add: bool, threads: usize| {
        crate::cpu::sgemm::sgemm(
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
        crate::cpu::pool::run(threads, &|group| {
            let lo = (group * per).min(batches);
            let hi = ((group + 1) * per).min(batches);
            for (batch, &off) in c_offsets.iter().enumerate().take(hi).skip(lo) {
                assert!(off + size <= len);
                // SAFETY: the output offsets are distinct and `m * n` apart at
                // least (they come from a contiguous output), so no two batches
                // write the same elements, and each range lies inside `c`.
                let out =
                    unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(off), size) };
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

pub(crate) fn contiguous_offsets(dims: &[usize], out: &[usize], size: usize) -> Vec<usize> {
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
                    sum += a.data[batch * m * k + i * k + p] * b.data[batch * k * n + p * n + j];
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
