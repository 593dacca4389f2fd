//! The comparison: one base experiment run under several variants (methods, transfer sets,
//! SLM initialisations) and seeds, summarised in one table of means and standard deviations.
//!
//! A comparison file has a single `[compare]` table:
//!
//! ```toml
//! [compare]
//! name = "compare"
//! base = "default.toml"        # relative to this file
//! seeds = [0, 1, 2]
//! pretrain_seed = 0            # optional: the same pre-trained LLM and SLMs for every seed
//! set = { rounds = 2 }         # optional: dotted keys changed in the base for every run
//! # optional: the variants the share of the achievable gain is read against
//! bounds = { lower = "standalone", slm_upper = "llm-kd", llm_upper = "centralized" }
//!
//! [[compare.variants]]
//! name = "co-plms/local"
//! method = "co-plms"
//! set = { "train.transfer" = "local", "devices.*.init" = "random" }
//! ```
//!
//! Keys in `set` are dotted paths into the base config; `*` stands for every element of an
//! array and a number for one element. Every run's config is built and checked before the first
//! one starts. Runs go to `<runs_dir>/<name>-<timestamp>/<variant>-seed<k>/`; a comparison
//! folder given to `--resume` skips finished runs and resumes unfinished ones.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::config::ExperimentConfig;
use crate::records::{read_metrics, RoundRecord, Scores};
use crate::runner::{run_with, RunOptions};

/// The `[compare]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// The comparison's name (its folder is `<runs_dir>/<name>-<timestamp>`).
    pub name: String,
    /// The base experiment config, relative to the comparison file.
    pub base: PathBuf,
    /// Seeds every variant runs with.
    pub seeds: Vec<u64>,
    /// Fixes the pre-training seed across seeds (see `ExperimentConfig::pretrain_seed`).
    #[serde(default)]
    pub pretrain_seed: Option<u64>,
    /// Dotted keys set in the base for every run.
    #[serde(default)]
    pub set: toml::Table,
    /// The variants, in table order.
    pub variants: Vec<Variant>,
    /// The variants the gains are read against, for the table of the share of the achievable
    /// gain each variant recovers.
    #[serde(default)]
    pub bounds: Option<Bounds>,
}

/// The bounds of a comparison, as variant names: a variant's share of the achievable gain is
/// `(variant - lower) / (upper - lower)`, on the mean SLM EM; for the LLM, the lower bound is
/// where each run's LLM started (round 0) and the upper one `llm_upper`'s gain over its own
/// start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// The SLMs' lower bound (e.g. `"standalone"`).
    pub lower: String,
    /// The SLMs' upper reference (e.g. `"llm-kd"`).
    pub slm_upper: String,
    /// The LLM's upper reference (e.g. `"centralized"`).
    #[serde(default)]
    pub llm_upper: Option<String>,
}

/// One line of the comparison.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Its name in the table.
    pub name: String,
    /// The method (any name `method = "..."` accepts).
    pub method: String,
    /// Dotted keys set on top of the comparison's `set`.
    #[serde(default)]
    pub set: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareFile {
    compare: CompareConfig,
}

/// Whether `text` is a comparison file (it has a `[compare]` table).
pub fn is_comparison(text: &str) -> bool {
    text.parse::<toml::Table>()
        .map(|t| t.contains_key("compare"))
        .unwrap_or(false)
}

/// Sets `value` at the dotted `path` inside `root`; `*` means every array element.
pub fn set_path(root: &mut toml::Value, path: &str, value: &toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("key {path:?} has an empty part"));
    }
    set_parts(root, &parts, value, path)
}

