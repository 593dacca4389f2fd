//! The portable path: 4 x 16 tiles in plain Rust, left to the auto-vectoriser.

use super::{pack_a_generic, pack_b_generic, Arch};

pub(super) struct Scalar;

const NR: usize = 16;

impl Arch for Scalar {
    const MR: usize = 4;
    const NR: usize = NR;
    const KC: usize = 256;
    const NC: usize = 512;

    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: contract forwarded.
        unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
    }

    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: contract forwarded.
        unsafe { pack_b_generic::<NR>(nr, kc, src, rs, cs, dst) }
    }

    unsafe fn tile(
        mr: usize,
        nr: usize,
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        // SAFETY: contract of Arch::tile forwarded with R = mr.
        unsafe {
            match mr {
                1 => kern::<1>(kc, a, lda, b, ldb, c, ldc, nr, add),
                2 => kern::<2>(kc, a, lda, b, ldb, c, ldc, nr, add),
                3 => kern::<3>(kc, a, lda, b, ldb, c, ldc, nr, add),
                4 => kern::<4>(kc, a, lda, b, ldb, c, ldc, nr, add),
                _ => unreachable!("mr out of range"),
            }
        }
    }
}

/// R x 16 microkernel in plain Rust (mul then add, left to the auto-vectoriser).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn kern<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    add: bool,
) {
    let mut acc = [[0.0f32; NR]; R];
    // SAFETY: a readable at p*lda+i (i<R), b at p*ldb+j (j<NR), C tile R x nr writable.
    unsafe {
        for p in 0..kc {
            let ap = a.wrapping_add(p * lda);
            let brow = &*(b.wrapping_add(p * ldb) as *const [f32; NR]);
            for i in 0..R {
                let ai = *ap.add(i);
                for j in 0..NR {
                    acc[i][j] += ai * brow[j];
                }
            }
        }
        for i in 0..R {
            let cr = c.add(i * ldc);
            for j in 0..nr {
                let cp = cr.add(j);
                *cp = if add { *cp + acc[i][j] } else { acc[i][j] };
            }
        }
    }
}
