//! In-process tests through the SDK's trainer, on the small example configuration.

use super::*;
use cotune_sdk::abi::GenerateOptions;
use cotune_sdk::testing::{
    self, assert_cached_decoding_matches, assert_generation_matches_argmax, assert_loss_falls,
    assert_padding_changes_nothing, config_with, example, overfit,
};
use cotune_sdk::{params, Trainer};

const VOCAB: usize = 96;

fn trainer_with(overrides: &[(&str, &str)], extra: &str) -> Trainer<Gru> {
    testing::trainer(&config_with::<Gru>(overrides, extra), 7)
}

fn trainer(overrides: &[(&str, &str)]) -> Trainer<Gru> {
    trainer_with(overrides, "")
}

fn refusal(overrides: &[(&str, &str)]) -> String {
    testing::refusal::<Gru>(&config_with::<Gru>(overrides, ""))
}

#[test]
fn cached_decoding_matches_full_decoding() {
    for norm in ["true", "false"] {
        let trainer = trainer(&[("layer_norm", norm)]);
        let model = trainer.model().valid();
        let tokens = testing::tokens(&[
            &[5, 11, 12, 13, 14, 15, 16, 17],
            &[9, 21, 22, 23, 24, 25, 26, 27],
        ]);
        // As generation calls it: the whole prompt first, then one token per call.
        assert_cached_decoding_matches(
            &model,
            tokens,
            None,
            &[3, 1, 1, 1, 1, 1],
            1e-5,
            GruState::len,
        );
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
    let generated = assert_generation_matches_argmax(&trainer, &prompts, &options);
    assert_eq!(
        generated[..2],
        [vec![20, 33, 20, 41], vec![50, 51, 52]],
        "the trained answers"
    );
}

#[test]
fn padding_changes_nothing() {
    let short = example(&[5, 6, 7], &[10, 11, 1]);
    let long = example(&[9, 8, 7, 6, 5, 4, 3, 2], &[12, 13, 14, 15, 16, 1]);
    assert_padding_changes_nothing(&trainer(&[]), &short, &long, 1e-5);
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
    let losses = assert_loss_falls(&mut trainer, &batch, 10, 0.5);
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
