//! The writer's files read back: every metadata type, every tensor type the writer quantises
//! to, raw K-quant blocks, versions 2 and 3, from bytes and from a file; the byte layout against
//! a file assembled by hand; the lookup helpers' and the writer's errors.

use cotune_gguf::quant::{dequantize, quantize};
use cotune_gguf::{Array, GgmlType, Gguf, GgufWriter, Value, DEFAULT_ALIGNMENT};
use proptest::prelude::*;

/// Every value type, and an array of each element type (nested and empty ones too).
fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::from("llama")),
        ("t.u8", Value::U8(250)),
        ("t.i8", Value::I8(-128)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool.true", Value::Bool(true)),
        ("t.bool.false", Value::Bool(false)),
        ("t.string", Value::from("héllo ✓\n\0")),
        ("t.string.empty", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("a.u8", Value::from(vec![0u8, 255])),
        ("a.i8", Value::from(vec![-1i8, 127])),
        ("a.u16", Value::from(vec![1u16, 65535])),
        ("a.i16", Value::from(vec![-2i16])),
        ("a.u32", Value::from(vec![7u32, 8, 9])),
        ("a.i32", Value::from(vec![-7i32, 0, 9])),
        ("a.f32", Value::from(vec![0.25f32, -0.0, f32::INFINITY])),
        ("a.bool", Value::from(vec![true, false, true])),
        ("a.string", Value::from(vec!["<s>", "", "wörld"])),
        ("a.u64", Value::from(vec![u64::MAX, 0])),
        ("a.i64", Value::from(vec![i64::MIN, 1])),
        ("a.f64", Value::from(vec![1e300f64, -2.5])),
        ("a.empty", Value::from(Vec::<u32>::new())),
        (
            "a.nested",
            Value::from(vec![
                Array::from(vec![1i32, 2]),
                Array::from(vec![Array::from(vec!["deep".to_string()])]),
                Array::from(Vec::<f64>::new()),
            ]),
        ),
    ]
}

/// A value for each index, reproducible, spread over a few orders of magnitude and both signs.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
            let unit = (h % 20_001) as f32 / 10_000.0 - 1.0;
            unit * (1.0 + (i % 7) as f32)
        })
        .collect()
}

const WRITTEN_TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

/// The largest error `ty` may make on values of magnitude at most `amax` in a block.
fn tolerance(ty: GgmlType, amax: f32, x: f32) -> f32 {
    // The scale (and the min) are stored as f16: their rounding adds up to 2^-11 of the
    // largest value, for each.
    let f16_scale = amax * 2e-3;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => x.abs() * 2f32.powi(-11),
        GgmlType::BF16 => x.abs() * 2f32.powi(-8),
        GgmlType::Q8_0 => amax / 127.0 * 0.5 + f16_scale,
        // The value opposite the largest one may be clamped: a whole step.
        GgmlType::Q4_0 => amax / 8.0 + f16_scale,
        GgmlType::Q5_0 => amax / 16.0 + f16_scale,
        GgmlType::Q4_1 => 2.0 * amax / 15.0 * 0.5 + f16_scale,
        GgmlType::Q5_1 => 2.0 * amax / 31.0 * 0.5 + f16_scale,
        other => panic!("no tolerance for {other}"),
    }
}

fn writer_with_everything(version: u32) -> GgufWriter {
    let mut w = GgufWriter::with_version(version).unwrap();
    for (key, value) in every_value() {
        w.set(key, value);
    }
    for (i, ty) in WRITTEN_TYPES.into_iter().enumerate() {
        let name = format!("w.{}", ty.name());
        w.add_tensor(name, &[64, 3], ty, &values(192, i as u32))
            .unwrap();
    }
    // K-quant blocks written raw: the reader returns them as they are.
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ] {
        let bytes = (0..2 * ty.type_size()).map(|i| (i * 31 % 251) as u8);
        let name = format!("raw.{}", ty.name());
        w.add_raw_tensor(name, &[256, 2], ty, bytes.collect())
            .unwrap();
    }
    w
}

