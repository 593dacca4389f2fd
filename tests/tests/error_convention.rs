//! The workspace's error convention (docs/architecture.md, "Errors"): an error type writes its
//! cause into its own message and does not also return it from `source()`, so a chain printed
//! with `{:#}` says each thing once. This test reads every error type the workspace derives
//! with `thiserror` and refuses the attributes and fields that would make a cause a source.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The offending lines of the `thiserror` types in `text`: `(line number, line)`.
fn violations(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].contains("#[derive(") && lines[i].contains("thiserror::Error") {
            // The item runs to the first line that closes it at the derive's indentation.
            let indent = lines[i].len() - lines[i].trim_start().len();
            let mut j = i + 1;
            while j < lines.len() {
                let line = lines[j];
                let trimmed = line.trim_start();
                if trimmed.starts_with("#[source]")
                    || trimmed.contains("#[from]")
                    || trimmed.starts_with("source:")
                    || trimmed.starts_with("pub source:")
                {
                    found.push((j + 1, line.to_string()));
                }
                let closes = line.len() - trimmed.len() == indent
                    && (trimmed.starts_with('}') || trimmed.ends_with(");"));
                if closes {
                    break;
                }
                j += 1;
            }
            i = j;
        }
        if lines[i].trim_start().starts_with("fn source(&self)") {
            found.push((i + 1, lines[i].to_string()));
        }
        i += 1;
    }
    found
}

#[test]
fn no_error_type_returns_a_cause_it_already_prints() {
    let root = cotune_tests::workspace_root();
    let mut files = Vec::new();
    for dir in [
        "crates",
        "plugins",
        "xtask",
        "tests/src",
        "tests/tests",
        "tests/fixtures",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let mut bad = Vec::new();
    let mut types = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        types += text.matches("thiserror::Error").count();
        if file.ends_with("error_convention.rs") {
            continue;
        }
        for (line, text) in violations(&text) {
            bad.push(format!("{}:{line}: {}", file.display(), text.trim()));
        }
    }
    assert!(types >= 8, "found only {types} thiserror types");
    assert!(
        bad.is_empty(),
        "error types that would print their cause twice (write the cause into the message and \
         name the field `cause`, see docs/architecture.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scan_finds_each_kind_of_source() {
    let sample = r#"
#[derive(Debug, thiserror::Error)]
pub enum E {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("x")]
    X {
        #[source]
        inner: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("fine: {cause}")]
pub struct Fine {
    cause: std::io::Error,
}
"#;
    let found: Vec<usize> = violations(sample).iter().map(|(l, _)| *l).collect();
    assert_eq!(found, vec![7, 10, 13], "{:?}", violations(sample));
}
