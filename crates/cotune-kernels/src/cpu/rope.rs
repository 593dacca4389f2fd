//! The rotary position embedding (RoPE) on slices: each row of a head rotated by its position's
//! cosine and sine tables, `[x1 c1 - x2 s1, x2 c2 + x1 s2]` on the two halves of the row
//! (Hugging Face's LLaMA layout).

use std::mem::MaybeUninit;

/// `x` `[b, h, n, dh]` rotated by the tables `cos` and `sin` (`[n, dh]`, contiguous): element
/// `[i0, i1, i2, i3]` of `x` is at `data[start + i0 s[0] + i1 s[1] + i2 s[2] + i3]` (its rows
/// are runs of adjacent values).
///
/// The output is laid out in memory as `[b, n, h, dh]` (the layout of the projection the heads
/// were split from).
pub(crate) fn rotate(
    data: &[f32],
    start: usize,
    s: [usize; 4],
    [b, h, n, dh]: [usize; 4],
    cos: &[f32],
    sin: &[f32],
) -> Vec<f32> {
    // Rows in `[b, n, h]` order.
    by_rows(b * n * h, dh, &|row, out| {
        let (head, p, batch) = (row % h, (row / h) % n, row / (h * n));
        let at = start + batch * s[0] + head * s[1] + p * s[2];
        let table = p * dh..(p + 1) * dh;
        rotate_row(&data[at..at + dh], &cos[table.clone()], &sin[table], out);
    })
}

/// The sine table of the transposed rotation, from the table `sin` (rows of `dh` values). On
/// each pair of positions `(i, i + dh/2)` the forward step multiplies by `[[c1, -s1], [s2, c2]]`
/// (`s1`, `s2` the table's two halves at that row); the input gradient takes the transpose
/// `[[c1, s2], [-s1, c2]]`, which is the forward form with the halves `[-s2, -s1]`. So the
/// backward step is the same kernel with this table, and its values equal those of `g * cos +
/// rotate_halfᵀ(g * sin)` exactly (negation does not round).
pub(crate) fn transposed_sin(sin: &[f32], dh: usize) -> Vec<f32> {
    let half = dh / 2;
    let mut out = Vec::with_capacity(sin.len());
    for row in sin.chunks_exact(dh.max(1)) {
        let (s1, s2) = row.split_at(half);
        out.extend(s2.iter().chain(s1).map(|&v| -v));
    }
    out
}

/// One row: `[x1 c1 - x2 s1, x2 c2 + x1 s2]` for the halves `x1, x2` of `x`, `c1, c2` of
/// `cos` and `s1, s2` of `sin`. Writes every value of `out`.
#[inline]
fn rotate_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [MaybeUninit<f32>]) {
    let half = out.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (c1, c2) = cos.split_at(half);
    let (s1, s2) = sin.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for ((((o, &a), &b), &c), &s) in o1.iter_mut().zip(x1).zip(x2).zip(c1).zip(s1) {
        o.write(a * c - b * s);
    }
    for ((((o, &a), &b), &c), &s) in o2.iter_mut().zip(x1).zip(x2).zip(c2).zip(s2) {
        o.write(b * c + a * s);
    }
}

/// A row-writing kernel: `f(row, out)` writes every value of row `row`'s output `out`.
type RowFn<'a> = dyn Fn(usize, &mut [MaybeUninit<f32>]) + Sync + 'a;

/// `rows` contiguous rows of `width` values, each written by `f`. The output starts
/// uninitialised rather than zeroed (zeroing would add a pass over memory to an operation
/// that makes one), which is sound because `f` writes every value of its row. Large outputs
/// are split over the kernel threads by whole rows; each value is computed the same way
/// whoever runs it, so results do not depend on the thread count.
fn by_rows(rows: usize, width: usize, f: &RowFn) -> Vec<f32> {
    let total = rows * width;
    let mut data = Vec::<f32>::with_capacity(total);
    if total == 0 {
        return data;
    }
    let out = &mut data.spare_capacity_mut()[..total];
    let rows_per = crate::cpu::pool::rows_per_part(rows, width);
    crate::cpu::pool::for_chunks(out, rows_per * width, &|part, out| {
        for (i, row) in out.chunks_exact_mut(width).enumerate() {
            f(part * rows_per + i, row);
        }
    });
    // SAFETY: the first `total` values were all written above: the row chunks cover them
    // (`total` is a whole number of rows) and `f` writes every value of each row. A panic
    // in `f` leaves the length at zero.
    unsafe { data.set_len(total) };
    data
}
