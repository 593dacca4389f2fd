//! What setup and the methods share to build models: a recipe from a plugin and a config, the
//! check that a model fits the tokenizer and the token budgets, and records encoded as examples.

use anyhow::bail;
use cotune_data::{encode_example, QaRecord, Tokenizer};
use cotune_distill::ModelRecipe;
use cotune_host::{Example, Model, Plugin, Structure};

use crate::config::ExperimentConfig;

/// Records as examples with `tokenizer` and the prompt `template`.
pub(crate) fn encode_all(
    records: &[QaRecord],
    tokenizer: &Tokenizer,
    template: &str,
) -> Vec<Example> {
    records
        .iter()
        .map(|r| encode_example(tokenizer, template, r))
        .collect()
}

/// Checks that `model` (called `who` in errors) covers the tokenizer and the token budgets.
pub(crate) fn check_fits(
    model: &Model,
    who: &str,
    tokenizer: &Tokenizer,
    config: &ExperimentConfig,
) -> anyhow::Result<()> {
    let spec = model.spec();
    if (spec.vocab_size as usize) < tokenizer.vocab_size() {
        bail!(
            "{who} ({}) has vocab_size {} but the tokenizer has {} tokens; raise its vocab_size",
            model.label(),
            spec.vocab_size,
            tokenizer.vocab_size()
        );
    }
    let (p, a) = (config.data.max_prompt_tokens, config.data.max_answer_tokens);
    let need = match spec.structure {
        Structure::DecoderOnly => p + a,
        Structure::EncoderDecoder => p.max(a),
    };
    if (spec.context_len as usize) < need {
        bail!(
            "{who} ({}) has a context of {} tokens but data.max_prompt_tokens + \
             data.max_answer_tokens need {need}",
            model.label(),
            spec.context_len
        );
    }
    Ok(())
}

/// A fresh model of `plugin`'s `arch` with config `text` and `seed`.
pub(crate) fn recipe<'a>(
    plugin: &'a Plugin,
    arch: &'a str,
    text: &'a str,
    seed: u64,
) -> ModelRecipe<'a> {
    ModelRecipe {
        plugin,
        architecture: arch,
        config: text,
        seed,
        checkpoint: None,
    }
}

/// The seed of the cached pre-trainings.
pub(crate) fn pretrain_seed(config: &ExperimentConfig) -> u64 {
    config.pretrain_seed.unwrap_or(config.seed)
}
