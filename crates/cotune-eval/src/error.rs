//! Typed errors of the evaluation crate.

use std::path::PathBuf;

/// Everything that can go wrong while scoring answers.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The score file could not be opened or read.
    #[error("cannot read score file {}: {cause}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system reported.
        cause: std::io::Error,
    },
    /// One line of a score file is not a `{"prediction": ..., "reference": ...}` record.
    #[error("{}:{line}: {cause}", path.display())]
    MalformedLine {
        /// The file holding the line.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        cause: LineError,
    },
    /// A score file holds no records, so there is no mean to report.
    #[error("score file {} has no prediction/reference records", path.display())]
    EmptyFile {
        /// The empty file.
        path: PathBuf,
    },
    /// [`macro_average`](crate::macro_average) was given no domains.
    #[error("cannot macro-average over zero domains")]
    NoDomains,
    /// A domain passed to [`macro_average`](crate::macro_average) has no scores.
    #[error("domain {domain:?} has no scores to average")]
    EmptyDomain {
        /// The domain's name.
        domain: String,
    },
    /// The same domain was passed to [`macro_average`](crate::macro_average) twice.
    #[error("domain {domain:?} is listed more than once")]
    DuplicateDomain {
        /// The repeated domain name.
        domain: String,
    },
}

/// Why one line of a score file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is empty or holds only whitespace.
    #[error("blank line (every line must be a JSON object)")]
    Blank,
    /// The line's bytes are not UTF-8.
    #[error("not valid UTF-8: {0}")]
    InvalidUtf8(std::str::Utf8Error),
    /// The line is not a JSON object with string fields `prediction` and `reference`.
    #[error("expected {{\"prediction\": string, \"reference\": string}}: {0}")]
    Json(serde_json::Error),
}

// The causes are written into the messages above, so they are not also returned as `source()`
// (the workspace's error convention, docs/architecture.md): these conversions replace `#[from]`.
impl From<std::str::Utf8Error> for LineError {
    fn from(cause: std::str::Utf8Error) -> Self {
        LineError::InvalidUtf8(cause)
    }
}

impl From<serde_json::Error> for LineError {
    fn from(cause: serde_json::Error) -> Self {
        LineError::Json(cause)
    }
}
