//! A test kit for plugin crates: the helpers and behavioural checks a plugin's own tests share,
//! run in process through the SDK's [`Trainer`] (no library loading, no host).
//!
//! Use it from `#[cfg(test)]` code and from `tests/`:
//!
//! ```ignore
//! use cotune_sdk::testing::{self, example};
//!
//! #[test]
//! fn cached_decoding_matches_full_decoding() {
//!     let trainer = testing::trainer::<MyModel>(MyModel::EXAMPLE_CONFIG, 7);
//!     let model = trainer.model().valid();
//!     let tokens = testing::tokens(&[&[5, 11, 12, 13], &[9, 21, 22, 23]]);
//!     testing::assert_cached_decoding_matches(&model, tokens, None, &[2, 1, 1], 1e-5, |c| c.len());
//! }
//!
//! #[test]
//! fn loss_falls_when_overfitting_one_batch() {
//!     let mut trainer = testing::trainer::<MyModel>(MyModel::EXAMPLE_CONFIG, 7);
//!     let batch = [example(&[5, 6, 7], &[20, 21, 1]), example(&[9, 10], &[30, 1])];
//!     testing::assert_loss_falls(&mut trainer, &batch, 20, 0.5);
//! }
//! ```
//!
//! The checks are the in-process counterparts of the conformance suite's (which runs on a built
//! library): a plugin's tests can run them on configurations other than the example one and
//! with tighter tolerances. Each panics, as an assertion does, with a message that names the
//! architecture, what was compared and the values.
//!
//! Models are built on the CPU backend (`flex`), the one the conformance suite uses, so the kit
//! is there when the SDK has that feature (the default). It is not behind a feature of its own:
//! a feature that only a plugin's dev-dependencies switched on would make cargo compile the SDK
//! twice, once for `cargo build` and once for `cargo test`, and generic code a plugin library
//! does not call costs it nothing.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::abi::{AnswerExample, ErrorKind, GenerateOptions, Logits, Structure, TrainOptions};
use crate::{LanguageModel, Memory, Trainer};

/// The learning rate of [`overfit`]: high enough that a tiny model memorises a small batch in
/// tens of steps.
pub const OVERFIT_LEARNING_RATE: f32 = 1e-2;

/// An example from token ids.
pub fn example(prompt: &[u32], answer: &[u32]) -> AnswerExample {
    AnswerExample {
        prompt: prompt.to_vec().into(),
        answer: answer.to_vec().into(),
    }
}

/// A `[rows, len]` tensor of token ids on the kit's device; every row has the same length.
pub fn tokens(rows: &[&[i64]]) -> Tensor<2, Int> {
    let len = rows.first().map_or(0, |r| r.len());
    if let Some(row) = rows.iter().find(|r| r.len() != len) {
        panic!(
            "token rows must have one length: the first has {len} tokens, {row:?} has {}",
            row.len()
        );
    }
    let data: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [rows.len(), len]), &Device::flex())
}

/// `M`'s example configuration with `overrides` (key, TOML value) replacing its keys or added to
/// its top-level table, and `extra` (e.g. a `[lora]` table) appended.
pub fn config_with<M: LanguageModel>(overrides: &[(&str, &str)], extra: &str) -> String {
    for (key, value) in overrides {
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !bare {
            panic!("config override key {key:?} (value {value}) is not a bare TOML key");
        }
    }
    let key_of = |line: &str| line.split('=').next().map(str::trim).map(str::to_string);
    let mut top = Vec::new();
    let mut tables = Vec::new();
    for line in M::EXAMPLE_CONFIG.lines() {
        // Keys after the first table header belong to that table, not to the model's own keys.
        if !tables.is_empty() || line.trim_start().starts_with('[') {
            tables.push(line.to_string());
        } else if !overrides
            .iter()
            .any(|(key, _)| key_of(line).as_deref() == Some(*key))
        {
            top.push(line.to_string());
        }
    }
    top.extend(
        overrides
            .iter()
            .map(|(key, value)| format!("{key} = {value}")),
    );
    top.extend(tables);
    format!("{}\n{extra}", top.join("\n"))
}

/// A model of `M` built from `config` with `seed`; panics with the plugin's message when the
/// configuration is refused.
pub fn trainer<M: LanguageModel>(config: &str, seed: u64) -> Trainer<M> {
    Trainer::<M>::from_toml(config, seed, Device::flex()).unwrap_or_else(|e| {
        panic!(
            "{}: the configuration does not build: {e}\n{config}",
            M::ARCHITECTURE
        )
    })
}