fn set_parts(
    node: &mut toml::Value,
    parts: &[&str],
    value: &toml::Value,
    path: &str,
) -> Result<(), String> {
    let (head, rest) = (parts[0], &parts[1..]);
    match node {
        toml::Value::Array(items) => {
            let targets: Vec<&mut toml::Value> = if head == "*" {
                items.iter_mut().collect()
            } else {
                let i: usize = head
                    .parse()
                    .map_err(|_| format!("key {path:?}: {head:?} indexes an array"))?;
                let len = items.len();
                vec![items
                    .get_mut(i)
                    .ok_or_else(|| format!("key {path:?}: index {i} of an array of {len}"))?]
            };
            if rest.is_empty() {
                return Err(format!("key {path:?} ends at an array element"));
            }
            for t in targets {
                set_parts(t, rest, value, path)?;
            }
            Ok(())
        }
        toml::Value::Table(table) => {
            if rest.is_empty() {
                table.insert(head.to_string(), value.clone());
                return Ok(());
            }
            let child = table
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            set_parts(child, rest, value, path)
        }
        other => Err(format!(
            "key {path:?}: {head:?} is inside a {}, not a table",
            other.type_str()
        )),
    }
}

fn folder_name(variant: &str, seed: u64) -> String {
    let clean: String = variant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-seed{seed}")
}

/// One run of the comparison, its config built.
struct Planned {
    variant: usize,
    seed: u64,
    folder: String,
    config: ExperimentConfig,
}

fn plan(file: &Path, root: &Path) -> anyhow::Result<(CompareConfig, Vec<Planned>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let CompareFile { compare } = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("comparison config {}: {e}", file.display()))?;
    if compare.seeds.is_empty() || compare.variants.is_empty() {
        bail!(
            "comparison config {}: `compare.seeds` and `compare.variants` need at least one entry",
            file.display()
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for v in &compare.variants {
        if !names.insert(folder_name(&v.name, 0)) {
            bail!(
                "comparison config {}: two variants are named {:?} (or the same once made a folder name)",
                file.display(),
                v.name
            );
        }
    }
    if let Some(b) = &compare.bounds {
        let keys = [
            ("lower", Some(&b.lower)),
            ("slm_upper", Some(&b.slm_upper)),
            ("llm_upper", b.llm_upper.as_ref()),
        ];
        for (key, name) in keys {
            if let Some(name) = name.filter(|n| !compare.variants.iter().any(|v| v.name == **n)) {
                bail!(
                    "comparison config {}: `compare.bounds.{key}` = {name:?} is not the name of \
                     a variant",
                    file.display()
                );
            }
        }
    }
    let base_path = file.parent().unwrap_or(Path::new(".")).join(&compare.base);
    let base_text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "comparison config {}: reading its base {}",
            file.display(),
            base_path.display()
        )
    })?;
    let base: toml::Value = toml::from_str(&base_text)
        .map_err(|e| anyhow::anyhow!("base config {}: {e}", base_path.display()))?;
    let mut planned = Vec::new();
    for (vi, v) in compare.variants.iter().enumerate() {
        for &seed in &compare.seeds {
            let mut value = base.clone();
            let apply = |value: &mut toml::Value, set: &toml::Table, whose: &str| {
                for (k, x) in set {
                    set_path(value, k, x).map_err(|e| {
                        anyhow::anyhow!("comparison config {}: {whose}: {e}", file.display())
                    })?;
                }
                anyhow::Ok(())
            };
            apply(&mut value, &compare.set, "compare.set")?;
            apply(&mut value, &v.set, &format!("variant {:?}", v.name))?;
            let folder = folder_name(&v.name, seed);
            let table = value.as_table_mut().expect("a TOML document is a table");
            table.insert("method".into(), toml::Value::String(v.method.clone()));
            table.insert("seed".into(), toml::Value::Integer(seed as i64));
            table.insert("name".into(), toml::Value::String(folder.clone()));
            if let Some(p) = compare.pretrain_seed {
                table.insert("pretrain_seed".into(), toml::Value::Integer(p as i64));
            }
            let text = toml::to_string(&value)?;
            let label = PathBuf::from(format!(
                "{} (variant {:?}, seed {seed})",
                file.display(),
                v.name
            ));
            let config = ExperimentConfig::parse(&text, &label)?;
            config.check(&label, root)?;
            planned.push(Planned {
                variant: vi,
                seed,
                folder,
                config,
            });
        }
    }
    Ok((compare, planned))
}

