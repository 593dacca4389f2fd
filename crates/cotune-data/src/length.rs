//! The token-length limits of the `[data]` configuration.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::batch::encode_example;
use crate::{Benchmark, DataConfig, QaRecord, Tokenizer};

/// What [`Benchmark::drop_overlong`] did, split by split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthSummary {
    /// The prompt limit applied, in tokens.
    pub max_prompt_tokens: usize,
    /// The answer limit applied, in tokens including eos.
    pub max_answer_tokens: usize,
    /// One row per split, in [`Benchmark::parties`] order.
    pub rows: Vec<LengthRow>,
}

/// The length filter's effect on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthRow {
    /// The split, e.g. "public/train" or "geography/test".
    pub split: String,
    /// Records left in the split.
    pub kept: usize,
    /// Over-long records removed (training and validation splits only).
    pub dropped: usize,
    /// Over-long records left in place (test splits only: a test set is never cut, so the
    /// evaluation must cope with them, and reports can say how many there are).
    pub over_limit_kept: usize,
}

impl Benchmark {
    /// Drops every training and validation record whose prompt or answer (with eos) exceeds
    /// the configured token limits, and counts, without touching them, the test records that do.
    ///
    /// Dropping rather than truncating keeps every training target a complete answer; test
    /// records stay because removing the hard ones would flatter the scores.
    pub fn drop_overlong(&mut self, tokenizer: &Tokenizer, config: &DataConfig) -> LengthSummary {
        let fits = |record: &QaRecord| {
            let example = encode_example(tokenizer, &config.prompt_template, record);
            example.prompt.len() <= config.max_prompt_tokens
                && example.answer.len() <= config.max_answer_tokens
        };
        let mut rows = Vec::new();
        let mut filter = |split: String, records: &mut Vec<QaRecord>| {
            let before = records.len();
            records.retain(|record| fits(record));
            rows.push(LengthRow {
                split,
                kept: records.len(),
                dropped: before - records.len(),
                over_limit_kept: 0,
            });
        };
        filter("public/train".into(), &mut self.public_train);
        filter("public/valid".into(), &mut self.public_valid);
        filter("server/llm-valid".into(), &mut self.llm_valid);
        for device in &mut self.devices {
            filter(format!("{}/train", device.name), &mut device.train);
            filter(format!("{}/valid", device.name), &mut device.valid);
            if !device.prompts.is_empty() {
                filter(format!("{}/prompts", device.name), &mut device.prompts);
            }
        }
        for (split, records) in [
            ("server/public-prompts", &mut self.public_prompts),
            ("general/train", &mut self.general_train),
            ("general/valid", &mut self.general_valid),
        ] {
            if !records.is_empty() {
                filter(split.into(), records);
            }
        }
        let tests = std::iter::once(("server/llm-test".to_string(), &self.llm_test)).chain(
            self.devices
                .iter()
                .map(|d| (format!("{}/test", d.name), &d.test)),
        );
        for (split, test) in tests {
            rows.push(LengthRow {
                split,
                kept: test.len(),
                dropped: 0,
                over_limit_kept: test.iter().filter(|record| !fits(record)).count(),
            });
        }
        LengthSummary {
            max_prompt_tokens: config.max_prompt_tokens,
            max_answer_tokens: config.max_answer_tokens,
            rows,
        }
    }
}

impl LengthSummary {
    /// Records dropped over all splits.
    pub fn total_dropped(&self) -> usize {
        self.rows.iter().map(|row| row.dropped).sum()
    }

    /// The summary as a Markdown table, for run reports.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Length limits: prompt <= {} tokens, answer <= {} tokens (with eos).\n\n\
             | split | kept | dropped | over limit, kept |\n|---|---:|---:|---:|\n",
            self.max_prompt_tokens, self.max_answer_tokens
        );
        for row in &self.rows {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.split, row.kept, row.dropped, row.over_limit_kept
            );
        }
        out
    }
}