/// The message with which `M` refuses `config`; panics when the configuration builds or is
/// refused as anything other than an invalid configuration.
pub fn refusal<M: LanguageModel>(config: &str) -> String {
    match Trainer::<M>::from_toml(config, 0, Device::flex()) {
        Ok(_) => panic!(
            "{}: the configuration was accepted:\n{config}",
            M::ARCHITECTURE
        ),
        Err(e) if e.kind != ErrorKind::InvalidConfig => panic!(
            "{}: the configuration was refused as {}, not as an invalid config: {}\n{config}",
            M::ARCHITECTURE,
            e.kind,
            e.message
        ),
        Err(e) => e.message.into(),
    }
}

/// A tensor's values, row-major.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32 values")
}

/// The largest absolute difference between `a` and `b`: infinite where either holds a NaN, so a
/// NaN never passes for close; panics when the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "compared value lists differ in length: {} against {}",
        a.len(),
        b.len()
    );
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// The argmax token of every answer position of example `i` (the first on ties).
pub fn argmax_row(logits: &Logits, i: usize) -> Vec<u32> {
    if i >= logits.batch as usize {
        panic!(
            "example {i} asked of logits for a batch of {}",
            logits.batch
        );
    }
    (0..logits.answer_len as usize)
        .map(|j| {
            let row = logits.row(i, j);
            let best = (0..row.len()).reduce(|a, b| if row[b] > row[a] { b } else { a });
            best.expect("logits over an empty vocabulary") as u32
        })
        .collect()
}

/// `steps` training steps on `batch` at [`OVERFIT_LEARNING_RATE`] (the other options at their
/// defaults); returns the loss of every step.
pub fn overfit<M: LanguageModel>(
    trainer: &mut Trainer<M>,
    batch: &[AnswerExample],
    steps: usize,
) -> Vec<f32> {
    let options = TrainOptions {
        learning_rate: OVERFIT_LEARNING_RATE,
        ..TrainOptions::default()
    };
    (0..steps)
        .map(|step| {
            let report = trainer
                .train_step(batch, None, &options)
                .unwrap_or_else(|e| panic!("{}: training step {step}: {e}", M::ARCHITECTURE));
            report.loss
        })
        .collect()
}

/// [`overfit`]s `batch` for `steps` steps and asserts that every loss is finite and the last is
/// below `ratio` times the first; returns the losses.
pub fn assert_loss_falls<M: LanguageModel>(
    trainer: &mut Trainer<M>,
    batch: &[AnswerExample],
    steps: usize,
    ratio: f32,
) -> Vec<f32> {
    if steps < 2 {
        panic!("a falling loss needs at least 2 steps, got {steps}");
    }
    let losses = overfit(trainer, batch, steps);
    let (first, last) = (losses[0], losses[steps - 1]);
    assert!(
        losses.iter().all(|l| l.is_finite()) && last < ratio * first,
        "{}: {steps} steps at learning rate {OVERFIT_LEARNING_RATE} took the loss from {first} \
         to {last}, not below {ratio} x the first: {losses:?}",
        M::ARCHITECTURE
    );
    losses
}

/// Decodes `tokens` once whole and once through the cache in `chunks` (the first chunk as a
/// prompt, the others as generation feeds them; they sum to the tokens' length), and asserts
/// that every chunk's hidden states and logits are within `tolerance` of the whole pass's, and
/// that after each chunk `cache_len` of the cache is the number of tokens decoded so far.
///
/// # Shapes
/// - tokens: `[b, t]`
pub fn assert_cached_decoding_matches<M: LanguageModel>(
    model: &M,
    tokens: Tensor<2, Int>,
    memory: Option<&Memory>,
    chunks: &[usize],
    tolerance: f32,
    cache_len: impl Fn(&M::Cache) -> usize,
) {
    let arch = M::ARCHITECTURE;
    let [b, t] = tokens.dims();
    if chunks.contains(&0) || chunks.iter().sum::<usize>() != t {
        panic!("chunks {chunks:?} must be positive and sum to the {t} tokens decoded");
    }
    let hidden = model.decode(tokens.clone(), memory);
    let logits = model.logits(hidden.clone());
    let (d, v) = (hidden.dims()[2], logits.dims()[2]);
    let mut cache = model.new_cache();
    let held = cache_len(&cache);
    assert_eq!(held, 0, "{arch}: a new cache holds {held} tokens");
    let mut start = 0;
    for &len in chunks {
        let end = start + len;
        let piece = tokens.clone().slice([0..b, start..end]);
        let cached_hidden = model.decode_cached(piece, memory, &mut cache);
        let cached_logits = model.logits(cached_hidden.clone());
        let hidden_diff = max_abs_diff(
            &values(cached_hidden),
            &values(hidden.clone().slice([0..b, start..end, 0..d])),
        );
        let logits_diff = max_abs_diff(
            &values(cached_logits),
            &values(logits.clone().slice([0..b, start..end, 0..v])),
        );
        assert!(
            hidden_diff < tolerance && logits_diff < tolerance,
            "{arch}: positions {start}..{end} decoded through the cache differ from the whole \
             pass by {hidden_diff:.3e} (hidden states) and {logits_diff:.3e} (logits); \
             tolerance {tolerance:.0e}"
        );
        let held = cache_len(&cache);
        assert_eq!(
            held, end,
            "{arch}: after positions 0..{end} the cache holds {held} tokens"
        );
        start = end;
    }
}

