//! The evaluation loop: generate answers for a split through any host [`Model`], score them
//! per domain and macro-averaged, and write the predictions as JSON lines.
//!
//! Generation is greedy (the plugin's `generate`) up to `max_new_tokens`, stopping at the
//! tokenizer's end-of-sequence id. Prompts are generated in length-sorted batches so little
//! compute goes to padding; the predictions come back in the order of the records.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cotune_data::{format_prompt, QaRecord, Tokenizer};
use cotune_host::{GenerateOptions, HostError, Model, Structure};
use serde::{Deserialize, Serialize};

use crate::{macro_average, DomainReport, EvalError, PairScore};

/// What can go wrong in the evaluation loop.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The model failed to generate.
    #[error("generating answers with {model}: {cause}")]
    Generate {
        /// The model's label (`plugin/architecture`).
        model: String,
        /// The host's error.
        cause: HostError,
    },
    /// The scores could not be averaged (no records, for instance).
    #[error("averaging the scores of {model}: {cause}")]
    Average {
        /// The model's label.
        model: String,
        /// What was wrong.
        cause: EvalError,
    },
    /// The options are unusable.
    #[error("evaluation option {key} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        key: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The predictions file could not be written.
    #[error("cannot write predictions file {}: {cause}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        cause: std::io::Error,
    },
}

/// How answers are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalOptions {
    /// The most tokens generated per answer.
    pub max_new_tokens: u32,
    /// Prompts per `generate` call.
    pub batch_size: usize,
    /// Keep only the first line of each answer: a model prompted with examples in its template
    /// (a pre-trained one that never learned to stop) goes on with the next question.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_line: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 24,
            batch_size: 32,
            first_line: false,
        }
    }
}

/// One generated answer with its scores: a line of the predictions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The record's domain.
    pub domain: String,
    /// The question, without the prompt template.
    pub question: String,
    /// The reference answer.
    pub reference: String,
    /// The model's answer, decoded and trimmed.
    pub prediction: String,
    /// Normalised exact match (SQuAD).
    pub em: bool,
    /// Rouge-L F-measure.
    pub rouge_l: f64,
}

/// The outcome of one evaluation: every prediction, and the per-domain and macro-averaged
/// scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// One per record, in the records' order.
    pub predictions: Vec<Prediction>,
    /// Means per domain (in order of first appearance) and their macro-average.
    pub report: DomainReport,
}

impl Evaluation {
    /// Writes the predictions as JSON lines to `path` (creating its folder).
    pub fn write_predictions(&self, path: &Path) -> Result<(), EvaluateError> {
        write_predictions(path, &self.predictions)
    }
}

