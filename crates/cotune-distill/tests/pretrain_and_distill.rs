//! Pre-training is cached and reused; distillation lowers the student's KL to the teacher.
//! Needs the gpt2 plugin built (`cargo build --workspace`).

use cotune_distill::{
    distill, pretrain_cached, DistillConfig, ModelRecipe, PretrainConfig, TrainSettings,
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
        &first.model,
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
