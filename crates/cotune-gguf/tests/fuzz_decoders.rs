//! Fuzzed decoder: the GGUF reader gets arbitrary bytes and mutated valid files (bits flipped,
//! bytes inserted, deleted or overwritten, the file cut short, a length field made huge) and
//! must return a file or an error: never panic, and never allocate more than the input could
//! justify (a declared count or length is checked against the bytes left before anything is
//! allocated for it). A file that parses has every tensor read and dequantised, under the same
//! bound.

use cotune_fuzz::*;
use cotune_gguf::{Array, GgmlType, Gguf, GgufWriter};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// A valid file with a bit of everything: strings, arrays (nested too), and tensors of several
/// types, dequantised and raw.
fn seed() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("llama.context_length", 64u32);
    w.set("tokenizer.ggml.tokens", vec!["<s>", "</s>", "a", "bc"]);
    w.set("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.0, -3.0]);
    w.set("tokenizer.ggml.token_type", vec![3i32, 3, 1, 1]);
    w.set("t.flags", vec![true, false]);
    w.set(
        "t.nested",
        vec![Array::from(vec![1u64]), Array::from(vec!["x".to_string()])],
    );
    let values: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).cos()).collect();
    w.add_tensor("f32", &[8, 2], GgmlType::F32, &values[..16])
        .unwrap();
    w.add_tensor("q8", &[32, 2], GgmlType::Q8_0, &values)
        .unwrap();
    w.add_tensor("q5", &[32, 2], GgmlType::Q5_1, &values)
        .unwrap();
    let block: Vec<u8> = (0..GgmlType::Q4_K.type_size())
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    w.add_raw_tensor("q4k", &[256], GgmlType::Q4_K, block)
        .unwrap();
    w.to_bytes().unwrap()
}

/// Parses `bytes` and reads every tensor, checking the allocation bound throughout.
fn check(bytes: &[u8]) {
    let (result, largest) = largest_allocation(|| {
        let Ok(file) = Gguf::parse(bytes) else {
            return;
        };
        for t in file.tensors() {
            let raw = file.tensor_bytes(&t.name).unwrap();
            assert_eq!(raw.len() as u64, t.size);
            if let Ok((dims, values)) = file.tensor_f32(&t.name) {
                let n = dims.iter().product::<usize>();
                assert_eq!(n, values.len(), "tensor {}", t.name);
            }
        }
    });
    assert_bounded("Gguf::parse", largest, bytes.len());
    result
}

#[test]
fn the_seed_is_valid() {
    let file = Gguf::parse(&seed()).unwrap();
    assert_eq!(file.tensors().len(), 4);
    check(&seed());
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
        // With a valid start, the reader gets further.
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend_from_slice(&bytes);
        check(&b);
    }

    #[test]
    fn mutated_files(edits in edits()) {
        check(&apply(seed(), &edits));
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn mutated_files_on_disk(edits in edits()) {
        let bytes = apply(seed(), &edits);
        let path = scratch_file(env!("CARGO_TARGET_TMPDIR"), "gguf-fuzz", "x.gguf", &bytes);
        let (result, largest) = largest_allocation(|| {
            Gguf::open(&*path).map(|file| {
                for t in file.tensors() {
                    let _ = file.tensor_f32(&t.name);
                }
            })
        });
        assert_bounded("Gguf::open", largest, bytes.len());
        // The file and the buffer agree.
        match (result, Gguf::parse(&bytes)) {
            (Ok(()), Ok(_)) => {}
            (Err(a), Err(b)) => prop_assert_eq!(
                a.to_string(),
                b.to_string().replacen("<bytes>", &path.display().to_string(), 1)
            ),
            (a, b) => prop_assert!(false, "file {:?}, bytes {:?}", a.err(), b.err()),
        }
    }
}
