//! Conversions between `f32` and the block types: dequantisation following llama.cpp's
//! `dequantize_row_*` (`ggml/src/ggml-quants.c`), quantisation following its reference
//! `quantize_row_*_ref`, and the half-float conversions (`ggml_fp32_to_fp16`,
//! `ggml_compute_fp32_to_bf16`). The arithmetic is done in `f32` in the same order as the C
//! code, so the values agree with llama.cpp and gguf-py bit for bit.

use crate::types::{GgmlType, QK_K};

// ---------------------------------------------------------------------------------------------
// Half floats.

/// An IEEE half float's bits to `f32` (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero and subnormals: man * 2^-24, exact in f32.
        0 => (man as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        0x1f => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// `f32` to an IEEE half float's bits, rounding to nearest, ties to even (as the F16C
/// instruction, numpy and llama.cpp do); too large values become infinity, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man == 0 {
            0
        } else {
            0x200 | (man >> 13) as u16
        };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (kept, shift) = if e <= 0 {
        // A subnormal half: the value in units of 2^-24 is (1.man) * 2^(e - 14 + 23) / 2^23.
        if e < -10 {
            return sign;
        }
        ((man | 0x80_0000), (14 - e) as u32)
    } else {
        (((e as u32) << 23) | man, 13)
    };
    let half = 1u32 << (shift - 1);
    let rest = kept & ((1 << shift) - 1);
    let mut r = kept >> shift;
    // A carry out of the mantissa correctly moves to the next exponent (or to infinity).
    if rest > half || (rest == half && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

/// A bfloat16's bits to `f32` (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `f32` to bfloat16 bits, rounding to nearest, ties to even; NaN made quiet
/// (`ggml_compute_fp32_to_bf16`).
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u64::from(u) + 0x7fff + u64::from((u >> 16) & 1)) >> 16) as u16
}

// ---------------------------------------------------------------------------------------------
// Dequantisation, one block at a time.

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn f32_block(b: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn f16_block(b: &[u8], y: &mut [f32]) {
    y[0] = f16_at(b, 0);
}

fn bf16_block(b: &[u8], y: &mut [f32]) {
    y[0] = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
}

/// `block_q4_0`: f16 d, then 16 bytes: value j in the low nibble of byte j, value j + 16 in
/// its high nibble; x = (q - 8) * d.
fn q4_0_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = (i32::from(qs[j] & 0xf) - 8) as f32 * d;
        y[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
    }
}

/// `block_q4_1`: f16 d, f16 m, 16 nibble bytes as in Q4_0; x = q * d + m.
fn q4_1_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0xf) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

/// The fifth bits of Q5_0 and Q5_1: bit j of the little-endian `u32` qh is value j's.
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (h0 as u8, h1 as u8)
}

/// `block_q5_0`: f16 d, u32 qh (the fifth bits), 16 nibble bytes; x = (q - 16) * d.
fn q5_0_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let (h0, h1) = q5_high_bits(qh, j);
        y[j] = (i32::from((qs[j] & 0xf) | h0) - 16) as f32 * d;
        y[j + 16] = (i32::from((qs[j] >> 4) | h1) - 16) as f32 * d;
    }
}

/// `block_q5_1`: f16 d, f16 m, u32 qh, 16 nibble bytes; x = q * d + m.
fn q5_1_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let (h0, h1) = q5_high_bits(qh, j);
        y[j] = f32::from((qs[j] & 0xf) | h0) * d + m;
        y[j + 16] = f32::from((qs[j] >> 4) | h1) * d + m;
    }
}

/// `block_q8_0`: f16 d, 32 signed bytes; x = q * d.
fn q8_0_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

