//! Splitting the domain files into the server's public corpus and the devices' private sets.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::{answer_text, format_prompt, load_jsonl, normalize_question, QaRecord};
use crate::rng::SeededRng;
use crate::{DataConfig, DataError, Partition};

/// Everything one experiment trains and evaluates on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    /// The server's public corpus, minus `public_valid`.
    pub public_train: Vec<QaRecord>,
    /// Held out of the public corpus for the server's early stopping.
    pub public_valid: Vec<QaRecord>,
    /// One entry per edge device, in configuration order.
    pub devices: Vec<DeviceData>,
    /// Validation records the server scores the LLM on, per domain (`llm_valid_size` each):
    /// held by no device and outside the public corpus.
    pub llm_valid: Vec<QaRecord>,
    /// Test records the server scores the LLM on, per domain (`llm_test_size` each): held by
    /// no device and outside the public corpus.
    pub llm_test: Vec<QaRecord>,
    /// Field benchmark (`[data.field]`): the server's public prompts, answers blank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_prompts: Vec<QaRecord>,
    /// Field benchmark: the SLMs' general pre-training corpus (no device's or server's
    /// domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub general_train: Vec<QaRecord>,
    /// Field benchmark: the general corpus's validation split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub general_valid: Vec<QaRecord>,
}

/// The private data of one edge device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceData {
    /// The device's name: its domain for `one-domain`, `device-<i>` for Dirichlet partitions.
    pub name: String,
    /// The domains the device holds records of, in configuration order.
    pub domains: Vec<String>,
    /// Private training records.
    pub train: Vec<QaRecord>,
    /// Private validation records, for early stopping.
    pub valid: Vec<QaRecord>,
    /// Held-out test records: no normalised question here is in any training set.
    pub test: Vec<QaRecord>,
    /// Field benchmark: its users' questions without answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<QaRecord>,
}

/// Sizes of every split, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// One row per device domain, in configuration order.
    pub domains: Vec<DomainSummary>,
    /// Where the public corpus came from.
    pub public: PublicSummary,
    /// One row per device.
    pub devices: Vec<DeviceSummary>,
}

/// What happened to one device domain's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// The domain (file stem).
    pub domain: String,
    /// Records in the file.
    pub file_rows: usize,
    /// Records dropped because their normalised question occurs earlier in the same file.
    pub duplicates_removed: usize,
    /// Records dropped because their normalised question belongs to an earlier domain.
    pub cross_domain_removed: usize,
    /// Records in device test sets.
    pub test: usize,
    /// Records in device validation sets.
    pub valid: usize,
    /// Records given to the server's public corpus.
    pub public: usize,
    /// Records in device training sets.
    pub train: usize,
    /// Records the server scores the LLM on (validation and test).
    #[serde(default)]
    pub llm: usize,
    /// Distinct records nobody received.
    pub unused: usize,
    /// Field benchmark: prompts without answers (devices' and public).
    #[serde(default)]
    pub prompts: usize,
}

/// Where the server's public corpus came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicSummary {
    /// The public file's name.
    pub file: String,
    /// Records in the public file.
    pub file_rows: usize,
    /// Records dropped because their normalised question occurs earlier in the file.
    pub duplicates_removed: usize,
    /// Records dropped because a device (or a domain's public share) holds the same question.
    pub device_overlap_removed: usize,
    /// Records of the public file kept.
    pub kept: usize,
    /// Records added from the device domains' public shares.
    pub from_domains: usize,
    /// Size of the public training split.
    pub train: usize,
    /// Size of the public validation split.
    pub valid: usize,
}

/// One device's split sizes and how they divide over domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device's name.
    pub name: String,
    /// Training records.
    pub train: usize,
    /// Validation records.
    pub valid: usize,
    /// Test records.
    pub test: usize,
    /// The domains the device holds, in configuration order, with its records of each.
    pub by_domain: Vec<DomainShare>,
}

