//! Broken models are caught, and the failure is named: a model that sees the future fails
//! `causality`, NaN logits are refused by the host (`logits-shape` fails), and a panic inside a
//! plugin reaches the host as an error of kind `Panic` while the host carries on.

use cotune_conformance::{causality, failed_checks, Subject};
use cotune_host::{DeviceChoice, ErrorKind, Example, HostError, ParamSelection, Plugin};
use cotune_tests::fixture_library;

fn broken(architecture: &str) -> Subject {
    let library = fixture_library("broken-plugin");
    let path = library.to_str().expect("the target folder's path is UTF-8");
    Subject::open(path, Some(architecture), None).unwrap_or_else(|e| panic!("{e}"))
}

fn batch() -> Vec<Example> {
    vec![
        Example::new(vec![1, 2, 3], vec![4, 5]),
        Example::new(vec![6, 7], vec![8, 9, 10]),
    ]
}

#[test]
fn a_model_that_sees_the_future_fails_causality() {
    let subject = broken("leaky");
    let why = causality(&subject).expect_err("a model without a causal mask passed causality");
    assert!(why.contains("sees the future"), "{why}");
    let failed = failed_checks(&subject);
    println!("`leaky` fails: {failed:?}");
    assert!(failed.contains(&"causality"), "{failed:?}");
}

#[test]
fn nan_logits_are_refused_by_the_host_and_fail_logits_shape() {
    let subject = broken("nan-logits");
    let model = subject.model(0).unwrap_or_else(|e| panic!("{e}"));
    let err = model.answer_logits(&batch()).unwrap_err();
    assert!(matches!(err, HostError::InvalidOutput { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("NaN") && message.contains("broken/nan-logits"),
        "{message}"
    );
    let failed = failed_checks(&subject);
    println!("`nan-logits` fails: {failed:?}");
    assert!(failed.contains(&"logits-shape"), "{failed:?}");
}

#[test]
fn a_panicking_forward_becomes_a_panic_error_and_the_host_lives_on() {
    let plugin = Plugin::load(fixture_library("broken-plugin")).unwrap_or_else(|e| panic!("{e}"));
    let config = plugin
        .example_config("panicky")
        .expect("the fixture has an example config");
    let mut model = plugin
        .new_model("panicky", &config, 0, DeviceChoice::FLEX)
        .unwrap_or_else(|e| panic!("{e}"));

    let err = model.answer_logits(&batch()).unwrap_err();
    assert_eq!(err.plugin_kind(), Some(ErrorKind::Panic), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("failed on purpose") && message.contains("answer_logits"),
        "{message}"
    );

    // The host is still alive: the same call fails the same clean way, other verbs of the same
    // model work, and so does another model from the same library.
    let again = model.answer_logits(&batch()).unwrap_err();
    assert_eq!(again.plugin_kind(), Some(ErrorKind::Panic), "{again}");
    let step = model
        .train_step(&batch(), None, &Default::default())
        .unwrap_err();
    assert_eq!(step.plugin_kind(), Some(ErrorKind::Panic), "{step}");
    let params = model
        .export_params(ParamSelection::All)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!params.is_empty());
    model
        .import_params(&params)
        .unwrap_or_else(|e| panic!("{e}"));

    let healthy = plugin
        .new_model("leaky", &config, 0, DeviceChoice::FLEX)
        .unwrap_or_else(|e| panic!("{e}"));
    let logits = healthy
        .answer_logits(&batch())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logits.batch, 2);
}
