//! Fuzzed decoders: [`score_jsonl`] gets arbitrary bytes and mutated valid score files (bits
//! flipped, bytes inserted, deleted or overwritten, the file cut short, JSON and TOML pieces
//! inserted) and must return a report or an error naming the file: never panic, and never
//! allocate more than the file could justify.

use std::path::Path;

use cotune_eval::score_jsonl;
use cotune_fuzz::*;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------
// Score files.

/// A valid score file of `pairs`, one JSON object a line, sometimes with an extra field.
fn score_file(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (i, (prediction, reference)) in pairs.iter().enumerate() {
        let mut line = serde_json::json!({ "prediction": prediction, "reference": reference });
        if i % 2 == 1 {
            line["id"] = i.into();
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,24}", "\\PC{0,24}"), 1..6)
}

/// Scores `bytes` written to a file; an error names the file.
fn check(dir: &Path, bytes: &[u8]) -> Option<usize> {
    let path = dir.join("scores.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let (result, largest) = largest_allocation(|| score_jsonl(&path, true));
    assert_bounded("score_jsonl", largest, bytes.len());
    match result {
        Ok(report) => {
            let lines = report.per_line.expect("per-line scores asked for");
            assert_eq!(lines.len(), report.summary.count);
            for l in &lines {
                let f = l.score.rouge_l.fmeasure;
                assert!((0.0..=1.0).contains(&f), "line {}: Rouge-L {f}", l.line);
            }
            Some(lines.len())
        }
        Err(e) => {
            assert!(e.to_string().contains("scores.jsonl"), "{e}");
            None
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn valid_files_score_every_line(pairs in pairs()) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert_eq!(check(dir.path(), &score_file(&pairs)), Some(pairs.len()));
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), &bytes);
    }

    #[test]
    fn arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), pieces.concat().as_bytes());
    }

    #[test]
    fn mutated_files(pairs in pairs(), edits in edits()) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), &apply(score_file(&pairs), &edits));
    }
}
