//! The register-blocked micro-kernel, written once for a SIMD vector of `f32` lanes and
//! instantiated for AVX-512F (`__m512`, 16 lanes) and AVX2 + FMA (`__m256`, 8 lanes).
//!
//! [`kern`] is `#[inline(always)]` and has no instruction set of its own: each path calls it
//! from a small `#[target_feature]` function (`avx512::kern`, `avx2::kern`), into which it and
//! the vector operations below are inlined, so every instantiation compiles to the same
//! instructions as a kernel written with that path's intrinsics.

use std::arch::x86_64::*;

/// A SIMD register of [`LANES`](Self::LANES) `f32` lanes: the operations [`kern`] uses, each
/// one instruction (a fused multiply-add rounds once), and how a path finishes a partial row.
///
/// # Safety
/// Every method needs the CPU features of its implementation: they may only run inside a
/// function compiled with them, after run-time detection.
pub(super) trait Vector: Copy {
    /// Lanes per register.
    const LANES: usize;
    /// Whether [`kern`] prefetches its C tile before the FMAs (AVX-512).
    const PREFETCH_C: bool;
    /// Whether [`kern`] prefetches B rows ahead in tiles of at most two rows, which are
    /// bandwidth bound (AVX-512).
    const PREFETCH_B_SHORT: bool;

    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self);
    /// `a * b + c`, rounded once.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `a + b`.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// The first `nr` (< `V * LANES`) columns of a C row at `cr` set to `acc`, or `acc` added
    /// to them: one add per element, like the full-width store.
    unsafe fn store_row_part<const V: usize>(cr: *mut f32, acc: &[Self; V], nr: usize, add: bool);
}

/// Prefetches the cache line of `p` into L1 (a hint: never faults).
#[inline(always)]
unsafe fn prefetch(p: *const f32) {
    // SAFETY: SSE is part of x86_64; a prefetch reads nothing architecturally.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

/// `C[i][j] (= or +=) sum_p a[p*lda + i] * b(p, j)` for `i < R`, `j < nr`: an R x (LANES*V)
/// register-blocked broadcast-FMA micro-kernel. Vector `v` of B row `p` is at
/// `b + p*ldb + (v/2)*boff + (v%2)*LANES`: two vectors per NR-wide panel (`NR = 2 * LANES`),
/// `boff` apart from one panel to the next (0 when `V <= 2`).
///
/// Every C element is one FMA chain over `p` in order, then (when `add`) one add to C.
///
/// # Safety
/// `a` readable at `p*lda + i` (i < R, p < kc), `b` readable at the vector offsets above for
/// every `p < kc`, the C tile `R x nr` with row stride `ldc` writable, `nr <= LANES * V`; the
/// CPU features of `S` present (call only from a `#[target_feature]` function that has them).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(super) unsafe fn kern<S: Vector, const R: usize, const V: usize>(
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
    let w = S::LANES;
    // SAFETY: the pointer contract above; the CPU features of `S` are present.
    unsafe {
        let mut acc = [[S::zero(); V]; R];
        if S::PREFETCH_C {
            // Pull the C tile towards L1 while the FMAs run (prefetchw is not stable).
            for i in 0..R {
                for v in 0..V {
                    prefetch(c.wrapping_add(i * ldc + w * v));
                }
            }
        }
        let mut ap = a;
        let mut bp = b;
        for _ in 0..kc {
            let mut bv = [S::zero(); V];
            for v in 0..V {
                bv[v] = S::load(bp.wrapping_add((v / 2) * boff + (v % 2) * w));
            }
            if S::PREFETCH_B_SHORT && R <= 2 {
                // Short tiles are bandwidth bound: fetch B rows a few iterations ahead.
                for v in 0..V {
                    prefetch(bp.wrapping_add(8 * ldb + (v / 2) * boff + (v % 2) * w));
                }
            }
            for i in 0..R {
                let av = S::splat(*ap.add(i));
                for v in 0..V {
                    acc[i][v] = S::mul_add(av, bv[v], acc[i][v]);
                }
            }
            ap = ap.wrapping_add(lda);
            bp = bp.wrapping_add(ldb);
        }
        if nr >= w * V {
            for i in 0..R {
                let cr = c.add(i * ldc);
                for v in 0..V {
                    let cp = cr.add(w * v);
                    let r = if add {
                        S::add(S::load(cp), acc[i][v])
                    } else {
                        acc[i][v]
                    };
                    S::store(cp, r);
                }
            }
        } else {
            for i in 0..R {
                S::store_row_part(c.add(i * ldc), &acc[i], nr, add);
            }
        }
    }
}

impl Vector for __m512 {
    const LANES: usize = 16;
    const PREFETCH_C: bool = true;
    const PREFETCH_B_SHORT: bool = true;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: avx512f present (trait contract).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: as above.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: as above; 16 floats readable at p (caller).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: as above; 16 floats writable at p (caller).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: as above.
        unsafe { _mm512_add_ps(a, b) }
    }
    /// Masked loads and stores, one per vector.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn store_row_part<const V: usize>(cr: *mut f32, acc: &[Self; V], nr: usize, add: bool) {
        // SAFETY: as above; the masks cover only the row's first nr columns.
        unsafe {
            for v in 0..V {
                let lanes = nr.saturating_sub(16 * v).min(16);
                let mk = ((1u32 << lanes) - 1) as __mmask16;
                let cp = cr.wrapping_add(16 * v);
                let r = if add {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mk, cp), acc[v])
                } else {
                    acc[v]
                };
                _mm512_mask_storeu_ps(cp, mk, r);
            }
        }
    }
}

impl Vector for __m256 {
    const LANES: usize = 8;
    const PREFETCH_C: bool = false;
    const PREFETCH_B_SHORT: bool = false;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: avx present (trait contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: as above.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: as above; 8 floats readable at p (caller).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: as above; 8 floats writable at p (caller).
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: fma present (trait contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: avx present.
        unsafe { _mm256_add_ps(a, b) }
    }
    /// Through a temporary: the row's vectors stored, then `nr` scalar writes (or adds).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn store_row_part<const V: usize>(cr: *mut f32, acc: &[Self; V], nr: usize, add: bool) {
        const { assert!(V <= 2, "AVX2 tiles are at most 16 columns") };
        // SAFETY: as above; only the row's first nr columns are touched.
        unsafe {
            let mut tmp = [0.0f32; 16];
            for v in 0..V {
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * v), acc[v]);
            }
            for (j, t) in tmp.iter().enumerate().take(nr) {
                let cp = cr.add(j);
                *cp = if add { *cp + *t } else { *t };
            }
        }
    }
}
