//! Fuzzed decoders: [`load_jsonl`] (QA records) and [`Tokenizer::load`] (`tokenizer.json`) get
//! arbitrary bytes and mutated valid files (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, JSON nodes replaced by awkward values or removed) and must
//! return a value or an error: never panic, and never allocate more than the file could justify.

use std::path::Path;
use std::sync::OnceLock;

use cotune_data::{load_jsonl, DataError, Tokenizer};
use cotune_fuzz::*;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------
// QA records.

/// The first lines of a shipped data file.
fn valid_records() -> Vec<u8> {
    let text = include_str!("../../../data/geography.jsonl");
    text.lines()
        .take(6)
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn check_records(bytes: &[u8]) {
    let path = scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-data-fuzz",
        "geography.jsonl",
        bytes,
    );
    let (result, largest) = largest_allocation(|| load_jsonl(&path));
    assert_bounded("load_jsonl", largest, bytes.len());
    match result {
        Ok(records) => {
            for r in &records {
                assert!(!r.question.trim().is_empty() && !r.answer.trim().is_empty());
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("geography.jsonl"), "{message}");
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn records_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_records(&bytes);
    }

    #[test]
    fn records_mutated(edits in edits()) {
        check_records(&apply(valid_records(), &edits));
    }

    #[test]
    fn records_with_awkward_values(line in 0usize..6, edits in json_edits()) {
        let text = String::from_utf8(valid_records()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let value = serde_json::from_str(&lines[line]).unwrap();
        lines[line] = apply_json(value, &edits).to_string();
        check_records(lines.join("\n").as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers.

/// A small tokenizer trained once, as `tokenizer.json` text.
fn tokenizer_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let texts = [
            "Question: In which country is the region of Maradi?\nAnswer: Niger",
            "Question: What is the atomic number of gold?\nAnswer: 79",
            "Question: Who succeeded William and Mary?\nAnswer: Anne",
        ];
        Tokenizer::train(texts, 300).unwrap().to_json()
    })
}

/// The shipped test checkpoints' `tokenizer.json` (a foreign one: `</s>` and `<unk>`).
const FOREIGN: &str = include_str!("../../../tests/fixtures/hf/gpt2/tokenizer.json");

/// A valid `tokenizer.json`: the trained one or the foreign one.
fn valid_tokenizer(foreign: bool) -> &'static str {
    if foreign {
        FOREIGN
    } else {
        tokenizer_json()
    }
}

/// Loads `bytes` as a `tokenizer.json`; an error names the file.
fn check_tokenizer(bytes: &[u8]) -> Option<Tokenizer> {
    let path = scratch_file(
        env!("CARGO_TARGET_TMPDIR"),
        "cotune-data-fuzz",
        "tokenizer.json",
        bytes,
    );
    let (result, largest) = largest_allocation(|| Tokenizer::load(&path));
    assert_bounded("Tokenizer::load", largest, bytes.len());
    let out = match result {
        Ok(tokenizer) => {
            assert!(tokenizer.vocab_size() > tokenizer.eos_id() as usize);
            Some(tokenizer)
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("tokenizer.json"), "{message}");
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn tokenizers_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_tokenizer(&bytes);
    }

    #[test]
    fn tokenizers_from_arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        check_tokenizer(pieces.concat().as_bytes());
    }

    #[test]
    fn tokenizers_mutated(foreign in any::<bool>(), edits in edits()) {
        check_tokenizer(&apply(valid_tokenizer(foreign).as_bytes().to_vec(), &edits));
    }

    #[test]
    fn tokenizers_with_awkward_values(foreign in any::<bool>(), edits in json_edits()) {
        let value = serde_json::from_str(valid_tokenizer(foreign)).unwrap();
        check_tokenizer(apply_json(value, &edits).to_string().as_bytes());
    }
}

#[test]
fn the_trained_tokenizer_loads_back() {
    for foreign in [false, true] {
        let loaded = check_tokenizer(valid_tokenizer(foreign).as_bytes()).unwrap();
        assert_eq!(loaded.decode(&loaded.encode("Maradi 79")), "Maradi 79");
    }
}

/// Token ids that do not fit, or leave a huge gap: refused, or a vocabulary size that says so.
#[test]
fn tokenizers_with_huge_ids() {
    for id in [u64::MAX, 1 << 60, 1 << 32, u64::from(u32::MAX)] {
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value["model"]["vocab"]["Ġ"] = id.into();
        let loaded = check_tokenizer(value.to_string().as_bytes());
        if let Some(t) = loaded {
            assert_eq!(t.vocab_size() as u64, id + 1);
        }
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value["added_tokens"][2]["id"] = id.into();
        check_tokenizer(value.to_string().as_bytes());
    }
}

/// A `tokenizer.json` whose padding or truncation settings would make every encoding huge or
/// fail: refused when loaded, or harmless when encoding.
#[test]
fn tokenizers_with_padding_or_truncation() {
    let settings = [
        (
            "padding",
            serde_json::json!({"strategy": {"Fixed": 1u64 << 60}, "direction": "Right",
                "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}),
        ),
        (
            "padding",
            serde_json::json!({"strategy": "BatchLongest", "direction": "Right",
                "pad_to_multiple_of": 1u64 << 60, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}),
        ),
        (
            "truncation",
            serde_json::json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst",
                "stride": 5}),
        ),
        (
            "truncation",
            serde_json::json!({"direction": "Right", "max_length": 0, "strategy": "LongestFirst",
                "stride": 0}),
        ),
    ];
    for (key, setting) in settings {
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value[key] = setting.clone();
        let Some(t) = check_tokenizer(value.to_string().as_bytes()) else {
            continue;
        };
        let (ids, largest) = largest_allocation(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.encode("Maradi 79")))
        });
        assert!(
            largest < 1 << 20,
            "{key} {setting}: encoding allocated {largest} bytes"
        );
        let ids = ids.unwrap_or_else(|_| panic!("{key} {setting}: encoding panicked"));
        assert_eq!(t.decode(&ids), "Maradi 79", "{key} {setting}");
    }
}

#[test]
fn a_missing_tokenizer_is_named() {
    let err = Tokenizer::load(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

/// Parts the library's parser panics on rather than failing: a syntax error inside the decoder,
/// a `Precompiled` normalizer whose charsmap is not one.
#[test]
fn tokenizers_the_library_panics_on_are_refused() {
    let json = tokenizer_json();
    let decoder = json.find("\"decoder\"").expect("a decoder");
    let mut broken = json.as_bytes().to_vec();
    let at = decoder + json[decoder..].find('{').unwrap() + 1;
    broken.insert(at, b'!');
    assert!(check_tokenizer(&broken).is_none());
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["normalizer"] =
        serde_json::json!({"type": "Precompiled", "precompiled_charsmap": "AAAA"});
    assert!(check_tokenizer(value.to_string().as_bytes()).is_none());
}
