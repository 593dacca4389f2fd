//! Scoring a JSON-lines file of predictions and references.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::summary::ScoreTotals;
use crate::{EvalError, LineError, PairScore, ScoreSummary};

/// One line of a score file. Other fields (an id, the question) are allowed and ignored.
#[derive(Debug, Deserialize)]
struct PredictionRecord {
    prediction: String,
    reference: String,
}

/// The scores of one line of a score file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineScore {
    /// 1-based line number in the file.
    pub line: usize,
    /// The line's scores.
    #[serde(flatten)]
    pub score: PairScore,
}

/// What [`score_jsonl`] reports; `cargo xtask score` prints it as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    /// The scored file, as given.
    pub file: String,
    /// Means over every line of the file.
    pub summary: ScoreSummary,
    /// Every line's scores, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_line: Option<Vec<LineScore>>,
}

/// Scores a JSON-lines file whose every line is `{"prediction": "...", "reference": "..."}`,
/// returning mean exact match (normalised and raw) and mean Rouge-L F-measure, and each
/// line's scores when `per_line` is true.
///
/// Every line must be a record: a blank line, a line that is not UTF-8, and a line that is
/// not such an object are errors naming the file and the 1-based line number. A file with
/// no records (empty, or only blank lines) is an error too, since it has no mean.
pub fn score_jsonl(path: impl AsRef<Path>, per_line: bool) -> Result<ScoreReport, EvalError> {
    let path = path.as_ref();
    let io_error = |cause| EvalError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut totals = ScoreTotals::default();
    let mut lines = per_line.then(Vec::new);
    // A blank line is only an error once the file turns out to hold records.
    let mut first_blank_line = None;
    let mut bytes = Vec::new();
    let mut line = 0;
    loop {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(io_error)? == 0 {
            break;
        }
        line += 1;
        let malformed = |cause| EvalError::MalformedLine {
            path: path.to_path_buf(),
            line,
            cause,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            first_blank_line.get_or_insert(line);
            continue;
        }
        if let Some(blank) = first_blank_line {
            return Err(blank_line(path, blank));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| malformed(e.into()))?;
        let record = parse_record(text).map_err(|e| malformed(e.into()))?;
        let score = PairScore::new(&record.prediction, &record.reference);
        totals.add(&score);
        if let Some(lines) = lines.as_mut() {
            lines.push(LineScore { line, score });
        }
    }
    let summary = totals.mean().ok_or_else(|| EvalError::EmptyFile {
        path: path.to_path_buf(),
    })?;
    if let Some(blank) = first_blank_line {
        return Err(blank_line(path, blank));
    }
    Ok(ScoreReport {
        file: path.display().to_string(),
        summary,
        per_line: lines,
    })
}

/// Parses one record. Going through a JSON map first rejects arrays, which serde would
/// otherwise accept as a struct's fields in order.
fn parse_record(text: &str) -> Result<PredictionRecord, serde_json::Error> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
    serde_json::from_value(serde_json::Value::Object(object))
}

/// The error for a blank line found before or between records.
fn blank_line(path: &Path, line: usize) -> EvalError {
    EvalError::MalformedLine {
        path: PathBuf::from(path),
        line,
        cause: LineError::Blank,
    }
}
