//! Runs one experiment or comparison config, or resumes a run folder; prints the folder. Also
//! the two sides of a deployment, its certificates and the scoring of a predictions file.
//!
//! The commands are `cotune_cli`'s (`run`, `serve`, `device`, `certs`, `split`, `score`);
//! `cotune-run --help` and `cotune-run <command> --help` list them and their flags. Without a
//! command the arguments are `run`'s: `cotune-run configs/smoke.toml --runs-dir DIR`. Relative
//! paths are taken from the current folder.
//!
//! `cargo xtask run`, `serve` and `device` are the usual entry points; this binary is what they
//! amount to, usable where the workspace is not (and by the tests that kill a run, a server or
//! a device and start it again).

use std::path::PathBuf;

use clap::Parser;
use cotune_cli::{CertsArgs, Command, CotuneRun, RunArgs, ScoreArgs};
use cotune_protocol::RunOptions;

fn main() {
    // Command-line errors are clap's (exit status 2); errors while running are ours (1).
    let command = CotuneRun::parse().into_command();
    if let Err(e) = run_command(command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    let root = std::env::current_dir()?;
    match command {
        Command::Run(args) => print_folder(run(args, root)?),
        Command::Serve(args) => print_folder(cotune_deploy::serve_command(args, root)?),
        Command::Device(args) => cotune_deploy::device_command(args, root),
        Command::Certs(args) => certs(args),
        Command::Split(args) => {
            for folder in cotune_deploy::split_command(&args, &root)? {
                println!("{}", folder.display());
            }
            Ok(())
        }
        Command::Score(args) => score(args),
    }
}

fn print_folder(folder: PathBuf) -> anyhow::Result<()> {
    println!("{}", folder.display());
    Ok(())
}

fn run(args: RunArgs, root: PathBuf) -> anyhow::Result<PathBuf> {
    cotune_protocol::run_or_compare(&RunOptions {
        config: args.config().to_path_buf(),
        resume: args.resume,
        root,
        runs_dir: args.folders.runs_dir,
        cache_dir: args.folders.cache_dir,
    })
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    for line in cotune_deploy::certs_command(&args)? {
        println!("{line}");
    }
    Ok(())
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let report = cotune_eval::score_jsonl(&args.file, args.per_line)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
