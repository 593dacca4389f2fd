//! In-process tests through the SDK's trainer, on the small example configuration.

use super::*;
use cotune_sdk::abi::{AnswerExample, ErrorKind, GenerateOptions, Logits, TrainOptions};
use cotune_sdk::burn::tensor::TensorData;
use cotune_sdk::{params, Trainer};

const VOCAB: usize = 96;

/// The example configuration with `overrides` (key, TOML value) replacing or adding keys, and
/// `extra` (e.g. a `[lora]` table) appended.
fn config_with(overrides: &[(&str, &str)], extra: &str) -> String {
    let mut lines: Vec<String> = Gru::EXAMPLE_CONFIG
        .lines()
        .filter(|line| {
            !overrides
                .iter()
                .any(|(key, _)| line.starts_with(&format!("{key} ")))
        })
        .map(str::to_string)
        .collect();
    lines.extend(
        overrides
            .iter()
            .map(|(key, value)| format!("{key} = {value}")),
    );
    format!("{}\n{extra}", lines.join("\n"))
}

fn trainer_with(overrides: &[(&str, &str)], extra: &str) -> Trainer<Gru> {
    Trainer::<Gru>::from_toml(&config_with(overrides, extra), 7, Device::flex())
        .expect("the configuration builds")
}

fn trainer(overrides: &[(&str, &str)]) -> Trainer<Gru> {
    trainer_with(overrides, "")
}

fn refusal(overrides: &[(&str, &str)]) -> String {
    match Trainer::<Gru>::from_toml(&config_with(overrides, ""), 7, Device::flex()) {
        Ok(_) => panic!("{overrides:?} was accepted"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidConfig, "{e}");
            e.message.to_string()
        }
    }
}

fn example(prompt: &[u32], answer: &[u32]) -> AnswerExample {
    AnswerExample {
        prompt: prompt.to_vec().into(),
        answer: answer.to_vec().into(),
    }
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The argmax of each answer position of example `i`.
fn argmax_row(logits: &Logits, i: usize) -> Vec<u32> {
    let (a, v) = (logits.answer_len as usize, logits.vocab as usize);
    (0..a)
        .map(|j| {
            let row = &logits.data[(i * a + j) * v..(i * a + j + 1) * v];
            let best = (0..v).max_by(|&x, &y| row[x].total_cmp(&row[y]));
            best.expect("a non-empty vocabulary") as u32
        })
        .collect()
}

/// Trains on `batch` for `steps` steps at a high learning rate; returns the losses.
fn overfit(trainer: &mut Trainer<Gru>, batch: &[AnswerExample], steps: usize) -> Vec<f32> {
    let options = TrainOptions {
        learning_rate: 1e-2,
        ..TrainOptions::default()
    };
    (0..steps)
        .map(|_| {
            trainer
                .train_step(batch, None, &options)
                .expect("a step")
                .loss
        })
        .collect()
}

#[test]
fn cached_decoding_matches_full_decoding() {
    for norm in ["true", "false"] {
        let trainer = trainer(&[("layer_norm", norm)]);
        let model = trainer.model().valid();
        let tokens: Tensor<2, Int> = Tensor::from_data(
            TensorData::new(
                vec![
                    5i64, 11, 12, 13, 14, 15, 16, 17, 9, 21, 22, 23, 24, 25, 26, 27,
                ],
                [2, 8],
            ),
            &Device::flex(),
        );
        let full = model.logits(model.decode(tokens.clone(), None));
        let mut cache = model.new_cache();
        assert!(cache.is_empty());
        // As generation calls it: the whole prompt first, then one token per call.
        let mut start = 0;
        for len in [3, 1, 1, 1, 1, 1] {
            let step = tokens.clone().slice([0..2, start..start + len]);
            let cached = model.logits(model.decode_cached(step, None, &mut cache));
            let expected = full.clone().slice([0..2, start..start + len, 0..VOCAB]);
            let diff = max_abs_diff(&values(cached), &values(expected));
            assert!(
                diff < 1e-5,
                "layer_norm {norm}, positions {start}..{}: max difference {diff}",
                start + len
            );
            start += len;
            assert_eq!(cache.len(), start);
        }
    }
}

#[test]
fn generation_equals_uncached_argmax() {
    // A fresh model repeats one token; a briefly trained one produces varied answers, so the
    // comparison covers several distinct decoding steps.
    let mut trainer = trainer(&[]);
    let batch = [
        example(&[5, 6, 7, 8, 9, 10], &[20, 33, 20, 41, 1]),
        example(&[3, 4], &[50, 51, 52, 1]),
    ];
    overfit(&mut trainer, &batch, 40);
    // Prompts of three lengths: generation groups them by length, one state per group.
    let prompts = vec![
        vec![5, 6, 7, 8, 9, 10],
        vec![3, 4],
        vec![7, 7, 3],
        vec![3, 5],
    ];
    let options = GenerateOptions {
        max_new_tokens: 6,
        eos_id: 1,
    };
    let generated = trainer.generate(&prompts, &options).expect("generation");
    assert_eq!(
        generated[..2],
        [vec![20, 33, 20, 41], vec![50, 51, 52]],
        "the trained answers"
    );
    for (prompt, tokens) in prompts.iter().zip(&generated) {
        let mut answer = tokens.clone();
        if answer.len() < options.max_new_tokens as usize {
            answer.push(options.eos_id);
        }
        let logits = trainer
            .answer_logits(&[example(prompt, &answer)])
            .expect("answer logits");
        assert_eq!(argmax_row(&logits, 0), answer, "prompt {prompt:?}");
    }
}

#[test]
fn padding_changes_nothing() {
    let trainer = trainer(&[]);
    let short = example(&[5, 6, 7], &[10, 11, 1]);
    let long = example(&[9, 8, 7, 6, 5, 4, 3, 2], &[12, 13, 14, 15, 16, 1]);
    let alone = trainer
        .answer_logits(std::slice::from_ref(&short))
        .expect("alone");
    let batched = trainer.answer_logits(&[short, long]).expect("batched");
    let n = alone.answer_len as usize * VOCAB;
    let diff = max_abs_diff(&alone.data[..n], &batched.data[..n]);
    assert!(diff < 1e-5, "max difference {diff}");
}

#[test]
fn bad_configs_are_refused_naming_key_and_value() {
    let cases = [
        ("hidden_size", "0", "`hidden_size` must be positive, got 0"),
        ("embed_dim", "0", "`embed_dim` must be positive, got 0"),
        ("num_layers", "0", "`num_layers` must be positive, got 0"),
        (
            "layer_norm_eps",
            "-1.0",
            "`layer_norm_eps` must be a positive number, got -1",
        ),
    ];
    for (key, value, expected) in cases {
        assert_eq!(
            refusal(&[(key, value)]),
            format!("gru config: {expected}"),
            "{key} = {value}"
        );
    }
    // A misspelt or foreign key is refused with its name.
    let message = refusal(&[("num_heads", "4")]);
    assert!(message.contains("num_heads"), "{message}");
    let message = refusal(&[("hidden_size", "\"wide\"")]);
    assert!(message.contains("wide"), "{message}");
}

#[test]
fn a_few_steps_lower_the_loss() {
    let mut trainer = trainer(&[]);
    let batch = [
        example(&[5, 6, 7, 8], &[20, 21, 22, 1]),
        example(&[9, 10], &[30, 31, 1]),
        example(&[11, 12, 13], &[40, 1]),
    ];
    let losses = overfit(&mut trainer, &batch, 10);
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < 0.5 * first,
        "loss went from {first} to {last}: {losses:?}"
    );
    // The same seed gives the same losses.
    let again = overfit(&mut trainer_with(&[], ""), &batch, 10);
    assert_eq!(losses, again);
}