/// How many records of one domain a device holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainShare {
    /// The domain.
    pub domain: String,
    /// Training records of this domain.
    pub train: usize,
    /// Validation records of this domain.
    pub valid: usize,
    /// Test records of this domain.
    pub test: usize,
}

/// One device domain after loading and deduplication, shuffled.
struct DomainPool {
    name: String,
    path: std::path::PathBuf,
    records: Vec<QaRecord>,
}

/// Splits `total` into integer parts proportional to `weights` (which sum to 1) by largest
/// remainder, ties to the lower index, so the parts always add up to `total` exactly.
fn apportion(total: usize, weights: &[f64]) -> Vec<usize> {
    let exact: Vec<f64> = weights.iter().map(|w| w * total as f64).collect();
    let mut parts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let short = total.saturating_sub(parts.iter().sum());
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &k in by_remainder.iter().take(short) {
        parts[k] += 1;
    }
    parts
}

impl Benchmark {
    /// The fact-recall split (no `[data.field]`) of the files named by `config`.
    ///
    /// The procedure, every random choice drawn from `config.seed`:
    ///
    /// 1. Each device domain's file is read in configuration order. A record is dropped if its
    ///    normalised question ([`normalize_question`]) already occurred in the same file
    ///    (duplicate) or in an earlier domain (cross-domain duplicate), so every question belongs
    ///    to one domain at most. What remains is shuffled (stream `pool/<domain>`).
    /// 2. Each device gets a mixture over domains. `one-domain`: device *i* is domain *i*, all
    ///    weight on it. Dirichlet(α, n): for device 0, 1, ..., n-1 in turn, a weight vector is
    ///    drawn from the symmetric Dirichlet(α, ..., α) over the domains (stream
    ///    `partition/dirichlet`; the per-client label mixture of Hsu, Qi & Brown 2019).
    /// 3. Each device's `test_size`, `valid_size` and `device_train_size` are divided over the
    ///    domains in proportion to its weights, by largest remainder (parts add up exactly).
    /// 4. Per domain, from its shuffled records in order: every device's test records (device
    ///    order), then every device's validation records; an error if the domain is too small.
    ///    Of the records left, the first `round(public_share * left)` go to the public corpus,
    ///    and then each device in turn takes its training records from the rest, as many as
    ///    are left (so "up to" `device_train_size`). Each device's sets are then shuffled
    ///    (stream `device/<name>`), mixing its domains.
    /// 5. The public file is read; a record is dropped if its normalised question occurred
    ///    earlier in the file or is held by any device or domain public share (the trivia file
    ///    shares about 100 questions with chemistry). The kept records plus the domains' public
    ///    shares are shuffled (stream `public`); the first `public_valid_size` are the public
    ///    validation split, the rest the public training split.
    /// 6. The server's LLM evaluation sets are drawn from what each domain has left
    ///    (`llm_valid_size`, then `llm_test_size` per domain, skipping questions the public
    ///    corpus holds), so the server can score its LLM without any device's question.
    /// 7. [`Benchmark::check_invariants`] runs on the result.
    pub(crate) fn build_split(
        config: &DataConfig,
        root: &Path,
    ) -> Result<(Benchmark, SplitSummary), DataError> {
        let (pools, mut domain_rows) = load_domains(config, root)?;

        let (names, mixtures) = device_mixtures(config, pools.len());
        let wanted = |size: usize| -> Vec<Vec<usize>> {
            mixtures.iter().map(|m| apportion(size, m)).collect()
        };
        let (test_wanted, valid_wanted, train_wanted) = (
            wanted(config.test_size),
            wanted(config.valid_size),
            wanted(config.device_train_size),
        );

        let (mut devices, mut device_rows) = empty_devices(&names);
        let mut public_shares = Vec::new();
        // What each domain has left after its devices: the server's LLM evaluation sets come
        // from here, once the public corpus is known.
        let mut leftovers: Vec<(String, Vec<QaRecord>)> = Vec::new();

        for (d, pool) in pools.into_iter().enumerate() {
            let test_need: usize = test_wanted.iter().map(|w| w[d]).sum();
            let valid_need: usize = valid_wanted.iter().map(|w| w[d]).sum();
            let available = pool.records.len();
            if test_need + valid_need > available {
                let (key, value) = if test_need > available {
                    ("test_size", config.test_size)
                } else {
                    ("valid_size", config.valid_size)
                };
                return Err(DataError::config(
                    key,
                    value,
                    format!(
                        "domain {} ({}) has {available} distinct questions, fewer than the \
                         {test_need} test + {valid_need} validation records its devices need",
                        pool.name,
                        pool.path.display()
                    ),
                ));
            }
            let mut records = pool.records.into_iter();
            let mut taken = vec![(0, 0, 0); devices.len()];
            for (i, device) in devices.iter_mut().enumerate() {
                device.test.extend(records.by_ref().take(test_wanted[i][d]));
                taken[i].2 = test_wanted[i][d];
            }
            for (i, device) in devices.iter_mut().enumerate() {
                device
                    .valid
                    .extend(records.by_ref().take(valid_wanted[i][d]));
                taken[i].1 = valid_wanted[i][d];
            }
            let left = records.len();
            let public_count = ((config.public_share * left as f64).round() as usize).min(left);
            public_shares.extend(records.by_ref().take(public_count));
            for (i, device) in devices.iter_mut().enumerate() {
                let before = device.train.len();
                device
                    .train
                    .extend(records.by_ref().take(train_wanted[i][d]));
                taken[i].0 = device.train.len() - before;
            }

            let row = &mut domain_rows[d];
            row.test = test_need;
            row.valid = valid_need;
            row.public = public_count;
            row.train = taken.iter().map(|t| t.0).sum();
            row.unused = records.len();
            leftovers.push((row.domain.clone(), records.collect()));
            for (i, (train, valid, test)) in taken.into_iter().enumerate() {
                if train + valid + test > 0 {
                    devices[i].domains.push(row.domain.clone());
                    device_rows[i].by_domain.push(DomainShare {
                        domain: row.domain.clone(),
                        train,
                        valid,
                        test,
                    });
                }
            }
        }

        for (device, row) in devices.iter_mut().zip(&mut device_rows) {
            let mut rng = SeededRng::for_stream(config.seed, &format!("device/{}", device.name));
            rng.shuffle(&mut device.train);
            rng.shuffle(&mut device.valid);
            rng.shuffle(&mut device.test);
            row.train = device.train.len();
            row.valid = device.valid.len();
            row.test = device.test.len();
        }

        let (public_train, public_valid, public_row) =
            build_public(config, root, &devices, public_shares)?;
        let (llm_valid, llm_test) =
            llm_evaluation_sets(config, leftovers, &public_train, &public_valid)?;
        for row in &mut domain_rows {
            let held = llm_valid
                .iter()
                .chain(&llm_test)
                .filter(|r| r.domain == row.domain)
                .count();
            row.unused -= held;
            row.llm = held;
        }
        let benchmark = Benchmark {
            public_train,
            public_valid,
            devices,
            llm_valid,
            llm_test,
            public_prompts: Vec::new(),
            general_train: Vec::new(),
            general_valid: Vec::new(),
        };
        benchmark.check_invariants()?;
        let summary = SplitSummary {
            domains: domain_rows,
            public: public_row,
            devices: device_rows,
        };
        Ok((benchmark, summary))
    }