/// Generates from `prompts` (greedy, through the cache) and asserts that each continuation is
/// the argmax of the full pass at every position: the answer logits of the prompt followed by
/// the generated tokens, and `eos_id` where generation stopped early, pick exactly those tokens.
/// Returns the generated tokens.
pub fn assert_generation_matches_argmax<M: LanguageModel>(
    trainer: &Trainer<M>,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> Vec<Vec<u32>> {
    let arch = M::ARCHITECTURE;
    let generated = trainer
        .generate(prompts, options)
        .unwrap_or_else(|e| panic!("{arch}: generation failed: {e}"));
    assert_eq!(
        generated.len(),
        prompts.len(),
        "{arch}: {} continuations for {} prompts",
        generated.len(),
        prompts.len()
    );
    let context = M::context_len(trainer.config());
    for (prompt, tokens) in prompts.iter().zip(&generated) {
        let cap = options.max_new_tokens as usize;
        assert!(
            tokens.len() <= cap,
            "{arch}: prompt {prompt:?}: {} tokens generated, cap {cap}",
            tokens.len()
        );
        // Generation also stops at the context length; only a stop before both limits is EOS.
        let room = match M::STRUCTURE {
            Structure::DecoderOnly => context.saturating_sub(prompt.len()),
            Structure::EncoderDecoder => context,
        };
        let mut answer = tokens.clone();
        if answer.len() < cap.min(room) {
            answer.push(options.eos_id);
        }
        if answer.is_empty() {
            continue;
        }
        let logits = trainer
            .answer_logits(&[example(prompt, &answer)])
            .unwrap_or_else(|e| panic!("{arch}: answer logits of prompt {prompt:?}: {e}"));
        assert_eq!(
            argmax_row(&logits, 0),
            answer,
            "{arch}: prompt {prompt:?}: the full pass's argmax differs from what generation \
             produced (right: generated, with the EOS where it stopped)"
        );
    }
    generated
}

/// Asserts that `short`'s answer logits are the same (within `tolerance`) alone and in a batch
/// with `long`, which is longer in both prompt and answer, so `short` is padded on both sides.
pub fn assert_padding_changes_nothing<M: LanguageModel>(
    trainer: &Trainer<M>,
    short: &AnswerExample,
    long: &AnswerExample,
    tolerance: f32,
) {
    let arch = M::ARCHITECTURE;
    if long.prompt.len() <= short.prompt.len() || long.answer.len() <= short.answer.len() {
        panic!(
            "the long example ({} prompt, {} answer tokens) must be longer than the short one \
             ({}, {}) in both prompt and answer",
            long.prompt.len(),
            long.answer.len(),
            short.prompt.len(),
            short.answer.len()
        );
    }
    let logits = |batch: &[AnswerExample]| {
        trainer
            .answer_logits(batch)
            .unwrap_or_else(|e| panic!("{arch}: answer logits: {e}"))
    };
    let alone = logits(std::slice::from_ref(short));
    let batched = logits(&[short.clone(), long.clone()]);
    // The short example's answer positions, which come first in both.
    let n = short.answer.len() * alone.vocab as usize;
    let diff = max_abs_diff(&alone.data[..n], &batched.data[..n]);
    assert!(
        diff < tolerance,
        "{arch}: padding changed the short example's logits by {diff:.3e}; tolerance \
         {tolerance:.0e}"
    );
}
