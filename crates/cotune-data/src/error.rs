//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, splitting or tokenizing data.
///
/// Every message names the file, key or value at fault, so a user can fix the input without
/// reading the source.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written (a missing file lands here, with its path).
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// What was being done: "read", "write", "create directory for".
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// One line of a JSON-lines file is not a valid QA record.
    #[error("{path}:{line}: malformed QA record: {reason}")]
    MalformedRecord {
        /// The JSON-lines file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A `[data]` configuration value is out of range or inconsistent with the data.
    #[error("invalid [data] {key} = {value}: {reason}")]
    InvalidConfig {
        /// The configuration key, as written in TOML.
        key: String,
        /// The offending value, as written in TOML.
        value: String,
        /// What was expected instead.
        reason: String,
    },
    /// The Hugging Face tokenizer library failed.
    #[error("tokenizer error while {context}: {cause}")]
    Tokenizer {
        /// What was being done, naming the file when there is one.
        context: String,
        /// The library's error.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A loaded `tokenizer.json` lacks one of the special tokens the protocol needs.
    #[error("{path}: tokenizer has no end-of-sequence token (looked for {token})")]
    MissingSpecialToken {
        /// The `tokenizer.json` that was loaded.
        path: PathBuf,
        /// The token text that was looked up.
        token: String,
    },
    /// A split broke one of the leakage invariants; this is a bug in the splitter or its input.
    #[error(
        "split invariant violated: question {question:?} is held by both {first} and {second}"
    )]
    Leak {
        /// The normalised question.
        question: String,
        /// One party holding it, e.g. "device geography/test".
        first: String,
        /// The other party holding it.
        second: String,
    },
}

impl DataError {
    /// Shorthand for [`DataError::InvalidConfig`], used by every config check.
    pub(crate) fn config(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        DataError::InvalidConfig {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
