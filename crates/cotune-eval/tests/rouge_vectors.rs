//! Checks every vector of `fixtures/rouge_vectors.jsonl`, written by the Python originals
//! (`scripts/make_rouge_vectors.py`), against this crate.

use cotune_eval::{exact_match, exact_match_raw, normalize_answer, rouge_l, RougeScore};
use serde::Deserialize;

const FIXTURE: &str = include_str!("fixtures/rouge_vectors.jsonl");
/// The agreed tolerance; in practice every value is bit-identical to rouge-score's.
const TOLERANCE: f64 = 1e-6;

#[derive(Debug, Deserialize)]
struct Vector {
    id: usize,
    group: String,
    prediction: String,
    reference: String,
    normalized_prediction: String,
    normalized_reference: String,
    exact_match: u8,
    exact_match_raw: u8,
    rouge_l: RougeScore,
}

fn vectors() -> Vec<Vector> {
    FIXTURE
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("rouge_vectors.jsonl:{}: {e}", i + 1))
        })
        .collect()
}

/// Runs `check` on every vector and reports all mismatches at once.
fn check_all(what: &str, check: impl Fn(&Vector) -> Option<String>) {
    let failures: Vec<String> = vectors()
        .iter()
        .filter_map(|v| {
            check(v).map(|why| {
                format!(
                    "vector {} ({}) prediction={:?} reference={:?}: {why}",
                    v.id, v.group, v.prediction, v.reference
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} {what} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_has_enough_vectors_of_every_group() {
    let vectors = vectors();
    assert!(vectors.len() >= 300, "only {} vectors", vectors.len());
    for group in [
        "empty",
        "punctuation",
        "unicode",
        "whitespace",
        "numbers",
        "repeated",
        "articles",
        "case",
        "long",
        "qa",
        "shuffle",
        "fuzz",
    ] {
        assert!(
            vectors.iter().any(|v| v.group == group),
            "no vectors in group {group}"
        );
    }
}

#[test]
fn rouge_l_matches_rouge_score() {
    check_all("Rouge-L", |v| {
        let got = rouge_l(&v.prediction, &v.reference);
        let want = v.rouge_l;
        let close = |a: f64, b: f64| (a - b).abs() <= TOLERANCE;
        let all_close = close(got.precision, want.precision)
            && close(got.recall, want.recall)
            && close(got.fmeasure, want.fmeasure);
        (!all_close).then(|| format!("got {got:?}, rouge-score says {want:?}"))
    });
}

#[test]
fn normalize_answer_matches_squad_script() {
    check_all("normalize_answer", |v| {
        let got = (
            normalize_answer(&v.prediction),
            normalize_answer(&v.reference),
        );
        let want = (
            v.normalized_prediction.clone(),
            v.normalized_reference.clone(),
        );
        (got != want).then(|| format!("got {got:?}, SQuAD script says {want:?}"))
    });
}

#[test]
fn exact_match_matches_squad_script() {
    check_all("exact match", |v| {
        let got = (
            u8::from(exact_match(&v.prediction, &v.reference)),
            u8::from(exact_match_raw(&v.prediction, &v.reference)),
        );
        let want = (v.exact_match, v.exact_match_raw);
        (got != want).then(|| format!("got (em, em_raw) = {got:?}, Python says {want:?}"))
    });
}
