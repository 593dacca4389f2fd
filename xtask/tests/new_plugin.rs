//! A plugin written by `cargo xtask new-plugin` builds in the workspace's target folder without
//! compiling burn (or any other crates.io dependency) again, warning-free and formatted, passes
//! every conformance check and its own tests.
//!
//! The crate is written into a fresh temporary folder, as a user gets it, then copied to a fixed
//! place in the target folder (`cotune_tests::copy_crate`, which keeps unchanged files'
//! modification times), so a repeated run compiles nothing and a first run compiles the new
//! crate and, unless a fixture plugin already did, the SDK: cargo hashes a path dependency
//! outside the building workspace by its absolute path, so the SDK compiles once for the crates
//! outside the workspace, which share it because their settings are the same.

use std::path::Path;
use std::process::Command;

use cotune_conformance::{failed_checks, format_table, run_suite, Subject};
use cotune_tests::{build_crate, copy_crate, target_dir, workspace_root};

const NAME: &str = "newcomer";

/// The `[profile]` table of a manifest without the crate's own entry.
fn shared_profiles(manifest: &Path, own: &str) -> toml::Table {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    let mut profiles = doc.remove("profile").unwrap().as_table().unwrap().clone();
    let dev = profiles.get_mut("dev").unwrap().as_table_mut().unwrap();
    let packages = dev.get_mut("package").unwrap().as_table_mut().unwrap();
    assert!(
        packages.remove(own).is_some(),
        "{}: no table of {own}",
        manifest.display()
    );
    profiles
}

#[test]
fn a_new_plugin_builds_on_the_compiled_burn_and_passes_every_check() {
    let written = tempfile::tempdir().unwrap();
    let out = written.path().join(NAME);
    let made = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["new-plugin", NAME, "--out"])
        .arg(&out)
        .output()
        .expect("the xtask binary starts");
    assert!(
        made.status.success(),
        "new-plugin failed:\n{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(stdout.contains("cotune-newcomer"), "{stdout}");

    // The sources as written are formatted as `cargo fmt` leaves them (`mod tests` included).
    let rustfmt = Command::new("rustfmt")
        .args(["--check", "--edition", "2021"])
        .arg(out.join("src/lib.rs"))
        .output()
        .expect("rustfmt starts");
    assert!(
        rustfmt.status.success(),
        "the new plugin's sources are not formatted:\n{}",
        String::from_utf8_lossy(&rustfmt.stdout)
    );

    // The fixture plugins repeat the same settings, so all of them share one build of the SDK.
    let profiles = shared_profiles(&out.join("Cargo.toml"), "cotune-newcomer");
    for (fixture, own) in [
        ("stranger-plugin", "cotune-stranger"),
        ("broken-plugin", "cotune-broken"),
    ] {
        let manifest = workspace_root()
            .join("tests/fixtures")
            .join(fixture)
            .join("Cargo.toml");
        assert_eq!(
            shared_profiles(&manifest, own),
            profiles,
            "{} must repeat the profile tables new-plugin writes",
            manifest.display()
        );
    }

    let copy = copy_crate(&format!("new-plugin-{NAME}"), &out).unwrap();
    let built = build_crate(NAME, &copy).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "built the new plugin in {:.1}s, compiling {:?}",
        built.seconds, built.compiled
    );
    assert!(
        built.compiled_from_registry.is_empty(),
        "building the new plugin compiled {:?} again: its Cargo.toml or Cargo.lock no longer \
         matches the workspace's",
        built.compiled_from_registry
    );
    assert!(
        built.warnings.is_empty(),
        "the new plugin compiles with warnings:\n{}",
        built.warnings.join("\n")
    );

    let library = built
        .library
        .to_str()
        .expect("the target folder's path is UTF-8");
    let subject = Subject::open(library, None, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(subject.plugin.name(), NAME);
    assert_eq!(subject.plugin.architectures(), [NAME]);
    let failed = failed_checks(&subject);
    if !failed.is_empty() {
        let table = format_table(&subject, &run_suite(&subject));
        panic!("the new plugin failed {failed:?}:\n{table}");
    }

    // Its own tests, through the SDK's test kit, in the same target folder.
    let (target, release) = target_dir();
    let mut test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    test.current_dir(&copy)
        .env("CARGO_TARGET_DIR", &target)
        .args(["test", "--manifest-path"])
        .arg(copy.join("Cargo.toml"));
    if release {
        test.arg("--release");
    }
    let tested = test.output().expect("cargo starts");
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && report.contains("test result: ok. 5 passed"),
        "the new plugin's own tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
}

/// What `xtask new-plugin ARGS` printed after `error: `; it must fail.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("new-plugin")
        .args(args)
        .output()
        .expect("the xtask binary starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "new-plugin {args:?} succeeded");
    // The error line and what follows it up to a blank line (clap lists missing flags there).
    let at = stderr
        .find("error: ")
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    stderr[at..]
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn bad_names_and_used_folders_are_refused_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
    let message = refused(&["Mine!", "--out", fresh]);
    assert!(message.contains("`Mine!` is not valid"), "{message}");
    let message = refused(&["t5", "--out", fresh]);
    assert!(message.contains("`t5` is taken"), "{message}");
    assert!(!Path::new(fresh).exists(), "a refused name left {fresh}");

    std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
    let used = dir.path().to_str().unwrap();
    let message = refused(&["mine", "--out", used]);
    assert!(
        message.contains(used) && message.contains("not empty"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let message = refused(&["mine"]);
    assert!(message.contains("--out"), "{message}");
}
