//! Bad files, each refused with a message that names the file, the byte offset, the thing and
//! the value: wrong magic, versions 1 and 4, every truncation, huge lengths and counts, unknown
//! value and tensor types, tensor data out of bounds or misaligned, and the rest of the checks.
//! Each is read both from bytes (`<bytes>`) and from a file (its path).

use cotune_gguf::{Array, Error, GgmlType, Gguf, GgufWriter, Value};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// A small valid file whose last tensor ends exactly at the end of the file (128 bytes of
/// F32), so that every shorter prefix lacks something.
fn small() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.name", "tiny");
    w.set("tokenizer.ggml.tokens", vec!["<s>", "</s>", "hi"]);
    w.set("llama.context_length", 128u32);
    w.set("t.flag", true);
    w.set(
        "t.nested",
        vec![Array::from(vec![1i32, 2]), Array::from(vec![3i32])],
    );
    w.add_tensor("blk.0.q", &[32, 2], GgmlType::Q8_0, &values(64))
        .unwrap();
    w.add_tensor("out", &[32, 1], GgmlType::F32, &values(32))
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    let file = Gguf::parse(&bytes).unwrap();
    assert_eq!(file.data_start() + 96 + 128, bytes.len() as u64);
    bytes
}

/// Where the field after a length-prefixed name (a key or a tensor name) begins.
fn after(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{name} is not in the file"));
    at + needle.len()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The error for `bytes`, checked to be the same read from a file (but for the file's name).
fn refused(bytes: &[u8]) -> Error {
    let e = Gguf::parse(bytes).unwrap_err();
    let path = cotune_fuzz::scratch_file(env!("CARGO_TARGET_TMPDIR"), "gguf-bad", "x.gguf", bytes);
    let from_file = Gguf::open(&*path).unwrap_err();
    assert_eq!(from_file.origin(), path.display().to_string());
    assert_eq!(
        from_file.to_string(),
        e.to_string()
            .replacen("<bytes>", &path.display().to_string(), 1)
    );
    e
}

/// Asserts that `bytes` are refused at `offset` with a message holding each of `parts`.
fn expect(bytes: &[u8], offset: usize, parts: &[&str]) {
    let e = refused(bytes);
    let msg = e.to_string();
    assert_eq!(e.offset(), Some(offset as u64), "{msg}");
    let prefix = format!("<bytes> at byte {offset}: ");
    assert!(msg.starts_with(&prefix), "{msg}");
    for part in parts {
        assert!(msg.contains(part), "{msg} does not say {part}");
    }
}

#[test]
fn wrong_magic() {
    let mut b = small();
    b[..4].copy_from_slice(b"GGML");
    expect(
        &b,
        0,
        &["not a GGUF file: magic \"GGML\" (expected \"GGUF\")"],
    );
    b[..4].copy_from_slice(&[0, 0xff, b'G', b'\n']);
    expect(&b, 0, &["magic \"\\x00\\xffG\\n\""]);
}

#[test]
fn versions_1_and_4_and_a_big_endian_file() {
    let mut b = small();
    for version in [1, 4, 0] {
        put_u32(&mut b, 4, version);
        expect(
            &b,
            4,
            &[&format!(
                "GGUF version {version} is not supported (only versions 2 and 3 are)"
            )],
        );
    }
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    expect(&b, 4, &["version 50331648", "a big-endian file?"]);
}

#[test]
fn every_truncation_is_refused() {
    let b = small();
    for n in 0..b.len() {
        let e = Gguf::parse(&b[..n]).unwrap_err();
        let msg = e.to_string();
        let at = e.offset().unwrap_or_else(|| panic!("{n} bytes: {msg}"));
        assert!(at <= n as u64, "{n} bytes: {msg}");
        assert!(msg.starts_with(&format!("<bytes> at byte {at}: ")), "{msg}");
    }
    // Inside the header, the message says what was cut; after it, which tensor lacks bytes.
    expect(
        &b[..6],
        4,
        &["the file ends inside the version: 4 bytes needed, 2 left"],
    );
    let nested = after(&b, "t.nested");
    expect(
        &b[..nested + 2],
        nested,
        &["the file ends inside the value type of metadata key t.nested: 4 bytes needed, 2 left"],
    );
    let dims = after(&b, "out");
    expect(
        &b[..dims + 11],
        dims + 4,
        &["the file ends inside the dimensions of tensor out: 8 bytes needed, 7 left"],
    );
    // Counts are checked against the bytes left before any entry is read.
    expect(
        &b[..100],
        16,
        &["the metadata count is 6, more than the 76 bytes left can hold"],
    );
    expect(
        &b[..b.len() - 1],
        after(&b, "out") + 4 + 16 + 4,
        &["tensor out: data offset 96 and size 128 reach byte"],
    );
}

#[test]
fn a_huge_string_length() {
    let mut b = small();
    let at = after(&b, "general.name") + 4;
    put_u64(&mut b, at, u64::MAX);
    expect(
        &b,
        at,
        &["the string length of the value of metadata key general.name is 18446744073709551615, more than the"],
    );
    // A key's own length.
    let mut b = small();
    let at = after(&b, "general.name") - "general.name".len() - 8;
    put_u64(&mut b, at, 1 << 40);
    expect(
        &b,
        at,
        &["the string length of the name of metadata key 1 is 1099511627776, more than the"],
    );
}

#[test]
fn a_huge_array_length() {
    let mut b = small();
    let at = after(&b, "tokenizer.ggml.tokens") + 8;
    put_u64(&mut b, at, 1 << 60);
    expect(
        &b,
        at,
        &["the array length of metadata key tokenizer.ggml.tokens is 1152921504606846976, more than the"],
    );
    // Not a multiple overflowing: 2^62 strings of at least 8 bytes each.
    put_u64(&mut b, at, 1 << 62);
    expect(&b, at, &["is 4611686018427387904, more than"]);
    let mut b = small();
    // The first inner array of t.nested: after the key, type (4), element type (4), count (8).
    let at = after(&b, "t.nested") + 16 + 4;
    put_u64(&mut b, at, u64::MAX);
    expect(
        &b,
        at,
        &["the array length of metadata key t.nested is 18446744073709551615"],
    );
}

#[test]
fn huge_tensor_and_metadata_counts() {
    let mut b = small();
    put_u64(&mut b, 8, 1 << 60);
    let left = b.len() - 16;
    expect(
        &b,
        8,
        &[&format!(
            "the tensor count is 1152921504606846976, more than the {left} bytes left can hold"
        )],
    );
    let mut b = small();
    put_u64(&mut b, 16, u64::MAX);
    expect(&b, 16, &["the metadata count is 18446744073709551615"]);
}

#[test]
fn unknown_value_types() {
    let mut b = small();
    let at = after(&b, "llama.context_length");
    put_u32(&mut b, at, 13);
    expect(
        &b,
        at,
        &["metadata key llama.context_length: unknown value type 13"],
    );
    let mut b = small();
    let at = after(&b, "tokenizer.ggml.tokens") + 4;
    put_u32(&mut b, at, 0xdead);
    expect(
        &b,
        at,
        &["metadata key tokenizer.ggml.tokens: unknown value type 57005"],
    );
}

#[test]
fn unknown_tensor_type() {
    let mut b = small();
    let at = after(&b, "blk.0.q") + 4 + 16;
    put_u32(&mut b, at, 99);
    expect(&b, at, &["tensor blk.0.q: unknown tensor type 99"]);
    // 31 lies in the gap of ggml's numbering.
    put_u32(&mut b, at, 31);
    expect(&b, at, &["tensor blk.0.q: unknown tensor type 31"]);
}

#[test]
fn tensor_offsets_out_of_bounds_and_misaligned() {
    let b = small();
    let len = b.len();
    let at = after(&b, "out") + 4 + 16 + 4;
    let mut bad = b.clone();
    put_u64(&mut bad, at, 1 << 20);
    expect(
        &bad,
        at,
        &[&format!(
            "tensor out: data offset 1048576 and size 128 reach byte {}, past the end of the file ({len} bytes)",
            len as u64 - 96 + (1 << 20) - 128 + 128
        )],
    );
    // An offset near 2^64 must not overflow.
    put_u64(&mut bad, at, u64::MAX - 31);
    expect(
        &bad,
        at,
        &["data offset 18446744073709551584 and size 128 reach byte 18446744073709551615"],
    );
    put_u64(&mut bad, at, 100);
    expect(
        &bad,
        at,
        &["tensor out: data offset 100 is not a multiple of the alignment 32"],
    );
}

#[test]
fn bad_tensor_shapes() {
    let b = small();
    let dims_at = after(&b, "blk.0.q");
    let mut bad = b.clone();
    put_u32(&mut bad, dims_at, 5);
    expect(&bad, dims_at, &["tensor blk.0.q: 5 dimensions (at most 4)"]);
    let mut bad = b.clone();
    put_u64(&mut bad, dims_at + 4, 33);
    expect(
        &bad,
        dims_at,
        &["tensor blk.0.q: a row of 33 values is not a whole number of Q8_0 blocks of 32"],
    );
    let mut bad = b.clone();
    put_u64(&mut bad, dims_at + 4, 1 << 62);
    put_u64(&mut bad, dims_at + 12, 1 << 10);
    expect(
        &bad,
        dims_at,
        &["tensor blk.0.q: dimensions (4611686018427387904, 1024) are too large"],
    );
    let mut bad = b.clone();
    put_u32(&mut bad, dims_at, 1 << 31);
    expect(&bad, dims_at, &["2147483648 dimensions"]);
}

#[test]
fn bad_values_and_names() {
    let mut b = small();
    let at = after(&b, "t.flag") + 4;
    b[at] = 2;
    expect(
        &b,
        at,
        &["metadata key t.flag: bool value 2 is neither 0 nor 1"],
    );

    let mut b = small();
    let at = after(&b, "general.name") + 4 + 8;
    b[at] = 0xff;
    expect(
        &b,
        at,
        &["the value of metadata key general.name is not valid UTF-8"],
    );

    let mut b = small();
    let at = after(&b, "t.flag") - 6;
    b[at] = 0xc3;
    expect(&b, at, &["the name of metadata key 4 is not valid UTF-8"]);
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut w = GgufWriter::new();
    w.set("a.x", 1u8).set("a.y", 2u8);
    w.add_tensor("t1", &[1], GgmlType::F32, &[0.0]).unwrap();
    w.add_tensor("t2", &[1], GgmlType::F32, &[0.0]).unwrap();
    let b = w.to_bytes().unwrap();
    let mut bad = b.clone();
    let at = after(&b, "a.y") - 3;
    bad[at + 2] = b'x';
    expect(&bad, at - 8, &["metadata key a.x appears twice"]);
    let mut bad = b.clone();
    let at = after(&b, "t2") - 2;
    bad[at + 1] = b'1';
    expect(&bad, at - 8, &["tensor t1 appears twice"]);
}

#[test]
fn a_bad_alignment() {
    let mut w = GgufWriter::new();
    w.set("general.alignment", 64u32);
    w.add_tensor("t", &[1], GgmlType::F32, &[0.0]).unwrap();
    let b = w.to_bytes().unwrap();
    let at = after(&b, "general.alignment");
    for (value, found) in [(48, "u32 48"), (0, "u32 0")] {
        let mut bad = b.clone();
        put_u32(&mut bad, at + 4, value);
        expect(
            &bad,
            at,
            &[&format!(
                "general.alignment must be a nonzero power of two u32, found {found}"
            )],
        );
    }
    let mut bad = b.clone();
    put_u32(&mut bad, at, 5); // i32: same size
    expect(&bad, at, &["found i32"]);
}

#[test]
fn arrays_nested_too_deep() {
    fn nest(depth: usize) -> Value {
        let mut a = Array::from(vec![1u8]);
        for _ in 1..depth {
            a = Array::from(vec![a]);
        }
        Value::Array(a)
    }
    let file = |depth| {
        let mut w = GgufWriter::new();
        w.set("deep", nest(depth));
        w.to_bytes().unwrap()
    };
    let ok = Gguf::parse(&file(cotune_gguf::MAX_ARRAY_DEPTH)).unwrap();
    assert_eq!(ok.get("deep"), Some(&nest(cotune_gguf::MAX_ARRAY_DEPTH)));
    let b = file(cotune_gguf::MAX_ARRAY_DEPTH + 1);
    // The innermost array that would be one too deep begins after 16 levels of headers.
    let at = after(&b, "deep") + 4 + 12 * cotune_gguf::MAX_ARRAY_DEPTH;
    expect(
        &b,
        at - 12,
        &["metadata key deep: arrays nested more than 16 deep"],
    );
}

#[test]
fn a_missing_file_names_its_path() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such.gguf");
    let e = Gguf::open(&path).unwrap_err();
    assert_eq!(e.offset(), None);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read: ", path.display())),
        "{msg}"
    );
}
