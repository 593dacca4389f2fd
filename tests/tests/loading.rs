//! The host refuses what is not a plugin for this host, before running any of it, with a message
//! that names the file: another ABI version (both versions named), a file that is not a library,
//! a library without the ABI probe.

use cotune_host::{probe_abi_version, HostError, Plugin, ABI_VERSION};
use cotune_tests::fixture_library;

#[test]
fn a_plugin_with_another_abi_version_is_refused_naming_both_versions_and_the_file() {
    let library = fixture_library("wrong-abi-plugin");
    assert_eq!(
        probe_abi_version(&library).unwrap_or_else(|e| panic!("{e}")),
        999
    );
    let err = Plugin::load(&library).unwrap_err();
    assert!(
        matches!(
            err,
            HostError::AbiMismatch {
                plugin: 999,
                host: ABI_VERSION,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    for needle in [
        "ABI version 999".to_string(),
        format!("ABI version {ABI_VERSION}"),
        library.display().to_string(),
    ] {
        assert!(
            message.contains(&needle),
            "`{needle}` missing from: {message}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_library_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let fake = dir.path().join(cotune_host::plugin_file_name("fake"));
    std::fs::write(&fake, "this is a text file, not a shared library\n").expect("writing");
    let err = Plugin::load(&fake).unwrap_err();
    assert!(matches!(err, HostError::Load { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&fake.display().to_string()), "{message}");
}

#[test]
fn a_library_without_the_probe_is_refused_with_its_path() {
    let library = fixture_library("no-probe-library");
    let err = Plugin::load(&library).unwrap_err();
    assert!(matches!(err, HostError::Load { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&library.display().to_string())
            && message.contains("cotune_abi_version")
            && message.contains("not a cotune plugin"),
        "{message}"
    );
}
