//! Pre-training is cached and reused; distillation lowers the student's KL to the teacher.
//! Needs the gpt2 plugin built (`cargo build --workspace`).

use cotune_distill::{
    distill, pretrain_cached, Alignment, Bridge, Bridges, DistillConfig, Learner, ModelRecipe,
    PretrainConfig, Teacher, TrainSettings,
};
use cotune_host::{Example, ParamSelection, Plugin};

fn examples(n: usize, seed: u32) -> Vec<Example> {
    (0..n as u32)
        .map(|i| {
            let a = 3 + (i * 7 + seed) % 40;
            Example::new(vec![5, a, 6], vec![a + 1, a + 2, 2])
        })
        .collect()
}

const CONFIG: &str = "vocab_size = 64\nn_positions = 32\nn_embd = 16\nn_layer = 1\nn_head = 2\n";

#[test]
fn pretraining_is_cached_and_distillation_runs() {
    let plugin = Plugin::find("gpt2").expect("build the plugins first: cargo build --workspace");
    let recipe = ModelRecipe {
        plugin: &plugin,
        architecture: "gpt2",
        config: CONFIG,
        seed: 3,
        checkpoint: None,
    };
    let config = PretrainConfig {
        max_epochs: 3,
        patience: 1,
        train: TrainSettings {
            learning_rate: 5e-3,
            batch_size: 8,
            ..TrainSettings::default()
        },
        cosine: true,
        llm: true,
    };
    let cache = tempfile::tempdir().unwrap();
    let (train, valid) = (examples(32, 0), examples(8, 1));
    let first = pretrain_cached(recipe, "toy", &train, &valid, &config, cache.path()).unwrap();
    assert!(!first.report.from_cache);
    assert!(first.report.best_epoch >= 1);
    let again = pretrain_cached(recipe, "toy", &train, &valid, &config, cache.path()).unwrap();
    assert!(again.report.from_cache);
    assert_eq!(
        first.model.export_params(ParamSelection::All).unwrap(),
        again.model.export_params(ParamSelection::All).unwrap()
    );
    let other = pretrain_cached(recipe, "other data", &train, &valid, &config, cache.path());
    assert!(!other.unwrap().report.from_cache);

    let mut student = ModelRecipe { seed: 9, ..recipe }.build().unwrap();
    let reports = distill(
        &Teacher {
            model: &first.model,
            examples: &train,
            bridge: None,
        },
        &mut student,
        &train,
        &DistillConfig {
            epochs: 3,
            train: TrainSettings {
                learning_rate: 5e-3,
                batch_size: 8,
                ..DistillConfig::default().train
            },
        },
        1,
    )
    .unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports[2].kl < reports[0].kl, "{reports:?}");
}

/// The distilled proxy keeps a plain copy (trainable shared part) and an adapted copy (LoRA on
/// a frozen base); this only works if the base tensors carry the same names in both.
#[test]
fn lora_base_names_match_the_plain_model() {
    let plugin = Plugin::find("gpt2").expect("build the plugins first");
    let plain = ModelRecipe {
        plugin: &plugin,
        architecture: "gpt2",
        config: CONFIG,
        seed: 1,
        checkpoint: None,
    }
    .build()
    .unwrap();
    let lora_config = format!("{CONFIG}[lora]\nrank = 2\n");
    let mut adapted = ModelRecipe {
        plugin: &plugin,
        architecture: "gpt2",
        config: &lora_config,
        seed: 2,
        checkpoint: None,
    }
    .build()
    .unwrap();
    let names = |p: Vec<cotune_host::NamedTensor>| -> Vec<String> {
        p.into_iter().map(|t| t.name.into_string()).collect()
    };
    assert_eq!(
        names(plain.export_params(ParamSelection::All).unwrap()),
        names(adapted.export_params(ParamSelection::Shared).unwrap())
    );
    adapted
        .import_params(&plain.export_params(ParamSelection::All).unwrap())
        .unwrap();
}

