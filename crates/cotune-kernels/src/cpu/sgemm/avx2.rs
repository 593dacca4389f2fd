//! The AVX2 + FMA path: 6 x 16 tiles.

use super::x86::pack_b_colmajor;
use super::{pack_a_generic, pack_b_generic, Arch};
use std::arch::x86_64::*;

pub(super) struct Avx2;

const MR: usize = 6;
const NR: usize = 16;

impl Arch for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const NC: usize = 512;

    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
        unsafe { pack_a(mr, kc, src, rs, cs, dst) }
    }

    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
        unsafe { pack_b(nr, kc, src, rs, cs, dst) }
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
        // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
        unsafe { tile(mr, nr, kc, a, lda, b, ldb, c, ldc, add) }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    // SAFETY: contract forwarded.
    unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    // SAFETY: contract forwarded (column-major fast path reads the same block).
    unsafe {
        if nr == NR && rs == 1 && cs != 1 {
            pack_b_colmajor(NR / 8, kc, src, cs, dst, NR);
        } else {
            pack_b_generic::<NR>(nr, kc, src, rs, cs, dst);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
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
    macro_rules! go {
        ($v:literal; $($r:literal)*) => {
            match mr {
                // SAFETY: contract of Arch::tile forwarded; R = mr, 8*V <= NR.
                $($r => unsafe { kern::<$r, $v>(kc, a, lda, b, ldb, c, ldc, nr, add) },)*
                _ => unreachable!("mr out of range"),
            }
        };
    }
    if nr > 8 {
        go!(2; 1 2 3 4 5 6)
    } else {
        go!(1; 1 2 3 4 5 6)
    }
}

/// R x (8*V) register-blocked microkernel.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn kern<const R: usize, const V: usize>(
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
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    // SAFETY: a readable at p*lda+i (i<R), b at p*ldb+j (j<8V), C tile R x nr writable.
    unsafe {
        let mut ap = a;
        let mut bp = b;
        for _ in 0..kc {
            let mut bv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                bv[v] = _mm256_loadu_ps(bp.add(8 * v));
            }
            for i in 0..R {
                let av = _mm256_set1_ps(*ap.add(i));
                for v in 0..V {
                    acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
                }
            }
            ap = ap.wrapping_add(lda);
            bp = bp.wrapping_add(ldb);
        }
        for i in 0..R {
            let cr = c.add(i * ldc);
            if nr >= 8 * V {
                for v in 0..V {
                    let cp = cr.add(8 * v);
                    let r = if add {
                        _mm256_add_ps(_mm256_loadu_ps(cp), acc[i][v])
                    } else {
                        acc[i][v]
                    };
                    _mm256_storeu_ps(cp, r);
                }
            } else {
                // Edge tile: same single add per element, done through a temporary.
                let mut tmp = [0.0f32; 16];
                for v in 0..V {
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * v), acc[i][v]);
                }
                for (j, t) in tmp.iter().enumerate().take(nr) {
                    let cp = cr.add(j);
                    *cp = if add { *cp + *t } else { *t };
                }
            }
        }
    }
}