#[test]
fn parameters_are_the_fused_gate_matrices() {
    let names: Vec<(String, Vec<usize>)> = params::list(trainer(&[]).model())
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let expected: Vec<(&str, Vec<usize>)> = vec![
        ("embed.weight", vec![VOCAB, 32]),
        ("layers.0.input.weight", vec![32, 96]),
        ("layers.0.input.bias", vec![96]),
        ("layers.0.recurrent.weight", vec![32, 96]),
        ("layers.0.recurrent.bias", vec![96]),
        ("layers.1.input.weight", vec![32, 96]),
        ("layers.1.input.bias", vec![96]),
        ("layers.1.recurrent.weight", vec![32, 96]),
        ("layers.1.recurrent.bias", vec![96]),
        ("norm.gamma", vec![32]),
        ("norm.beta", vec![32]),
        ("head.weight", vec![32, VOCAB]),
        ("head.bias", vec![VOCAB]),
    ];
    let expected: Vec<(String, Vec<usize>)> = expected
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    assert_eq!(names, expected);
}

/// The adapter tensors' names and the shared tensors' values before and after `steps`.
fn lora_run(lora: &str, steps: usize) -> (Vec<String>, Vec<f32>) {
    let mut trainer = trainer_with(&[], lora);
    let adapters: Vec<String> = params::list(trainer.model())
        .into_iter()
        .filter(|p| p.adapter)
        .map(|p| p.name)
        .collect();
    let shared = |t: &Trainer<Gru>| -> Vec<f32> {
        t.export_params(cotune_sdk::abi::ParamSelection::Shared)
            .expect("export")
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect()
    };
    let before = shared(&trainer);
    let batch = [
        example(&[5, 6, 7, 8], &[20, 21, 22, 1]),
        example(&[9, 10], &[30, 31, 1]),
    ];
    let losses = overfit(&mut trainer, &batch, steps);
    assert!(
        losses[steps - 1] < losses[0],
        "{lora}: adapters did not learn: {losses:?}"
    );
    assert_eq!(shared(&trainer), before, "{lora}: a shared tensor moved");
    (adapters, losses)
}

#[test]
fn lora_adapts_the_gate_matrices_and_any_other_matrix() {
    // The default targets: both gate matrices of each layer, two factors each.
    let (adapters, _) = lora_run("[lora]\nrank = 2\n", 5);
    assert_eq!(adapters.len(), 8, "{adapters:?}");
    for layer in 0..2 {
        for matrix in ["input", "recurrent"] {
            let prefix = format!("layers.{layer}.{matrix}.weight.");
            assert_eq!(
                adapters.iter().filter(|a| a.starts_with(&prefix)).count(),
                2,
                "{prefix}: {adapters:?}"
            );
        }
    }
    // An empty list adapts every 2-D parameter, the embedding table and the head included.
    let (adapters, _) = lora_run("[lora]\nrank = 2\ntarget_modules = []\n", 5);
    assert_eq!(adapters.len(), 12, "{adapters:?}");
    // The embedding table alone: not a `Linear`, still adapted and trained through `val()`.
    let (adapters, _) = lora_run("[lora]\nrank = 2\ntarget_modules = [\"embed\"]\n", 5);
    assert_eq!(adapters.len(), 2, "{adapters:?}");
    assert!(adapters.iter().all(|a| a.starts_with("embed.weight.")));
}
