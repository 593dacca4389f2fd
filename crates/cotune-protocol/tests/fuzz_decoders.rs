//! Fuzzed decoders: every reader of outside data in this crate gets arbitrary bytes and mutated
//! valid inputs (bits flipped, bytes inserted, deleted or overwritten, the input cut short, a
//! length field made huge) and must return a value or an error: never panic, and never allocate
//! more than the input could justify (a declared length is checked against the bytes present
//! before anything is allocated for it).
//!
//! Covered here: parameter messages ([`decode_params`]), FedMKT's top-k and example messages,
//! experiment configs ([`ExperimentConfig::parse`]), `metrics.jsonl` ([`read_metrics`]) and the
//! comparison helpers. `state/state.json` (private) is fuzzed in `src/checkpoint.rs`.

use std::path::Path;

use cotune_fuzz::*;
use cotune_host::{Example, NamedTensor};
use cotune_protocol::fedmkt::{
    decode_examples, decode_topk, encode_examples, encode_topk, ExampleTopK,
};
use cotune_protocol::message::{decode_params, encode_params};
use cotune_protocol::records::read_metrics;
use cotune_protocol::ExperimentConfig;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------
// Parameter messages.

fn tensor() -> impl Strategy<Value = NamedTensor> {
    (
        "[a-z0-9._]{0,12}",
        prop::collection::vec(0u64..4, 0..4),
        any::<u32>(),
    )
        .prop_map(|(name, shape, seed)| {
            let n = shape.iter().product::<u64>() as usize;
            let data = (0..n as u32)
                .map(|i| f32::from_bits(seed.wrapping_mul(2_654_435_761).wrapping_add(i)))
                .collect();
            NamedTensor::new(name, shape, data)
        })
}

fn bits(params: &[NamedTensor]) -> Vec<(String, Vec<u64>, Vec<u32>)> {
    params
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                p.shape.to_vec(),
                p.data.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

/// Decodes `bytes`, checking the allocation bound and that a decoded tensor holds exactly the
/// values its shape says.
fn check_params(bytes: &[u8]) {
    let (result, largest) = largest_allocation(|| decode_params(bytes));
    assert_bounded("decode_params", largest, bytes.len());
    if let Ok(params) = result {
        for p in &params {
            let n = if p.shape.contains(&0) {
                Some(0)
            } else {
                p.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
            };
            assert_eq!(
                n,
                Some(p.data.len() as u64),
                "tensor {} of shape {:?} holds {} values",
                p.name,
                p.shape.as_slice(),
                p.data.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn params_round_trip(params in prop::collection::vec(tensor(), 0..5)) {
        let bytes = encode_params(&params);
        prop_assert_eq!(bits(&decode_params(&bytes).unwrap()), bits(&params));
    }

    #[test]
    fn params_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
        // Half the inputs start with the magic, so the decoder gets past its first check.
        let mut bytes = if magic { b"CTPARAM1".to_vec() } else { Vec::new() };
        bytes.extend(tail);
        check_params(&bytes);
    }

    #[test]
    fn params_mutated(params in prop::collection::vec(tensor(), 1..4), edits in edits()) {
        check_params(&apply(encode_params(&params), &edits));
    }
}

/// Every length field of a valid message (count, name length, rank, each dimension) set in turn
/// to each huge value: an error, quickly, with no allocation sized by the claim.
#[test]
fn params_with_huge_length_fields_are_refused_before_allocating() {
    let params = vec![
        NamedTensor::new("a.weight", vec![2, 3], vec![0.5; 6]),
        NamedTensor::new("b", vec![4], vec![1.0; 4]),
    ];
    let bytes = encode_params(&params);
    // Offsets of the u64 fields: the count, then per tensor its name length, rank and dims.
    let mut fields = vec![8];
    let mut at = 16;
    for p in &params {
        fields.push(at); // name length
        at += 8 + p.name.len();
        fields.push(at); // rank
        at += 8;
        for _ in p.shape.iter() {
            fields.push(at);
            at += 8;
        }
        at += 4 * p.data.len();
    }
    assert_eq!(at, bytes.len());
    let started = std::time::Instant::now();
    for &field in &fields {
        for value in [
            u64::MAX,
            1 << 60,
            1 << 62,
            1 << 32,
            u64::from(u32::MAX),
            1 << 31,
        ] {
            let mut bad = bytes.clone();
            bad[field..field + 8].copy_from_slice(&value.to_le_bytes());
            let (result, largest) = largest_allocation(|| decode_params(&bad));
            assert!(
                result.is_err(),
                "field at {field} set to {value} was accepted"
            );
            assert_bounded("decode_params", largest, bad.len());
        }
    }
    // Two dimensions whose product does not fit in 64 bits, with no values at all.
    let mut wide = b"CTPARAM1".to_vec();
    wide.extend_from_slice(&1u64.to_le_bytes());
    wide.extend_from_slice(&4u64.to_le_bytes());
    wide.extend_from_slice(b"wide");
    wide.extend_from_slice(&2u64.to_le_bytes());
    wide.extend_from_slice(&(1u64 << 32).to_le_bytes());
    wide.extend_from_slice(&(1u64 << 32).to_le_bytes());
    let err = decode_params(&wide).unwrap_err().to_string();
    assert!(err.contains("wide"), "the error names the tensor: {err}");
    // With a zero dimension as well, the tensor is empty, as its encoding says.
    let empty = [NamedTensor::new("e", vec![1 << 32, 1 << 32, 0], Vec::new())];
    assert_eq!(decode_params(&encode_params(&empty)).unwrap(), empty);
    // A count of 2^60 tensors in a 16-byte message.
    let mut counted = b"CTPARAM1".to_vec();
    counted.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let (result, largest) = largest_allocation(|| decode_params(&counted));
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&(1u64 << 60).to_string()), "{err}");
    assert_bounded("decode_params", largest, counted.len());
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// FedMKT's messages.

/// What FedMKT's decoders may allocate at once: their preallocation is sized by the bytes
/// present (an entry takes at least 8), like every other decoder's.
fn fedmkt_allowance(len: usize) -> usize {
    allowance(len)
}

fn topk_entry() -> impl Strategy<Value = ExampleTopK> {
    (0usize..4, 0usize..4, any::<u32>()).prop_map(|(positions, k, seed)| {
        let n = positions * k;
        ExampleTopK {
            ids: (0..n as u32).map(|i| seed ^ i).collect(),
            logits: (0..n).map(|i| i as f32 * 0.5).collect(),
            rest: (0..positions).map(|i| -(i as f32)).collect(),
        }
    })
}

fn example() -> impl Strategy<Value = Example> {
    (
        prop::collection::vec(any::<u32>(), 0..6),
        prop::collection::vec(any::<u32>(), 0..6),
    )
        .prop_map(|(prompt, answer)| Example::new(prompt, answer))
}

fn check_fedmkt(bytes: &[u8]) {
    let (_, largest) = largest_allocation(|| decode_topk(bytes));
    assert!(
        largest <= fedmkt_allowance(bytes.len()),
        "decode_topk: {largest} bytes"
    );
    let (_, largest) = largest_allocation(|| decode_examples(bytes));
    assert!(
        largest <= fedmkt_allowance(bytes.len()),
        "decode_examples: {largest} bytes"
    );
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fedmkt_messages_round_trip(topk in prop::collection::vec(topk_entry(), 0..4), examples in prop::collection::vec(example(), 0..4)) {
        // Entries without positions carry no k; compare what a receiver can see.
        let back = decode_topk(&encode_topk(&topk)).unwrap();
        prop_assert_eq!(back.len(), topk.len());
        for (b, t) in back.iter().zip(&topk) {
            prop_assert_eq!(&b.rest, &t.rest);
            if !t.rest.is_empty() {
                prop_assert_eq!(&b.ids, &t.ids);
            }
        }
        prop_assert_eq!(decode_examples(&encode_examples(&examples)).unwrap(), examples);
    }

    #[test]
    fn fedmkt_messages_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), magic in 0u8..3) {
        let mut bytes = match magic {
            0 => b"CTTOPK01".to_vec(),
            1 => b"CTEXMP01".to_vec(),
            _ => Vec::new(),
        };
        bytes.extend(tail);
        check_fedmkt(&bytes);
    }

    #[test]
    fn fedmkt_messages_mutated(topk in prop::collection::vec(topk_entry(), 1..4), examples in prop::collection::vec(example(), 1..4), edits in edits()) {
        check_fedmkt(&apply(encode_topk(&topk), &edits));
        check_fedmkt(&apply(encode_examples(&examples), &edits));
    }
}

