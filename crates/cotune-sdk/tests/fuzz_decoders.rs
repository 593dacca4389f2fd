//! Fuzzed decoders on the plugin side: [`read_safetensors`] (`model.safetensors`),
//! [`read_config`] (`config.json`) and [`Trainer::load`] (the SDK's own checkpoints) get
//! arbitrary bytes and mutated valid files (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, a length field made huge, JSON header nodes replaced by
//! awkward values or removed) and must return a value or an error naming the file: never
//! panic, and never allocate more than the file could justify.

use std::sync::OnceLock;

use cotune_fuzz::*;
use cotune_sdk::abi::{AnswerExample, TrainOptions};
use cotune_sdk::burn;
use cotune_sdk::burn::module::Module;
use cotune_sdk::burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use cotune_sdk::burn::tensor::{Device, Int, Tensor};
use cotune_sdk::hf::{read_config, read_safetensors, write_safetensors};
use cotune_sdk::{LanguageModel, Memory, Structure, Trainer};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------
// model.safetensors.

/// A shipped test checkpoint's weights (F32, as `transformers` saves them).
const SHIPPED: &[u8] = include_bytes!("../../../tests/fixtures/hf/gpt2/model.safetensors");

/// A small valid file: F32 tensors from `write_safetensors`, then an F16, a BF16 and an F64
/// tensor appended by hand.
fn small_safetensors() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch_file(
            env!("CARGO_TARGET_TMPDIR"),
            "cotune-sdk-fuzz",
            "small.safetensors",
            b"",
        );
        let tensors = vec![
            (
                "a".to_string(),
                vec![2, 3],
                vec![1.0, -2.5, 3.25, 0.0, 0.1, -0.0],
            ),
            ("b.weight".to_string(), vec![1], vec![7.0]),
            ("c".to_string(), vec![0, 4], vec![]),
        ];
        write_safetensors(&path, &tensors).unwrap();
        let written = std::fs::read(&path).unwrap();
        // Rebuild with more dtypes: the header is JSON, the data follows it.
        let header_len = u64::from_le_bytes(written[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value =
            serde_json::from_slice(&written[8..8 + header_len]).unwrap();
        let mut data = written[8 + header_len..].to_vec();
        for (name, dtype, shape, bytes) in [
            ("h", "F16", vec![2], vec![0x00, 0x3c, 0x00, 0xc0]),
            ("g", "BF16", vec![1], vec![0xc0, 0x3f]),
            ("d", "F64", vec![1], 2.5f64.to_le_bytes().to_vec()),
        ] {
            let begin = data.len();
            data.extend_from_slice(&bytes);
            header[name] = serde_json::json!({
                "dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]
            });
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    })
}

/// Splits a safetensors file into its JSON header and its data.
fn split(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap(),
        &bytes[8 + header_len..],
    )
}

