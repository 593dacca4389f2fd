//! Fuzzed decoders: [`HfCheckpoint::read`] (a Hugging Face folder's `config.json`) gets
//! arbitrary bytes and mutated valid configs (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, JSON nodes replaced by awkward values or removed) and must
//! return a checkpoint or an error naming the file: never panic, and never allocate more than
//! the file could justify.

use cotune_fuzz::*;
use cotune_host::HfCheckpoint;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// A folder of its own whose `config.json` holds `bytes` (the returned path is the file's).
fn folder_with_config(bytes: &[u8]) -> Scratch {
    scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-host-fuzz",
        "config.json",
        bytes,
    )
}

/// The shipped test checkpoints' `config.json` files.
const CONFIGS: [&str; 3] = [
    include_str!("../../../tests/fixtures/hf/gpt2/config.json"),
    include_str!("../../../tests/fixtures/hf/llama/config.json"),
    include_str!("../../../tests/fixtures/hf/t5/config.json"),
];

/// Reads `bytes` as a folder's `config.json`; a checkpoint read is consistent with its JSON.
fn check(bytes: &[u8]) -> Option<HfCheckpoint> {
    let dir = folder_with_config(bytes);
    let (result, largest) = largest_allocation(|| HfCheckpoint::read(dir.parent().unwrap()));
    assert_bounded("HfCheckpoint::read", largest, bytes.len());
    let out = match result {
        Ok(checkpoint) => {
            assert!(!checkpoint.architectures.is_empty());
            // The end-of-sequence id is the file's own, never a truncation of it.
            let eos = checkpoint.config.get("eos_token_id").and_then(|v| match v {
                serde_json::Value::Array(ids) => ids.first().and_then(|id| id.as_u64()),
                id => id.as_u64(),
            });
            if let Some(id) = checkpoint.eos_token_id() {
                assert_eq!(Some(u64::from(id)), eos);
            }
            let _ = checkpoint.tokenizer_path();
            Some(checkpoint)
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("config.json"), "{message}");
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn configs_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }

    #[test]
    fn configs_from_arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        check(pieces.concat().as_bytes());
    }

    #[test]
    fn configs_mutated(which in 0usize..3, edits in edits()) {
        check(&apply(CONFIGS[which].as_bytes().to_vec(), &edits));
    }

    #[test]
    fn configs_with_awkward_values(which in 0usize..3, edits in json_edits()) {
        let value = serde_json::from_str(CONFIGS[which]).unwrap();
        check(apply_json(value, &edits).to_string().as_bytes());
    }
}

#[test]
fn the_shipped_configs_read() {
    for text in CONFIGS {
        let checkpoint = check(text.as_bytes()).unwrap();
        assert_eq!(checkpoint.architectures.len(), 1);
    }
}

/// An end-of-sequence id past `u32` is not read as its low 32 bits.
#[test]
fn huge_eos_ids_are_not_truncated() {
    for id in [1u64 << 32, (1 << 32) + 2, u64::MAX, 1 << 60] {
        for eos in [serde_json::json!(id), serde_json::json!([id, 1])] {
            let mut value: serde_json::Value = serde_json::from_str(CONFIGS[0]).unwrap();
            value["eos_token_id"] = eos;
            let checkpoint = check(value.to_string().as_bytes()).unwrap();
            assert_eq!(checkpoint.eos_token_id(), None, "{id}");
        }
    }
}

#[test]
fn a_folder_without_config_is_named() {
    let dir = folder_with_config(b"{}");
    std::fs::remove_file(&*dir).unwrap();
    let err = HfCheckpoint::read(dir.parent().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let folder = dir.parent().unwrap().to_path_buf();
    drop(dir);
    let err = HfCheckpoint::read(&folder).unwrap_err().to_string();
    assert!(err.contains("no such folder"), "{err}");
}
