//! The checks every cotune model plugin must pass.
//!
//! Each check is a public function over a [`Subject`] (a loaded plugin, an architecture and a
//! configuration), so the same suite runs over our plugins and over a stranger's library:
//!
//! ```ignore
//! let subject = Subject::open("path/to/libcotune_mine.so", None, None)?;
//! let outcomes = cotune_conformance::run_suite(&subject);
//! println!("{}", cotune_conformance::format_table(&subject, &outcomes));
//! ```
//!
//! Checks assert behaviour (shapes, causality, learning, exact round trips), with fixed seeds and
//! tolerances stated in each check, never timings.

mod checks;
mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

pub use checks::*;

use cotune_host::{DeviceChoice, Model, Plugin};

/// What a suite runs on: a plugin, one of its architectures and a configuration.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The loaded plugin.
    pub plugin: Plugin,
    /// The architecture under test.
    pub architecture: String,
    /// The model configuration (TOML).
    pub config: String,
}

impl Subject {
    /// Opens a plugin by name or path; the architecture defaults to the plugin's first and the
    /// configuration to the plugin's example configuration.
    pub fn open(
        plugin: &str,
        architecture: Option<&str>,
        config: Option<String>,
    ) -> Result<Subject, String> {
        let plugin = Plugin::open(plugin).map_err(|e| e.to_string())?;
        let architecture = match architecture {
            Some(a) => a.to_string(),
            None => plugin
                .architectures()
                .first()
                .cloned()
                .ok_or_else(|| format!("plugin {} offers no architecture", plugin.name()))?,
        };
        let config = match config {
            Some(c) => c,
            None => plugin.example_config(&architecture).ok_or_else(|| {
                format!(
                    "plugin {} has no example configuration for `{architecture}`; pass one",
                    plugin.name()
                )
            })?,
        };
        Ok(Subject {
            plugin,
            architecture,
            config,
        })
    }

    /// A fresh model with `seed`.
    pub fn model(&self, seed: u64) -> Result<Model, String> {
        self.plugin
            .new_model(&self.architecture, &self.config, seed, DeviceChoice::FLEX)
            .map_err(|e| e.to_string())
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured, or why it failed.
    pub detail: String,
    /// Wall time in milliseconds (informational only).
    pub millis: u128,
}

/// A check: `Ok(what was measured)` or `Err(why it failed)`.
pub type Check = fn(&Subject) -> Result<String, String>;

/// Every check, in order.
pub const CHECKS: &[(&str, Check)] = &[
    ("metadata", metadata),
    ("determinism", determinism),
    ("logits-shape", logits_shape),
    ("causality", causality),
    ("prompt-matters", prompt_matters),
    ("padding-invariance", padding_invariance),
    ("learning", learning),
    ("mutual-learning", mutual_learning),
    ("generation", generation),
    ("param-round-trip", param_round_trip),
    ("checkpoint", checkpoint),
    ("bad-input", bad_input),
    ("lora-split", lora_split),
    ("lora-round-trip", lora_round_trip),
];

/// Runs every check; a check that panics fails with the panic's message.
pub fn run_suite(subject: &Subject) -> Vec<CheckOutcome> {
    CHECKS
        .iter()
        .map(|&(name, check)| run_check(subject, name, check))
        .collect()
}

/// Runs one check, catching panics.
pub fn run_check(subject: &Subject, name: &'static str, check: Check) -> CheckOutcome {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| check(subject))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("the check panicked: {msg}"))
    });
    let (passed, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckOutcome {
        name,
        passed,
        detail,
        millis: start.elapsed().as_millis(),
    }
}

/// A Markdown table of the outcomes, headed by the subject.
pub fn format_table(subject: &Subject, outcomes: &[CheckOutcome]) -> String {
    let mut s = format!(
        "conformance: plugin `{}` {} ({}), architecture `{}`\n\n| # | check | result | ms | detail |\n|---|---|---|---|---|\n",
        subject.plugin.name(),
        subject.plugin.version(),
        subject.plugin.path().display(),
        subject.architecture
    );
    for (i, o) in outcomes.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i + 1,
            o.name,
            if o.passed { "pass" } else { "FAIL" },
            o.millis,
            o.detail.replace('|', "\\|").replace('\n', " ")
        ));
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name)
        .collect();
    if failed.is_empty() {
        s.push_str(&format!("\nall {} checks passed\n", outcomes.len()));
    } else {
        s.push_str(&format!("\nFAILED: {}\n", failed.join(", ")));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Helpers

impl Subject {
    /// The subject's configuration with low-rank adapters of rank 2 switched on.
    pub fn lora_config(&self) -> String {
        format!("{}\n[lora]\nrank = 2\nalpha = 4.0\n", self.config)
    }

    /// A fresh model with adapters, with `seed`.
    pub fn lora_model(&self, seed: u64) -> Result<Model, String> {
        self.plugin
            .new_model(
                &self.architecture,
                &self.lora_config(),
                seed,
                DeviceChoice::FLEX,
            )
            .map_err(|e| e.to_string())
    }
}

/// Convenience for tests: runs the suite and returns the names of failed checks.
pub fn failed_checks(subject: &Subject) -> Vec<&'static str> {
    run_suite(subject)
        .into_iter()
        .filter(|o| !o.passed)
        .map(|o| o.name)
        .collect()
}
