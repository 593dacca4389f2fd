//! The AVX-512F path: 12 x 32 tiles (grouped up to 4 panels wide for short tiles), AVX-512
//! packing, and the dot-product path for tiny m with B stored transposed.

use super::x86::{pack_b_colmajor, transpose8};
use super::{pack_a_generic, pack_b_generic, simd, Arch, View};
use std::arch::x86_64::*;

pub(super) struct Avx512;

const MR: usize = 12;
const NR: usize = 32;

impl Arch for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 384;
    const NC: usize = 512;

    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
        unsafe { pack_a(mr, kc, src, rs, cs, dst) }
    }

    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
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
        // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
        unsafe { tile(mr, nr, kc, a, lda, b, ldb, c, ldc, add) }
    }

    fn group(mr: usize) -> usize {
        match mr {
            1 | 2 => 4,
            3..=6 => 2,
            _ => 1,
        }
    }

    unsafe fn tile_group(
        mr: usize,
        g: usize,
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        boff: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let nr = g * NR;
        // SAFETY: avx512f detected; g full panels readable (Arch::tile_group contract), R = mr.
        unsafe {
            match (g, mr) {
                (4, 1) => kern::<1, 8>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (4, 2) => kern::<2, 8>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 1) => kern::<1, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 2) => kern::<2, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 3) => kern::<3, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 4) => kern::<4, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 5) => kern::<5, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                (2, 6) => kern::<6, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                _ => unreachable!("unsupported tile group"),
            }
        }
    }

    const DOT_NU: usize = DOT_J;

    fn use_dot(m: usize, _n: usize, k: usize, a: View, b: View) -> bool {
        // Transposing B (packing) costs about as much as ~8 rows of FMAs; for fewer
        // rows, and k long enough to amortise the horizontal sums, skip packing.
        a.cs == 1 && b.rs == 1 && (m <= 2 || (m <= 4 && k >= 64) || (m <= DOT_MAX_M && k >= 256))
    }

    unsafe fn dot(
        m: usize,
        n: usize,
        k: usize,
        a: View,
        b: View,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        // SAFETY: avx512f detected; A rows / B columns contiguous and inside the slices.
        unsafe { dot_block(m, n, k, a, b, c, ldc, add) }
    }
}

/// Largest m for which the dot-product path is used (B stored transposed).
const DOT_MAX_M: usize = 8;
/// Rows / columns of C per dot-product tile.
const DOT_R: usize = 4;
const DOT_J: usize = 6;

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_block(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    macro_rules! go {
        ($rn:expr, $jn:expr, $args:tt; $($r:literal)*; $js:tt) => {
            match $rn {
                $($r => go!(@j $r, $jn, $args; $js),)*
                _ => unreachable!("dot rows out of range"),
            }
        };
        (@j $r:literal, $jn:expr, $args:tt; [$($j:literal)*]) => {
            match $jn {
                $($j => dot_kern::<$r, $j> $args,)*
                _ => unreachable!("dot cols out of range"),
            }
        };
    }
    let mut j = 0;
    while j < n {
        let jn = DOT_J.min(n - j);
        let mut i = 0;
        while i < m {
            let rn = DOT_R.min(m - i);
            let (ap, bp, cp) = (a.at(i, 0), b.at(0, j), c.wrapping_add(i * ldc + j));
            // SAFETY: rows i..i+rn of A, columns j..j+jn of B and that C tile are in bounds.
            unsafe { go!(rn, jn, (k, ap, a.rs, bp, b.cs, cp, ldc, add); 1 2 3 4; [1 2 3 4 5 6]) };
            i += rn;
        }
        j += jn;
    }
}

