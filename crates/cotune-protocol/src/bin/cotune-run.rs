//! Runs one experiment or comparison config, or resumes a run folder; prints the folder.
//!
//! ```text
//! cotune-run <config.toml> [--resume <run folder>] [--runs-dir <dir>] [--cache-dir <dir>]
//! ```
//!
//! `cargo xtask run` is the usual entry point; this binary is what it amounts to, usable where
//! the workspace is not (and by the tests that kill a run and resume it).

use std::path::PathBuf;

use anyhow::{bail, Context};
use cotune_protocol::{run_with, RunOptions};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let (mut resume, mut runs_dir, mut cache_dir) = (None, None, None);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .map(PathBuf::from)
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--resume" => resume = Some(value("--resume")?),
            "--runs-dir" => runs_dir = Some(value("--runs-dir")?),
            "--cache-dir" => cache_dir = Some(value("--cache-dir")?),
            "-h" | "--help" => {
                println!(
                    "cotune-run <config.toml> [--resume <run folder>] [--runs-dir <dir>] [--cache-dir <dir>]"
                );
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}"),
            other => config = Some(PathBuf::from(other)),
        }
    }
    if config.is_none() && resume.is_none() {
        bail!("usage: cotune-run <config.toml> [--resume <run folder>]");
    }
    let comparison = match (&resume, &config) {
        (Some(dir), _) => dir.join("compare.toml").is_file(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|t| cotune_protocol::compare::is_comparison(&t))
            .unwrap_or(false),
        (None, None) => false,
    };
    let dir = if comparison {
        if cache_dir.is_some() {
            bail!(
                "--cache-dir applies to one run; a comparison's runs use their configs' cache_dir"
            );
        }
        cotune_protocol::compare::run_comparison(
            config.as_deref().unwrap_or("".as_ref()),
            resume.as_deref(),
            &std::env::current_dir()?,
            runs_dir.as_deref(),
        )?
    } else if runs_dir.is_none() && cache_dir.is_none() {
        cotune_protocol::run(config.as_deref().unwrap_or("".as_ref()), resume.as_deref())?
    } else {
        run_with(&RunOptions {
            config: config.unwrap_or_default(),
            resume,
            root: std::env::current_dir()?,
            runs_dir,
            cache_dir,
        })?
    };
    println!("{}", dir.display());
    Ok(())
}