/// `block_q2_K`: 16 scale bytes (low nibble scale, high nibble min, one per 16 values), 64
/// bytes of 2-bit values, f16 d, f16 dmin. Each 128 values use 32 bytes: the values 32k..32k+32
/// are bits 2k..2k+2 of those bytes; x = d * scale * q - dmin * min.
fn q2_k_block(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let min = f16_at(b, 82);
    let mut is = 0;
    let mut out = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0xf);
                let ml = min * f32::from(sc >> 4);
                for l in 0..16 {
                    y[out] = dl * f32::from((q[16 * half + l] >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `block_q3_K`: 32 bytes hmask (the third bits), 64 bytes of 2-bit values laid out as in Q2_K,
/// 12 bytes of 16 6-bit scales, f16 d. Value i's third bit is bit i / 32 of hmask[i % 32]; a
/// clear bit subtracts 4. Scale k: low nibble from byte k % 8 (high nibble when k >= 8), high
/// two bits from byte 8 + k % 4, bits 2 * (k / 4); x = d * (scale - 32) * q.
fn q3_k_block(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let sb = &b[96..108];
    let d = f16_at(b, 108);
    let mut scales = [0i32; 16];
    for (k, s) in scales.iter_mut().enumerate() {
        let low = (sb[k % 8] >> (4 * (k / 8))) & 0xf;
        let high = (sb[8 + k % 4] >> (2 * (k / 4))) & 3;
        *s = i32::from(low | (high << 4)) - 32;
    }
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let i = 16 * half + l;
                    let low = i32::from((q[i] >> shift) & 3);
                    let sub = if hmask[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// `get_scale_min_k4`: the scale and the min of sub-block `j` (0..8) from the 12 packed bytes
/// of Q4_K and Q5_K. Sub-blocks 0..4 use the low 6 bits of bytes j (scale) and j + 4 (min);
/// sub-blocks 4..8 take their low 4 bits from the nibbles of byte j + 4 and their high 2 bits
/// from the top bits of bytes j - 4 (scale) and j (min).
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of 8 6-bit scales and mins, 128 bytes of nibbles.
/// Each 64 values use 32 bytes: the first 32 values the low nibbles, the next 32 the high ones,
/// each half with its own sub-block scale and min; x = d * scale * q - dmin * min.
fn q4_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    for n in 0..4 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        let (sc1, m1) = get_scale_min_k4(2 * n, scales);
        let (sc2, m2) = get_scale_min_k4(2 * n + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let y = &mut y[64 * n..64 * n + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xf) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `block_q5_K`: f16 d, f16 dmin, 12 scale bytes as in Q4_K, 32 bytes qh (the fifth bits:
/// value i's is bit i / 32 of qh[i % 32]), 128 bytes of nibbles as in Q4_K.
fn q5_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for n in 0..4 {
        let ql = &b[48 + 32 * n..48 + 32 * n + 32];
        let (sc1, m1) = get_scale_min_k4(2 * n, scales);
        let (sc2, m2) = get_scale_min_k4(2 * n + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * n), 2u8 << (2 * n));
        let y = &mut y[64 * n..64 * n + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((ql[l] & 0xf) + h1) - m1;
            y[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
        }
    }
}

/// `block_q6_K`: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 signed scales (one
/// per 16 values), f16 d. Each 128 values use 64 bytes of ql and 32 of qh: value l (0..32) of
/// each quarter takes ql[l] or ql[l + 32], low nibble for quarters 0 and 1, high for 2 and 3,
/// and bits 2 * quarter of qh[l]; x = d * scale * (q - 32).
fn q6_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q1 as f32;
            y[l + 32] = scale(2) * q2 as f32;
            y[l + 64] = scale(4) * q3 as f32;
            y[l + 96] = scale(6) * q4 as f32;
        }
    }
}

/// `block_q8_K`: f32 d, 256 signed bytes, 16 `i16` block sums (unused here); x = d * q.
fn q8_k_block(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for j in 0..QK_K {
        y[j] = d * f32::from(b[4 + j] as i8);
    }
}

/// Runs `f` over every block: generic, so that each block function is inlined into its loop.
fn blocks(bytes: &[u8], ty: GgmlType, f: impl Fn(&[u8], &mut [f32])) -> Vec<f32> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut out = vec![0f32; bytes.len() / ts * bs];
    for (block, y) in bytes.chunks_exact(ts).zip(out.chunks_exact_mut(bs)) {
        f(block, y);
    }
    out
}

/// Whether [`dequantize`] converts `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    dequantize(ty, &[]).is_some()
}

/// Dequantises whole blocks of `ty` to `f32`: `None` when `ty` is not one this crate converts
/// (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K) or
/// `bytes` is not a whole number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    use GgmlType::*;
    if !bytes.len().is_multiple_of(ty.type_size()) {
        return None;
    }
    Some(match ty {
        F32 => blocks(bytes, ty, f32_block),
        F16 => blocks(bytes, ty, f16_block),
        BF16 => blocks(bytes, ty, bf16_block),
        Q4_0 => blocks(bytes, ty, q4_0_block),
        Q4_1 => blocks(bytes, ty, q4_1_block),
        Q5_0 => blocks(bytes, ty, q5_0_block),
        Q5_1 => blocks(bytes, ty, q5_1_block),
        Q8_0 => blocks(bytes, ty, q8_0_block),
        Q2_K => blocks(bytes, ty, q2_k_block),
        Q3_K => blocks(bytes, ty, q3_k_block),
        Q4_K => blocks(bytes, ty, q4_k_block),
        Q5_K => blocks(bytes, ty, q5_k_block),
        Q6_K => blocks(bytes, ty, q6_k_block),
        Q8_K => blocks(bytes, ty, q8_k_block),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Quantisation (llama.cpp's reference quantisers).

/// The value of largest magnitude, the first one on ties (`amax < fabsf(v)` in the C code).
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -8.0;
    let id = inverse(d);
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend_from_slice(&f32_to_f16(min).to_le_bytes());
    let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

/// The Q5 block body after the scales: qh (bit j = the fifth bit of value j), then the nibbles.
fn push_q5(q: &[u8; 32], out: &mut Vec<u8>) {
    let qh = (0..32).fold(0u32, |h, j| h | (u32::from(q[j] >> 4) << j));
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0xf) | ((q[j + 16] & 0xf) << 4)));
}

fn quantize_q5_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -16.0;
    let id = inverse(d);
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    let q: [u8; 32] = std::array::from_fn(|j| ((x[j] * id + 16.5) as i8).min(31) as u8);
    push_q5(&q, out);
}