fn check_everything(file: &Gguf, version: u32) {
    assert_eq!(file.version(), version);
    assert_eq!(file.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(file.data_start() % 32, 0);
    let read: Vec<(&str, &Value)> = file.metadata().collect();
    let expected = every_value();
    assert_eq!(read.len(), expected.len());
    for ((key, value), (want_key, want)) in read.iter().zip(&expected) {
        assert_eq!(key, want_key);
        assert_eq!(*value, want, "{key}");
    }
    assert_eq!(file.architecture().unwrap(), "llama");

    for (i, ty) in WRITTEN_TYPES.into_iter().enumerate() {
        let name = format!("w.{}", ty.name());
        let info = file.tensor(&name).unwrap();
        assert_eq!((info.ty, info.dims.as_slice()), (ty, &[64u64, 3][..]));
        assert_eq!(info.offset % 32, 0);
        let input = values(192, i as u32);
        let stored = quantize(ty, &input).unwrap();
        assert_eq!(file.tensor_bytes(&name).unwrap(), stored, "{name}");
        let (dims, got) = file.tensor_f32(&name).unwrap();
        assert_eq!(dims, [64, 3]);
        assert_eq!(got, dequantize(ty, &stored).unwrap(), "{name}");
        for (block, out) in input.chunks(ty.block_size().max(32)).zip(got.chunks(32)) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (x, y) in block.iter().zip(out) {
                let tol = tolerance(ty, amax, *x);
                assert!(
                    (x - y).abs() <= tol,
                    "{name}: {x} read back as {y} (tolerance {tol})"
                );
            }
        }
    }
    for t in file.tensors().iter().filter(|t| t.name.starts_with("raw.")) {
        let bytes: Vec<u8> = (0..2 * t.ty.type_size())
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        assert_eq!(t.size, bytes.len() as u64);
        assert_eq!(file.tensor_bytes(&t.name).unwrap(), bytes, "{}", t.name);
        let (dims, got) = file.tensor_f32(&t.name).unwrap();
        assert_eq!((dims, got.len()), (vec![256, 2], 512));
    }
}

#[test]
fn every_metadata_and_tensor_type_reads_back_in_versions_2_and_3() {
    for version in [2, 3] {
        let bytes = writer_with_everything(version).to_bytes().unwrap();
        check_everything(&Gguf::parse(&bytes).unwrap(), version);
    }
}

#[test]
fn a_file_on_disk_reads_back_with_its_data_read_per_tensor() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cotune-gguf-round-trip-{}.gguf",
        std::process::id()
    ));
    writer_with_everything(3).write(&path).unwrap();
    let file = Gguf::open(&path).unwrap();
    assert_eq!(file.origin(), path.display().to_string());
    assert_eq!(file.file_len(), std::fs::metadata(&path).unwrap().len());
    check_everything(&file, 3);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_custom_alignment_pads_the_data() {
    let mut w = GgufWriter::new();
    w.set("general.alignment", 256u32);
    w.add_tensor("a", &[1], GgmlType::F32, &[1.0]).unwrap();
    w.add_tensor("b", &[2], GgmlType::F32, &[2.0, 3.0]).unwrap();
    let bytes = w.to_bytes().unwrap();
    let file = Gguf::parse(&bytes).unwrap();
    assert_eq!(file.alignment(), 256);
    assert_eq!(file.data_start() % 256, 0);
    assert_eq!(file.tensor("b").unwrap().offset, 256);
    assert_eq!(bytes.len() as u64, file.data_start() + 512);
    assert_eq!(file.tensor_f32("b").unwrap().1, [2.0, 3.0]);
}

