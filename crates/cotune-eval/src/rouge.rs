//! Rouge-L as computed by Google's `rouge-score` package (`rouge_scorer.RougeScorer(['rougeL'])`,
//! default tokenizer, no stemmer).
//!
//! Its tokenizer lower-cases with Python's `str.lower()`, replaces every run of characters
//! outside `[a-z0-9]` by a space and keeps the non-empty pieces. So only ASCII letters and
//! digits ever make tokens: `"café"` is the single token `"caf"`, `"naïve"` is `"na"`,
//! `"ve"`, and CJK, Cyrillic or emoji text has no tokens at all. Two characters lower-case
//! into ASCII and do count: `İ` (to `i` plus a combining dot) and the Kelvin sign `K`.

use serde::{Deserialize, Serialize};

/// Rouge-L precision, recall and F-measure of one prediction against one reference.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RougeScore {
    /// Longest-common-subsequence length over the prediction's token count.
    pub precision: f64,
    /// Longest-common-subsequence length over the reference's token count.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub fmeasure: f64,
}

/// Rouge-L of `prediction` against `reference`, as `RougeScorer(['rougeL']).score(reference,
/// prediction)['rougeL']` computes it.
///
/// When either side has no tokens (empty, punctuation-only, or entirely non-ASCII text),
/// every field is 0, even when both sides are empty.
pub fn rouge_l(prediction: &str, reference: &str) -> RougeScore {
    let prediction = rouge_tokens(prediction);
    let reference = rouge_tokens(reference);
    if prediction.is_empty() || reference.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_length(&reference, &prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / reference.len() as f64;
    // Same expression and operation order as `rouge_score.scoring.fmeasure`, so the
    // result is bit-identical.
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

/// `rouge_score.tokenize.tokenize(text, stemmer=None)`.
fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Length of the longest common subsequence of two token lists, in one rolling row.
fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for token_a in a {
        let mut diagonal = 0;
        for (j, token_b) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if token_a == token_b {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_keeps_only_ascii_alphanumeric_runs() {
        assert_eq!(rouge_tokens("Café, naïve!"), ["caf", "na", "ve"]);
        assert_eq!(rouge_tokens("東京 🙂 Москва"), Vec::<String>::new());
        assert_eq!(
            rouge_tokens("\u{130}stanbul 273\u{212A}"),
            ["i", "stanbul", "273k"]
        );
        assert_eq!(rouge_tokens("3.14"), ["3", "14"]);
    }

    #[test]
    fn docstring_example_of_rouge_score() {
        // RougeScorer's docstring example. The LCS is "the quick brown jumps the": 5 of
        // the prediction's 8 tokens and of the reference's 9.
        let score = rouge_l(
            "The quick brown dog jumps on the log.",
            "The quick brown fox jumps over the lazy dog",
        );
        assert_eq!(score.precision, 5.0 / 8.0);
        assert_eq!(score.recall, 5.0 / 9.0);
        let f = 2.0 * (5.0 / 8.0) * (5.0 / 9.0) / (5.0 / 8.0 + 5.0 / 9.0);
        assert_eq!(score.fmeasure, f);
    }

    #[test]
    fn empty_sides_score_zero() {
        assert_eq!(rouge_l("", ""), RougeScore::default());
        assert_eq!(rouge_l("paris", "..."), RougeScore::default());
        assert_eq!(rouge_l("東京", "東京"), RougeScore::default());
    }

    #[test]
    fn lcs_counts_repeated_tokens_once_per_match() {
        let tokens = |s: &str| rouge_tokens(s);
        assert_eq!(lcs_length(&tokens("a b a b"), &tokens("b a b a")), 3);
        assert_eq!(lcs_length(&tokens("paris paris"), &tokens("paris")), 1);
    }
}
