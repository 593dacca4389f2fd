//! Answer metrics for cotune: exact match and Rouge-L, as Co-PLMs reports them.
//!
//! Both metrics follow a Python reference to the bit, so numbers from this crate can be
//! compared with published ones:
//!
//! * [`normalize_answer`] and [`exact_match`] follow `normalize_answer` and
//!   `exact_match_score` of the SQuAD v1.1 evaluation script (`evaluate-v1.1.py`);
//! * [`rouge_l`] follows `rouge_scorer.RougeScorer(['rougeL'])` of Google's `rouge-score`
//!   package with its defaults (no stemmer).
//!
//! `tests/fixtures/rouge_vectors.jsonl` holds several hundred pairs scored by the Python
//! originals (see `scripts/make_rouge_vectors.py`); the tests check every one of them.
//!
//! [`score_jsonl`] scores a file of `{"prediction": ..., "reference": ...}` lines, and
//! [`macro_average`] aggregates per-domain scores the way the evaluation loop reports them.

#![warn(missing_docs)]

mod error;
mod evaluate;
mod jsonl;
mod normalize;
mod rouge;
mod summary;

pub use error::{EvalError, LineError};
pub use evaluate::{
    evaluate, evaluate_with, generate_answers, report_of, write_predictions, EvalOptions,
    EvaluateError, Evaluation, Prediction,
};
pub use jsonl::{score_jsonl, LineScore, ScoreReport};
pub use normalize::{exact_match, exact_match_raw, normalize_answer};
pub use rouge::{rouge_l, RougeScore};
pub use summary::{macro_average, DomainReport, DomainSummary, PairScore, ScoreSummary};