    /// Checks that no normalised question is held twice anywhere: not by two parties among the
    /// public corpus and every device's train, validation and test sets, and not twice within
    /// one of them. This implies that no test question is in any training set or the public
    /// corpus. The error names the question and both holders.
    ///
    /// The field benchmark (with public prompts or a general corpus) checks on
    /// [`crate::instance_key`], which also catches templated paraphrases.
    pub fn check_invariants(&self) -> Result<(), DataError> {
        let field = !self.public_prompts.is_empty() || !self.general_train.is_empty();
        let key_of = |q: &str| match field {
            true => crate::roles::instance_key(q),
            false => normalize_question(q),
        };
        let mut holder: HashMap<String, String> = HashMap::new();
        for (party, records) in self.parties() {
            for record in records {
                let key = key_of(&record.question);
                if let Some(first) = holder.insert(key.clone(), party.clone()) {
                    return Err(DataError::Leak {
                        question: key,
                        first,
                        second: party,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every split with a label naming its holder: "public/train", "public/valid",
    /// `"<device>/train"`, `"<device>/valid"`, `"<device>/test"`.
    pub fn parties(&self) -> Vec<(String, &[QaRecord])> {
        let mut parties: Vec<(String, &[QaRecord])> = vec![
            ("public/train".into(), &self.public_train),
            ("public/valid".into(), &self.public_valid),
            ("server/llm-valid".into(), &self.llm_valid),
            ("server/llm-test".into(), &self.llm_test),
        ];
        for device in &self.devices {
            parties.push((format!("{}/train", device.name), &device.train));
            parties.push((format!("{}/valid", device.name), &device.valid));
            parties.push((format!("{}/test", device.name), &device.test));
            if !device.prompts.is_empty() {
                parties.push((format!("{}/prompts", device.name), &device.prompts));
            }
        }
        for (party, records) in [
            ("server/public-prompts", &self.public_prompts),
            ("general/train", &self.general_train),
            ("general/valid", &self.general_valid),
        ] {
            if !records.is_empty() {
                parties.push((party.into(), records));
            }
        }
        parties
    }

    /// The texts a tokenizer is trained on: the prompt and the answer text ([`answer_text`]) of
    /// every public and device training record, as separate texts because they are encoded
    /// separately. Validation and test records are left out so the tokenizer learns nothing
    /// from held-out data.
    pub fn training_texts(&self, template: &str) -> Vec<String> {
        let device_train = self.devices.iter().flat_map(|device| &device.train);
        let mut texts: Vec<String> = self
            .public_train
            .iter()
            .chain(device_train)
            .chain(&self.general_train)
            .flat_map(|record| [format_prompt(template, record), answer_text(record)])
            .collect();
        // Prompts have no answer: their prompt text alone.
        let prompts = self.devices.iter().flat_map(|device| &device.prompts);
        texts.extend(
            prompts
                .chain(&self.public_prompts)
                .map(|record| format_prompt(template, record)),
        );
        texts
    }
}

/// The server's LLM evaluation sets: per domain, in order, the first `llm_valid_size` and then
/// `llm_test_size` of the domain's records left after its devices whose normalised question is
/// not in the public corpus (the public file may hold a domain's question). An error names the
/// key when a domain has too few left.
fn llm_evaluation_sets(
    config: &DataConfig,
    leftovers: Vec<(String, Vec<QaRecord>)>,
    public_train: &[QaRecord],
    public_valid: &[QaRecord],
) -> Result<(Vec<QaRecord>, Vec<QaRecord>), DataError> {
    let public: HashSet<String> = public_train
        .iter()
        .chain(public_valid)
        .map(|r| normalize_question(&r.question))
        .collect();
    let (want_valid, want_test) = (config.llm_valid_size(), config.llm_test_size());
    let (mut valid, mut test) = (Vec::new(), Vec::new());
    for (domain, records) in leftovers {
        let mut clean = records
            .into_iter()
            .filter(|r| !public.contains(&normalize_question(&r.question)));
        let before = valid.len();
        valid.extend(clean.by_ref().take(want_valid));
        let got_valid = valid.len() - before;
        let before = test.len();
        test.extend(clean.by_ref().take(want_test));
        let got_test = test.len() - before;
        if got_valid < want_valid || got_test < want_test {
            let (key, value) = if got_valid < want_valid {
                ("llm_valid_size", want_valid)
            } else {
                ("llm_test_size", want_test)
            };
            return Err(DataError::config(
                key,
                value,
                format!(
                    "domain {domain} has {} questions left after its devices and the public \
                     corpus, fewer than the {want_valid} validation + {want_test} test records \
                     the server scores the LLM on; lower the device sizes or `public_share`, or \
                     set `llm_valid_size` / `llm_test_size`",
                    got_valid + got_test
                ),
            ));
        }
    }
    Ok((valid, test))
}

/// Step 1 of [`Benchmark::build`]: read, deduplicate and shuffle every device domain.
fn load_domains(
    config: &DataConfig,
    root: &Path,
) -> Result<(Vec<DomainPool>, Vec<DomainSummary>), DataError> {
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut pools = Vec::new();
    let mut rows = Vec::new();
    for (d, domain) in config.unique_domains().iter().enumerate() {
        let path = config.domain_path(root, domain);
        let file_records = load_jsonl(&path)?;
        let mut row = DomainSummary {
            domain: domain.clone(),
            file_rows: file_records.len(),
            duplicates_removed: 0,
            cross_domain_removed: 0,
            test: 0,
            valid: 0,
            public: 0,
            train: 0,
            llm: 0,
            unused: 0,
            prompts: 0,
        };
        let mut records = Vec::with_capacity(file_records.len());
        for record in file_records {
            match owner.get(&normalize_question(&record.question)) {
                Some(&first) if first == d => row.duplicates_removed += 1,
                Some(_) => row.cross_domain_removed += 1,
                None => {
                    owner.insert(normalize_question(&record.question), d);
                    records.push(record);
                }
            }
        }
        SeededRng::for_stream(config.seed, &format!("pool/{domain}")).shuffle(&mut records);
        pools.push(DomainPool {
            name: domain.clone(),
            path,
            records,
        });
        rows.push(row);
    }
    Ok((pools, rows))
}

/// Step 5 of [`Benchmark::build`]: the public corpus and its validation split.
fn build_public(
    config: &DataConfig,
    root: &Path,
    devices: &[DeviceData],
    shares: Vec<QaRecord>,
) -> Result<(Vec<QaRecord>, Vec<QaRecord>, PublicSummary), DataError> {
    let held: HashSet<String> = devices
        .iter()
        .flat_map(|device| device.train.iter().chain(&device.valid).chain(&device.test))
        .chain(&shares)
        .map(|record| normalize_question(&record.question))
        .collect();
    let path = config.public_path(root);
    let file_records = load_jsonl(&path)?;
    let mut row = PublicSummary {
        file: config.public_file.clone(),
        file_rows: file_records.len(),
        duplicates_removed: 0,
        device_overlap_removed: 0,
        kept: 0,
        from_domains: shares.len(),
        train: 0,
        valid: 0,
    };
    let mut seen = HashSet::new();
    let mut corpus = Vec::with_capacity(file_records.len() + shares.len());
    for record in file_records {
        let key = normalize_question(&record.question);
        if held.contains(&key) {
            row.device_overlap_removed += 1;
        } else if !seen.insert(key) {
            row.duplicates_removed += 1;
        } else {
            corpus.push(record);
        }
    }
    row.kept = corpus.len();
    corpus.extend(shares);
    if corpus.len() < config.public_valid_size {
        return Err(DataError::config(
            "public_valid_size",
            config.public_valid_size,
            format!(
                "the public corpus ({} from {} plus the domains' public shares) has only {} records",
                row.kept,
                path.display(),
                corpus.len()
            ),
        ));
    }
    SeededRng::for_stream(config.seed, "public").shuffle(&mut corpus);
    let public_train = corpus.split_off(config.public_valid_size);
    row.train = public_train.len();
    row.valid = corpus.len();
    Ok((public_train, corpus, row))
}

impl SplitSummary {
    /// The summary as Markdown tables (domains, public corpus, devices), for run reports.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, hence the ignored results.
        let _ = writeln!(
            out,
            "| domain | file rows | duplicates | cross-domain | test | valid | public | train | LLM eval | unused |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.domains {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.domain,
                r.file_rows,
                r.duplicates_removed,
                r.cross_domain_removed,
                r.test,
                r.valid,
                r.public,
                r.train,
                r.llm,
                r.unused
            );
        }
        let p = &self.public;
        let _ = writeln!(
            out,
            "\n| public file | file rows | duplicates | overlap with devices | kept | from domains | train | valid |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.file,
            p.file_rows,
            p.duplicates_removed,
            p.device_overlap_removed,
            p.kept,
            p.from_domains,
            p.train,
            p.valid
        );
        let _ = writeln!(
            out,
            "\n| device | train | valid | test | domains (train/valid/test) |\n|---|---:|---:|---:|---|"
        );
        for r in &self.devices {
            let mix: Vec<String> = r
                .by_domain
                .iter()
                .map(|s| format!("{} {}/{}/{}", s.domain, s.train, s.valid, s.test))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.name,
                r.train,
                r.valid,
                r.test,
                mix.join(", ")
            );
        }
        out
    }
}

/// The devices' names and their domain mixtures: one device per domain, or Dirichlet draws.
/// The devices' names under `config`, as [`Benchmark::build`] gives them, without reading any
/// data: a party that holds no device's data (the server) names the devices with them.
pub fn device_names(config: &DataConfig) -> Vec<String> {
    device_mixtures(config, config.unique_domains().len()).0
}

fn device_mixtures(config: &DataConfig, domains: usize) -> (Vec<String>, Vec<Vec<f64>>) {
    match config.partition {
        Partition::OneDomain => {
            let unique = config.unique_domains();
            let mut names = Vec::new();
            let mut mixtures = Vec::new();
            for (i, domain) in config.domains.iter().enumerate() {
                let pool = unique.iter().position(|u| u == domain).unwrap_or(0);
                mixtures.push(
                    (0..domains)
                        .map(|d| if d == pool { 1.0 } else { 0.0 })
                        .collect(),
                );
                let shared = config.domains.iter().filter(|d| *d == domain).count();
                names.push(if shared > 1 {
                    let k = config.domains[..=i].iter().filter(|d| *d == domain).count();
                    format!("{domain}-{k}")
                } else {
                    domain.clone()
                });
            }
            (names, mixtures)
        }
        Partition::Dirichlet { alpha, devices } => {
            let mut rng = SeededRng::for_stream(config.seed, "partition/dirichlet");
            let mixtures = (0..devices)
                .map(|_| rng.dirichlet(alpha, domains))
                .collect();
            (
                (0..devices).map(|i| format!("device-{i}")).collect(),
                mixtures,
            )
        }
    }
}

/// Devices with no records yet, and their empty summary rows.
fn empty_devices(names: &[String]) -> (Vec<DeviceData>, Vec<DeviceSummary>) {
    names
        .iter()
        .map(|name| {
            let data = DeviceData {
                name: name.clone(),
                domains: Vec::new(),
                train: Vec::new(),
                valid: Vec::new(),
                test: Vec::new(),
                prompts: Vec::new(),
            };
            let row = DeviceSummary {
                name: name.clone(),
                train: 0,
                valid: 0,
                test: 0,
                by_domain: Vec::new(),
            };
            (data, row)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_adds_up_exactly() {
        assert_eq!(apportion(300, &[1.0, 0.0, 0.0]), vec![300, 0, 0]);
        assert_eq!(apportion(10, &[1.0 / 3.0; 3]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[0.5, 0.25, 0.25]), vec![3, 2, 2]);
        for total in [0, 1, 99, 200] {
            let parts = apportion(total, &[0.12, 0.38, 0.0, 0.5]);
            assert_eq!(parts.iter().sum::<usize>(), total);
        }
    }
}