/// Writes `predictions` as JSON lines (`domain`, `question`, `reference`, `prediction`, `em`,
/// `rouge_l`) to `path`, creating its folder.
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<(), EvaluateError> {
    let write_err = |cause| EvaluateError::Write {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(write_err)?);
    for p in predictions {
        let line = serde_json::to_string(p).expect("a prediction always serialises");
        writeln!(out, "{line}").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// The longest prompt `model` can take while leaving room for `max_new_tokens`; longer prompts
/// keep their last tokens, where the question's end and the "Answer:" cue are.
fn prompt_budget(model: &Model, max_new_tokens: u32) -> usize {
    let spec = model.spec();
    let ctx = spec.context_len as usize;
    match spec.structure {
        Structure::DecoderOnly => ctx.saturating_sub(max_new_tokens as usize).max(1),
        Structure::EncoderDecoder => ctx,
    }
}

/// Greedy answers of `model` to `prompts` (token ids), in order, as raw token ids.
pub fn generate_answers(
    model: &Model,
    prompts: &[Vec<u32>],
    eos_id: u32,
    options: &EvalOptions,
) -> Result<Vec<Vec<u32>>, EvaluateError> {
    if options.batch_size == 0 {
        return Err(EvaluateError::InvalidOption {
            key: "batch_size",
            value: "0".into(),
            reason: "expected at least 1",
        });
    }
    if options.max_new_tokens == 0 {
        return Err(EvaluateError::InvalidOption {
            key: "max_new_tokens",
            value: "0".into(),
            reason: "expected at least 1",
        });
    }
    let budget = prompt_budget(model, options.max_new_tokens);
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut answers = vec![Vec::new(); prompts.len()];
    let generate = GenerateOptions {
        max_new_tokens: options.max_new_tokens,
        eos_id,
    };
    for chunk in order.chunks(options.batch_size) {
        let batch: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| {
                let p = &prompts[i];
                p[p.len().saturating_sub(budget)..].to_vec()
            })
            .collect();
        let out = model
            .generate(&batch, &generate)
            .map_err(|cause| EvaluateError::Generate {
                model: model.label().to_string(),
                cause,
            })?;
        for (&i, ids) in chunk.iter().zip(out) {
            answers[i] = ids;
        }
    }
    Ok(answers)
}

/// Generates an answer for every record with `model`, decodes it with `decode`, and scores it
/// against the record's answer; `encode` turns a formatted prompt into ids.
pub fn evaluate_with(
    model: &Model,
    records: &[QaRecord],
    prompt_template: &str,
    encode: impl Fn(&str) -> Vec<u32>,
    decode: impl Fn(&[u32]) -> String,
    eos_id: u32,
    options: &EvalOptions,
) -> Result<Evaluation, EvaluateError> {
    let prompts: Vec<Vec<u32>> = records
        .iter()
        .map(|r| encode(&format_prompt(prompt_template, r)))
        .collect();
    let answers = generate_answers(model, &prompts, eos_id, options)?;
    let predictions: Vec<Prediction> = records
        .iter()
        .zip(&answers)
        .map(|(record, ids)| {
            let prediction = prediction_of(&decode(ids), options.first_line);
            let score = PairScore::new(&prediction, &record.answer);
            Prediction {
                domain: record.domain.clone(),
                question: record.question.clone(),
                reference: record.answer.clone(),
                prediction,
                em: score.exact_match,
                rouge_l: score.rouge_l.fmeasure,
            }
        })
        .collect();
    let report = report_of(&predictions).map_err(|cause| EvaluateError::Average {
        model: model.label().to_string(),
        cause,
    })?;
    Ok(Evaluation {
        predictions,
        report,
    })
}

/// The scored prediction of a decoded answer: trimmed, and with `first_line` only its first
/// non-empty line.
pub fn prediction_of(decoded: &str, first_line: bool) -> String {
    let text = match first_line {
        true => decoded.trim_start().lines().next().unwrap_or(""),
        false => decoded,
    };
    text.trim().to_string()
}

/// [`evaluate_with`] using the shared tokenizer for prompts, answers and the eos id.
pub fn evaluate(
    model: &Model,
    records: &[QaRecord],
    tokenizer: &Tokenizer,
    prompt_template: &str,
    options: &EvalOptions,
) -> Result<Evaluation, EvaluateError> {
    evaluate_with(
        model,
        records,
        prompt_template,
        |text| tokenizer.encode(text),
        |ids| tokenizer.decode(ids),
        tokenizer.eos_id(),
        options,
    )
}

/// Per-domain means (domains in order of first appearance) and their macro-average.
pub fn report_of(predictions: &[Prediction]) -> Result<DomainReport, EvalError> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_domain: BTreeMap<&str, Vec<PairScore>> = BTreeMap::new();
    for p in predictions {
        let scores = by_domain.entry(&p.domain).or_insert_with(|| {
            order.push(&p.domain);
            Vec::new()
        });
        scores.push(PairScore::new(&p.prediction, &p.reference));
    }
    let domains: Vec<(&str, Vec<PairScore>)> = order
        .into_iter()
        .map(|d| (d, by_domain.remove(d).unwrap_or_default()))
        .collect();
    macro_average(&domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_answer_stops_at_the_next_question() {
        let decoded = " Indonesia\nQuestion: In which country is the city of Lyon?";
        assert_eq!(prediction_of(decoded, true), "Indonesia");
        assert_eq!(prediction_of(decoded, false), decoded.trim());
        assert_eq!(prediction_of("\n\n France \nQ", true), "France");
        assert_eq!(prediction_of("", true), "");
    }
}
