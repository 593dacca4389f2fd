//! `cargo xtask new-plugin NAME --out DIR`: a new plugin crate in its own folder, outside any
//! workspace, that builds against this checkout's SDK and passes the conformance suite.
//!
//! The crate holds a small real model (`templates/plugin/lib.rs.in`: a prefix-mean language
//! model, causal by construction, with a running-sum cache) and its tests through
//! `cotune_sdk::testing`. Its `Cargo.lock` is a copy of the workspace's and its `Cargo.toml`
//! repeats the workspace's profile settings, read from the root `Cargo.toml` when the crate is
//! written. Cargo files a compiled crate under a hash of its features and profile settings, so
//! built in the workspace's target folder the new crate reuses the compiled burn and every other
//! crates.io dependency, where one differing setting would compile them all again. The SDK and
//! the workspace crates it depends on compile once more (cargo hashes a path dependency outside
//! the building workspace by its absolute path), with the workspace's settings, and are then
//! shared by every outside crate built with the same settings (the fixtures in `tests/fixtures`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The model, its tests and its README, with `@name@`, `@Type@`, `@crate@` and `@lib@` for the
/// plugin's name, its type prefix, its crate name and its library name.
const TEMPLATES: [(&str, &str); 3] = [
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs.in")),
    (
        "src/tests.rs",
        include_str!("../templates/plugin/tests.rs.in"),
    ),
    (
        "README.md",
        include_str!("../templates/plugin/README.md.in"),
    ),
];

/// Writes the crate `cotune-NAME` into `out` (a new or empty folder) and returns its folder.
pub fn new_plugin(name: &str, out: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let root = super::workspace_root();
    let workspace = read_manifest(&root.join("Cargo.toml"))?;
    check_not_taken(name, &root, &workspace)?;
    let sdk = root.join("crates").join("cotune-sdk");
    let profiles = profile_tables(&root, &workspace, &sdk, &crate_name(name))?;
    let lock = root.join("Cargo.lock");
    let lock = std::fs::read(&lock).with_context(|| format!("reading {}", lock.display()))?;

    if out.is_file() {
        bail!(
            "--out {}: a file is there; new-plugin writes into a new or empty folder",
            out.display()
        );
    }
    let mut entries = match std::fs::read_dir(out) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("--out {}: reading it", out.display())),
    };
    if entries.as_mut().is_some_and(|e| e.next().is_some()) {
        bail!(
            "--out {}: the folder is not empty; new-plugin never overwrites, so give it a new \
             or empty folder",
            out.display()
        );
    }
    std::fs::create_dir_all(out.join("src"))
        .with_context(|| format!("--out {}: creating it", out.display()))?;
    let dir = out
        .canonicalize()
        .with_context(|| format!("--out {}: resolving it", out.display()))?;

    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "Cargo.toml",
        manifest(name, &dir, &root, &sdk, &profiles)?.as_bytes(),
    )?;
    write("Cargo.lock", &lock)?;
    write(".gitignore", b"/target\n")?;
    for (file, template) in TEMPLATES {
        write(file, fill(template, name).as_bytes())?;
    }
    Ok(dir)
}

/// `cotune-NAME`: the host finds the plugin by name as the library `cotune_NAME`.
fn crate_name(name: &str) -> String {
    format!("cotune-{name}")
}

/// Refuses a name that cannot be a crate, library and architecture name as it stands.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("the plugin name is empty");
    }
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let segments_ok = name.split(['-', '_']).all(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if !starts_with_letter || !segments_ok || name.len() > 64 {
        bail!(
            "plugin name `{name}` is not valid: it must start with a lowercase letter, hold only \
             lowercase letters, digits and single `-` or `_` between them, and be at most 64 \
             characters (the crate becomes `cotune-<name>`)"
        );
    }
    Ok(())
}

/// Refuses a name whose crate is already a member of the workspace (`gpt2`, `sdk`, `tests`).
fn check_not_taken(name: &str, root: &Path, workspace: &toml::Table) -> Result<()> {
    let wanted = crate_name(name);
    let members = workspace
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("the workspace's Cargo.toml lists no `workspace.members`")?;
    for member in members.iter().filter_map(|m| m.as_str()) {
        if package_name(&read_manifest(&root.join(member).join("Cargo.toml"))?) == Some(&wanted) {
            bail!("plugin name `{name}` is taken: `{wanted}` is the workspace's crate {member}");
        }
    }
    Ok(())
}

fn read_manifest(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse()
        .with_context(|| format!("parsing {}", path.display()))
}

