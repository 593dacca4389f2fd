//! Dequantisation of hand-made blocks: scales, mins and quants chosen here, packed by this test
//! from the layouts in the crate's documentation (not from the decoder's loops), and the
//! expected values computed from the formula, with a few worked out by hand.

// Index loops read as the formulas they check.
#![allow(clippy::needless_range_loop)]

use cotune_gguf::quant::{dequantize, f32_to_f16};
use cotune_gguf::{GgmlType, Gguf, GgufWriter};

fn h(x: f32) -> [u8; 2] {
    let bits = f32_to_f16(x);
    assert_eq!(
        cotune_gguf::quant::f16_to_f32(bits),
        x,
        "{x} is not exact in f16"
    );
    bits.to_le_bytes()
}

/// The block read back through a file, as a reader meets it.
fn through_file(ty: GgmlType, block: Vec<u8>) -> Vec<f32> {
    let n = ty.block_size();
    let mut w = GgufWriter::new();
    w.add_raw_tensor("t", &[n], ty, block.clone()).unwrap();
    let file = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
    let (dims, values) = file.tensor_f32("t").unwrap();
    assert_eq!(dims, [n]);
    assert_eq!(values, dequantize(ty, &block).unwrap());
    values
}

/// 4-bit quants of 32 values the Q4_0/Q4_1 way: value j in byte j's low nibble, value j + 16
/// in its high nibble.
fn nibbles32(q: &[u8; 32]) -> Vec<u8> {
    (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect()
}

#[test]
fn floats() {
    let y = through_file(GgmlType::F32, (-2.5f32).to_le_bytes().to_vec());
    assert_eq!(y, [-2.5]);
    let y = through_file(GgmlType::F16, vec![0x00, 0xc1]); // 0xc100: -2.5
    assert_eq!(y, [-2.5]);
    let y = through_file(GgmlType::BF16, vec![0x20, 0xc0]); // 0xc020: -2.5
    assert_eq!(y, [-2.5]);
}

#[test]
fn q8_0() {
    let mut block = h(0.5).to_vec();
    block.extend((0..32).map(|j| (j as i8 * 4 - 64) as u8));
    let y = through_file(GgmlType::Q8_0, block);
    assert_eq!(y[0], -32.0);
    assert_eq!(y[31], 30.0);
    for (j, v) in y.iter().enumerate() {
        assert_eq!(*v, (j as f32 * 4.0 - 64.0) * 0.5);
    }
}

#[test]
fn q4_0() {
    let q: [u8; 32] = std::array::from_fn(|j| (j % 16) as u8 ^ ((j / 16) as u8 * 5));
    let mut block = h(0.25).to_vec();
    block.extend(nibbles32(&q));
    let y = through_file(GgmlType::Q4_0, block);
    // Value 16: q = 0 ^ 5 = 5, (5 - 8) * 0.25.
    assert_eq!((y[0], y[15], y[16]), (-2.0, 1.75, -0.75));
    for j in 0..32 {
        assert_eq!(y[j], (f32::from(q[j]) - 8.0) * 0.25);
    }
}

#[test]
fn q4_1() {
    let q: [u8; 32] = std::array::from_fn(|j| (j * 7 % 16) as u8);
    let mut block = h(0.5).to_vec();
    block.extend(h(-3.0));
    block.extend(nibbles32(&q));
    let y = through_file(GgmlType::Q4_1, block);
    // Value 3: q = 21 % 16 = 5: 5 * 0.5 - 3.
    assert_eq!(y[3], -0.5);
    for j in 0..32 {
        assert_eq!(y[j], f32::from(q[j]) * 0.5 - 3.0);
    }
}

/// The body of a Q5 block: qh (bit j = value j's fifth bit), then the low nibbles.
fn q5_body(q: &[u8; 32]) -> Vec<u8> {
    let qh = (0..32).fold(0u32, |acc, j| acc | (u32::from(q[j] >> 4) << j));
    let lows: [u8; 32] = std::array::from_fn(|j| q[j] & 0xf);
    let mut body = qh.to_le_bytes().to_vec();
    body.extend(nibbles32(&lows));
    body
}

#[test]
fn q5_0() {
    let q: [u8; 32] = std::array::from_fn(|j| (j * 13 % 32) as u8);
    let mut block = h(2.0).to_vec();
    block.extend(q5_body(&q));
    let y = through_file(GgmlType::Q5_0, block);
    // Value 5: q = 65 % 32 = 1: (1 - 16) * 2; value 31: q = 403 % 32 = 19: (19 - 16) * 2.
    assert_eq!((y[5], y[31]), (-30.0, 6.0));
    for j in 0..32 {
        assert_eq!(y[j], (f32::from(q[j]) - 16.0) * 2.0);
    }
}

#[test]
fn q5_1() {
    let q: [u8; 32] = std::array::from_fn(|j| (31 - j) as u8);
    let mut block = h(0.125).to_vec();
    block.extend(h(1.0));
    block.extend(q5_body(&q));
    let y = through_file(GgmlType::Q5_1, block);
    assert_eq!((y[0], y[31]), (31.0 * 0.125 + 1.0, 1.0));
    for j in 0..32 {
        assert_eq!(y[j], f32::from(q[j]) * 0.125 + 1.0);
    }
}

/// 2-bit quants of 256 values, the Q2_K/Q3_K way: each half of 128 uses 32 bytes; value
/// 32k + l of a half is bits 2k..2k+2 of byte l.
fn crumbs256(q: &[u8; 256]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    for (i, &v) in q.iter().enumerate() {
        let (half, r) = (i / 128, i % 128);
        out[32 * half + r % 32] |= (v & 3) << (2 * (r / 32));
    }
    out
}

#[test]
fn q2_k() {
    let sc: [u8; 16] = std::array::from_fn(|k| (k as u8 * 3 + 1) % 16);
    let m: [u8; 16] = std::array::from_fn(|k| 15 - k as u8);
    let q: [u8; 256] = std::array::from_fn(|i| (i * 5 % 4) as u8);
    let mut block: Vec<u8> = (0..16).map(|k| sc[k] | (m[k] << 4)).collect();
    block.extend(crumbs256(&q));
    block.extend(h(0.5));
    block.extend(h(0.25));
    let y = through_file(GgmlType::Q2_K, block);
    // Value 0: sc 1, m 15, q 0: -0.25 * 15. Value 17: sc 4, m 14, q 85 % 4 = 1: 0.5 * 4 - 3.5.
    assert_eq!((y[0], y[17]), (-3.75, -1.5));
    for i in 0..256 {
        let k = i / 16;
        let want = 0.5 * f32::from(sc[k]) * f32::from(q[i]) - 0.25 * f32::from(m[k]);
        assert_eq!(y[i], want, "value {i}");
    }
}

#[test]
fn q3_k() {
    // 6-bit scales, stored plus 32: use the whole range, high bits included.
    let s: [u8; 16] = std::array::from_fn(|k| ((k * 17 + 3) % 64) as u8);
    let q: [i32; 256] = std::array::from_fn(|i| (i as i32 * 3 % 8) - 4);
    let mut hmask = [0u8; 32];
    let mut lows = [0u8; 256];
    for i in 0..256 {
        // A set hmask bit means q = low bits; a clear one, low bits - 4.
        let (low, high) = if q[i] >= 0 { (q[i], 1) } else { (q[i] + 4, 0) };
        lows[i] = low as u8;
        hmask[i % 32] |= high << (i / 32);
    }
    let mut scales = [0u8; 12];
    for k in 0..16 {
        scales[k % 8] |= (s[k] & 0xf) << (4 * (k / 8));
        scales[8 + k % 4] |= (s[k] >> 4) << (2 * (k / 4));
    }
    let mut block = hmask.to_vec();
    block.extend(crumbs256(&lows));
    block.extend(scales);
    block.extend(h(0.5));
    let y = through_file(GgmlType::Q3_K, block);
    // Value 0: s 3, q -4: 0.5 * (3 - 32) * -4. Value 255: s[15] = 258 % 64 = 2,
    // q = 765 % 8 - 4 = 1: 0.5 * (2 - 32).
    assert_eq!((y[0], y[255]), (58.0, -15.0));
    for i in 0..256 {
        let want = 0.5 * (i32::from(s[i / 16]) - 32) as f32 * q[i] as f32;
        assert_eq!(y[i], want, "value {i}");
    }
}

/// The 12 bytes of 8 6-bit scales and mins of Q4_K and Q5_K.
fn pack_scale_min(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for j in 0..4 {
        out[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        out[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        out[j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
    }
    out
}

const K_SC: [u8; 8] = [1, 2, 3, 63, 17, 33, 48, 5];
const K_M: [u8; 8] = [0, 1, 62, 7, 20, 40, 9, 63];

#[test]
fn the_scale_packing_is_as_documented() {
    let packed = pack_scale_min(&K_SC, &K_M);
    // Byte 0: scale 0 (1) and the top bits of scale 4 (17 = 0b01_0001): 0b01_000001.
    assert_eq!(packed[0], 0b0100_0001);
    // Byte 8: the low nibbles of scale 4 (1) and min 4 (20 = 0b1_0100: 4).
    assert_eq!(packed[8], 0x41);
    for j in 0..8 {
        assert_eq!(
            cotune_gguf::quant::get_scale_min_k4(j, &packed),
            (K_SC[j], K_M[j]),
            "sub-block {j}"
        );
    }
}

/// 4-bit quants of 256 values, the Q4_K/Q5_K way: each 64 values use 32 bytes, the first 32
/// values the low nibbles, the next 32 the high ones.
fn nibbles256(q: &[u8; 256]) -> Vec<u8> {
    let mut out = vec![0u8; 128];
    for (i, &v) in q.iter().enumerate() {
        let (group, r) = (i / 64, i % 64);
        out[32 * group + r % 32] |= (v & 0xf) << (4 * (r / 32));
    }
    out
}

#[test]
fn q4_k() {
    let q: [u8; 256] = std::array::from_fn(|i| ((i * 7 + 3) % 16) as u8);
    let mut block = h(0.5).to_vec();
    block.extend(h(0.25));
    block.extend(pack_scale_min(&K_SC, &K_M));
    block.extend(nibbles256(&q));
    let y = through_file(GgmlType::Q4_K, block);
    // Value 0: q 3, scale 1, min 0: 0.5 * 3. Value 128: q 899 % 16 = 3, sub-block 4 (scale 17,
    // min 20): 0.5 * 17 * 3 - 0.25 * 20. Value 255: q 1788 % 16 = 12, sub-block 7 (5, 63).
    assert_eq!((y[0], y[128], y[255]), (1.5, 20.5, 30.0 - 15.75));
    for i in 0..256 {
        let j = i / 32;
        let want = 0.5 * f32::from(K_SC[j]) * f32::from(q[i]) - 0.25 * f32::from(K_M[j]);
        assert_eq!(y[i], want, "value {i}");
    }
}

#[test]
fn q5_k() {
    let q: [u8; 256] = std::array::from_fn(|i| ((i * 11 + 5) % 32) as u8);
    let mut qh = [0u8; 32];
    for i in 0..256 {
        qh[i % 32] |= (q[i] >> 4) << (i / 32);
    }
    let lows: [u8; 256] = std::array::from_fn(|i| q[i] & 0xf);
    let mut block = h(0.5).to_vec();
    block.extend(h(0.25));
    block.extend(pack_scale_min(&K_SC, &K_M));
    block.extend(qh);
    block.extend(nibbles256(&lows));
    let y = through_file(GgmlType::Q5_K, block);
    // Value 0: q 5, scale 1: 2.5. Value 200: q 2205 % 32 = 29, sub-block 6 (48, 9):
    // 0.5 * 48 * 29 - 0.25 * 9.
    assert_eq!((y[0], y[200]), (2.5, 693.75));
    for i in 0..256 {
        let j = i / 32;
        let want = 0.5 * f32::from(K_SC[j]) * f32::from(q[i]) - 0.25 * f32::from(K_M[j]);
        assert_eq!(y[i], want, "value {i}");
    }
}

#[test]
fn q6_k() {
    let q: [u8; 256] = std::array::from_fn(|i| ((i * 13 + 7) % 64) as u8);
    let sc: [i8; 16] = [
        -1, 2, -3, 4, -127, -128, -9, 10, 5, -6, 7, -100, 100, -11, 12, 127,
    ];
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for i in 0..256 {
        let (half, r) = (i / 128, i % 128);
        let (k, l) = (r / 32, r % 32);
        ql[64 * half + l + 32 * (k % 2)] |= (q[i] & 0xf) << (4 * (k / 2));
        qh[32 * half + l] |= (q[i] >> 4) << (2 * k);
    }
    let mut block = ql.to_vec();
    block.extend(qh);
    block.extend(sc.iter().map(|&s| s as u8));
    block.extend(h(0.125));
    let y = through_file(GgmlType::Q6_K, block);
    // Value 0: q 7, scale -1: 0.125 * -1 * (7 - 32). Value 70: q 917 % 64 = 21, scale sc[4] =
    // -127: 0.125 * -127 * (21 - 32).
    assert_eq!((y[0], y[70]), (3.125, 174.625));
    for i in 0..256 {
        let want = 0.125 * f32::from(sc[i / 16]) * (f32::from(q[i]) - 32.0);
        assert_eq!(y[i], want, "value {i}");
    }
}

#[test]
fn q8_k() {
    let mut block = 0.5f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i| (i as u8).wrapping_mul(3)));
    block.extend([0u8; 32]); // block sums, unused
    let y = through_file(GgmlType::Q8_K, block);
    for i in 0..256 {
        assert_eq!(y[i], 0.5 * f32::from((i as u8).wrapping_mul(3) as i8));
    }
}

#[test]
fn partial_blocks_and_unknown_types_are_not_dequantised() {
    assert_eq!(dequantize(GgmlType::Q8_0, &[0; 33]), None);
    assert_eq!(dequantize(GgmlType::IQ2_XXS, &[0; 66]), None);
    assert_eq!(dequantize(GgmlType::Q4_K, &[]), Some(vec![]));
}
