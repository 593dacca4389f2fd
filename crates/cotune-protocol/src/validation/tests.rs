//! Every training key of `configs/smoke.toml` set to a bad value is refused by its full key and
//! the value, before anything else is looked at (no plugin, no data file).

use std::path::{Path, PathBuf};

use crate::compare::set_path;
use crate::config::ExperimentConfig;

fn smoke_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.toml")
}

/// The smoke config with every `(dotted key, value)` of `sets` applied, its values checked.
fn check_with(sets: &[(&str, toml::Value)]) -> Result<(), (String, String)> {
    let text = std::fs::read_to_string(smoke_path()).unwrap();
    let mut config: toml::Value = toml::from_str(&text).unwrap();
    for (key, value) in sets {
        set_path(&mut config, key, value).unwrap();
    }
    let text = toml::to_string(&config).unwrap();
    ExperimentConfig::parse(&text, &smoke_path())
        .unwrap()
        .check_values()
}

/// Asserts that `sets` is refused under `key` with a reason that holds every one of `shown`.
fn assert_refused(sets: &[(&str, toml::Value)], key: &str, shown: &[&str]) {
    let (got, reason) = check_with(sets).expect_err(&format!("{sets:?} should be refused"));
    assert_eq!(got, key, "{sets:?}: {reason}");
    for s in shown {
        assert!(reason.contains(s), "{sets:?}: {reason:?} should say {s:?}");
    }
}

const TABLES: [&str; 6] = [
    "pretrain.train",
    "distill.train",
    "train.slm",
    "train.dpm",
    "train.dst",
    "train.llm",
];

#[test]
fn the_smoke_config_passes() {
    check_with(&[]).unwrap();
}

#[test]
fn every_optimiser_field_of_every_table_is_checked() {
    let float = toml::Value::Float;
    let bad: Vec<(&str, toml::Value, &str)> = vec![
        ("learning_rate", float(-1e-3), "got -0.001"),
        ("learning_rate", float(0.0), "got 0"),
        ("learning_rate", float(f64::NAN), "got NaN"),
        ("learning_rate", float(f64::INFINITY), "got inf"),
        ("weight_decay", float(-0.5), "got -0.5"),
        ("weight_decay", float(f64::NAN), "got NaN"),
        ("grad_clip_norm", float(-1.0), "got -1"),
        ("grad_clip_norm", float(f64::INFINITY), "got inf"),
        ("temperature", float(0.0), "got 0"),
        ("temperature", float(-2.0), "got -2"),
        ("temperature", float(f64::NAN), "got NaN"),
        ("kl_weight", float(1.5), "got 1.5"),
        ("kl_weight", float(-0.25), "got -0.25"),
        ("kl_weight", float(f64::NAN), "got NaN"),
        ("batch_size", toml::Value::Integer(0), "got 0"),
    ];
    for table in TABLES {
        for (field, value, shown) in &bad {
            let key = format!("{table}.{field}");
            assert_refused(&[(&key, value.clone())], &key, &[shown]);
        }
        // The edges of each range are accepted.
        for (field, value) in [
            ("kl_weight", float(0.0)),
            ("kl_weight", float(1.0)),
            ("weight_decay", float(0.0)),
            ("grad_clip_norm", float(0.0)),
            ("batch_size", toml::Value::Integer(1)),
        ] {
            let key = format!("{table}.{field}");
            check_with(&[(&key, value)]).unwrap_or_else(|e| panic!("{key}: {e:?}"));
        }
    }
}

#[test]
fn a_cosine_needs_more_steps_than_its_warm_up() {
    let int = toml::Value::Integer;
    for table in TABLES {
        let (warmup, total) = (
            format!("{table}.warmup_steps"),
            format!("{table}.total_steps"),
        );
        // Set through either key, the pair is refused under total_steps, naming both values.
        assert_refused(
            &[(&warmup, int(30)), (&total, int(30))],
            &total,
            &["warmup_steps = 30", "got 30"],
        );
        assert_refused(
            &[(&warmup, int(600)), (&total, int(564))],
            &total,
            &["warmup_steps = 600", "got 564"],
        );
        check_with(&[(&warmup, int(30)), (&total, int(31))]).unwrap();
        check_with(&[(&warmup, int(30)), (&total, int(0))]).unwrap();
    }
}

#[test]
fn every_count_of_a_round_and_of_pre_training_is_checked() {
    for key in [
        "pretrain.max_epochs",
        "pretrain.patience",
        "train.local_epochs",
        "train.saml_epochs",
        "train.server_epochs",
        "train.server_public_sample",
        "train.top_k",
    ] {
        assert_refused(&[(key, toml::Value::Integer(0))], key, &["got 0"]);
        check_with(&[(key, toml::Value::Integer(1))]).unwrap_or_else(|e| panic!("{key}: {e:?}"));
    }
    let transfer_size = ("train.transfer_size", toml::Value::Integer(0));
    for set in ["public", "synthetic"] {
        let transfer = ("train.transfer", toml::Value::String(set.into()));
        assert_refused(
            &[transfer, transfer_size.clone()],
            "train.transfer_size",
            &[&format!("transfer = \"{set}\""), "got 0"],
        );
    }
    // The local transfer set adds no examples: the size is not read.
    check_with(&[transfer_size]).unwrap();
}

#[test]
fn the_round_shares_and_the_gate_are_checked() {
    let float = toml::Value::Float;
    for (key, value, shown) in [
        ("train.device_fraction", float(0.0), "got 0"),
        ("train.device_fraction", float(1.5), "got 1.5"),
        ("train.device_fraction", float(f64::NAN), "got NaN"),
        ("train.gate_sharpness", float(0.0), "got 0"),
        ("train.gate_sharpness", float(f64::INFINITY), "got inf"),
        ("train.trim", float(0.5), "got 0.5"),
        ("train.trim", float(-0.1), "got -0.1"),
        ("train.screen_ratio", float(0.5), "got 0.5"),
        ("train.screen_ratio", float(f64::NAN), "got NaN"),
    ] {
        assert_refused(&[(key, value)], key, &[shown]);
    }
}

#[test]
fn the_labellers_are_named_values() {
    let text = std::fs::read_to_string(smoke_path()).unwrap();
    for (key, good, bad) in [
        ("train.prompt_labeller", "own", "teacher"),
        ("train.server_prompt_labeller", "proxy", "llm"),
    ] {
        let mut config: toml::Value = toml::from_str(&text).unwrap();
        set_path(&mut config, key, &toml::Value::String(good.into())).unwrap();
        ExperimentConfig::parse(&toml::to_string(&config).unwrap(), &smoke_path()).unwrap();
        set_path(&mut config, key, &toml::Value::String(bad.into())).unwrap();
        let err = ExperimentConfig::parse(&toml::to_string(&config).unwrap(), &smoke_path())
            .expect_err(&format!("{key} = {bad:?} should be refused"));
        let shown = format!("{err:#}");
        let field = key.rsplit('.').next().unwrap();
        assert!(
            shown.contains(bad) && shown.contains(field),
            "{key} = {bad:?}: {shown}"
        );
    }
}
