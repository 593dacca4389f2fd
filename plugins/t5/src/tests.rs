//! In-process tests through the SDK's trainer, on the tiny example configuration.

use super::*;
use cotune_sdk::abi::{AnswerExample, GenerateOptions, NamedTensor, ParamSelection, TrainOptions};
use cotune_sdk::hf::serde_json::{self, Value};
use cotune_sdk::hf::{read_safetensors, write_safetensors, CONFIG_FILE, WEIGHTS_FILE};
use cotune_sdk::testing::{
    self, assert_cached_decoding_matches, assert_generation_matches_argmax, assert_loss_falls,
    assert_padding_changes_nothing, config_with, example, max_abs_diff, overfit, values,
};
use cotune_sdk::{hf, params, Trainer};

const VOCAB: usize = 96;

fn trainer(overrides: &[(&str, &str)]) -> Trainer<T5> {
    testing::trainer(&config_with::<T5>(overrides, ""), 7)
}

fn refusal(overrides: &[(&str, &str)]) -> String {
    testing::refusal::<T5>(&config_with::<T5>(overrides, ""))
}

fn assert_buckets(
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
    relative: &[i64],
    expected: &[usize],
) {
    for (&position, &bucket) in relative.iter().zip(expected) {
        assert_eq!(
            relative_position_bucket(position, bidirectional, buckets, max_distance),
            bucket,
            "relative position {position}, bidirectional {bidirectional}, {buckets} buckets, max distance {max_distance}"
        );
    }
}

#[test]
fn buckets_match_hugging_face_formula() {
    // Worked by hand from `_relative_position_bucket`: for distances at or past max_exact the
    // bucket is max_exact + trunc(ln(distance / max_exact) / ln(max_distance / max_exact)
    // * (buckets - max_exact)), capped at buckets - 1.
    //
    // The example's 8 buckets, max distance 20. Bidirectional: 4 per side (later keys from 4),
    // max_exact 2; e.g. -6: 2 + trunc(ln 3 / ln 10 * 2 = 0.954) = 2; -7: 2 + trunc(1.088) = 3.
    assert_buckets(
        true,
        8,
        20,
        &[0, -1, 1, -2, 3, -6, -7, 7, -19, -20, 100],
        &[0, 1, 5, 2, 6, 2, 3, 7, 3, 3, 7],
    );
    // Unidirectional: max_exact 4, later keys in bucket 0; e.g. -6: 4 + trunc(ln 1.5 / ln 5
    // * 4 = 1.008) = 5; -13: 4 + trunc(2.929) = 6; -14: 4 + trunc(3.114) = 7.
    assert_buckets(
        false,
        8,
        20,
        &[5, 0, -3, -4, -5, -6, -9, -13, -14, -20, -1000],
        &[0, 0, 3, 4, 4, 5, 6, 6, 7, 7, 7],
    );
    // T5's defaults, 32 buckets and max distance 128. Bidirectional max_exact 8; e.g. -12:
    // 8 + trunc(ln 1.5 / ln 16 * 8 = 1.170) = 9; -16: 8 + 2 = 10; -127: 8 + trunc(7.977) = 15.
    assert_buckets(
        true,
        32,
        128,
        &[-1, 1, -8, -12, -16, 16, -127, -128, 500],
        &[1, 17, 8, 9, 10, 26, 15, 15, 31],
    );
    // Unidirectional max_exact 16; e.g. -20: 16 + trunc(ln 1.25 / ln 8 * 16 = 1.717) = 17;
    // -64: 16 + trunc(10.667) = 26; -127: 16 + trunc(15.94) = 31.
    assert_buckets(
        false,
        32,
        128,
        &[3, -15, -16, -20, -64, -127, -128],
        &[0, 15, 16, 17, 26, 31, 31],
    );
}

