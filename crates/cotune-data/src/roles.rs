//! The roles of the field benchmark (`[data.field]`) and the key that
//! deduplicates records across them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// `[data.field]`: the roles of the field benchmark.
///
/// ```toml
/// [data.field]
/// general = ["copying", "word_count"]   # the SLMs' general pre-training corpus
/// general_size = 1500                   # training records per general domain
/// general_valid = 100                   # validation records per general domain
/// [data.field.domains.lexicon_a]       # the LLM has something to teach
/// server = 3000
/// public_prompts = 100
/// labelled = 100
/// prompts = 1500
/// valid = 100
/// test = 200
/// llm_valid = 100
/// llm_test = 200
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRoles {
    /// Domain files (stems in `dir`) of the SLMs' general pre-training corpus; none may be a
    /// device's or the server's domain.
    pub general: Vec<String>,
    /// Training records per general domain.
    pub general_size: usize,
    /// Validation records per general domain.
    #[serde(default)]
    pub general_valid: usize,
    /// Split sizes per domain (file stem). Every device's domain needs an entry; a domain no
    /// device holds is the server's alone.
    pub domains: BTreeMap<String, DomainRoles>,
}

/// How one domain's records are shared out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainRoles {
    /// Labelled records in the server's private corpus (the LLM's training data).
    pub server: usize,
    /// Prompts without answers in the server's public pool.
    pub public_prompts: usize,
    /// Labelled records per device holding the domain.
    pub labelled: usize,
    /// Unlabelled prompts per device holding the domain.
    pub prompts: usize,
    /// Validation records per device holding the domain.
    pub valid: usize,
    /// Test records per device holding the domain.
    pub test: usize,
    /// Validation records the server scores its LLM on.
    pub llm_valid: usize,
    /// Test records the server scores its LLM on.
    pub llm_test: usize,
}

/// Words that change how a question is phrased, not which instance it asks about: function
/// words and instruction verbs.
const PHRASING_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "in",
    "into",
    "to",
    "is",
    "are",
    "was",
    "be",
    "what",
    "which",
    "who",
    "how",
    "many",
    "much",
    "does",
    "do",
    "did",
    "give",
    "write",
    "compute",
    "calculate",
    "find",
    "convert",
    "express",
    "tell",
    "me",
    "please",
    "answer",
    "question",
    "say",
    "state",
    "name",
    "there",
    "has",
    "have",
    "for",
    "as",
    "with",
    "by",
    "from",
    "that",
    "this",
    "its",
    "it",
    "and",
    "or",
    "on",
    "at",
    "result",
    "value",
    "equal",
    "equals",
    "get",
    "you",
    "your",
    "can",
    "when",
    "will",
    "would",
    "should",
    "exactly",
    "number",
];

/// The key under which two questions count as the same instance: the multiset of its content
/// words (lower-cased alphanumeric words outside [`PHRASING_WORDS`]), sorted. Templated
/// paraphrases of one instance share it; so can two different instances with the same content
/// words in another order ("3 km in m", "3 m in km"), which only ever removes more.
pub fn instance_key(question: &str) -> String {
    let lowered = question.to_lowercase();
    let cleaned: String = lowered
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| !PHRASING_WORDS.contains(w))
        .collect();
    if words.is_empty() {
        // A question of phrasing words only is its own instance.
        return cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    words.sort_unstable();
    words.join(" ")
}

impl FieldRoles {
    /// Checks what can be checked without the data; errors name `field.<key>` and the value.
    pub fn validate(&self, device_domains: &[String]) -> Result<(), DataError> {
        for domain in device_domains {
            let Some(roles) = self.domains.get(domain) else {
                return Err(DataError::config(
                    "field.domains",
                    format!("{domain:?}"),
                    "every device's domain needs its split sizes in [data.field.domains]",
                ));
            };
            if roles.test == 0 {
                return Err(DataError::config(
                    format!("field.domains.{domain}.test"),
                    0,
                    "a device's domain needs test records",
                ));
            }
        }
        for name in self.general.iter().chain(self.domains.keys()) {
            if name.is_empty() || name.contains(['/', '\\']) {
                return Err(DataError::config(
                    "field",
                    format!("{name:?}"),
                    "a domain is a file stem inside `dir`, without directories",
                ));
            }
        }
        for name in &self.general {
            if self.domains.contains_key(name) {
                return Err(DataError::config(
                    "field.general",
                    format!("{name:?}"),
                    "the general corpus holds neither a device's nor the server's domain",
                ));
            }
        }
        if !self.general.is_empty() && self.general_size == 0 {
            return Err(DataError::config(
                "field.general_size",
                0,
                "expected at least 1",
            ));
        }
        Ok(())
    }
}
