//! Helpers for the workspace-level tests in `tests/tests/` (and xtask's, which build a crate
//! that `cargo xtask new-plugin` wrote).
//!
//! The fixtures in `tests/fixtures/` are plugin crates kept outside the workspace, as an outside
//! author's crate would be. [`build_fixture`] builds one the way such an author would, with two
//! twists that keep it fast: the crate is copied into the target folder next to a copy of the
//! workspace's `Cargo.lock` (so it resolves to the very dependency versions the workspace
//! uses), and it is built with the workspace's target folder (so the compiled burn is reused,
//! not rebuilt). The fixture's own `Cargo.toml` repeats the workspace's profile settings, which
//! the artifacts' hashes depend on. Features count too: cotune-sdk declares the features the
//! rest of the workspace switches on in burn's dependency tree, so a fixture resolves that tree
//! as a `--workspace` build does and reuses its burn (`tests/tests/burn_once.rs` checks it).
//! The SDK itself compiles once more for the crates outside the workspace (cargo hashes a path
//! dependency outside the building workspace by its absolute path); they share that build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

/// What can go wrong while building a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// There is no fixture crate of that name.
    #[error("no fixture crate `{name}`: {manifest} does not exist")]
    NotFound {
        /// The fixture's folder name.
        name: String,
        /// The manifest looked for.
        manifest: PathBuf,
    },
    /// Copying the fixture failed.
    #[error("copying fixture `{name}` to {to}: {cause}")]
    Copy {
        /// The fixture's folder name.
        name: String,
        /// The destination that failed.
        to: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Cargo could not be started.
    #[error("starting `{cargo}` to build fixture `{name}`: {cause}")]
    Spawn {
        /// The fixture's folder name.
        name: String,
        /// The cargo executable.
        cargo: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Cargo failed.
    #[error("building fixture `{name}` failed ({status}):\n{stderr}")]
    Build {
        /// The fixture's folder name.
        name: String,
        /// Cargo's exit status.
        status: std::process::ExitStatus,
        /// Cargo's error output.
        stderr: String,
    },
    /// Cargo succeeded but reported no dynamic library.
    #[error("building fixture `{name}` produced no dynamic library (cargo reported: {artifacts})")]
    NoLibrary {
        /// The fixture's folder name.
        name: String,
        /// The artifacts cargo did report.
        artifacts: String,
    },
}

/// The workspace's root folder (the one holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("the tests package lives one level below the workspace root")
    .to_path_buf()
}

/// Where the running tests were built: the target folder and whether it is a release build.
///
/// Read from the test executable's own path (`<target>/<debug|release>/deps/<test>`), so it is
/// right however the target folder was chosen (`CARGO_TARGET_DIR`, `--target-dir`, config);
/// falls back to `$CARGO_TARGET_DIR`, then `<workspace>/target`, in debug mode.
pub fn target_dir() -> (PathBuf, bool) {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        let profile = deps.parent()?;
        let release = match profile.file_name()?.to_str()? {
            "debug" => false,
            "release" => true,
            _ => return None,
        };
        if deps.file_name()? != "deps" {
            return None;
        }
        Some((profile.parent()?.to_path_buf(), release))
    });
    from_exe.unwrap_or_else(|| {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| workspace_root().join(d))
            .unwrap_or_else(|| workspace_root().join("target"));
        (dir, false)
    })
}

/// A built fixture library.
#[derive(Debug, Clone)]
pub struct BuiltFixture {
    /// The dynamic library cargo produced.
    pub library: PathBuf,
    /// How long `cargo build` took, in seconds (informational only).
    pub seconds: f64,
    /// The crates cargo had to compile (not fresh), by name; empty when everything was reused.
    pub compiled: Vec<String>,
    /// Of those, the ones from a registry (burn and its dependencies), by package id: empty
    /// when the build reused every one the workspace's build compiled.
    pub compiled_from_registry: Vec<String>,
    /// The compiler's warnings about the crate itself, as rendered.
    pub warnings: Vec<String>,
}

