//! The `[data]` section of an experiment configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::QUESTION_PLACEHOLDER;
use crate::tokenizer::SPECIAL_TOKENS;
use crate::DataError;

/// Where the data lives, how it is split between the server and the devices, and how it is
/// tokenized: the `[data]` section of an experiment TOML.
///
/// Every field has a default, so an empty `[data]` section is the reference benchmark:
///
/// ```toml
/// [data]
/// dir = "data"
/// public_file = "trivia.jsonl"
/// domains = ["geography", "chemistry", "acronyms", "iso_codes"]
/// public_share = 0.5
/// device_train_size = 300
/// valid_size = 100
/// test_size = 200
/// public_valid_size = 200
/// seed = 0
/// prompt_template = "Question: {question}\nAnswer:"
/// partition = "one-domain"          # or { dirichlet = { alpha = 0.5, devices = 4 } }
/// vocab_size = 1536
/// max_prompt_tokens = 64
/// max_answer_tokens = 24
/// # tokenizer = "path/to/tokenizer.json"   # use an existing tokenizer instead of training one
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory holding the JSON-lines files; a relative path is taken from the root passed to
    /// [`crate::Benchmark::build`] (normally the directory the experiment is run from).
    pub dir: PathBuf,
    /// File name (inside `dir`) of the server's general-knowledge set.
    pub public_file: String,
    /// File stems (inside `dir`, without `.jsonl`) of the device domains, in order.
    pub domains: Vec<String>,
    /// Share, in [0, 1], of each device domain's records left after the test and validation
    /// splits that go to the server's public corpus.
    pub public_share: f64,
    /// Most training records a device gets (fewer only if its domains run out).
    pub device_train_size: usize,
    /// Validation records per device, for early stopping on the device.
    pub valid_size: usize,
    /// Held-out test records per device; never seen in any training set.
    pub test_size: usize,
    /// Test records per domain the server holds to score the LLM, drawn from what is left of
    /// the domain after the devices' records and outside the public corpus, so that no
    /// device's question reaches the server. Unset: `test_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_test_size: Option<usize>,
    /// Validation records per domain the server holds to score the LLM when settings are
    /// chosen (`eval_split = "valid"`), drawn like `llm_test_size`. Unset: `valid_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_valid_size: Option<usize>,
    /// Validation records taken from the public corpus, for early stopping on the server.
    pub public_valid_size: usize,
    /// Seed of every random choice in splitting and partitioning.
    pub seed: u64,
    /// Prompt template; `{question}` is replaced by the question.
    pub prompt_template: String,
    /// How device domains map to devices.
    pub partition: Partition,
    /// Vocabulary size of the trained tokenizer, special tokens and the 256 byte symbols
    /// included.
    pub vocab_size: usize,
    /// Training and validation records whose prompt is longer than this many tokens are dropped
    /// (and counted); test records are kept whole.
    pub max_prompt_tokens: usize,
    /// Same as `max_prompt_tokens`, for the answer tokens including the closing eos token.
    pub max_answer_tokens: usize,
    /// An existing `tokenizer.json` to load instead of training one on the training texts.
    pub tokenizer: Option<PathBuf>,
    /// The field benchmark's roles ([`crate::roles::FieldRoles`]): when set, every split size is set
    /// per domain there, and `public_file`, `public_share`, `device_train_size`,
    /// `valid_size`, `test_size` and the LLM sizes above are not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<crate::roles::FieldRoles>,
}

/// How the device domains are distributed over devices.
///
/// In TOML either the string `"one-domain"` or a table
/// `{ dirichlet = { alpha = 0.5, devices = 4 } }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Partition {
    /// One device per entry of `domains`, holding that domain only (the paper's setting). A
    /// domain listed more than once gives each of its devices its own records of it; those
    /// devices are named `<domain>-1`, `<domain>-2`, ... in order.
    #[default]
    OneDomain,
    /// `devices` devices, each with its own mixture of all domains drawn from a symmetric
    /// Dirichlet distribution with concentration `alpha` (small: nearly one domain per device;
    /// large: every device close to the uniform mixture). The exact procedure is in
    /// [`crate::Benchmark::build`].
    Dirichlet {
        /// Concentration of every component; must be positive.
        alpha: f64,
        /// Number of devices; at least 1.
        devices: usize,
    },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("data"),
            public_file: "trivia.jsonl".into(),
            domains: ["geography", "chemistry", "acronyms", "iso_codes"]
                .map(String::from)
                .to_vec(),
            public_share: 0.5,
            device_train_size: 300,
            valid_size: 100,
            test_size: 200,
            public_valid_size: 200,
            seed: 0,
            prompt_template: "Question: {question}\nAnswer:".into(),
            partition: Partition::OneDomain,
            vocab_size: 1536,
            max_prompt_tokens: 64,
            max_answer_tokens: 24,
            tokenizer: None,
            llm_test_size: None,
            llm_valid_size: None,
            field: None,
        }
    }
}

/// Smallest useful vocabulary: the special tokens, one symbol per byte, and one merge.
const MIN_VOCAB_SIZE: usize = SPECIAL_TOKENS.len() + 256 + 1;

