//! Scoring one model on a set of records with its own tokenizer, predictions written to a file:
//! what the server does for the LLM and a device for its models.

use std::path::Path;

use cotune_data::QaRecord;
use cotune_eval::{evaluate, Evaluation};
use cotune_host::Model;

use crate::tokens::Codec;

/// Scores `model` (tokenizer `codec`; `shared` is the run's) on `records` and writes its
/// predictions to `file`.
pub(crate) fn eval_model(
    config: &crate::config::ExperimentConfig,
    shared: &Codec,
    model: &Model,
    codec: &Codec,
    records: &[QaRecord],
    file: &Path,
) -> anyhow::Result<Evaluation> {
    let template = &config.data.prompt_template;
    let evaluation = if codec.same(shared) {
        evaluate(model, records, &codec.tokenizer, template, &config.eval)?
    } else {
        // A model's own tokenizer may spell a prompt longer than the budget the records
        // were filtered by: it keeps the prompt's end.
        let t = &codec.tokenizer;
        cotune_eval::evaluate_with(
            model,
            records,
            template,
            |text| {
                let ids = t.encode(text);
                ids[ids.len().saturating_sub(codec.max_prompt)..].to_vec()
            },
            |ids| t.decode(ids),
            t.eos_id(),
            &config.eval,
        )?
    };
    evaluation.write_predictions(file)?;
    Ok(evaluation)
}
