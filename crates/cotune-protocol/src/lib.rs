//! Co-PLMs co-tuning: the server and device roles, the rounds of every method, accounting of
//! the bytes that cross the network, and the experiment runner behind `cargo xtask run`.
//!
//! One round of `co-plms` (see `DESIGN.md`): each device tunes its distilled proxy's adapters
//! on its own data (DST), then its SLM and proxy learn from each other's answer distributions
//! (SAML) over the configured transfer set; the proxy's shared part goes up, the server averages
//! (or keeps one per device), learns mutually with its LLM on a subsample of the public corpus,
//! and sends the result down. [`run`] does everything from a config file and returns the run
//! folder.

#![warn(missing_docs)]

pub mod compare;
pub mod config;
pub mod fedmkt;
pub mod message;
pub mod plot;
mod progress;
pub mod roles;
mod run;

pub use config::{ConfigError, ExperimentConfig, Method, TransferSet};
pub use run::{
    check_config, run, run_with, DeviceRecord, LlmRecord, RoundRecord, RunOptions, Scores,
};