/// Horizontal sums of four vectors `[sum(a), sum(b), sum(c), sum(d)]`, with a fixed
/// order that never mixes lanes of different inputs; 512-bit ops only.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn hsum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    let ab = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(a, b),
        _mm512_shuffle_f32x4::<0xEE>(a, b),
    );
    let cd = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(c, d),
        _mm512_shuffle_f32x4::<0xEE>(c, d),
    );
    // 128-bit block q now holds a 4-float partial sum of input q.
    let w = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(ab, cd),
        _mm512_shuffle_f32x4::<0xDD>(ab, cd),
    );
    let x = _mm512_add_ps(w, _mm512_permute_ps::<0b10_11_00_01>(w));
    let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
    _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, y))
}

/// R x J dot-product tile: 16-lane partial sums along k, then a fixed horizontal reduction.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline(never)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn dot_kern<const R: usize, const J: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    // SAFETY: a + r*lda + p (r<R, p<k), b + j*ldb + p (j<J, p<k) readable; C tile R x J writable.
    unsafe {
        let mut p = 0;
        while p < k {
            // Full chunks use an all-ones mask; the last partial chunk reads zeros.
            let mk = if p + 16 <= k {
                0xFFFF
            } else {
                ((1u32 << (k - p)) - 1) as __mmask16
            };
            let mut av = [_mm512_setzero_ps(); R];
            for r in 0..R {
                av[r] = _mm512_maskz_loadu_ps(mk, a.add(r * lda + p));
            }
            for j in 0..J {
                let bv = _mm512_maskz_loadu_ps(mk, b.add(j * ldb + p));
                for r in 0..R {
                    acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
                }
            }
            p += 16;
        }
        let z = _mm512_setzero_ps();
        for r in 0..R {
            let mut j0 = 0;
            while j0 < J {
                let g = |q: usize| if j0 + q < J { acc[r][j0 + q] } else { z };
                let mut t = [0.0f32; 4];
                _mm_storeu_ps(t.as_mut_ptr(), hsum4(g(0), g(1), g(2), g(3)));
                for (q, s) in t.iter().enumerate().take(J - j0) {
                    let cp = c.add(r * ldc + j0 + q);
                    *cp = if add { *cp + *s } else { *s };
                }
                j0 += 4;
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    if cs == 1 && mr == MR {
        // SAFETY: full 12-row panel of a row-major A; contract forwarded.
        unsafe { pack_a_rowmajor12(kc, src, rs, dst) }
    } else if rs == 1 && mr == MR {
        // Column-major A: each packed row is 12 contiguous source floats.
        const M12: __mmask16 = (1 << MR) - 1;
        for p in 0..kc {
            // SAFETY: 12 floats at src + p*cs are inside A; dst holds 12*kc floats.
            unsafe {
                let v = _mm512_maskz_loadu_ps(M12, src.add(p * cs));
                _mm512_mask_storeu_ps(dst.add(p * MR), M12, v);
            }
        }
    } else {
        // SAFETY: contract forwarded.
        unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
    }
}

/// Pack 12 rows of a row-major A: 8x8 transposes for rows 0..8, 4x8 for rows 8..12.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_a_rowmajor12(kc: usize, src: *const f32, rs: usize, dst: *mut f32) {
    // SAFETY: loads stay inside the 12 x kc source block, stores inside the 12*kc panel.
    unsafe {
        let mut p = 0;
        while p + 8 <= kc {
            let s = src.add(p);
            let r = [
                _mm256_loadu_ps(s),
                _mm256_loadu_ps(s.add(rs)),
                _mm256_loadu_ps(s.add(2 * rs)),
                _mm256_loadu_ps(s.add(3 * rs)),
                _mm256_loadu_ps(s.add(4 * rs)),
                _mm256_loadu_ps(s.add(5 * rs)),
                _mm256_loadu_ps(s.add(6 * rs)),
                _mm256_loadu_ps(s.add(7 * rs)),
            ];
            let t = transpose8(r);
            let d = dst.add(p * MR);
            for (q, v) in t.iter().enumerate() {
                _mm256_storeu_ps(d.add(q * MR), *v);
            }
            let r8 = _mm256_loadu_ps(s.add(8 * rs));
            let r9 = _mm256_loadu_ps(s.add(9 * rs));
            let r10 = _mm256_loadu_ps(s.add(10 * rs));
            let r11 = _mm256_loadu_ps(s.add(11 * rs));
            let t0 = _mm256_unpacklo_ps(r8, r9);
            let t1 = _mm256_unpackhi_ps(r8, r9);
            let t2 = _mm256_unpacklo_ps(r10, r11);
            let t3 = _mm256_unpackhi_ps(r10, r11);
            // Each u holds column q in the low half and column q+4 in the high half.
            let u = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            for (q, v) in u.iter().enumerate() {
                _mm_storeu_ps(d.add(q * MR + 8), _mm256_castps256_ps128(*v));
                _mm_storeu_ps(d.add((q + 4) * MR + 8), _mm256_extractf128_ps::<1>(*v));
            }
            p += 8;
        }
        while p < kc {
            for i in 0..MR {
                *dst.add(p * MR + i) = *src.add(i * rs + p);
            }
            p += 1;
        }
    }
}

/// Transpose a 16x16 block held as 16 row vectors (64 shuffles).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + q], 128-bit block L: column 4L + q of rows 4g..4g+4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * g + 1], t[4 * g + 3]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
        let w0 = _mm512_shuffle_f32x4::<0xDD>(u[q], u[4 + q]);
        let v1 = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + q], u[12 + q]);
        out[q] = _mm512_shuffle_f32x4::<0x88>(v0, v1);
        out[8 + q] = _mm512_shuffle_f32x4::<0xDD>(v0, v1);
        out[4 + q] = _mm512_shuffle_f32x4::<0x88>(w0, w1);
        out[12 + q] = _mm512_shuffle_f32x4::<0xDD>(w0, w1);
    }
    out
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    // SAFETY: loads inside the kc x nr source block, stores inside the kc*NR panel.
    unsafe {
        if nr == NR && cs == 1 {
            for p in 0..kc {
                let s = src.add(p * rs);
                let d = dst.add(p * NR);
                _mm512_storeu_ps(d, _mm512_loadu_ps(s));
                _mm512_storeu_ps(d.add(16), _mm512_loadu_ps(s.add(16)));
            }
        } else if nr == NR && rs == 1 {
            // 16x16 transposes for whole 16-row steps, 8x8 ones for the rest.
            let k16 = kc / 16 * 16;
            for p in (0..k16).step_by(16) {
                for jb in 0..NR / 16 {
                    let s = src.add(jb * 16 * cs + p);
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (q, v) in r.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(s.add(q * cs));
                    }
                    for (q, v) in transpose16(r).iter().enumerate() {
                        _mm512_storeu_ps(dst.add((p + q) * NR + jb * 16), *v);
                    }
                }
            }
            pack_b_colmajor(NR / 8, kc - k16, src.add(k16), cs, dst.add(k16 * NR), NR);
        } else {
            pack_b_generic::<NR>(nr, kc, src, rs, cs, dst);
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
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
                // SAFETY: contract of Arch::tile forwarded; R = mr, 16*V <= NR.
                $($r => unsafe { kern::<$r, $v>(kc, a, lda, b, ldb, 0, c, ldc, nr, add) },)*
                _ => unreachable!("mr out of range"),
            }
        };
    }
    if nr > 16 {
        go!(2; 1 2 3 4 5 6 7 8 9 10 11 12)
    } else {
        go!(1; 1 2 3 4 5 6 7 8 9 10 11 12)
    }
}

/// The R x (16*V) micro-kernel ([`super::simd::kern`]) compiled for AVX-512F; vector v of B
/// row p is at `b + p*ldb + (v/2)*boff + (v%2)*16` (boff: distance between NR-wide panels).
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kern<const R: usize, const V: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    boff: usize,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    add: bool,
) {
    // SAFETY: avx512f detected (the caller's contract); pointer contract forwarded.
    unsafe { simd::kern::<__m512, R, V>(kc, a, lda, b, ldb, boff, c, ldc, nr, add) }
}
