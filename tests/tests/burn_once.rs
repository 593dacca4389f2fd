//! Burn is compiled once for the workspace and the plugins built beside it.
//!
//! Cargo compiles a crate once per set of features of its whole dependency tree. The fixture
//! plugins (like an outside author's plugin) are built on their own, next to the workspace's
//! `Cargo.lock` and in its target folder: if any crate in burn's dependency tree resolves with
//! other features there than in the workspace, burn and everything above it compile a second
//! time (that once doubled a fresh `cargo xtask test`). cotune-sdk declares the features the
//! workspace switches on in that tree (its build-dependencies do so for the proc-macro side);
//! this test checks that every feature set the plugin alone needs is one the workspace builds,
//! comparing the two resolutions with
//! `cargo tree` (offline: the packages are already downloaded by the build that ran the test).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use cotune_tests::{copy_fixture, workspace_root};

/// `cargo tree` in `dir` with `args`, one line per package.
fn tree(dir: &Path, args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args(["tree", "--offline", "--prefix", "none"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Package `name version` -> the feature sets it resolves with.
fn features(lines: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let Some((package, rest)) = line.split_once(" [") else {
            continue;
        };
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let set = rest.split(']').next().unwrap_or("").to_string();
        map.entry(format!("{name} {version}"))
            .or_default()
            .insert(set);
    }
    map
}

#[test]
fn a_plugin_built_alone_resolves_burns_tree_like_the_workspace() {
    let format = ["-f", "{p} [{f}]"];
    let root = workspace_root();
    let mut args = vec!["--workspace", "-e", "normal,build,dev"];
    args.extend(format);
    let workspace = features(&tree(&root, &args));
    for fixture in ["stranger-plugin", "broken-plugin"] {
        let copy = copy_fixture(fixture).unwrap();
        let mut args = vec!["-e", "normal,build"];
        args.extend(format);
        let alone = features(&tree(&copy, &args));
        let burn_tree: BTreeSet<String> = tree(&copy, &["-e", "normal,build", "-p", "burn"])
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some(format!("{} {}", w.next()?, w.next()?))
            })
            .collect();
        assert!(burn_tree.len() > 20, "burn's tree: {burn_tree:?}");
        let differ: Vec<String> = alone
            .iter()
            .filter(|(package, _)| burn_tree.contains(*package))
            // Each feature set the plugin needs must be one the workspace builds; the workspace
            // may build more (a build-time copy of a crate with fewer features is its own unit).
            .filter(|(package, set)| !workspace.get(*package).is_some_and(|w| set.is_subset(w)))
            .map(|(package, set)| {
                format!(
                    "{package}: alone {set:?}, in the workspace {:?}",
                    workspace.get(package)
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{fixture} would compile burn a second time; declare these features in \
             cotune-sdk's Cargo.toml:\n{}",
            differ.join("\n")
        );
    }
}

/// The dependency profiles (`[profile.dev.package."*"]`, `[profile.test.package."*"]`) of a
/// manifest: different settings also make cargo compile burn again.
fn dependency_profiles(manifest: &Path) -> Vec<Option<toml::Value>> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    ["dev", "test"]
        .iter()
        .map(|p| {
            doc.get("profile")
                .and_then(|v| v.get(p))
                .and_then(|v| v.get("package"))
                .and_then(|v| v.get("*"))
                .cloned()
        })
        .collect()
}

#[test]
fn fixture_plugins_build_dependencies_with_the_workspaces_profile() {
    let root = workspace_root();
    let workspace = dependency_profiles(&root.join("Cargo.toml"));
    assert!(workspace.iter().all(Option::is_some), "{workspace:?}");
    for fixture in ["stranger-plugin", "broken-plugin"] {
        let manifest = root.join("tests/fixtures").join(fixture).join("Cargo.toml");
        assert_eq!(
            dependency_profiles(&manifest),
            workspace,
            "{} must repeat the workspace's dependency profiles",
            manifest.display()
        );
    }
}
