//! Data for cotune: multi-domain QA records, their split between the server's public corpus and
//! the edge devices' private sets, the shared byte-level BPE tokenizer, and token-id examples.
//!
//! The usual path is [`prepare`]: read the `[data]` configuration's files, split them
//! ([`Benchmark::build`]), train (or load) the [`Tokenizer`] on the training texts only, and drop
//! over-long training and validation records ([`Benchmark::drop_overlong`]). Everything random
//! is drawn from the configuration's seed with a generator that gives the same splits on every
//! platform ([`SeededRng`]).

#![warn(missing_docs)]

mod batch;
mod config;
mod error;
mod field;
mod gguf_tokenizer;
mod length;
mod record;
mod rng;
mod roles;
mod split;
mod tokenizer;

pub use batch::{encode_example, length_bucketed_batches, Example};
pub use config::{DataConfig, Partition};
pub use error::DataError;
pub use gguf_tokenizer::{
    tokenizer_json_from_gguf, GGUF_PRE_TOKENIZERS, GPT2_PATTERN, LLAMA3_PATTERN,
};
pub use length::{LengthRow, LengthSummary};
pub use record::{answer_text, format_prompt, load_jsonl, normalize_question, QaRecord};
pub use rng::SeededRng;
pub use roles::{instance_key, DomainRoles, FieldRoles};
pub use split::{
    device_names, Benchmark, DeviceData, DeviceSummary, DomainShare, DomainSummary, PublicSummary,
    SplitSummary,
};
pub use tokenizer::{Tokenizer, BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS};

use std::path::Path;

/// The outcome of [`prepare`]: splits, their report, and the tokenizer.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The splits, over-long training and validation records already dropped.
    pub benchmark: Benchmark,
    /// Split sizes before the length filter.
    pub summary: SplitSummary,
    /// What the length filter dropped (and which test records exceed the limits).
    pub lengths: LengthSummary,
    /// The tokenizer, trained on the training texts or loaded from `config.tokenizer`.
    pub tokenizer: Tokenizer,
}

/// Builds the benchmark of `config` (relative paths from `root`), trains the tokenizer on its
/// training texts (or loads `config.tokenizer`, relative to `root`), and applies the length
/// limits.
pub fn prepare(config: &DataConfig, root: &Path) -> Result<Prepared, DataError> {
    let (mut benchmark, summary) = Benchmark::build(config, root)?;
    let tokenizer = match &config.tokenizer {
        Some(path) => Tokenizer::load(&root.join(path))?,
        None => Tokenizer::train(
            benchmark.training_texts(&config.prompt_template),
            config.vocab_size,
        )?,
    };
    let lengths = benchmark.drop_overlong(&tokenizer, config);
    Ok(Prepared {
        benchmark,
        summary,
        lengths,
        tokenizer,
    })
}