/// The writer's bytes for one key and one tensor, against the layout written out by hand.
#[test]
fn the_bytes_follow_the_format() {
    let mut w = GgufWriter::new();
    w.set("k", Value::U16(0x0102));
    w.add_tensor("t", &[2, 1], GgmlType::F32, &[1.0, -2.0])
        .unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(b"GGUF");
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes()); // tensors
    want.extend_from_slice(&1u64.to_le_bytes()); // metadata
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'k');
    want.extend_from_slice(&2u32.to_le_bytes()); // u16
    want.extend_from_slice(&[0x02, 0x01]);
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b't');
    want.extend_from_slice(&2u32.to_le_bytes()); // dims
    want.extend_from_slice(&2u64.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.extend_from_slice(&0u32.to_le_bytes()); // F32
    want.extend_from_slice(&0u64.to_le_bytes()); // offset
    assert_eq!(want.len(), 80);
    want.resize(96, 0);
    want.extend_from_slice(&1f32.to_le_bytes());
    want.extend_from_slice(&(-2f32).to_le_bytes());
    want.resize(128, 0);
    assert_eq!(w.to_bytes().unwrap(), want);
    assert_eq!(Gguf::parse(&want).unwrap().data_start(), 96);
}

#[test]
fn lookups_name_the_key_the_type_found_and_where() {
    let bytes = writer_with_everything(3).to_bytes().unwrap();
    let file = Gguf::parse(&bytes).unwrap();
    assert_eq!(file.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(file.get_i32("t.i32").unwrap(), i32::MIN);
    assert_eq!(file.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(file.get_f32("t.f32").unwrap(), -1.5e-7);
    assert!(file.get_bool("t.bool.true").unwrap());
    assert_eq!(file.get_str("t.string").unwrap(), "héllo ✓\n\0");
    assert_eq!(
        file.get_str_array("a.string").unwrap(),
        ["<s>", "", "wörld"]
    );
    assert_eq!(file.get_u32_array("a.u32").unwrap(), [7, 8, 9]);
    assert_eq!(file.get_i32_array("a.i32").unwrap(), [-7, 0, 9]);
    assert_eq!(file.get_f32_array("a.f32").unwrap()[..2], [0.25, -0.0]);
    assert!(file.get("nope").is_none());

    let e = file.get_u32("t.string").unwrap_err();
    let at = e.offset().expect("a wrong type has a place");
    // The offset is that of the value's type field, which says 8 (string).
    assert_eq!(bytes[at as usize..at as usize + 4], 8u32.to_le_bytes());
    assert_eq!(
        e.to_string(),
        format!("<bytes> at byte {at}: metadata key t.string is string, not u32")
    );
    let e = file.get_str_array("a.f32").unwrap_err().to_string();
    assert!(
        e.ends_with("metadata key a.f32 is array of f32, not array of string"),
        "{e}"
    );
    let e = file.get_f32("missing.key").unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), e.offset()),
        ("<bytes>: metadata key missing.key is missing", None)
    );
    let e = file.tensor_f32("no.such").unwrap_err().to_string();
    assert_eq!(e, "<bytes>: no tensor named no.such");
}

#[test]
fn a_known_type_without_a_dequantiser_is_refused_naming_it() {
    let mut w = GgufWriter::new();
    w.add_raw_tensor("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66])
        .unwrap();
    let file = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
    assert_eq!(file.tensor_bytes("iq").unwrap().len(), 66);
    let e = file.tensor_f32("iq").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "<bytes> at byte {}: tensor iq: type IQ2_XXS (16) cannot be dequantised here",
            file.data_start()
        )
    );
}

