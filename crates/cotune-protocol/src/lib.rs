//! Co-PLMs co-tuning: the server and device roles, the federated methods, accounting of the
//! bytes that cross the network, and the experiment runner behind `cargo xtask run`.
//!
//! One round of `co-plms`: each device tunes its distilled proxy's adapters on its own data
//! (DST), then its SLM and proxy learn from each other's answer distributions (SAML) over the
//! configured transfer set; the proxy's shared part goes up, the server averages (or keeps one
//! per device), learns mutually with its LLM on a subsample of the public corpus, and sends
//! the result down. [`run`] does everything from a config file and returns the run folder.
//!
//! Where things are (`docs/architecture.md` has the whole map):
//!
//! - [`config`]: the experiment file and its checks; [`compare`]: comparison files;
//! - [`methods`]: one type per method behind [`methods::FederatedMethod`], and the registry;
//! - [`roles`]: [`roles::Device`] and [`roles::Server`]; [`message`] and [`fedmkt`]: the bytes
//!   they exchange;
//! - `setup`, `runner`, `evaluation`, `checkpoint`, `results`: a run from config to files;
//! - [`records`]: what a run records; [`seed`]: the seed streams of a round.

#![warn(missing_docs)]

/// A progress line on standard error.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[cotune] {}", format!($($arg)*)) };
}

mod checkpoint;
pub mod compare;
pub mod config;
pub mod emulator;
mod evaluation;
pub mod fedmkt;
pub mod fleet;
pub mod message;
pub mod methods;
mod parallel;
pub mod parties;
mod progress;
mod recipes;
pub mod records;
mod results;
pub mod roles;
mod runner;
pub mod runtime;
mod scoring;
pub mod seed;
mod setup;
pub mod similarity;
pub mod tokens;
pub mod uploads;
mod validation;

use std::path::{Path, PathBuf};

/// Privacy accounting of `[privacy]` runs (the `cotune-accountant` crate, which depends on
/// nothing of the workspace).
pub use cotune_accountant as accountant;
/// The SVG charts of `plots/` (the `cotune-plot` crate).
pub use cotune_plot as plot;

pub use config::{ConfigError, ExperimentConfig, MethodName, TransferSet};
pub use fleet::{DeviceReport, Fleet, FleetStart, LocalFleet};
pub use methods::{FederatedMethod, Method};
pub use parties::{write_parties, DeviceData, ServerData};
pub use records::{DeviceRecord, LlmRecord, RoundRecord, Scores};
pub use runner::{check_config, participants, run_with, run_with_fleet, FleetMaker, RunOptions};
pub use runtime::{DeviceRuntime, WorkDone};
pub use validation::CheckScope;

/// Runs `config_path` (relative paths from the current directory) or resumes `resume`.
///
/// A comparison file (one with a `[compare]` table, see [`compare`]) runs every variant and
/// seed it names and returns the comparison folder; `resume` may then be that folder.
pub fn run(config_path: &Path, resume: Option<&Path>) -> anyhow::Result<PathBuf> {
    run_or_compare(&RunOptions {
        config: config_path.to_path_buf(),
        resume: resume.map(Path::to_path_buf),
        root: std::env::current_dir()?,
        runs_dir: None,
        cache_dir: None,
    })
}

/// [`run`] with every option: [`run_with`] for an experiment, [`compare::run_comparison`] for
/// a comparison file or a resumed comparison folder. A comparison's runs keep their own
/// configs' `cache_dir`, so a `cache_dir` given with one is refused rather than ignored.
pub fn run_or_compare(options: &RunOptions) -> anyhow::Result<PathBuf> {
    let comparison = match &options.resume {
        Some(dir) => dir.join("compare.toml").is_file(),
        None => std::fs::read_to_string(&options.config)
            .map(|t| compare::is_comparison(&t))
            .unwrap_or(false),
    };
    if !comparison {
        return run_with(options);
    }
    if let Some(dir) = &options.cache_dir {
        anyhow::bail!(
            "--cache-dir {} applies to one run; a comparison's runs use their configs' cache_dir",
            dir.display()
        );
    }
    compare::run_comparison(
        &options.config,
        options.resume.as_deref(),
        &options.root,
        options.runs_dir.as_deref(),
    )
}
