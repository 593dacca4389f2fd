//! `score_jsonl` on good and bad files.

use std::path::PathBuf;

use cotune_eval::{score_jsonl, EvalError, LineError, ScoreReport};

/// Writes `contents` to a file of its own under Cargo's per-test temporary directory.
fn score_file(name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("score_jsonl");
    std::fs::create_dir_all(&dir).expect("create test directory");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// Asserts the error is a malformed-line error at `line` whose message names the file.
fn assert_malformed_at(error: EvalError, path: &PathBuf, line: usize) -> LineError {
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("{}:{line}: ", path.display())),
        "message should name {}:{line}, got {message:?}",
        path.display()
    );
    match error {
        EvalError::MalformedLine {
            path: got_path,
            line: got_line,
            cause,
        } => {
            assert_eq!(&got_path, path);
            assert_eq!(got_line, line);
            cause
        }
        other => panic!("expected a malformed line, got {other:?}"),
    }
}

const GOOD: &str = concat!(
    r#"{"prediction": "The Eiffel Tower", "reference": "Eiffel Tower"}"#,
    "\n",
    r#"{"prediction": "Paris", "reference": "Paris", "id": 7}"#,
    "\n",
    r#"{"reference": "sodium chloride", "prediction": "NaCl"}"#,
    "\n",
    r#"{"prediction": "quick brown dog", "reference": "the quick brown fox"}"#,
    "\n",
);

#[test]
fn scores_a_good_file() {
    let path = score_file("good.jsonl", GOOD);
    let report = score_jsonl(&path, false).expect("good file scores");
    assert_eq!(report.file, path.display().to_string());
    assert_eq!(report.summary.count, 4);
    assert_eq!(report.summary.exact_match, 0.5);
    assert_eq!(report.summary.exact_match_raw, 0.25);
    // Rouge-L F per line: 0.8, 1, 0, and P=2/3, R=2/4 for the last.
    let last = 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5);
    let want = (0.8 + 1.0 + 0.0 + last) / 4.0;
    assert!((report.summary.rouge_l_f1 - want).abs() < 1e-12);
    assert_eq!(report.per_line, None);
    let json = serde_json::to_value(&report).expect("report serialises");
    assert!(json.get("per_line").is_none(), "{json}");
}

#[test]
fn per_line_scores_carry_line_numbers_and_round_trip() {
    let path = score_file("per_line.jsonl", GOOD);
    let report = score_jsonl(&path, true).expect("good file scores");
    let lines = report.per_line.as_ref().expect("per-line scores asked for");
    assert_eq!(
        lines.iter().map(|l| l.line).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(lines[0].score.exact_match && !lines[0].score.exact_match_raw);
    assert!(lines[1].score.exact_match_raw);
    assert_eq!(lines[2].score.rouge_l.fmeasure, 0.0);

    let json = serde_json::to_string(&report).expect("report serialises");
    assert!(json.contains(r#""line":1,"exact_match":true"#), "{json}");
    let back: ScoreReport = serde_json::from_str(&json).expect("report deserialises");
    assert_eq!(back, report);
}

#[test]
fn accepts_crlf_and_a_missing_final_newline() {
    let path = score_file(
        "crlf.jsonl",
        "{\"prediction\": \"a\", \"reference\": \"a\"}\r\n{\"prediction\": \"b\", \"reference\": \"c\"}",
    );
    let report = score_jsonl(&path, false).expect("CRLF file scores");
    assert_eq!(report.summary.count, 2);
    assert_eq!(report.summary.exact_match_raw, 0.5);
}

#[test]
fn invalid_json_names_file_and_line() {
    let path = score_file(
        "bad_json.jsonl",
        format!("{GOOD}{{\"prediction\": \"x\", \"reference\": \n"),
    );
    let source = assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 5);
    assert!(matches!(source, LineError::Json(_)), "{source:?}");
}

#[test]
fn missing_field_names_file_line_and_field() {
    let path = score_file(
        "missing_field.jsonl",
        "{\"prediction\": \"x\", \"reference\": \"y\"}\n{\"prediction\": \"x\"}\n",
    );
    let error = score_jsonl(&path, false).unwrap_err();
    assert!(error.to_string().contains("reference"), "{error}");
    let source = assert_malformed_at(error, &path, 2);
    assert!(matches!(source, LineError::Json(_)), "{source:?}");
}

#[test]
fn non_string_field_is_malformed() {
    let path = score_file(
        "number_field.jsonl",
        "{\"prediction\": 42, \"reference\": \"42\"}\n",
    );
    assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 1);
}

#[test]
fn json_that_is_not_an_object_is_malformed() {
    let path = score_file("array.jsonl", "[\"x\", \"y\"]\n");
    assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 1);
}

#[test]
fn blank_line_between_records_is_malformed() {
    let path = score_file(
        "blank_middle.jsonl",
        "{\"prediction\": \"x\", \"reference\": \"y\"}\n  \n{\"prediction\": \"x\", \"reference\": \"y\"}\n",
    );
    let source = assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 2);
    assert!(matches!(source, LineError::Blank), "{source:?}");
}

#[test]
fn trailing_blank_line_is_malformed() {
    let path = score_file("blank_end.jsonl", format!("{GOOD}\n"));
    let source = assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 5);
    assert!(matches!(source, LineError::Blank), "{source:?}");
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"prediction\": \"caf\xe9\", \"reference\": \"cafe\"}\n");
    let path = score_file("latin1.jsonl", bytes);
    let source = assert_malformed_at(score_jsonl(&path, false).unwrap_err(), &path, 5);
    assert!(matches!(source, LineError::InvalidUtf8(_)), "{source:?}");
}

#[test]
fn empty_file_is_an_error_naming_it() {
    for (name, contents) in [("empty.jsonl", ""), ("only_blank.jsonl", "\n \n\r\n")] {
        let path = score_file(name, contents);
        let error = score_jsonl(&path, false).unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        assert!(
            matches!(&error, EvalError::EmptyFile { path: p } if p == &path),
            "{error:?}"
        );
    }
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no_such_scores.jsonl");
    let error = score_jsonl(&path, false).unwrap_err();
    assert!(
        matches!(&error, EvalError::Io { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no_such_scores.jsonl"),
        "{error}"
    );
}
