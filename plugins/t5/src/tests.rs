//! In-process tests through the SDK's trainer, on the tiny example configuration.

use super::*;
use cotune_sdk::abi::{AnswerExample, ErrorKind, GenerateOptions, Logits, TrainOptions};
use cotune_sdk::{params, Trainer};

const VOCAB: usize = 96;

/// The example configuration with `overrides` (key, TOML value) replacing or adding keys.
fn config_with(overrides: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = T5::EXAMPLE_CONFIG
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
    lines.join("\n")
}

fn trainer(overrides: &[(&str, &str)]) -> Trainer<T5> {
    Trainer::<T5>::from_toml(&config_with(overrides), 7, Device::flex())
        .expect("the configuration builds")
}

fn refusal(overrides: &[(&str, &str)]) -> String {
    match Trainer::<T5>::from_toml(&config_with(overrides), 7, Device::flex()) {
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
    let source: Tensor<2, Int> = Tensor::from_data(
        TensorData::new(vec![5i64, 6, 7, 8, 9, 3, 4, 0, 0, 0], [2, 5]),
        &device,
    );
    let pad: Tensor<2, Bool> = Tensor::from_data(
        TensorData::new((0..10).map(|i| i >= 7).collect::<Vec<bool>>(), [2, 5]),
        &device,
    );
    let memory = Memory {
        states: model.encode(source, pad.clone()),
        pad_mask: pad,
    };
    let tokens: Tensor<2, Int> = Tensor::from_data(
        TensorData::new(
            vec![
                0i64, 11, 12, 13, 14, 15, 16, 17, 0, 21, 22, 23, 24, 25, 26, 27,
            ],
            [2, 8],
        ),
        &device,
    );
    let full = model.logits(model.decode(tokens.clone(), Some(&memory)));
    let mut cache = model.new_cache();
    // A three-token chunk first, so both the causal mask and the position bias see an offset
    // with several queries; then one token at a time, as generation does.
    let mut start = 0;
    for len in [3, 1, 1, 1, 1, 1] {
        let step = tokens.clone().slice([0..2, start..start + len]);
        let cached = model.logits(model.decode_cached(step, Some(&memory), &mut cache));
        let expected = full.clone().slice([0..2, start..start + len, 0..VOCAB]);
        let diff = max_abs_diff(&values(cached), &values(expected));
        assert!(
            diff < 1e-4,
            "positions {start}..{}: max difference {diff}",
            start + len
        );
        start += len;
    }
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
    let generated = trainer.generate(&prompts, &options).expect("generation");
    assert_eq!(
        generated[..2],
        [vec![20, 33, 20, 41], vec![50, 51, 52]],
        "the trained answers"
    );
    for (prompt, tokens) in prompts.iter().zip(&generated) {
        // Uncached: answer position j sees [start] + answer[..j]; a stop shows as eos.
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
fn encoder_padding_changes_nothing() {
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
    ];
    for (key, value, shown) in cases {
        let message = refusal(&[(key, value)]);
        assert!(
            message.contains(key) && message.contains(shown),
            "{key} = {value}: {message}"
        );
    }
}

/// Trains on `batch` for `steps` steps at a high learning rate; returns the losses.
fn overfit(trainer: &mut Trainer<T5>, batch: &[AnswerExample], steps: usize) -> Vec<f32> {
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
fn loss_falls_when_overfitting_one_batch() {
    let mut trainer = trainer(&[]);
    let batch = [
        example(&[5, 6, 7, 8], &[20, 21, 22, 1]),
        example(&[9, 10], &[30, 31, 1]),
    ];
    let losses = overfit(&mut trainer, &batch, 30);
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < 0.25 * first,
        "loss went from {first} to {last}: {losses:?}"
    );
}