/// Builds and checks every run of the comparison in `file` without training; returns how many
/// runs it has.
pub fn check_comparison(file: &Path, root: &Path) -> anyhow::Result<usize> {
    Ok(plan(file, root)?.1.len())
}

/// Runs (or resumes) the comparison in `file`; returns its folder.
pub fn run_comparison(
    file: &Path,
    resume: Option<&Path>,
    root: &Path,
    runs_dir: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let started = std::time::Instant::now();
    let (compare, planned) = match resume {
        Some(dir) => plan(&dir.join("compare.toml"), root)
            .with_context(|| format!("resuming comparison {}", dir.display()))?,
        None => plan(file, root)?,
    };
    let dir = match resume {
        Some(dir) => dir.to_path_buf(),
        None => {
            let runs = runs_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.join(&planned[0].config.runs_dir));
            let base = runs.join(format!("{}-{}", compare.name, crate::runner::utc_stamp()));
            let mut dir = base.clone();
            let mut n = 1;
            while dir.exists() {
                n += 1;
                dir = PathBuf::from(format!("{}-{n}", base.display()));
            }
            std::fs::create_dir_all(&dir)?;
            // The comparison file and its base, copied so `--resume` needs nothing else.
            let text = std::fs::read_to_string(file)?;
            let mut table: toml::Table = text.parse()?;
            let base_name = compare
                .base
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| "base.toml".into());
            std::fs::copy(
                file.parent().unwrap_or(Path::new(".")).join(&compare.base),
                dir.join(&base_name),
            )?;
            if let Some(toml::Value::Table(c)) = table.get_mut("compare") {
                c.insert(
                    "base".into(),
                    toml::Value::String(base_name.display().to_string()),
                );
            }
            std::fs::write(dir.join("compare.toml"), toml::to_string(&table)?)?;
            dir
        }
    };
    eprintln!(
        "[cotune] comparison {}: {} runs ({} variants x {} seeds) -> {}",
        compare.name,
        planned.len(),
        compare.variants.len(),
        compare.seeds.len(),
        dir.display()
    );
    let mut finished: Vec<(usize, u64, Vec<RoundRecord>, f64)> = Vec::new();
    for (k, p) in planned.iter().enumerate() {
        let run_dir = dir.join(&p.folder);
        let metrics = run_dir.join("metrics.jsonl");
        let t = std::time::Instant::now();
        if !run_dir.join("results.csv").is_file() {
            eprintln!(
                "[cotune] comparison run {}/{}: {}",
                k + 1,
                planned.len(),
                p.folder
            );
            std::fs::create_dir_all(&run_dir)?;
            let resolved = run_dir.join("config.resolved.toml");
            if !resolved.is_file() {
                std::fs::write(&resolved, toml::to_string(&p.config)?)?;
            }
            run_with(&RunOptions {
                config: resolved,
                resume: Some(run_dir.clone()),
                root: root.to_path_buf(),
                runs_dir: None,
                cache_dir: None,
            })
            .with_context(|| format!("comparison run {}", p.folder))?;
        }
        let records = read_metrics(&metrics)?;
        // A run finished before a `--resume` counts its rounds' own wall time.
        let seconds = match t.elapsed().as_secs_f64() {
            s if s < 1.0 => records.iter().map(|r| r.seconds).sum(),
            s => s,
        };
        finished.push((p.variant, p.seed, records, seconds));
    }
    let split = planned
        .first()
        .map_or("test", |p| p.config.eval_split.describe());
    let (md, csv) = summarise(&compare, split, &finished);
    std::fs::write(dir.join("comparison.md"), &md)?;
    std::fs::write(dir.join("comparison.csv"), csv)?;
    eprintln!("{md}");
    eprintln!(
        "[cotune] comparison done in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(dir)
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

fn cell(values: &[f64]) -> String {
    match mean_std(values) {
        Some((m, s)) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s),
        None => "-".into(),
    }
}

