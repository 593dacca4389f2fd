//! A file written by the reference Python package (gguf-py 0.19.0, `fixtures/make_fixture.py`):
//! its metadata as the script set it, every tensor dequantised as gguf-py dequantises it, and
//! this crate's quantisers giving gguf-py's bytes (which match llama.cpp's reference ones).

use std::path::PathBuf;

use cotune_gguf::quant::quantize;
use cotune_gguf::{Array, GgmlType, Gguf, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected_values() -> Vec<f32> {
    let bytes = std::fs::read(fixture("tiny.expected.f32")).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn the_metadata_reads_as_the_script_wrote_it() {
    let file = Gguf::open(fixture("tiny.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get("test.u8"), Some(&Value::U8(200)));
    assert_eq!(file.get("test.i8"), Some(&Value::I8(-100)));
    assert_eq!(file.get("test.u16"), Some(&Value::U16(60000)));
    assert_eq!(file.get("test.i16"), Some(&Value::I16(-30000)));
    assert_eq!(file.get_u32("llama.context_length").unwrap(), 4096);
    assert_eq!(file.get_i32("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(file.get_f32("test.f32").unwrap(), 0.1);
    assert!(file.get_bool("test.bool").unwrap());
    assert_eq!(file.get_str("general.name").unwrap(), "tiny ✓");
    assert_eq!(file.get_u64("test.u64").unwrap(), (1 << 63) + 5);
    assert_eq!(file.get("test.i64"), Some(&Value::I64(-(1 << 62))));
    assert_eq!(
        file.get("test.f64"),
        Some(&Value::F64(std::f64::consts::PI))
    );
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["<s>", "</s>", "héllo", " world"]
    );
    assert_eq!(
        file.get_f32_array("tokenizer.ggml.scores").unwrap(),
        [0.0, -1.5, 2.25, -0.1]
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        [3, 3, 1, 1]
    );
    assert_eq!(
        file.get_u32_array("test.u32_array").unwrap(),
        [1, 2, 4_000_000_000]
    );
    assert_eq!(
        file.get("test.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3])
        ])))
    );
}

#[test]
fn every_tensor_dequantises_as_gguf_py_does() {
    let file = Gguf::open(fixture("tiny.gguf")).unwrap();
    let expected = expected_values();
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "src", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k",
            "q5_k", "q6_k"
        ]
    );
    let mut at = 0;
    for t in file.tensors() {
        let (dims, values) = file.tensor_f32(&t.name).unwrap();
        let want = &expected[at..at + values.len()];
        at += values.len();
        assert_eq!(dims.iter().map(|&d| d as u64).collect::<Vec<_>>(), t.dims);
        assert_eq!(t.ty.name().to_lowercase(), t.name.replace("src", "f32"));
        for (i, (got, want)) in values.iter().zip(want).enumerate() {
            let tol = 1e-6 * want.abs().max(f32::MIN_POSITIVE);
            assert!(
                (got - want).abs() <= tol,
                "{} value {i}: {got}, gguf-py {want}",
                t.name
            );
        }
        // The arithmetic is done in the same order as gguf-py's: the values agree exactly.
        assert_eq!(values, want, "{}", t.name);
    }
    assert_eq!(at, expected.len(), "the expected file has more values");
}

#[test]
fn the_quantisers_give_gguf_py_bytes() {
    let file = Gguf::open(fixture("tiny.gguf")).unwrap();
    let (_, src) = file.tensor_f32("src").unwrap();
    for (name, ty) in [
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::BF16),
        ("q8_0", GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q5_1", GgmlType::Q5_1),
    ] {
        assert_eq!(
            quantize(ty, &src).unwrap(),
            file.tensor_bytes(name).unwrap(),
            "{name}"
        );
    }
}