/// Mean aligned KL of `student` to `teacher`'s carried targets over `pairs`.
fn aligned_kl(
    teacher: &cotune_host::Model,
    student: &cotune_host::Model,
    theirs: &[Example],
    ours: &[Example],
    bridge: &Bridge,
) -> f64 {
    let t_logits = teacher.answer_logits(theirs).unwrap();
    let s_logits = student.answer_logits(ours).unwrap();
    let target = bridge.carry(
        &t_logits,
        theirs,
        ours,
        Some(&s_logits),
        s_logits.vocab as usize,
        2.0,
    );
    cotune_distill::align::mean_kl(&target, &s_logits, ours, 2.0)
}

/// Two GPT-2 models with tokenizers of different sizes learn from each other: after mutual
/// learning through the bridges, each is closer to the other's carried distributions.
#[test]
fn mutual_learning_across_tokenizers_lowers_the_aligned_divergence() {
    let plugin = Plugin::find("gpt2").expect("build the plugins first");
    let texts: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "Question: what is {} plus {}? Answer: {}",
                i % 13,
                i % 7,
                i % 13 + i % 7
            )
        })
        .collect();
    let small = cotune_data::Tokenizer::train(texts.clone(), 280).unwrap();
    let large = cotune_data::Tokenizer::train(texts, 330).unwrap();
    assert_ne!(small.fingerprint(), large.fingerprint());
    let record = |i: usize| cotune_data::QaRecord {
        domain: "arithmetic".into(),
        question: format!("what is {} plus {}?", i % 13, i % 7),
        answer: format!("{}", i % 13 + i % 7),
    };
    let records: Vec<_> = (0..48).map(record).collect();
    let template = "Question: {question} Answer:";
    let encode = |t: &cotune_data::Tokenizer| -> Vec<Example> {
        records
            .iter()
            .map(|r| cotune_data::encode_example(t, template, r))
            .collect()
    };
    let (left_ex, right_ex) = (encode(&small), encode(&large));
    assert_ne!(
        left_ex, right_ex,
        "the two tokenizers split the texts differently"
    );
    let config = "vocab_size = 352\nn_positions = 64\nn_embd = 32\nn_layer = 1\nn_head = 2\n";
    let build = |seed| {
        ModelRecipe {
            plugin: &plugin,
            architecture: "gpt2",
            config,
            seed,
            checkpoint: None,
        }
        .build()
        .unwrap()
    };
    let settings = TrainSettings {
        learning_rate: 5e-3,
        batch_size: 8,
        kl_weight: 0.9,
        ..TrainSettings::default()
    };
    for alignment in [Alignment::Mined, Alignment::Uld] {
        let (mut left, mut right) = (build(1), build(2));
        // A teacher worth learning from: the right model first learns the answers.
        let mut step = 0;
        for e in 0..6 {
            cotune_distill::train_epoch(&mut right, None, &right_ex, &settings, e, &mut step)
                .unwrap();
        }
        let to_left = Bridge::new(alignment, ("right", &large), ("left", &small), 8)
            .unwrap()
            .expect("different tokenizers need a bridge");
        let to_right = Bridge::new(alignment, ("left", &small), ("right", &large), 8)
            .unwrap()
            .unwrap();
        let before = aligned_kl(&right, &left, &right_ex, &left_ex, &to_left);
        let (mut ls, mut rs) = (0, step);
        for e in 0..3 {
            cotune_distill::mutual_learning_epoch(
                Learner {
                    model: &mut left,
                    teacher_view: None,
                    settings: &settings,
                    step: &mut ls,
                    examples: &left_ex,
                },
                Learner {
                    model: &mut right,
                    teacher_view: None,
                    settings: &settings,
                    step: &mut rs,
                    examples: &right_ex,
                },
                e,
                None,
                Bridges {
                    to_left: Some(&to_left),
                    to_right: Some(&to_right),
                },
            )
            .unwrap();
        }
        let after = aligned_kl(&right, &left, &right_ex, &left_ex, &to_left);
        assert!(
            after < 0.7 * before,
            "{}: aligned KL {before:.4} -> {after:.4}",
            alignment.name()
        );
    }
    // "shared" refuses the two vocabularies, naming both models and both sizes.
    let err = Bridge::new(Alignment::Shared, ("llm", &large), ("dpm", &small), 8).unwrap_err();
    let text = err.to_string();
    for part in [
        "llm",
        "dpm",
        &large.vocab_size().to_string(),
        &small.vocab_size().to_string(),
    ] {
        assert!(text.contains(part), "{text}");
    }
}