fn csv_cell(values: &[f64]) -> String {
    match mean_std(values) {
        Some((m, s)) => format!("{:.4},{:.4}", 100.0 * m, 100.0 * s),
        None => ",".into(),
    }
}

/// What one run contributes to its variant's line.
struct RunSummary {
    devices: Vec<(String, String, Option<Scores>)>,
    llm: Option<Scores>,
    /// The LLM where it started (round 0).
    llm_start: Option<Scores>,
    bytes_per_round: f64,
    /// The SLM's optimiser steps over every round, mean over devices.
    slm_steps: f64,
}

fn run_summary(records: &[RoundRecord]) -> Option<RunSummary> {
    let last = records.last()?;
    let llm = records
        .iter()
        .rev()
        .find_map(|r| r.llm.as_ref().map(|l| l.macro_average));
    let rounds: Vec<&RoundRecord> = records.iter().filter(|r| r.round > 0).collect();
    let total: u64 = rounds
        .iter()
        .flat_map(|r| r.devices.iter().map(|d| d.bytes_up + d.bytes_down))
        .sum();
    let per = (rounds.len() * last.devices.len()).max(1) as f64;
    let steps: u64 = rounds
        .iter()
        .flat_map(|r| r.devices.iter().map(|d| u64::from(d.losses.slm_steps)))
        .sum();
    Some(RunSummary {
        llm_start: records
            .first()
            .and_then(|r| r.llm.as_ref().map(|l| l.macro_average)),
        slm_steps: steps as f64 / last.devices.len().max(1) as f64,
        devices: last
            .devices
            .iter()
            .map(|d| (d.device.clone(), d.slm_architecture.clone(), d.slm))
            .collect(),
        llm,
        bytes_per_round: total as f64 / per,
    })
}

fn summarise(
    compare: &CompareConfig,
    split: &str,
    finished: &[(usize, u64, Vec<RoundRecord>, f64)],
) -> (String, String) {
    let mut device_names: Vec<(String, Vec<String>)> = Vec::new();
    for (_, _, records, _) in finished {
        if let Some(s) = run_summary(records) {
            for (d, a, _) in s.devices {
                // A variant may put another SLM on a device: the header names every one.
                match device_names.iter_mut().find(|(x, _)| *x == d) {
                    Some((_, archs)) if !archs.contains(&a) => archs.push(a),
                    Some(_) => {}
                    None => device_names.push((d, vec![a])),
                }
            }
        }
    }
    let mut md = format!(
        "# Comparison {}\n\nSLM scores on each device's {split} split after the last round, and the \
         server LLM's macro average over the device domains; mean ± standard deviation over seeds \
         {}, in %. Bytes: mean up + down per device per round.\n\n",
        compare.name,
        compare
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut csv = String::from("variant,method,metric,target,mean,std,seeds\n");
    for (metric, pick) in [
        ("EM", (|s: &Scores| s.em) as fn(&Scores) -> f64),
        ("Rouge-L", |s: &Scores| s.rouge_l),
    ] {
        md.push_str(&format!("## {metric}\n\n| variant | method |"));
        for (d, archs) in &device_names {
            md.push_str(&format!(" {d} ({}) |", archs.join(", ")));
        }
        md.push_str(" SLM average | LLM | bytes/round |\n|---|---|");
        md.push_str(&"---|".repeat(device_names.len() + 3));
        md.push('\n');
        for (vi, v) in compare.variants.iter().enumerate() {
            let runs: Vec<RunSummary> = finished
                .iter()
                .filter(|(k, ..)| *k == vi)
                .filter_map(|(_, _, r, _)| run_summary(r))
                .collect();
            md.push_str(&format!("| {} | {} |", v.name, v.method));
            let mut put = |target: &str, values: Vec<f64>, md: &mut String| {
                md.push_str(&format!(" {} |", cell(&values)));
                csv.push_str(&format!(
                    "{},{},{metric},{target},{},{}\n",
                    v.name,
                    v.method,
                    csv_cell(&values),
                    values.len()
                ));
            };
            for (d, _) in &device_names {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.devices.iter().find(|x| x.0 == *d).and_then(|x| x.2))
                    .map(|s| pick(&s))
                    .collect();
                put(d, values, &mut md);
            }
            let averages: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    let v: Vec<f64> = r
                        .devices
                        .iter()
                        .filter_map(|x| x.2)
                        .map(|s| pick(&s))
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                })
                .collect();
            put("slm-average", averages, &mut md);
            let llm: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.llm)
                .map(|s| pick(&s))
                .collect();
            put("llm", llm, &mut md);
            let bytes: Vec<f64> = runs.iter().map(|r| r.bytes_per_round).collect();
            let b = mean_std(&bytes).map(|(m, _)| m).unwrap_or(0.0);
            md.push_str(&format!(" {} |\n", human_bytes(b)));
            if metric == "EM" {
                csv.push_str(&format!(
                    "{},{},bytes-per-round,device,{b:.0},,{}\n",
                    v.name,
                    v.method,
                    bytes.len()
                ));
            }
        }
        md.push('\n');
    }
    gains_table(&mut md, compare, finished);
    let total: f64 = finished.iter().map(|f| f.3).sum();
    md.push_str(&format!(
        "Wall time of the runs: {:.1} min.\n",
        total / 60.0
    ));
    (md, csv)
}