#[test]
fn the_writer_refuses_what_it_cannot_write() {
    let mut w = GgufWriter::new();
    let msg = |e: cotune_gguf::WriteError| e.to_string();
    assert_eq!(
        msg(GgufWriter::with_version(1).err().unwrap()),
        "GGUF version 1 cannot be written (only versions 2 and 3)"
    );
    assert_eq!(
        msg(w
            .add_tensor("a", &[4, 2], GgmlType::F32, &[0.0; 7])
            .err()
            .unwrap()),
        "tensor a: 7 values do not fill dimensions (4, 2)"
    );
    assert_eq!(
        msg(w
            .add_tensor("a", &[48], GgmlType::Q8_0, &[0.0; 48])
            .err()
            .unwrap()),
        "tensor a: a row of 48 values is not a whole number of Q8_0 blocks of 32"
    );
    assert_eq!(
        msg(w
            .add_tensor("a", &[256], GgmlType::Q4_K, &[0.0; 256])
            .err()
            .unwrap()),
        "tensor a: type Q4_K cannot be quantised here (write its blocks raw)"
    );
    assert_eq!(
        msg(w.add_tensor("a", &[], GgmlType::F32, &[]).err().unwrap()),
        "tensor a: 0 dimensions (1 to 4)"
    );
    assert_eq!(
        msg(w
            .add_tensor("a", &[1; 5], GgmlType::F32, &[0.0])
            .err()
            .unwrap()),
        "tensor a: 5 dimensions (1 to 4)"
    );
    assert_eq!(
        msg(w
            .add_raw_tensor("a", &[256], GgmlType::Q6_K, vec![0; 209])
            .err()
            .unwrap()),
        "tensor a: 209 bytes given, Q6_K dimensions (256) take 210"
    );
    w.add_tensor("a", &[1], GgmlType::F32, &[0.0]).unwrap();
    assert_eq!(
        msg(w
            .add_tensor("a", &[1], GgmlType::F32, &[0.0])
            .err()
            .unwrap()),
        "tensor a added twice"
    );
    w.set("general.alignment", 48u32);
    assert_eq!(
        msg(w.to_bytes().unwrap_err()),
        "general.alignment must be a nonzero power of two u32, found u32 48"
    );
    w.set("general.alignment", 64u64);
    assert_eq!(
        msg(w.to_bytes().unwrap_err()),
        "general.alignment must be a nonzero power of two u32, found u64"
    );
    w.set("general.alignment", 64u32);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/x.gguf");
    let e = msg(w.write(&dir).unwrap_err());
    assert!(
        e.starts_with(&format!("cannot write {}: ", dir.display())),
        "{e}"
    );
}

#[test]
fn every_type_number_maps_back() {
    for &ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(ty.to_string(), ty.name());
    }
    assert_eq!(GgmlType::from_id(31), None);
    assert_eq!(GgmlType::Q4_K.type_size(), 144);
    assert_eq!(GgmlType::Q5_K.type_size(), 176);
    assert_eq!(GgmlType::Q6_K.type_size(), 210);
    assert_eq!(GgmlType::Q2_K.type_size(), 84);
    assert_eq!(GgmlType::Q3_K.type_size(), 110);
    assert_eq!(GgmlType::Q8_K.type_size(), 292);
}

// ---------------------------------------------------------------------------------------------
// Any metadata reads back as written.

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>()
            .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
            .prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,6}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |x| !x.is_nan())
            .prop_map(Value::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..5).prop_map(Array::U8),
        prop::collection::vec(any::<i16>(), 0..5).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..5).prop_map(Array::U32),
        prop::collection::vec(any::<bool>(), 0..5).prop_map(Array::Bool),
        prop::collection::vec(".{0,4}", 0..5).prop_map(Array::String),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(Array::I64),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]

    #[test]
    fn any_metadata_reads_back(
        entries in prop::collection::vec(
            ("[a-z.]{1,8}", prop_oneof![scalar(), array().prop_map(Value::Array)]),
            0..8,
        ),
        version in 2u32..4,
    ) {
        let mut w = GgufWriter::with_version(version).unwrap();
        let mut expected: Vec<(String, Value)> = Vec::new();
        for (key, value) in entries {
            if key == "general.alignment" {
                continue;
            }
            match expected.iter_mut().find(|(k, _)| *k == key) {
                Some(e) => e.1 = value.clone(),
                None => expected.push((key.clone(), value.clone())),
            }
            w.set(key, value);
        }
        let file = Gguf::parse(&w.to_bytes().unwrap()).unwrap();
        let read: Vec<(String, Value)> =
            file.metadata().map(|(k, v)| (k.to_string(), v.clone())).collect();
        prop_assert_eq!(read, expected);
    }
}