#[test]
fn fedmkt_messages_with_huge_counts_are_refused() {
    for magic in [b"CTTOPK01", b"CTEXMP01"] {
        for head in [[u32::MAX, u32::MAX], [u32::MAX, 1], [1 << 31, 4]] {
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
            for h in head {
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            bytes.extend_from_slice(&[0; 16]);
            assert!(decode_topk(&bytes).is_err() && decode_examples(&bytes).is_err());
            check_fedmkt(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Experiment configs.

const SMOKE: &str = include_str!("../../../configs/smoke.toml");

/// Parses `text`; a config that parses gives every model's config text without panicking.
fn check_config(text: &str) {
    let (result, largest) =
        largest_allocation(|| ExperimentConfig::parse(text, Path::new("fuzz.toml")));
    assert_bounded("ExperimentConfig::parse", largest, text.len());
    match result {
        Ok(config) => {
            let _ = config.llm.config_text();
            for d in &config.devices {
                let _ = d.slm.config_text();
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn configs_from_arbitrary_text(text in ".{0,200}") {
        check_config(&text);
    }

    #[test]
    fn configs_from_arbitrary_toml_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        check_config(&pieces.concat());
    }

    #[test]
    fn configs_mutated(edits in edits()) {
        check_config(&String::from_utf8_lossy(&apply(SMOKE.as_bytes().to_vec(), &edits)));
    }
}

#[test]
fn the_smoke_config_parses() {
    ExperimentConfig::parse(SMOKE, Path::new("configs/smoke.toml")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl.

const METRICS: &str = include_str!("fixtures/smoke/co-plms.jsonl");

fn check_metrics(dir: &Path, bytes: &[u8]) {
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let (result, largest) = largest_allocation(|| read_metrics(&path));
    assert_bounded("read_metrics", largest, bytes.len());
    if let Err(e) = result {
        assert!(format!("{e:#}").contains("metrics.jsonl"), "{e:#}");
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn metrics_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        check_metrics(dir.path(), &bytes);
    }

    #[test]
    fn metrics_mutated(edits in edits()) {
        let dir = tempfile::tempdir().unwrap();
        check_metrics(dir.path(), &apply(METRICS.as_bytes().to_vec(), &edits));
    }
}

#[test]
fn the_pinned_metrics_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, METRICS).unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), METRICS.lines().count());
}

// ---------------------------------------------------------------------------------------------
// Comparison files: the dotted keys of `set` tables.

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn comparison_keys_never_panic(text in ".{0,120}", path in "[a-z0-9*.]{0,16}") {
        let _ = cotune_protocol::compare::is_comparison(&text);
        let mut root: toml::Value = toml::from_str(SMOKE).unwrap();
        let _ = cotune_protocol::compare::set_path(&mut root, &path, &toml::Value::Integer(1));
    }
}