/// Each variant's SLM steps and, with `[compare.bounds]`, its share of the achievable gain.
fn gains_table(
    md: &mut String,
    compare: &CompareConfig,
    finished: &[(usize, u64, Vec<RoundRecord>, f64)],
) {
    let runs_of = |vi: usize| -> Vec<RunSummary> {
        finished
            .iter()
            .filter(|(k, ..)| *k == vi)
            .filter_map(|(_, _, r, _)| run_summary(r))
            .collect()
    };
    let slm_mean = |runs: &[RunSummary]| -> Option<f64> {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let em: Vec<f64> = r.devices.iter().filter_map(|x| x.2).map(|s| s.em).collect();
                (!em.is_empty()).then(|| em.iter().sum::<f64>() / em.len() as f64)
            })
            .collect();
        mean_std(&v).map(|(m, _)| m)
    };
    let llm_gain = |runs: &[RunSummary]| -> Option<f64> {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| Some(r.llm?.em - r.llm_start?.em))
            .collect();
        mean_std(&v).map(|(m, _)| m)
    };
    let index = |name: &str| compare.variants.iter().position(|v| v.name == name);
    let bounds = compare.bounds.as_ref();
    let slm_range = bounds.and_then(|b| {
        let lower = slm_mean(&runs_of(index(&b.lower)?))?;
        Some((lower, slm_mean(&runs_of(index(&b.slm_upper)?))? - lower))
    });
    let llm_range = bounds
        .and_then(|b| b.llm_upper.as_deref())
        .and_then(|u| llm_gain(&runs_of(index(u)?)));
    // No share where the upper reference gained nothing over the lower bound: there is no
    // achievable gain to recover.
    let share = |gain: Option<f64>, range: Option<f64>| match (gain, range) {
        (Some(g), Some(r)) if r > 1e-9 => format!("{:.0}%", 100.0 * g / r + 0.0),
        _ => "-".to_string(),
    };
    md.push_str(
        "## Steps and gains (EM)\n\nSLM steps: the SLM's optimiser steps over every round, \
         mean over devices and seeds. SLM share: (variant - lower bound) / (upper reference - \
         lower bound) on the SLM average. LLM gain: final minus round 0, macro average; LLM \
         share: that gain over the LLM upper reference's (- where the upper reference gained \
         nothing).",
    );
    if let Some(b) = bounds {
        md.push_str(&format!(
            " Bounds: lower `{}`, SLM upper `{}`, LLM upper `{}`.",
            b.lower,
            b.slm_upper,
            b.llm_upper.as_deref().unwrap_or("-")
        ));
    }
    md.push_str(
        "\n\n| variant | SLM steps | SLM average | SLM share | LLM gain | LLM share |\n\
         |---|---|---|---|---|---|\n",
    );
    for (vi, v) in compare.variants.iter().enumerate() {
        let runs = runs_of(vi);
        let steps: Vec<f64> = runs.iter().map(|r| r.slm_steps).collect();
        let slm = slm_mean(&runs);
        let gain = llm_gain(&runs);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            v.name,
            mean_std(&steps).map_or("-".into(), |(m, _)| format!("{m:.0}")),
            slm.map_or("-".into(), |m| format!("{:.2}", 100.0 * m)),
            share(
                slm.zip(slm_range).map(|(m, (lower, _))| m - lower),
                slm_range.map(|r| r.1)
            ),
            gain.map_or("-".into(), |g| format!("{:+.2}", 100.0 * g)),
            share(gain, llm_range),
        ));
    }
    md.push('\n');
}