impl DataConfig {
    /// Checks every value that can be checked without reading the data; sizes against the data
    /// are checked by [`crate::Benchmark::build`]. Errors name the key and the value.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.domains.is_empty() {
            return Err(DataError::config(
                "domains",
                "[]",
                "at least one device domain is needed",
            ));
        }
        if let Some(field) = &self.field {
            if self.partition != Partition::OneDomain {
                return Err(DataError::config(
                    "partition",
                    "dirichlet",
                    "the field benchmark ([data.field]) gives each device one domain",
                ));
            }
            field.validate(&self.domains)?;
        }
        let public_stem = Path::new(&self.public_file)
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned());
        let mut seen = BTreeSet::new();
        for domain in &self.domains {
            if domain.is_empty() || domain.contains(['/', '\\']) {
                return Err(DataError::config(
                    "domains",
                    format!("{domain:?}"),
                    "a domain is a file stem inside `dir`, without directories",
                ));
            }
            // One-domain devices may share a domain (each gets its own records of it); a
            // Dirichlet partition mixes distinct domains.
            let repeat_ok = self.partition == Partition::OneDomain;
            if !seen.insert(domain) && !repeat_ok {
                return Err(DataError::config(
                    "domains",
                    format!("{domain:?}"),
                    "each domain may be listed once in a Dirichlet partition",
                ));
            }
            if public_stem.as_deref() == Some(domain.as_str()) {
                return Err(DataError::config(
                    "domains",
                    format!("{domain:?}"),
                    format!(
                        "the public file {:?} cannot also be a device domain",
                        self.public_file
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.public_share) {
            return Err(DataError::config(
                "public_share",
                self.public_share,
                "expected a share in [0, 1]",
            ));
        }
        for (key, value) in [
            ("test_size", self.test_size),
            ("device_train_size", self.device_train_size),
            ("max_prompt_tokens", self.max_prompt_tokens),
        ] {
            if value == 0 {
                return Err(DataError::config(key, value, "expected at least 1"));
            }
        }
        if self.max_answer_tokens < 2 {
            return Err(DataError::config(
                "max_answer_tokens",
                self.max_answer_tokens,
                "expected at least 2 (one answer token and the eos token)",
            ));
        }
        if !self.prompt_template.contains(QUESTION_PLACEHOLDER) {
            return Err(DataError::config(
                "prompt_template",
                format!("{:?}", self.prompt_template),
                format!("the template must contain {QUESTION_PLACEHOLDER}"),
            ));
        }
        if self.vocab_size < MIN_VOCAB_SIZE {
            return Err(DataError::config(
                "vocab_size",
                self.vocab_size,
                format!(
                    "expected at least {MIN_VOCAB_SIZE} ({} special tokens, 256 byte symbols, \
                     one merge)",
                    SPECIAL_TOKENS.len()
                ),
            ));
        }
        if let Partition::Dirichlet { alpha, devices } = self.partition {
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(DataError::config(
                    "partition.dirichlet.alpha",
                    alpha,
                    "expected a finite number above 0",
                ));
            }
            if devices == 0 {
                return Err(DataError::config(
                    "partition.dirichlet.devices",
                    devices,
                    "expected at least 1",
                ));
            }
        }
        Ok(())
    }

    /// Test records per domain the server scores the LLM on.
    pub fn llm_test_size(&self) -> usize {
        self.llm_test_size.unwrap_or(self.test_size)
    }

    /// Validation records per domain the server scores the LLM on.
    pub fn llm_valid_size(&self) -> usize {
        self.llm_valid_size.unwrap_or(self.valid_size)
    }

    /// The domains, each once, in order of first appearance.
    pub fn unique_domains(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in &self.domains {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }

    /// The data directory, with a relative `dir` taken from `root`.
    pub fn data_dir(&self, root: &Path) -> PathBuf {
        root.join(&self.dir)
    }

    /// Path of one device domain's file.
    pub fn domain_path(&self, root: &Path, domain: &str) -> PathBuf {
        self.data_dir(root).join(format!("{domain}.jsonl"))
    }

    /// Path of the public file.
    pub fn public_path(&self, root: &Path) -> PathBuf {
        self.data_dir(root).join(&self.public_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(config: &DataConfig) -> String {
        match config.validate() {
            Err(DataError::InvalidConfig { key, .. }) => key,
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn default_is_valid() {
        DataConfig::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let base = DataConfig::default();
        let share = DataConfig {
            public_share: 1.5,
            ..base.clone()
        };
        assert_eq!(invalid_key(&share), "public_share");
        let message = share.validate().unwrap_err().to_string();
        assert!(message.contains("public_share = 1.5"), "{message}");
        let nan = DataConfig {
            public_share: f64::NAN,
            ..base.clone()
        };
        assert_eq!(invalid_key(&nan), "public_share");
        let template = DataConfig {
            prompt_template: "Q:".into(),
            ..base.clone()
        };
        assert_eq!(invalid_key(&template), "prompt_template");
        let vocab = DataConfig {
            vocab_size: 100,
            ..base.clone()
        };
        assert_eq!(invalid_key(&vocab), "vocab_size");
        let alpha = DataConfig {
            partition: Partition::Dirichlet {
                alpha: 0.0,
                devices: 4,
            },
            ..base.clone()
        };
        assert_eq!(invalid_key(&alpha), "partition.dirichlet.alpha");
        let twice = DataConfig {
            domains: vec!["geography".into(), "geography".into()],
            partition: Partition::Dirichlet {
                alpha: 1.0,
                devices: 2,
            },
            ..base.clone()
        };
        assert_eq!(invalid_key(&twice), "domains");
        let shared = DataConfig {
            domains: vec!["geography".into(), "geography".into()],
            ..base.clone()
        };
        shared
            .validate()
            .expect("one-domain devices may share a domain");
        assert_eq!(shared.unique_domains(), ["geography"]);
        let public_as_device = DataConfig {
            domains: vec!["trivia".into()],
            ..base
        };
        assert_eq!(invalid_key(&public_as_device), "domains");
    }
}
