//! The AVX2 + FMA path: 6 x 16 tiles.

use super::x86::pack_b_colmajor;
use super::{pack_a_generic, pack_b_generic, simd, Arch};
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

/// The R x (8*V) micro-kernel ([`super::simd::kern`]) compiled for AVX2 + FMA; vector v of B
/// row p is at `b + p*ldb + 8*v`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
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
    // SAFETY: avx2 and fma detected (the caller's contract); pointer contract forwarded, with
    // one panel (boff 0: V <= 2).
    unsafe { simd::kern::<__m256, R, V>(kc, a, lda, b, ldb, 0, c, ldc, nr, add) }
}