fn human_bytes(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_whose_slm_a_variant_swaps_names_every_architecture() {
        let record = |arch: &str, em: f64| RoundRecord {
            round: 1,
            method: "co-plms".into(),
            devices: vec![crate::records::DeviceRecord {
                device: "geography".into(),
                slm_architecture: arch.into(),
                participated: true,
                slm: Some(Scores { em, rouge_l: em }),
                dpm: None,
                losses: Default::default(),
                bytes_up: 1,
                bytes_down: 1,
                wire: None,
            }],
            llm: None,
            server_losses: Default::default(),
            uploads: None,
            seconds: 0.0,
            alignment_seconds: None,
        };
        let variant = |name: &str| Variant {
            name: name.into(),
            method: "co-plms".into(),
            set: toml::Table::new(),
        };
        let compare = CompareConfig {
            name: "c".into(),
            base: "b.toml".into(),
            seeds: vec![0],
            pretrain_seed: None,
            set: toml::Table::new(),
            variants: vec![variant("reference"), variant("gru")],
            bounds: None,
        };
        let finished = vec![
            (0, 0, vec![record("gpt2/gpt2", 0.15)], 1.0),
            (1, 0, vec![record("gru/gru", 0.195)], 1.0),
        ];
        let (md, _) = summarise(&compare, "test", &finished);
        assert!(md.contains("| geography (gpt2/gpt2, gru/gru) |"), "{md}");
        assert!(md.contains("| gru | co-plms | 19.50 ± 0.00 |"), "{md}");
    }

    #[test]
    fn the_share_of_the_gain_is_read_between_the_bounds() {
        // Two devices; the LLM starts at 10 EM in every run.
        let run = |slm: [f64; 2], llm: f64, steps: u32| {
            let device = |em: f64| crate::records::DeviceRecord {
                device: format!("d{em}"),
                slm_architecture: "gpt2/gpt2".into(),
                participated: true,
                slm: Some(Scores { em, rouge_l: em }),
                dpm: None,
                losses: crate::records::DeviceLosses {
                    slm_steps: steps,
                    ..Default::default()
                },
                bytes_up: 1,
                bytes_down: 1,
                wire: None,
            };
            let llm_at = |em: f64| crate::records::LlmRecord {
                macro_average: Scores { em, rouge_l: em },
                per_domain: Vec::new(),
            };
            let record = |round: usize, em: [f64; 2], llm: f64| RoundRecord {
                round,
                method: "m".into(),
                devices: vec![device(em[0]), device(em[1])],
                llm: Some(llm_at(llm)),
                server_losses: Default::default(),
                uploads: None,
                seconds: 0.0,
                alignment_seconds: None,
            };
            vec![record(0, [0.0, 0.0], 0.10), record(1, slm, llm)]
        };
        let variant = |name: &str| Variant {
            name: name.into(),
            method: "m".into(),
            set: toml::Table::new(),
        };
        let compare = CompareConfig {
            name: "c".into(),
            base: "b.toml".into(),
            seeds: vec![0],
            pretrain_seed: None,
            set: toml::Table::new(),
            variants: ["low", "method", "upper", "central"].map(variant).to_vec(),
            bounds: Some(Bounds {
                lower: "low".into(),
                slm_upper: "upper".into(),
                llm_upper: Some("central".into()),
            }),
        };
        let finished = vec![
            (0, 0, run([0.10, 0.10], 0.10, 7), 1.0),
            (1, 0, run([0.20, 0.40], 0.16, 30), 1.0),
            (2, 0, run([0.50, 0.50], 0.10, 30), 1.0),
            (3, 0, run([0.10, 0.10], 0.30, 0), 1.0),
        ];
        let (md, _) = summarise(&compare, "test", &finished);
        // SLM: (30 - 10) / (50 - 10) = 50%; LLM: +6 of centralized's +20 = 30%.
        assert!(
            md.contains("| method | 30 | 30.00 | 50% | +6.00 | 30% |"),
            "{md}"
        );
        assert!(
            md.contains("| upper | 30 | 50.00 | 100% | +0.00 | 0% |"),
            "{md}"
        );
        assert!(md.contains("| low | 7 | 10.00 | 0% |"), "{md}");
        assert!(md.contains("Bounds: lower `low`"), "{md}");
    }

    #[test]
    fn bounds_must_name_variants() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("b.toml"), "").unwrap();
        let file = tmp.path().join("c.toml");
        std::fs::write(
            &file,
            "[compare]\nname = \"c\"\nbase = \"b.toml\"\nseeds = [0]\n\
             bounds = { lower = \"standalone\", slm_upper = \"llm-kd\" }\n\
             [[compare.variants]]\nname = \"standalone\"\nmethod = \"standalone\"\n",
        )
        .unwrap();
        let err = plan(&file, tmp.path()).err().expect("refused").to_string();
        assert!(
            err.contains("compare.bounds.slm_upper") && err.contains("\"llm-kd\""),
            "{err}"
        );
    }

    #[test]
    fn dotted_keys_reach_tables_and_every_array_element() {
        let mut v: toml::Value = toml::from_str(
            "rounds = 3\n[train]\nslm = { learning_rate = 1.0 }\n[[devices]]\ninit = \"a\"\n[[devices]]\ninit = \"b\"\n",
        )
        .unwrap();
        set_path(&mut v, "rounds", &toml::Value::Integer(1)).unwrap();
        set_path(&mut v, "train.slm.learning_rate", &toml::Value::Float(0.5)).unwrap();
        set_path(
            &mut v,
            "train.transfer",
            &toml::Value::String("local".into()),
        )
        .unwrap();
        set_path(
            &mut v,
            "devices.*.init",
            &toml::Value::String("random".into()),
        )
        .unwrap();
        set_path(&mut v, "devices.1.init", &toml::Value::String("x".into())).unwrap();
        assert_eq!(v["rounds"].as_integer(), Some(1));
        assert_eq!(v["train"]["slm"]["learning_rate"].as_float(), Some(0.5));
        assert_eq!(v["train"]["transfer"].as_str(), Some("local"));
        assert_eq!(v["devices"][0]["init"].as_str(), Some("random"));
        assert_eq!(v["devices"][1]["init"].as_str(), Some("x"));
        let err = set_path(&mut v, "devices.7.init", &toml::Value::Integer(0)).unwrap_err();
        assert!(err.contains("index 7 of an array of 2"), "{err}");
        let err = set_path(&mut v, "rounds.x", &toml::Value::Integer(0)).unwrap_err();
        assert!(err.contains("\"rounds.x\""), "{err}");
        assert!(set_path(&mut v, "train..x", &toml::Value::Integer(0)).is_err());
    }

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[0.5]), Some((0.5, 0.0)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn comparison_files_are_recognised() {
        assert!(is_comparison("[compare]\nname = \"x\"\n"));
        assert!(!is_comparison("name = \"x\"\nmethod = \"co-plms\"\n"));
        assert!(!is_comparison("not toml ["));
    }
}