fn join(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Reads `bytes` as a safetensors file: every tensor read holds exactly the values its shape
/// says; an error names the file.
fn check_safetensors(bytes: &[u8]) -> Option<usize> {
    let path = scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-sdk-fuzz",
        "model.safetensors",
        bytes,
    );
    let (result, largest) = largest_allocation(|| read_safetensors(&path));
    assert_bounded("read_safetensors", largest, bytes.len());
    let out = match result {
        Ok(tensors) => {
            for (name, t) in &tensors {
                let n = if t.shape.contains(&0) {
                    Some(0)
                } else {
                    t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
                };
                assert_eq!(
                    n,
                    Some(t.data.len()),
                    "tensor {name} of shape {:?} holds {} values",
                    t.shape,
                    t.data.len()
                );
            }
            Some(tensors.len())
        }
        Err(e) => {
            assert!(e.message.contains("model.safetensors"), "{}", e.message);
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn safetensors_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), len in prop::option::of(0u64..300)) {
        // Half the inputs declare a header length that fits, so the JSON parser is reached.
        let mut bytes = len.map(|l| l.to_le_bytes().to_vec()).unwrap_or_default();
        bytes.extend(tail);
        check_safetensors(&bytes);
    }

    #[test]
    fn safetensors_mutated(edits in edits()) {
        check_safetensors(&apply(small_safetensors().to_vec(), &edits));
    }

    #[test]
    fn safetensors_with_awkward_header_values(edits in json_edits()) {
        let (header, data) = split(small_safetensors());
        check_safetensors(&join(&apply_json(header, &edits), data));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn shipped_safetensors_mutated(edits in edits()) {
        check_safetensors(&apply(SHIPPED.to_vec(), &edits));
    }

    #[test]
    fn shipped_safetensors_with_awkward_header_values(edits in json_edits()) {
        let (header, data) = split(SHIPPED);
        check_safetensors(&join(&apply_json(header, &edits), data));
    }
}

#[test]
fn valid_safetensors_read() {
    assert_eq!(check_safetensors(small_safetensors()), Some(6));
    assert!(check_safetensors(SHIPPED).unwrap() > 0);
}

/// Header lengths, shapes and offsets that claim more than the file holds, or more than fits
/// in memory: refused, quickly, with no allocation sized by the claim.
#[test]
fn safetensors_with_huge_claims_are_refused() {
    let mut claims = Vec::new();
    for header_len in [u64::MAX, 1 << 60, 1 << 32, u64::MAX - 7] {
        let mut bytes = small_safetensors().to_vec();
        bytes[..8].copy_from_slice(&header_len.to_le_bytes());
        claims.push(bytes);
    }
    let shapes = [
        serde_json::json!([1u64 << 32, 1u64 << 32]),
        serde_json::json!([1u64 << 62]),
        serde_json::json!([1u64 << 61, 4, 2]),
        serde_json::json!([u64::MAX, 0]),
        serde_json::json!([0, u64::MAX, 2]),
        serde_json::json!([u64::MAX]),
    ];
    for dtype in ["F32", "F16", "BF16", "F64"] {
        for shape in &shapes {
            for offsets in [serde_json::json!([0, 0]), serde_json::json!([0, 8])] {
                let header = serde_json::json!({
                    "w": { "dtype": dtype, "shape": shape, "data_offsets": offsets }
                });
                claims.push(join(&header, &[0; 8]));
            }
        }
        for offsets in [
            serde_json::json!([0, u64::MAX]),
            serde_json::json!([1u64 << 60, 1u64 << 61]),
            serde_json::json!([u64::MAX, u64::MAX]),
            serde_json::json!([8, 4]),
        ] {
            let header = serde_json::json!({
                "w": { "dtype": dtype, "shape": [2], "data_offsets": offsets }
            });
            claims.push(join(&header, &[0; 8]));
        }
    }
    let started = std::time::Instant::now();
    for bytes in &claims {
        let path = scratch_file(
            env!("CARGO_TARGET_TMPDIR"),
            "cotune-sdk-fuzz",
            "model.safetensors",
            bytes,
        );
        let (result, largest) = largest_allocation(|| read_safetensors(&path));
        assert_bounded("read_safetensors", largest, bytes.len());
        let header = String::from_utf8_lossy(&bytes[8..bytes.len().min(200)]).into_owned();
        match result {
            Ok(tensors) => {
                // Only a zero-sized claim may be read: `[u64::MAX, 0]` holds no values.
                for t in tensors.values() {
                    assert!(t.data.is_empty() && t.shape.contains(&0), "{header}");
                }
            }
            Err(e) => assert!(e.message.contains("model.safetensors"), "{}", e.message),
        }
    }
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// config.json.

const CONFIGS: [&str; 3] = [
    include_str!("../../../tests/fixtures/hf/gpt2/config.json"),
    include_str!("../../../tests/fixtures/hf/llama/config.json"),
    include_str!("../../../tests/fixtures/hf/t5/config.json"),
];

fn check_config(bytes: &[u8]) {
    let path = scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-sdk-fuzz",
        "config.json",
        bytes,
    );
    let (result, largest) = largest_allocation(|| read_config(&path));
    assert_bounded("read_config", largest, bytes.len());
    match result {
        Ok(value) => assert!(value.is_object()),
        Err(e) => assert!(e.message.contains("config.json"), "{}", e.message),
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn configs_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_config(&bytes);
    }

    #[test]
    fn configs_mutated(which in 0usize..3, edits in edits()) {
        check_config(&apply(CONFIGS[which].as_bytes().to_vec(), &edits));
    }
}

// ---------------------------------------------------------------------------------------------
// The SDK's checkpoints: `Trainer::save` and `Trainer::load`.

/// The smallest language model: an embedding and a head.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TinyConfig {
    vocab_size: usize,
    width: usize,
}

#[derive(Module, Debug)]
struct Tiny {
    embed: Embedding,
    head: Linear,
}

impl LanguageModel for Tiny {
    type Config = TinyConfig;
    type Cache = ();
    const ARCHITECTURE: &'static str = "tiny";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    const EXAMPLE_CONFIG: &'static str = "vocab_size = 8\nwidth = 4\n";

    fn validate(c: &TinyConfig) -> Result<(), String> {
        cotune_sdk::config::positive(&[("vocab_size", c.vocab_size), ("width", c.width)])
    }