/// Rewrites every relative `path = "..."` in a manifest to an absolute one, resolved against
/// the fixture's own folder, so the copy finds the SDK in the checkout.
fn absolute_paths(manifest: &str, fixture_dir: &Path) -> String {
    const KEY: &str = "path = \"";
    let mut out = String::with_capacity(manifest.len());
    let mut rest = manifest;
    while let Some(start) = rest.find(KEY) {
        let value_start = start + KEY.len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        let value = &rest[value_start..value_start + len];
        out.push_str(&rest[..value_start]);
        let path = Path::new(value);
        if path.is_relative() {
            let resolved = fixture_dir.join(path);
            let resolved = resolved.canonicalize().unwrap_or(resolved);
            // TOML basic strings treat backslashes as escapes (Windows paths).
            out.push_str(&resolved.display().to_string().replace('\\', "/"));
        } else {
            out.push_str(value);
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// Writes `bytes` to `path` unless it already holds them, so unchanged files keep their
/// modification times and cargo sees nothing to rebuild.
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// Copies the fixture's files (not a `target/` or `Cargo.lock` inside it) from `from` to `to`.
fn copy_tree(from: &Path, to: &Path, fixture_dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            if name != "target" {
                copy_tree(&src, &dst, fixture_dir)?;
            }
        } else if name == "Cargo.toml" && from == fixture_dir {
            let text = std::fs::read_to_string(&src)?;
            write_if_changed(&dst, absolute_paths(&text, fixture_dir).as_bytes())?;
        } else if name != "Cargo.lock" {
            write_if_changed(&dst, &std::fs::read(&src)?)?;
        }
    }
    Ok(())
}

/// Copies the fixture crate `tests/fixtures/<name>` to `<target>/cotune-fixtures/<name>/` with
/// the workspace's `Cargo.lock` and its path dependencies made absolute, as an outside author's
/// crate next to a checkout; returns the copy's folder.
pub fn copy_fixture(name: &str) -> Result<PathBuf, FixtureError> {
    let fixture_dir = workspace_root().join("tests").join("fixtures").join(name);
    copy_crate(name, &fixture_dir)
}

/// Copies the crate in `from` to `<target>/cotune-fixtures/<name>/` (a fixed place, so a
/// repeated build finds its own artifacts fresh: unchanged files keep their modification times)
/// with the workspace's `Cargo.lock` and its path dependencies made absolute; returns the copy's
/// folder.
pub fn copy_crate(name: &str, from: &Path) -> Result<PathBuf, FixtureError> {
    let manifest = from.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(FixtureError::NotFound {
            name: name.to_string(),
            manifest,
        });
    }
    let (target, _) = target_dir();
    let copy = target.join("cotune-fixtures").join(name);
    let copy_err = |to: &Path| {
        let to = to.to_path_buf();
        move |cause| FixtureError::Copy {
            name: name.to_string(),
            to,
            cause,
        }
    };
    copy_tree(from, &copy, from).map_err(copy_err(&copy))?;
    let lock = copy.join("Cargo.lock");
    std::fs::copy(workspace_root().join("Cargo.lock"), &lock).map_err(copy_err(&lock))?;
    Ok(copy)
}

/// Builds the fixture crate `tests/fixtures/<name>` and returns its dynamic library.
///
/// The crate is copied to `<target>/cotune-fixtures/<name>/` ([`copy_fixture`]), then built
/// by [`build_crate`].
pub fn build_fixture(name: &str) -> Result<BuiltFixture, FixtureError> {
    // Tests on several threads may build the same fixture: one copy and one cargo at a time.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let copy = copy_fixture(name)?;
    build_crate(name, &copy)
}