#[test]
fn cached_decoding_matches_full_decoding() {
    let trainer = trainer(&[]);
    let model = trainer.model().valid();
    let device = Device::flex();
    let source = testing::tokens(&[&[5, 6, 7, 8, 9], &[3, 4, 0, 0, 0]]);
    let pad: Tensor<2, Bool> = Tensor::from_data(
        TensorData::new((0..10).map(|i| i >= 7).collect::<Vec<bool>>(), [2, 5]),
        &device,
    );
    let memory = Memory {
        states: model.encode(source, pad.clone()),
        pad_mask: pad,
    };
    let tokens = testing::tokens(&[
        &[0, 11, 12, 13, 14, 15, 16, 17],
        &[0, 21, 22, 23, 24, 25, 26, 27],
    ]);
    // A three-token chunk first, so both the causal mask and the position bias see an offset
    // with several queries; then one token at a time, as generation does.
    assert_cached_decoding_matches(
        &model,
        tokens,
        Some(&memory),
        &[3, 1, 1, 1, 1, 1],
        1e-4,
        |cache| cache.self_attention.len(),
    );
}

#[test]
fn generation_equals_uncached_argmax() {
    // A fresh model repeats one token; a briefly trained one produces varied answers, so
    // the comparison covers several distinct decoding steps.
    let mut trainer = trainer(&[]);
    let batch = [
        example(&[5, 6, 7, 8, 9, 10], &[20, 33, 20, 41, 1]),
        example(&[3, 4], &[50, 51, 52, 1]),
    ];
    overfit(&mut trainer, &batch, 30);
    let prompts = vec![vec![5, 6, 7, 8, 9, 10], vec![3, 4], vec![7, 7, 3]];
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
fn encoder_padding_changes_nothing() {
    let short = example(&[5, 6, 7], &[10, 11, 1]);
    let long = example(&[9, 8, 7, 6, 5, 4, 3, 2], &[12, 13, 14, 15, 16, 1]);
    assert_padding_changes_nothing(&trainer(&[]), &short, &long, 1e-5);
}

#[test]
fn parameter_names_follow_the_mapping_table() {
    for (proj, tied) in [("\"relu\"", "true"), ("\"gated-gelu\"", "false")] {
        let trainer = trainer(&[("feed_forward_proj", proj), ("tie_word_embeddings", tied)]);
        let names: Vec<(String, Vec<usize>)> = params::list(trainer.model())
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        let shape = |name: &str| {
            names
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        let mut expected = vec![
            ("shared.weight", vec![VOCAB, 32]),
            (
                "encoder.block.0.self_attention.relative_attention_bias.weight",
                vec![8, 4],
            ),
            (
                "decoder.block.0.self_attention.relative_attention_bias.weight",
                vec![8, 4],
            ),
            ("encoder.block.1.self_attention.q.weight", vec![32, 32]),
            ("encoder.block.1.self_attention.layer_norm.gamma", vec![32]),
            ("decoder.block.1.cross_attention.o.weight", vec![32, 32]),
            ("decoder.block.1.feed_forward.wo.weight", vec![64, 32]),
            ("encoder.final_layer_norm.gamma", vec![32]),
            ("decoder.final_layer_norm.gamma", vec![32]),
        ];
        let absent = if tied == "true" {
            expected.push(("encoder.block.0.feed_forward.wi.weight", vec![32, 64]));
            ["lm_head.weight", "encoder.block.0.feed_forward.wi_0.weight"]
        } else {
            expected.push(("encoder.block.0.feed_forward.wi_0.weight", vec![32, 64]));
            expected.push(("decoder.block.1.feed_forward.wi_1.weight", vec![32, 64]));
            expected.push(("lm_head.weight", vec![32, VOCAB]));
            ["encoder.block.0.feed_forward.wi.weight", "shared.gamma"]
        };
        for (name, dims) in expected {
            assert_eq!(shape(name), Some(dims), "{name} with {proj}, tied {tied}");
        }
        for name in absent.into_iter().chain([
            "encoder.block.1.self_attention.relative_attention_bias.weight",
            "encoder.block.0.cross_attention.q.weight",
        ]) {
            assert_eq!(shape(name), None, "{name} with {proj}, tied {tied}");
        }
    }
}

#[test]
fn relu_and_gated_gelu_both_train_and_generate() {
    for (proj, tied) in [("\"relu\"", "false"), ("\"gated-gelu\"", "true")] {
        let mut trainer = trainer(&[("feed_forward_proj", proj), ("tie_word_embeddings", tied)]);
        let batch = [
            example(&[5, 6, 7], &[10, 11, 1]),
            example(&[8, 9], &[12, 1]),
        ];
        let report = trainer
            .train_step(&batch, None, &TrainOptions::default())
            .expect("a training step");
        assert!(report.loss.is_finite(), "{proj}: loss {}", report.loss);
        let options = GenerateOptions {
            max_new_tokens: 4,
            eos_id: 1,
        };
        let out = trainer
            .generate(&[vec![5, 6, 7]], &options)
            .expect("generation");
        assert!(out[0].len() <= 4 && out[0].iter().all(|&t| (t as usize) < VOCAB));
    }
}

#[test]
fn bad_configs_are_refused_by_name() {
    let message = refusal(&[("dropout_rate", "0.1")]);
    assert!(message.contains("dropout_rate"), "{message}");
    let cases = [
        ("feed_forward_proj", "\"swiglu\"", "swiglu"),
        ("relative_attention_num_buckets", "2", "2"),
        ("relative_attention_max_distance", "4", "4"),
        ("num_heads", "0", "0"),
        ("decoder_start_token_id", "96", "96"),
        ("layer_norm_epsilon", "-1.0", "-1"),
        ("scale_decoder_outputs", "\"no\"", "\"no\""),
        ("scale_decoder_outputs", "1", "1"),
    ];
    for (key, value, shown) in cases {
        let message = refusal(&[(key, value)]);
        assert!(
            message.contains(key) && message.contains(shown),
            "{key} = {value}: {message}"
        );
    }
}

#[test]
fn loss_falls_when_overfitting_one_batch() {
    let mut trainer = trainer(&[]);
    let batch = [
        example(&[5, 6, 7, 8], &[20, 21, 22, 1]),
        example(&[9, 10], &[30, 31, 1]),
    ];
    assert_loss_falls(&mut trainer, &batch, 30, 0.25);
}

// The head: `tie_word_embeddings` and `scale_decoder_outputs` in all four combinations.

/// The configuration overrides of a head: tied or not, scaled or not (`None`: key absent).
fn head(tied: bool, scaled: Option<bool>) -> Vec<(&'static str, &'static str)> {
    let word = |b: bool| if b { "true" } else { "false" };
    let mut overrides = vec![("tie_word_embeddings", word(tied))];
    if let Some(scaled) = scaled {
        overrides.push(("scale_decoder_outputs", word(scaled)));
    }
    overrides
}

/// A model of the head, briefly trained so that no weight is still at its initialisation.
fn trained(tied: bool, scaled: Option<bool>) -> Trainer<T5> {
    let mut trainer = trainer(&head(tied, scaled));
    overfit(&mut trainer, &head_batch(), 3);
    trainer
}

fn head_batch() -> [AnswerExample; 2] {
    [
        example(&[5, 6, 7, 8, 9], &[20, 21, 22, 1]),
        example(&[9, 10], &[30, 31, 32, 33, 1]),
    ]
}

/// The answer logits of the head batch, as bits (so equality is exact and NaN-proof).
fn logit_bits(trainer: &Trainer<T5>) -> Vec<u32> {
    let logits = trainer.answer_logits(&head_batch()).expect("answer logits");
    logits.data.iter().map(|x| x.to_bits()).collect()
}

/// `from`'s parameters imported into `to` (which may have an `lm_head` that `from` lacks).
fn copy_params(from: &Trainer<T5>, to: &mut Trainer<T5>) {
    let values = from.export_params(ParamSelection::All).expect("export");
    to.import_params(&values).expect("import");
}

fn param(trainer: &Trainer<T5>, name: &str) -> Option<NamedTensor> {
    trainer
        .export_params(ParamSelection::All)
        .expect("export")
        .into_iter()
        .find(|p| p.name.as_str() == name)
}

fn transposed(t: &NamedTensor) -> NamedTensor {
    let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
    let data = (0..cols * rows)
        .map(|i| t.data[(i % rows) * cols + i / rows])
        .collect();
    NamedTensor::new(t.name.as_str(), vec![cols as u64, rows as u64], data)
}

/// A fresh folder under the system's temporary folder.
fn temp_folder(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cotune-t5-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temporary folder");
    dir
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("reading")).expect("JSON")
}

fn load_folder(folder: &std::path::Path) -> Trainer<T5> {
    hf::load::<T5>(folder, "", 0, Device::flex())
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .0
}

#[test]
fn a_tied_unscaled_head_is_an_untied_head_holding_shared() {
    let tied = trained(true, Some(false));
    assert!(
        param(&tied, "lm_head.weight").is_none(),
        "a tied head has no lm_head"
    );
    let shared = param(&tied, "shared.weight").expect("shared.weight");

    // An untied model with every weight of the tied one and `lm_head.weight` = `shared.weight`
    // (transposed to burn's `[in, out]`).
    let mut untied = trainer(&head(false, None));
    assert!(!untied.config().scales_decoder_outputs());
    copy_params(&tied, &mut untied);
    let mut lm_head = transposed(&shared);
    lm_head.name = "lm_head.weight".into();
    untied.import_params(&[lm_head]).expect("lm_head import");
    assert_eq!(logit_bits(&tied), logit_bits(&untied));

    // Scaled, the same weights give the same logits tied or untied, and the unscaled logits
    // times d_model^-0.5 (up to rounding: the scale applies before the product).
    let mut tied_scaled = trainer(&head(true, Some(true)));
    copy_params(&tied, &mut tied_scaled);
    let mut untied_scaled = trainer(&head(false, Some(true)));
    copy_params(&untied, &mut untied_scaled);
    assert_eq!(logit_bits(&tied_scaled), logit_bits(&untied_scaled));
    let scale = 32f32.powf(-0.5);
    let (unscaled, scaled) = (
        tied.answer_logits(&head_batch()).unwrap().data,
        tied_scaled.answer_logits(&head_batch()).unwrap().data,
    );
    let expected: Vec<f32> = unscaled.iter().map(|x| x * scale).collect();
    let diff = max_abs_diff(&scaled, &expected);
    assert!(diff < 1e-5, "max difference {diff}");
    assert!(
        max_abs_diff(&scaled, &unscaled) > 1e-2,
        "scaling changes the logits"
    );
}

#[test]
fn the_scale_defaults_to_the_tie_and_keeps_the_old_numbers() {
    for tied in [true, false] {
        let absent = trainer(&head(tied, None));
        assert_eq!(absent.config().scale_decoder_outputs, None);
        assert_eq!(
            absent.config().scales_decoder_outputs(),
            tied,
            "tied {tied}"
        );
        let explicit = trainer(&head(tied, Some(tied)));
        assert_eq!(logit_bits(&absent), logit_bits(&explicit), "tied {tied}");

        // The head as it was computed before `scale_decoder_outputs` existed: tied heads scale
        // and multiply by `shared`, untied ones apply `lm_head` unscaled.
        let model = absent.model();
        let device = Device::flex();
        let hidden = Tensor::<3>::from_data(
            TensorData::new(
                (0..2 * 3 * 32).map(|i| (i as f32 * 0.37).sin()).collect(),
                [2, 3, 32],
            ),
            &device,
        );
        let before = match &model.lm_head {
            None => tied_logits(hidden.clone().mul_scalar(32f64.powf(-0.5)), &model.shared),
            Some(head) => linear(head, hidden.clone()),
        };
        assert_eq!(values(model.logits(hidden)), values(before), "tied {tied}");
    }
}

#[test]
fn every_head_exports_both_keys_and_reloads_to_the_same_logits() {
    for tied in [true, false] {
        for scaled in [true, false] {
            let case = format!("tied {tied}, scaled {scaled}");
            let original = trained(tied, Some(scaled));
            let folder = temp_folder(&format!("head-{tied}-{scaled}"));
            hf::export(&original, None, &folder).expect("export");

            let config = read_json(&folder.join(CONFIG_FILE));
            assert_eq!(config["tie_word_embeddings"], Value::Bool(tied), "{case}");
            assert_eq!(
                config["scale_decoder_outputs"],
                Value::Bool(scaled),
                "{case}"
            );
            let weights = read_safetensors(&folder.join(WEIGHTS_FILE)).expect("weights");
            assert_eq!(weights.contains_key("lm_head.weight"), !tied, "{case}");

            let loaded = load_folder(&folder);
            assert_eq!(loaded.config().tie_word_embeddings, tied, "{case}");
            assert_eq!(loaded.config().scales_decoder_outputs(), scaled, "{case}");
            assert_eq!(logit_bits(&loaded), logit_bits(&original), "{case}");
            std::fs::remove_dir_all(folder).expect("removing the folder");
        }
    }
}

#[test]
fn a_transformers_5_folder_tied_without_scaling_loads() {
    // Flan-T5 or T5 v1.1 as transformers 5 saves it: `tie_word_embeddings = true`,
    // `scale_decoder_outputs = false`, no `lm_head.weight` (older saves carry a copy of
    // `shared.weight` under that name, which is skipped).
    let original = trained(true, Some(false));
    for with_copy in [false, true] {
        let folder = temp_folder(&format!("transformers-5-{with_copy}"));
        hf::export(&original, None, &folder).expect("export");
        let config_path = folder.join(CONFIG_FILE);
        let mut config = read_json(&config_path);
        config["tie_word_embeddings"] = Value::Bool(true);
        config["scale_decoder_outputs"] = Value::Bool(false);
        config["eos_token_id"] = 1.into();
        let text = serde_json::to_string_pretty(&config).expect("JSON");
        std::fs::write(&config_path, text).expect("writing config.json");
        if with_copy {
            let weights_path = folder.join(WEIGHTS_FILE);
            let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = read_safetensors(&weights_path)
                .expect("weights")
                .into_iter()
                .map(|(name, t)| (name, t.shape, t.data))
                .collect();
            let shared = tensors
                .iter()
                .find(|(name, _, _)| name == "shared.weight")
                .expect("shared.weight")
                .clone();
            tensors.push(("lm_head.weight".into(), shared.1, shared.2));
            write_safetensors(&weights_path, &tensors).expect("writing the weights");
        }

        let loaded = load_folder(&folder);
        assert!(loaded.config().tie_word_embeddings);
        assert!(!loaded.config().scales_decoder_outputs());
        assert!(param(&loaded, "lm_head.weight").is_none());
        assert_eq!(
            logit_bits(&loaded),
            logit_bits(&original),
            "with an lm_head copy: {with_copy}"
        );
        std::fs::remove_dir_all(folder).expect("removing the folder");
    }
}

#[test]
fn a_bad_scale_is_refused_with_the_key_and_value() {
    for (value, shown) in [("\"no\"", "\"no\""), ("1", "1"), ("[true]", "[true]")] {
        let message = refusal(&[("scale_decoder_outputs", value)]);
        assert!(
            message.contains(&format!(
                "`scale_decoder_outputs` must be true or false, got {shown}"
            )),
            "{value}: {message}"
        );
    }
}