    fn init(c: &TinyConfig, device: &Device) -> Self {
        Tiny {
            embed: EmbeddingConfig::new(c.vocab_size, c.width).init(device),
            head: LinearConfig::new(c.width, c.vocab_size).init(device),
        }
    }

    fn vocab_size(c: &TinyConfig) -> usize {
        c.vocab_size
    }

    fn context_len(_: &TinyConfig) -> usize {
        16
    }

    fn decode(&self, tokens: Tensor<2, Int>, _memory: Option<&Memory>) -> Tensor<3> {
        self.embed.forward(tokens)
    }

    fn decode_cached(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<&Memory>,
        _cache: &mut (),
    ) -> Tensor<3> {
        self.decode(tokens, memory)
    }

    fn new_cache(&self) {}

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head.forward(hidden)
    }
}

fn trainer() -> Trainer<Tiny> {
    Trainer::from_toml(Tiny::EXAMPLE_CONFIG, 7, Device::flex()).unwrap()
}

/// A checkpoint of the tiny model after one step (so the optimiser has state).
fn checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut t = trainer();
        let batch = [AnswerExample {
            prompt: vec![1, 2, 3].into(),
            answer: vec![4, 5].into(),
        }];
        t.train_step(&batch, None, &TrainOptions::default())
            .unwrap();
        let path = scratch_file(
            env!("CARGO_TARGET_TMPDIR"),
            "cotune-sdk-fuzz",
            "model.ckpt",
            b"",
        );
        t.save(path.to_str().unwrap()).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// The offsets of the checkpoint's three length fields (architecture, parameters, optimiser).
fn length_fields(bytes: &[u8]) -> Vec<usize> {
    let mut fields = Vec::new();
    let mut at = 8;
    for _ in 0..3 {
        fields.push(at);
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    fields
}

/// Loads `bytes` as a checkpoint into a fresh trainer; an error names the file.
fn check_checkpoint(bytes: &[u8]) -> bool {
    let path = scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-sdk-fuzz",
        "model.ckpt",
        bytes,
    );
    let mut t = trainer();
    let (result, largest) = largest_allocation(|| t.load(path.to_str().unwrap()));
    assert_bounded("Trainer::load", largest, bytes.len());
    match result {
        Ok(()) => true,
        Err(e) => {
            assert!(e.message.contains("model.ckpt"), "{}", e.message);
            false
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn checkpoints_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
        let mut bytes = if magic { b"COTUNE01".to_vec() } else { Vec::new() };
        bytes.extend(tail);
        check_checkpoint(&bytes);
    }

    #[test]
    fn checkpoints_mutated(edits in edits()) {
        check_checkpoint(&apply(checkpoint().to_vec(), &edits));
    }

    /// Edits confined to one part (architecture, parameters, optimiser state, settings), so
    /// each inner decoder sees damage with valid framing around it.
    #[test]
    fn checkpoint_parts_mutated(part in 0usize..4, edits in edits()) {
        let bytes = checkpoint();
        let fields = length_fields(bytes);
        let (begin, end) = match part {
            3 => (fields[2] + 8 + u64::from_le_bytes(bytes[fields[2]..fields[2] + 8].try_into().unwrap()) as usize, bytes.len()),
            p => (fields[p] + 8, if p < 2 { fields[p + 1] } else { fields[2] + 8 + u64::from_le_bytes(bytes[fields[2]..fields[2] + 8].try_into().unwrap()) as usize }),
        };
        let inner = apply(bytes[begin..end].to_vec(), &edits);
        let mut out = bytes[..begin].to_vec();
        if part < 3 {
            // Keep the framing consistent: the part's length field says its new length.
            out[fields[part]..fields[part] + 8].copy_from_slice(&(inner.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(&inner);
        out.extend_from_slice(&bytes[end..]);
        check_checkpoint(&out);
    }
}

#[test]
fn a_checkpoint_loads_back() {
    assert!(check_checkpoint(checkpoint()));
}

/// Each length field set to each huge value: refused, quickly, with no allocation sized by the
/// claim.
#[test]
fn checkpoints_with_huge_lengths_are_refused() {
    let bytes = checkpoint();
    let started = std::time::Instant::now();
    for field in length_fields(bytes) {
        for value in [
            u64::MAX,
            u64::MAX - 7,
            1 << 60,
            1 << 62,
            1 << 32,
            u64::from(u32::MAX),
        ] {
            let mut bad = bytes.to_vec();
            bad[field..field + 8].copy_from_slice(&value.to_le_bytes());
            assert!(!check_checkpoint(&bad), "length at {field} set to {value}");
        }
    }
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
