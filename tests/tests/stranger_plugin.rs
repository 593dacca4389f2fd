//! A plugin written outside the workspace, against the SDK alone, slots into the host and
//! passes every conformance check.

use cotune_conformance::{failed_checks, format_table, run_suite, Subject};
use cotune_tests::{build_fixture, fixture_library};

fn stranger() -> Subject {
    let library = fixture_library("stranger-plugin");
    let path = library.to_str().expect("the target folder's path is UTF-8");
    Subject::open(path, None, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_strangers_plugin_passes_every_check() {
    let subject = stranger();
    assert_eq!(subject.plugin.name(), "stranger");
    assert_eq!(subject.plugin.version(), "0.3.0");
    assert_eq!(subject.plugin.architectures(), ["one-block"]);
    let failed = failed_checks(&subject);
    if !failed.is_empty() {
        let table = format_table(&subject, &run_suite(&subject));
        panic!("the stranger's plugin failed {failed:?}:\n{table}");
    }
}

#[test]
fn a_repeated_fixture_build_compiles_nothing() {
    // The first build may compile the fixture (and, in a fresh target folder, burn); a second
    // must find everything fresh, or every test run would pay for a rebuild.
    let first = fixture_library("stranger-plugin");
    let again = build_fixture("stranger-plugin").unwrap_or_else(|e| panic!("{e}"));
    eprintln!("repeated build of `stranger-plugin`: {:.1}s", again.seconds);
    assert_eq!(again.library, first);
    assert!(
        again.compiled.is_empty(),
        "a repeated build compiled {:?}",
        again.compiled
    );
}
