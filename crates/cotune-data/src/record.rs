//! QA records, their JSON-lines files, and the text the models see.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// One question with its single reference answer, tagged with the domain it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaRecord {
    /// Domain name, e.g. "geography"; the file stem of the file it came from.
    pub domain: String,
    /// The question text, without any prompt template applied.
    pub question: String,
    /// The reference answer, without the leading space used for training.
    pub answer: String,
}

/// Reads a JSON-lines file of [`QaRecord`]s, one object a line.
///
/// Blank lines are skipped (a trailing newline or an empty last line is common and harmless).
/// A line that is not a record, or whose question or answer is blank, is an error naming the
/// file and the 1-based line number: a silently skipped record would change the splits.
pub fn load_jsonl(path: &Path) -> Result<Vec<QaRecord>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|cause| DataError::Io {
        action: "read",
        path: path.to_path_buf(),
        cause,
    })?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |reason: String| DataError::MalformedRecord {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        let record: QaRecord =
            serde_json::from_str(line).map_err(|error| malformed(error.to_string()))?;
        for (field, value) in [
            ("domain", &record.domain),
            ("question", &record.question),
            ("answer", &record.answer),
        ] {
            if value.trim().is_empty() {
                return Err(malformed(format!("field `{field}` is blank")));
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// The key under which two questions count as the same: lower-cased, punctuation removed,
/// whitespace collapsed to single spaces.
///
/// Deduplication and the leakage checks use this rather than the raw text, because the sources
/// phrase the same question with different case or punctuation ("What is the atomic number of
/// Gold?" in trivia, "... of gold?" in chemistry).
pub fn normalize_question(question: &str) -> String {
    let lowered = question.to_lowercase();
    let kept: String = lowered
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Fills the prompt template: every `{question}` is replaced by the record's question.
///
/// The default template is `"Question: {question}\nAnswer:"`; see [`crate::DataConfig`].
pub fn format_prompt(template: &str, record: &QaRecord) -> String {
    template.replace(QUESTION_PLACEHOLDER, &record.question)
}

/// The answer text a model is trained to produce after the prompt: `" " + answer`.
///
/// The leading space is there because the prompt ends in "Answer:" and GPT-style byte-level
/// tokenizers attach a word's preceding space to the word's token.
pub fn answer_text(record: &QaRecord) -> String {
    format!(" {}", record.answer)
}

/// The placeholder a prompt template must contain.
pub(crate) const QUESTION_PLACEHOLDER: &str = "{question}";

#[cfg(test)]
mod tests {
    use super::*;

    fn record(question: &str) -> QaRecord {
        QaRecord {
            domain: "trivia".into(),
            question: question.into(),
            answer: "Anne".into(),
        }
    }

    #[test]
    fn normalization_ignores_case_punctuation_and_spacing() {
        assert_eq!(
            normalize_question("  What is the  ISO 3166-1 code of Côte d'Ivoire?! "),
            "what is the iso 31661 code of côte divoire"
        );
        assert_eq!(
            normalize_question("What is the atomic number of Gold?"),
            normalize_question("what is the atomic number of gold")
        );
    }

    #[test]
    fn prompt_and_answer_text() {
        let r = record("Who succeeded William and Mary?");
        assert_eq!(
            format_prompt("Question: {question}\nAnswer:", &r),
            "Question: Who succeeded William and Mary?\nAnswer:"
        );
        assert_eq!(answer_text(&r), " Anne");
    }
}