fn package_name(manifest: &toml::Table) -> Option<&String> {
    match manifest.get("package")?.get("name")? {
        toml::Value::String(name) => Some(name),
        _ => None,
    }
}

/// The template with the plugin's names filled in.
fn fill(template: &str, name: &str) -> String {
    let type_prefix: String = name
        .split(['-', '_'])
        .map(|s| {
            let mut chars = s.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    template
        .replace("@name@", name)
        .replace("@Type@", &type_prefix)
        .replace("@crate@", &crate_name(name))
        .replace("@lib@", &crate_name(name).replace('-', "_"))
}

/// The new crate's manifest: the package, the SDK by path (relative when the crate is inside
/// the checkout, so the two move together), its own empty workspace, and the profiles.
fn manifest(
    name: &str,
    dir: &Path,
    root: &Path,
    sdk: &Path,
    profiles: &[(String, toml::Table)],
) -> Result<String> {
    let resolve = |path: &Path| {
        path.canonicalize()
            .with_context(|| format!("resolving {}", path.display()))
    };
    let (root, sdk) = (resolve(root)?, resolve(sdk)?);
    let sdk_path = relative_inside(dir, &root, &sdk).unwrap_or(sdk);
    let sdk_path = toml::Value::String(sdk_path.display().to_string().replace('\\', "/"));
    let crate_name = crate_name(name);
    let mut text = format!(
        "[package]\n\
         name = \"{crate_name}\"\n\
         version = \"0.1.0\"\n\
         edition = \"2021\"\n\
         publish = false\n\
         description = \"A cotune model plugin: the `{name}` architecture.\"\n\
         \n\
         [lib]\n\
         # A dynamic library the host loads at run time; an rlib for tests in tests/.\n\
         crate-type = [\"cdylib\", \"rlib\"]\n\
         \n\
         [features]\n\
         default = [\"flex\"]\n\
         flex = [\"cotune-sdk/flex\"]\n\
         ndarray = [\"cotune-sdk/ndarray\"]\n\
         cuda = [\"cotune-sdk/cuda\"]\n\
         \n\
         [dependencies]\n\
         cotune-sdk = {{ path = {sdk_path}, default-features = false }}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\
         \n\
         # Not part of any workspace it is placed in.\n\
         [workspace]\n\
         \n\
         # cotune's profile settings, copied from its Cargo.toml by `cargo xtask new-plugin`.\n\
         # Cargo files each compiled crate under a hash of its settings: with the `package.\"*\"`\n\
         # tables, a build in cotune's target folder (CARGO_TARGET_DIR) reuses the burn cotune\n\
         # compiled; the SDK's tables make it compile as in cotune. Keep them in step with it.\n"
    );
    text.push_str(&render_profiles(profiles));
    Ok(text)
}

/// The profile tables as TOML, each after a blank line.
fn render_profiles(profiles: &[(String, toml::Table)]) -> String {
    let mut text = String::new();
    for (header, table) in profiles {
        text.push_str(&format!("\n[{header}]\n"));
        for (key, value) in table {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

/// `sdk`'s path from `dir` when `dir` lies inside the checkout `root` (which holds `sdk`), so
/// the two move together; `None` outside it.
fn relative_inside(dir: &Path, root: &Path, sdk: &Path) -> Option<PathBuf> {
    let below = dir.strip_prefix(root).ok()?;
    let mut path: PathBuf = below.components().map(|_| "..").collect();
    path.push(sdk.strip_prefix(root).ok()?);
    Some(path)
}

/// The `[profile.*]` tables of the new crate, as `(header, table)`:
///
/// - the workspace's `[profile.dev]` and `[profile.test]` and their `package."*"` tables, as
///   they are (they set how burn and every other registry crate compile);
/// - for every workspace crate the SDK depends on by path (and the SDK), the settings it gets in
///   the workspace. In the new crate these are not workspace members, so `package."*"` would
///   apply to them: every key `package."*"` sets is written out with the workspace's value;
/// - the new crate's own `opt-level = 3`, as the workspace's plugins have: the SDK's generic
///   trainer is instantiated inside a plugin crate.
fn profile_tables(
    root: &Path,
    workspace: &toml::Table,
    sdk: &Path,
    own_crate: &str,
) -> Result<Vec<(String, toml::Table)>> {
    let profiles = workspace.get("profile").and_then(|p| p.as_table());
    let profile = |p: &str| profiles.and_then(|t| t.get(p)).and_then(|t| t.as_table());
    let base = |p: &str| -> toml::Table {
        profile(p)
            .map(|t| {
                t.iter()
                    .filter(|(_, v)| !v.is_table())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let package = |p: &str, name: &str| -> toml::Table {
        profile(p)
            .and_then(|t| t.get("package"))
            .and_then(|t| t.get(name))
            .and_then(|t| t.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for p in ["dev", "test"] {
        if !base(p).is_empty() {
            out.push((format!("profile.{p}"), base(p)));
        }
        let star = package(p, "*");
        if !star.is_empty() {
            out.push((format!("profile.{p}.package.\"*\""), star));
        }
        if let Some(override_) = profile(p)
            .and_then(|t| t.get("build-override"))
            .and_then(|t| t.as_table())
        {
            out.push((format!("profile.{p}.build-override"), override_.clone()));
        }
    }
    for member in path_dependencies(root, workspace, sdk)? {
        let dev_own = package("dev", &member);
        let dev = member_settings(&member, &package("dev", "*"), &dev_own, &[base("dev")])?;
        // The test profile inherits the member's dev table, overridden by its own test table.
        let mut test_own = dev_own;
        test_own.extend(package("test", &member));
        let test = member_settings(
            &member,
            &package("test", "*"),
            &test_own,
            &[base("test"), base("dev")],
        )?;
        // The new crate's test profile inherits the dev table: a test table only if it differs.
        let differs = test != dev;
        out.push((format!("profile.dev.package.{member}"), dev));
        if differs {
            out.push((format!("profile.test.package.{member}"), test));
        }
    }
    let mut own = toml::Table::new();
    own.insert("opt-level".into(), toml::Value::Integer(3));
    out.push((format!("profile.dev.package.{own_crate}"), own));
    Ok(out)
}

/// A workspace member's settings as the new crate must state them: its own package table, plus
/// every key `star` sets with the value the workspace gives the member (its own table's, else
/// the first base profile's that has it, else cargo's default).
fn member_settings(
    member: &str,
    star: &toml::Table,
    own: &toml::Table,
    bases: &[toml::Table],
) -> Result<toml::Table> {
    let mut settings = own.clone();
    for key in star.keys() {
        if settings.contains_key(key) {
            continue;
        }
        let value = match bases.iter().find_map(|b| b.get(key)) {
            Some(value) => value.clone(),
            None => cargo_default(key).with_context(|| {
                format!(
                    "cannot repeat the profile setting `{key}` for {member}: its default is not \
                     known here"
                )
            })?,
        };
        settings.insert(key.clone(), value);
    }
    Ok(settings)
}

/// Cargo's defaults, in the dev and test profiles, of the settings a `package."*"` table may set.
fn cargo_default(key: &str) -> Option<toml::Value> {
    Some(match key {
        "opt-level" => toml::Value::Integer(0),
        "debug" | "debug-assertions" | "overflow-checks" | "incremental" => {
            toml::Value::Boolean(true)
        }
        "codegen-units" => toml::Value::Integer(256),
        "strip" => toml::Value::String("none".into()),
        _ => return None,
    })
}

/// The package names of `start` and of every crate it reaches through path dependencies
/// (normal and build), in the order first reached.
fn path_dependencies(root: &Path, workspace: &toml::Table, start: &Path) -> Result<Vec<String>> {
    let shared = workspace
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table());
    let mut names = Vec::new();
    let mut todo = vec![start.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let manifest_path = dir.join("Cargo.toml");
        let manifest = read_manifest(&manifest_path)?;
        let name = package_name(&manifest)
            .with_context(|| format!("{} names no package", manifest_path.display()))?;
        if names.contains(name) {
            continue;
        }
        names.push(name.clone());
        for section in ["dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (dep, spec) in deps {
                let path = if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                    shared
                        .and_then(|s| s.get(dep))
                        .and_then(|s| s.get("path"))
                        .and_then(|p| p.as_str())
                        .map(|p| root.join(p))
                } else {
                    spec.get("path")
                        .and_then(|p| p.as_str())
                        .map(|p| dir.join(p))
                };
                todo.extend(path);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_a_crate_are_refused_by_value() {
        for bad in ["My-Lm", "2lm", "my lm", "my--lm", "lm-", "_lm", "lm.x", "é"] {
            let message = check_name(bad).unwrap_err().to_string();
            assert!(
                message.contains(&format!("`{bad}`")) && message.contains("not valid"),
                "{bad}: {message}"
            );
        }
        let long = "a".repeat(65);
        assert!(check_name(&long).unwrap_err().to_string().contains(&long));
        assert_eq!(
            check_name("").unwrap_err().to_string(),
            "the plugin name is empty"
        );
        for good in ["mine", "my-lm", "tiny_rnn2", "a"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn names_of_workspace_crates_are_taken() {
        for (name, member) in [
            ("gpt2", "plugins/gpt2"),
            ("sdk", "crates/cotune-sdk"),
            ("tests", "tests"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let message = new_plugin(name, &dir.path().join("new"))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("`{name}` is taken")) && message.contains(member),
                "{message}"
            );
            assert!(
                !dir.path().join("new").exists(),
                "{name}: a folder was made"
            );
        }
    }

    #[test]
    fn a_non_empty_folder_or_a_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let message = format!("{:#}", new_plugin("mine", dir.path()).unwrap_err());
        assert!(
            message.contains(&dir.path().display().to_string()) && message.contains("not empty"),
            "{message}"
        );
        let file = dir.path().join("notes.txt");
        let message = format!("{:#}", new_plugin("mine", &file).unwrap_err());
        assert!(
            message.contains("notes.txt") && message.contains("a file"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_crate_is_written_with_every_name_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("my-lm");
        let made = new_plugin("my-lm", &out).unwrap();
        assert_eq!(made, out.canonicalize().unwrap());
        for file in [
            "Cargo.toml",
            "Cargo.lock",
            ".gitignore",
            "src/lib.rs",
            "src/tests.rs",
            "README.md",
        ] {
            let text = std::fs::read_to_string(made.join(file)).unwrap();
            assert!(
                !text.contains("@name@") && !text.contains("@Type@"),
                "{file}"
            );
        }
        let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("pub struct MyLmLm") && lib.contains("name: \"my-lm\""),
            "{lib}"
        );
        let manifest = read_manifest(&made.join("Cargo.toml")).unwrap();
        assert_eq!(package_name(&manifest).unwrap(), "cotune-my-lm");
        // Outside the checkout, the SDK is named by its absolute path.
        let sdk = manifest["dependencies"]["cotune-sdk"]["path"]
            .as_str()
            .unwrap();
        let expected = super::super::workspace_root()
            .join("crates/cotune-sdk")
            .canonicalize()
            .unwrap();
        assert_eq!(Path::new(sdk), expected);
    }

    #[test]
    fn inside_the_checkout_the_path_is_relative() {
        let (root, sdk) = (
            Path::new("/w/cotune"),
            Path::new("/w/cotune/crates/cotune-sdk"),
        );
        assert_eq!(
            relative_inside(Path::new("/w/cotune/target/x/mine"), root, sdk),
            Some(PathBuf::from("../../../crates/cotune-sdk"))
        );
        assert_eq!(relative_inside(Path::new("/w/mine"), root, sdk), None);
    }

    #[test]
    fn the_plugin_guide_shows_the_profiles_new_plugin_writes() {
        let root = super::super::workspace_root();
        let workspace = read_manifest(&root.join("Cargo.toml")).unwrap();
        let sdk = root.join("crates/cotune-sdk");
        let profiles = profile_tables(&root, &workspace, &sdk, "cotune-mine").unwrap();
        let shown = render_profiles(&profiles);
        let guide = std::fs::read_to_string(root.join("docs/plugin-authoring.md")).unwrap();
        assert!(
            guide.contains(&shown),
            "docs/plugin-authoring.md (section 1) must show the profile tables of a plugin \
             `mine`:\n{shown}"
        );
    }

    #[test]
    fn members_get_the_workspace_settings_that_the_star_table_would_replace() {
        let star: toml::Table = "opt-level = 3\ndebug = false\n".parse().unwrap();
        let own: toml::Table = "opt-level = 3\noverflow-checks = false\n".parse().unwrap();
        let base: toml::Table = "debug = \"line-tables-only\"\n".parse().unwrap();
        let settings =
            member_settings("cotune-sdk", &star, &own, std::slice::from_ref(&base)).unwrap();
        assert_eq!(
            settings,
            "opt-level = 3\noverflow-checks = false\ndebug = \"line-tables-only\"\n"
                .parse()
                .unwrap()
        );
        // Without a table of its own: cargo's default opt-level, the base profile's debug.
        let settings = member_settings("cotune-abi", &star, &toml::Table::new(), &[base]).unwrap();
        assert_eq!(
            settings,
            "opt-level = 0\ndebug = \"line-tables-only\"\n"
                .parse()
                .unwrap()
        );
        let star: toml::Table = "rpath = true\n".parse().unwrap();
        let message = format!(
            "{:#}",
            member_settings("cotune-abi", &star, &toml::Table::new(), &[]).unwrap_err()
        );
        assert!(
            message.contains("`rpath`") && message.contains("cotune-abi"),
            "{message}"
        );
    }
}