fn quantize_q5_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    out.extend_from_slice(&f32_to_f16(min).to_le_bytes());
    let q: [u8; 32] = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as i8).min(31) as u8);
    push_q5(&q, out);
}

type QuantFn = fn(&[f32], &mut Vec<u8>);

fn quant_fn(ty: GgmlType) -> Option<QuantFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => |x, out| out.extend_from_slice(&x[0].to_le_bytes()),
        F16 => |x, out| out.extend_from_slice(&f32_to_f16(x[0]).to_le_bytes()),
        BF16 => |x, out| out.extend_from_slice(&f32_to_bf16(x[0]).to_le_bytes()),
        Q4_0 => quantize_q4_0,
        Q4_1 => quantize_q4_1,
        Q5_0 => quantize_q5_0,
        Q5_1 => quantize_q5_1,
        Q8_0 => quantize_q8_0,
        _ => return None,
    })
}

/// Whether [`quantize`] converts to `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    quant_fn(ty).is_some()
}

/// Quantises `values` to blocks of `ty` with llama.cpp's reference quantiser: `None` when `ty`
/// is not one this crate quantises to (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) or the
/// values are not a whole number of blocks.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    let f = quant_fn(ty)?;
    let bs = ty.block_size();
    if !values.len().is_multiple_of(bs) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() / bs * ty.type_size());
    for block in values.chunks_exact(bs) {
        f(block, &mut out);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_float_survives_a_round_trip() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7c00 == 0x7c00 && f32_to_f16(x) & 0x3ff != 0);
            } else {
                assert_eq!(f32_to_f16(x), h, "half {h:#06x} = {x}");
            }
        }
    }

    #[test]
    fn half_floats_round_to_nearest_even() {
        // 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties to even (1).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9: up.
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(
            f32_to_f16(65520.0),
            0x7c00,
            "halfway to 65536 rounds to infinity"
        );
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(
            f32_to_f16(2f32.powi(-25)),
            0x0000,
            "a tie rounds to even zero"
        );
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "tie to even"
        );
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even"
        );
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn scale_min_k4_unpacks_six_bit_pairs() {
        // Sub-blocks 0..4 in the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); 4..8 from
        // the nibbles of bytes 8..12 plus the top 2 bits of bytes 0..4 and 4..8.
        let q = [0b11_000001, 2, 3, 4, 0b10_000101, 6, 7, 8, 0x9a, 0, 0, 0xff];
        assert_eq!(get_scale_min_k4(0, &q), (1, 5));
        assert_eq!(get_scale_min_k4(3, &q), (4, 8));
        // j = 4: scale = (0x9a & 0xf) | (3 << 4) = 0x3a; min = (0x9a >> 4) | (2 << 4) = 0x29.
        assert_eq!(get_scale_min_k4(4, &q), (0x3a, 0x29));
        assert_eq!(get_scale_min_k4(7, &q), (0xf, 0xf));
    }
}