/// Builds the crate in `dir` (`name` is for messages) as an outside author would, by
/// `cargo build --manifest-path <dir>/Cargo.toml` with `CARGO_TARGET_DIR` set to the tests' own
/// target folder and the same profile as the tests, and returns its dynamic library, what cargo
/// compiled and the crate's warnings.
pub fn build_crate(name: &str, dir: &Path) -> Result<BuiltFixture, FixtureError> {
    let (target, release) = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = dir.join("Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--message-format=json"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if release {
        command.arg("--release");
    }
    let start = Instant::now();
    let output = command.output().map_err(|cause| FixtureError::Spawn {
        name: name.to_string(),
        cargo: cargo.clone(),
        cause,
    })?;
    let seconds = start.elapsed().as_secs_f64();

    // Cargo's JSON messages name the library it produced (no guessing at file names), every
    // crate it compiled, and the compiler's diagnostics.
    let mut artifacts = Vec::new();
    let mut compiled = Vec::new();
    let mut compiled_from_registry = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let own = message["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path());
        match message["reason"].as_str() {
            Some("compiler-message") => {
                let rendered = message["message"]["rendered"].as_str().unwrap_or("?");
                match message["message"]["level"].as_str() {
                    Some("error") => errors.push(rendered.to_string()),
                    Some("warning") if own => warnings.push(rendered.to_string()),
                    _ => {}
                }
            }
            Some("compiler-artifact") => {
                if message["fresh"] == false {
                    compiled.push(
                        message["target"]["name"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string(),
                    );
                    let package = message["package_id"].as_str().unwrap_or("?");
                    if package.starts_with("registry+") {
                        compiled_from_registry.push(package.to_string());
                    }
                }
                if own {
                    let files = message["filenames"].as_array().into_iter().flatten();
                    artifacts.extend(files.filter_map(|f| f.as_str()).map(str::to_string));
                }
            }
            _ => {}
        }
    }
    if !output.status.success() {
        return Err(FixtureError::Build {
            name: name.to_string(),
            status: output.status,
            stderr: errors.join("") + &String::from_utf8_lossy(&output.stderr),
        });
    }
    let library = artifacts
        .iter()
        .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
        .map(PathBuf::from)
        .ok_or_else(|| FixtureError::NoLibrary {
            name: name.to_string(),
            artifacts: format!("{artifacts:?}"),
        })?;
    Ok(BuiltFixture {
        library,
        seconds,
        compiled,
        compiled_from_registry,
        warnings,
    })
}

/// The fixture's library, built at most once per test process (tests in one binary run on
/// several threads and share it); panics with cargo's message when the build fails.
pub fn fixture_library(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let fixture = build_fixture(name).unwrap_or_else(|e| panic!("{e}"));
    let compiled = if fixture.compiled.is_empty() {
        "nothing compiled".to_string()
    } else {
        format!("compiled {}", fixture.compiled.join(", "))
    };
    eprintln!(
        "built fixture `{name}` in {:.1}s ({compiled}): {}",
        fixture.seconds,
        fixture.library.display()
    );
    built.insert(name.to_string(), fixture.library.clone());
    fixture.library
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_manifest_paths_become_absolute() {
        let dir = workspace_root()
            .join("tests")
            .join("fixtures")
            .join("stranger-plugin");
        let text = "a = { path = \"../../../crates/cotune-sdk\" }\nb = { path = \"/abs\" }\n";
        let out = absolute_paths(text, &dir);
        let sdk = workspace_root().join("crates").join("cotune-sdk");
        assert!(
            out.contains(&format!("path = \"{}\"", sdk.display())),
            "{out}"
        );
        assert!(out.contains("path = \"/abs\""), "{out}");
    }

    #[test]
    fn the_target_folder_holds_this_test() {
        let (target, _) = target_dir();
        let exe = std::env::current_exe().unwrap();
        assert!(
            exe.starts_with(&target),
            "{} vs {}",
            exe.display(),
            target.display()
        );
    }

    #[test]
    fn a_missing_fixture_is_named() {
        let err = build_fixture("no-such-fixture").unwrap_err().to_string();
        assert!(err.contains("no-such-fixture"), "{err}");
    }
}
