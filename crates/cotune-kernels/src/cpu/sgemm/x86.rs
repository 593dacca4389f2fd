//! Shared x86 packing helpers (AVX): 8x8 transposes.

use std::arch::x86_64::*;

/// Transpose an 8x8 block held as 8 row vectors.
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Pack a column-major (`rs == 1`) `kc x W` block of B (W = 8*blocks) into rows of
/// `ld` floats using 8x8 transposes.
///
/// # Safety
/// Source columns `j*cs + p` readable for j < 8*blocks, p < kc; dst writable kc*ld.
#[inline]
#[target_feature(enable = "avx")]
pub(super) unsafe fn pack_b_colmajor(
    blocks: usize,
    kc: usize,
    src: *const f32,
    cs: usize,
    dst: *mut f32,
    ld: usize,
) {
    // SAFETY: all loads are inside the kc x 8*blocks source block, stores inside dst.
    unsafe {
        let mut p = 0;
        while p + 8 <= kc {
            for jb in 0..blocks {
                let s = src.add(jb * 8 * cs + p);
                let r = [
                    _mm256_loadu_ps(s),
                    _mm256_loadu_ps(s.add(cs)),
                    _mm256_loadu_ps(s.add(2 * cs)),
                    _mm256_loadu_ps(s.add(3 * cs)),
                    _mm256_loadu_ps(s.add(4 * cs)),
                    _mm256_loadu_ps(s.add(5 * cs)),
                    _mm256_loadu_ps(s.add(6 * cs)),
                    _mm256_loadu_ps(s.add(7 * cs)),
                ];
                let t = transpose8(r);
                for (q, v) in t.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p + q) * ld + jb * 8), *v);
                }
            }
            p += 8;
        }
        while p < kc {
            for j in 0..8 * blocks {
                *dst.add(p * ld + j) = *src.add(j * cs + p);
            }
            p += 1;
        }
    }
}
