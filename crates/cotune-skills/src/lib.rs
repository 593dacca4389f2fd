//! Procedurally generated "skill" QA domains for cotune: small arithmetic, unit and base
//! conversions, calendar arithmetic, word tasks and translation into made-up languages.
//!
//! Every domain is a set of distinct instances (two numbers to add, a phrase to translate, ...)
//! with exactly one correct answer each. [`generate`] draws `count` distinct instances of a
//! domain with a [`SeededRng`] seeded from the seed and the domain's name (so adding a domain
//! never changes another's records) and phrases each with one of the domain's two or three
//! templates, chosen at random per instance. Two templates of one instance differ only in
//! [`FUNCTION_WORDS`] and word order: [`content_words`] of all phrasings of an instance are the
//! same.
//!
//! [`write_domain`] and [`write_all`] write the records as JSON lines, in the format of the
//! project's `data/*.jsonl` files (`{"domain": ..., "question": ..., "answer": ...}`).

#![warn(missing_docs)]

mod domains;
mod lexicon;
mod words;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use cotune_data::{QaRecord, SeededRng};

pub use lexicon::{lexicon, Lexicon};

/// Every domain's name, in the order [`write_all`] writes them.
pub const DOMAINS: &[&str] = &domains::NAMES;

/// The words two templates of one instance may differ in: function words and instruction
/// verbs. Every other word of a question (numbers, units, names, the words to rearrange) is in
/// every phrasing of the instance.
pub const FUNCTION_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "what",
    "which",
    "is",
    "are",
    "how",
    "many",
    "give",
    "write",
    "compute",
    "calculate",
    "convert",
    "count",
    "in",
    "into",
    "to",
    "of",
    "and",
    "or",
    "there",
    "this",
    "that",
    "me",
    "now",
    "please",
];

/// The content words of a question, sorted: lower-cased words (runs of letters and digits)
/// that are not [`FUNCTION_WORDS`]. Equal for every phrasing of one instance.
pub fn content_words(question: &str) -> Vec<String> {
    let mut words: Vec<String> = question
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !FUNCTION_WORDS.contains(w))
        .map(str::to_string)
        .collect();
    words.sort_unstable();
    words
}

/// The number of distinct instances of a domain; `None` for an unknown domain.
pub fn capacity(domain: &str) -> Option<usize> {
    domains::spec(domain).map(|spec| spec.capacity() as usize)
}

/// One drawn instance: its family, its index in the family, the template that phrases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Draw {
    family: usize,
    index: u64,
    template: usize,
}

fn unknown(domain: &str) -> anyhow::Error {
    anyhow!(
        "unknown skill domain `{domain}`; the domains are: {}",
        DOMAINS.join(", ")
    )
}

/// Draws `count` distinct instances of `domain` with their templates.
///
/// Each draw picks a family among those not yet used up, with the family's weight, then an
/// index in the family not drawn before, then a template. The draws of a smaller `count` are
/// the first draws of a larger one.
fn draw(domain: &str, count: usize, seed: u64) -> anyhow::Result<(domains::Spec, Vec<Draw>)> {
    let spec = domains::spec(domain).ok_or_else(|| unknown(domain))?;
    let capacity = spec.capacity();
    if count as u64 > capacity {
        bail!(
            "skill domain `{domain}` has {capacity} distinct instances, fewer than the {count} \
             requested"
        );
    }
    let mut rng = SeededRng::for_stream(seed, &format!("cotune-skills/{domain}"));
    let mut used: Vec<HashSet<u64>> = vec![HashSet::new(); spec.families.len()];
    let mut draws = Vec::with_capacity(count);
    while draws.len() < count {
        let open = |f: usize| (used[f].len() as u64) < spec.families[f].size;
        let total: u64 = (0..spec.families.len())
            .filter(|&f| open(f))
            .map(|f| spec.families[f].weight)
            .sum();
        let mut pick = rng.below(total as usize) as u64;
        let family = (0..spec.families.len())
            .filter(|&f| open(f))
            .find(|&f| {
                let weight = spec.families[f].weight;
                if pick < weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .expect("the pick is below the open families' total weight");
        let size = spec.families[family].size;
        let index = loop {
            let index = rng.below(size as usize) as u64;
            if used[family].insert(index) {
                break index;
            }
        };
        let template = rng.below(spec.templates);
        draws.push(Draw {
            family,
            index,
            template,
        });
    }
    Ok((spec, draws))
}

/// `count` distinct instances of `domain` as records, deterministic in (domain, count, seed).
///
/// No two records are the same instance, however phrased. An error names the domain if it is
/// unknown, or the domain and `count` if the domain has fewer than `count` instances
/// ([`capacity`]).
pub fn generate(domain: &str, count: usize, seed: u64) -> anyhow::Result<Vec<QaRecord>> {
    let (spec, draws) = draw(domain, count, seed)?;
    Ok(draws
        .into_iter()
        .map(|d| {
            let (question, answer) = (spec.render)(d.family, d.index, d.template);
            QaRecord {
                domain: domain.to_string(),
                question,
                answer,
            }
        })
        .collect())
}

/// One record as a line of the project's data files (without the newline):
/// `{"domain": "...", "question": "...", "answer": "..."}`.
pub fn json_line(record: &QaRecord) -> String {
    let text = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "{{\"domain\": {}, \"question\": {}, \"answer\": {}}}",
        text(&record.domain),
        text(&record.question),
        text(&record.answer)
    )
}

/// Writes [`generate`]`(domain, count, seed)` to `<dir>/<domain>.jsonl`, one record a line,
/// and returns the file's path.
///
/// `dir` is created if missing; the records are written to a temporary file in `dir` that is
/// then renamed, so the file is either the old one or complete.
pub fn write_domain(dir: &Path, domain: &str, count: usize, seed: u64) -> anyhow::Result<PathBuf> {
    let records = generate(domain, count, seed)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{domain}.jsonl"));
    let temp = dir.join(format!(".{domain}.jsonl.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        for record in &records {
            writeln!(file, "{}", json_line(record))?;
        }
        file.into_inner()?.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}

/// A file [`write_all`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The domain.
    pub domain: &'static str,
    /// `<dir>/<domain>.jsonl`.
    pub path: PathBuf,
    /// Its number of records: `count`, or the domain's capacity if smaller.
    pub rows: usize,
}

/// Writes every domain of [`DOMAINS`] with [`write_domain`]: `count` records each, or all of a
/// domain's instances if it has fewer.
pub fn write_all(dir: &Path, count: usize, seed: u64) -> anyhow::Result<Vec<Written>> {
    DOMAINS
        .iter()
        .map(|&domain| {
            let rows = count.min(capacity(domain).ok_or_else(|| unknown(domain))?);
            let path = write_domain(dir, domain, rows, seed)?;
            Ok(Written { domain, path, rows })
        })
        .collect()
}

#[cfg(test)]
mod tests;
