//! The field benchmark (`[data.field]`): each party holds only what it would hold in the field.
//!
//! - the server: a private labelled corpus its LLM is trained on (never shipped), a pool of
//!   public prompts without answers, and its own records to score the LLM on;
//! - each device: a few labelled records, many unlabelled local prompts (its users' questions),
//!   and its validation and test splits;
//! - the SLMs' general pre-training: a corpus of other domains, holding neither a device's
//!   domain nor the server's private knowledge.
//!
//! Every split size is set per domain, so any file of the QA format can stand in for a domain,
//! and the knowledge asymmetry is the config's: a domain the server's corpus covers richly and
//! the devices barely (the LLM has something to teach), or one only the devices hold (`server
//! = 0`: the LLM has something to learn).
//!
//! Records are deduplicated across every role on [`instance_key`], which also catches templated
//! paraphrases of one instance ("Convert 7 kilometres to metres." and "How many metres are in
//! 7 kilometres?").

use std::collections::HashMap;
use std::path::Path;

use crate::record::{load_jsonl, QaRecord};
use crate::rng::SeededRng;
use crate::roles::{instance_key, FieldRoles};
use crate::split::{Benchmark, DeviceData, DomainShare, DomainSummary, PublicSummary};
use crate::split::{DeviceSummary, SplitSummary};
use crate::{DataConfig, DataError};

impl Benchmark {
    /// Reads the files named by `config` (relative paths from `root`) and splits them: the
    /// field benchmark ([`build`]) when `config.field` is set, else the fact-recall split
    /// ([`Benchmark::build_split`], whose documentation gives the procedure).
    pub fn build(config: &DataConfig, root: &Path) -> Result<(Benchmark, SplitSummary), DataError> {
        config.validate()?;
        match &config.field {
            Some(field) => build(config, field, root),
            None => Benchmark::build_split(config, root),
        }
    }
}

/// One domain's records after deduplication, shuffled.
struct Pool {
    name: String,
    path: std::path::PathBuf,
    records: Vec<QaRecord>,
}

/// Reads `names` in order, dropping any record whose [`instance_key`] an earlier record (of any
/// domain read so far, `owner`) has, and shuffles each (stream `pool/<domain>`).
fn load_pools(
    config: &DataConfig,
    root: &Path,
    names: &[String],
    owner: &mut HashMap<String, String>,
    rows: &mut Vec<DomainSummary>,
) -> Result<Vec<Pool>, DataError> {
    let mut pools = Vec::new();
    for name in names {
        let path = config.domain_path(root, name);
        let file = load_jsonl(&path)?;
        let mut row = DomainSummary {
            domain: name.clone(),
            file_rows: file.len(),
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
        let mut records = Vec::with_capacity(file.len());
        for record in file {
            let key = instance_key(&record.question);
            match owner.get(&key) {
                Some(first) if first == name => row.duplicates_removed += 1,
                Some(_) => row.cross_domain_removed += 1,
                None => {
                    owner.insert(key, name.clone());
                    records.push(record);
                }
            }
        }
        SeededRng::for_stream(config.seed, &format!("pool/{name}")).shuffle(&mut records);
        pools.push(Pool {
            name: name.clone(),
            path,
            records,
        });
        rows.push(row);
    }
    Ok(pools)
}

/// Takes `n` records from `records` for `what`, or an error naming the key and how many the
/// domain had.
fn take(
    pool: &Pool,
    records: &mut std::vec::IntoIter<QaRecord>,
    n: usize,
    key: &str,
) -> Result<Vec<QaRecord>, DataError> {
    let left = records.len();
    if n > left {
        return Err(DataError::config(
            format!("field.domains.{}.{key}", pool.name),
            n,
            format!(
                "domain {} ({}) has {} distinct instances; {left} were left when {key} was \
                 drawn",
                pool.name,
                pool.path.display(),
                pool.records.len()
            ),
        ));
    }
    Ok(records.by_ref().take(n).collect())
}

/// A record's question without its answer: what a prompt pool holds.
fn prompt_only(record: QaRecord) -> QaRecord {
    QaRecord {
        answer: String::new(),
        ..record
    }
}

/// Builds the field benchmark: see [`FieldRoles`]. Per domain, from its shuffled records in
/// order: every device's test records (device order), every device's validation records, the
/// server's LLM test and validation records, the server's private corpus, the public prompts,
/// every device's labelled records, every device's prompts. The general corpus comes from its
/// own files. The server's private corpus (all domains) is shuffled (stream `server`) and its
/// first `public_valid_size` are its validation split.
fn build(
    config: &DataConfig,
    field: &FieldRoles,
    root: &Path,
) -> Result<(Benchmark, SplitSummary), DataError> {
    field.validate(&config.domains)?;
    let devices_of: Vec<String> = config.domains.clone();
    let mut names: Vec<String> = config.unique_domains();
    for name in field.domains.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut owner = HashMap::new();
    let mut rows = Vec::new();
    let pools = load_pools(config, root, &names, &mut owner, &mut rows)?;
    let general_pools = load_pools(config, root, &field.general, &mut owner, &mut rows)?;

    let device_names = crate::split::device_names(config);
    let mut devices: Vec<DeviceData> = device_names
        .iter()
        .zip(&devices_of)
        .map(|(name, domain)| DeviceData {
            name: name.clone(),
            domains: vec![domain.clone()],
            train: Vec::new(),
            valid: Vec::new(),
            test: Vec::new(),
            prompts: Vec::new(),
        })
        .collect();
    let (mut server, mut public_prompts) = (Vec::new(), Vec::new());
    let (mut llm_valid, mut llm_test) = (Vec::new(), Vec::new());
    for (pool, row) in pools.iter().zip(rows.iter_mut()) {
        let roles = field.domains.get(&pool.name).copied().unwrap_or_default();
        let holders: Vec<usize> = (0..devices.len())
            .filter(|&i| devices_of[i] == pool.name)
            .collect();
        let mut records = pool.records.clone().into_iter();
        for &i in &holders {
            devices[i].test = take(pool, &mut records, roles.test, "test")?;
        }
        for &i in &holders {
            devices[i].valid = take(pool, &mut records, roles.valid, "valid")?;
        }
        llm_test.extend(take(pool, &mut records, roles.llm_test, "llm_test")?);
        llm_valid.extend(take(pool, &mut records, roles.llm_valid, "llm_valid")?);
        server.extend(take(pool, &mut records, roles.server, "server")?);
        public_prompts.extend(
            take(pool, &mut records, roles.public_prompts, "public_prompts")?
                .into_iter()
                .map(prompt_only),
        );
        for &i in &holders {
            devices[i].train = take(pool, &mut records, roles.labelled, "labelled")?;
        }
        for &i in &holders {
            devices[i].prompts = take(pool, &mut records, roles.prompts, "prompts")?
                .into_iter()
                .map(prompt_only)
                .collect();
        }
        let per = holders.len();
        row.test = roles.test * per;
        row.valid = roles.valid * per;
        row.train = roles.labelled * per;
        row.prompts = roles.prompts * per + roles.public_prompts;
        row.public = roles.server;
        row.llm = roles.llm_test + roles.llm_valid;
        row.unused = records.len();
    }
    let (mut general_train, mut general_valid) = (Vec::new(), Vec::new());
    let general_rows = &mut rows[pools.len()..];
    for (pool, row) in general_pools.iter().zip(general_rows.iter_mut()) {
        let mut records = pool.records.clone().into_iter();
        let key = |k: &str| format!("general ({k})");
        general_valid.extend(take(
            pool,
            &mut records,
            field.general_valid,
            &key("valid"),
        )?);
        general_train.extend(take(pool, &mut records, field.general_size, &key("size"))?);
        row.valid = field.general_valid;
        row.train = field.general_size;
        row.unused = records.len();
    }
    for device in &mut devices {
        let mut rng = SeededRng::for_stream(config.seed, &format!("device/{}", device.name));
        rng.shuffle(&mut device.train);
        rng.shuffle(&mut device.valid);
        rng.shuffle(&mut device.test);
        rng.shuffle(&mut device.prompts);
    }
    SeededRng::for_stream(config.seed, "server").shuffle(&mut server);
    SeededRng::for_stream(config.seed, "public-prompts").shuffle(&mut public_prompts);
    SeededRng::for_stream(config.seed, "general").shuffle(&mut general_train);
    let valid_n = config.public_valid_size.min(server.len() / 2);
    let public_valid: Vec<QaRecord> = server.drain(..valid_n).collect();
    let device_rows = devices
        .iter()
        .map(|d| DeviceSummary {
            name: d.name.clone(),
            train: d.train.len(),
            valid: d.valid.len(),
            test: d.test.len(),
            by_domain: vec![DomainShare {
                domain: d.domains[0].clone(),
                train: d.train.len(),
                valid: d.valid.len(),
                test: d.test.len(),
            }],
        })
        .collect();
    let public_row = PublicSummary {
        file: "(the server's private corpus)".into(),
        file_rows: server.len() + public_valid.len(),
        duplicates_removed: 0,
        device_overlap_removed: 0,
        kept: server.len() + public_valid.len(),
        from_domains: server.len() + public_valid.len(),
        train: server.len(),
        valid: public_valid.len(),
    };
    let benchmark = Benchmark {
        public_train: server,
        public_valid,
        devices,
        llm_valid,
        llm_test,
        public_prompts,
        general_train,
        general_valid,
    };
    benchmark.check_invariants()?;
    Ok((
        benchmark,
        SplitSummary {
            domains: rows,
            public: public_row,
            devices: device_rows,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::{instance_key, DomainRoles, FieldRoles};

    #[test]
    fn templated_paraphrases_share_a_key() {
        for (a, b) in [
            (
                "Which chemical element has the symbol Fe?",
                "Which element has the chemical symbol Fe?",
            ),
            (
                "How many metres are in 7 kilometres?",
                "Convert 7 kilometres to metres.",
            ),
            ("What is 34 plus 58?", "Compute 58 plus 34."),
        ] {
            assert_eq!(instance_key(a), instance_key(b), "{a} / {b}");
        }
        for (a, b) in [
            ("What is 34 plus 58?", "What is 34 plus 59?"),
            ("Translate to Lexa: red cat", "Translate to Lexa: red dog"),
        ] {
            assert_ne!(instance_key(a), instance_key(b), "{a} / {b}");
        }
    }

    fn roles(server: usize) -> DomainRoles {
        DomainRoles {
            server,
            public_prompts: 10,
            labelled: 10,
            prompts: 30,
            valid: 5,
            test: 10,
            llm_valid: 5,
            llm_test: 5,
        }
    }

    fn config(dir: &Path, domains: &[&str], field: FieldRoles) -> DataConfig {
        DataConfig {
            dir: dir.to_path_buf(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            public_valid_size: 10,
            field: Some(field),
            ..DataConfig::default()
        }
    }

    fn skills() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/skills")
    }

    #[test]
    fn every_party_holds_only_its_role_with_its_sizes() {
        let field = FieldRoles {
            general: vec!["copying".into()],
            general_size: 40,
            general_valid: 10,
            domains: [
                ("lexicon_a".into(), roles(60)),
                ("lexicon_c".into(), roles(0)),
            ]
            .into_iter()
            .collect(),
        };
        let c = config(&skills(), &["lexicon_a", "lexicon_c", "lexicon_c"], field);
        let (b, summary) = Benchmark::build(&c, Path::new("/")).unwrap();
        // The server: its private corpus of the domains it covers (minus its validation
        // split), public prompts of every domain without answers, its LLM records.
        assert_eq!(b.public_train.len() + b.public_valid.len(), 60);
        assert!(b.public_train.iter().all(|r| r.domain == "lexicon_a"));
        assert_eq!(b.public_prompts.len(), 20);
        assert!(b.public_prompts.iter().all(|r| r.answer.is_empty()));
        assert_eq!((b.llm_valid.len(), b.llm_test.len()), (10, 10));
        // Devices: a few labelled records, prompts without answers, validation and test.
        assert_eq!(b.devices.len(), 3);
        for d in &b.devices {
            assert_eq!(
                (d.train.len(), d.prompts.len(), d.valid.len(), d.test.len()),
                (10, 30, 5, 10)
            );
            assert!(d.prompts.iter().all(|r| r.answer.is_empty()));
            assert!(d
                .train
                .iter()
                .chain(&d.test)
                .all(|r| r.domain == d.domains[0]));
        }
        assert_eq!(b.devices[1].name, "lexicon_c-1");
        // The general corpus holds no device's or server's domain.
        assert_eq!((b.general_train.len(), b.general_valid.len()), (40, 10));
        assert!(b.general_train.iter().all(|r| r.domain == "copying"));
        assert_eq!(summary.domains.len(), 3);
        // Every instance has one holder (`check_invariants` ran in `build`); the key is the
        // paraphrase-blind one.
        let mut keys = std::collections::HashSet::new();
        for (_, records) in b.parties() {
            for r in records {
                assert!(keys.insert(instance_key(&r.question)), "{}", r.question);
            }
        }
    }

    #[test]
    fn a_domain_too_small_for_its_roles_names_the_key() {
        let field = FieldRoles {
            general: Vec::new(),
            general_size: 0,
            general_valid: 0,
            domains: [("lexicon_a".into(), roles(1_000_000))]
                .into_iter()
                .collect(),
        };
        let c = config(&skills(), &["lexicon_a"], field.clone());
        let e = Benchmark::build(&c, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field.domains.lexicon_a.server = 1000000"),
            "{e}"
        );
        let c = config(&skills(), &["lexicon_b"], field);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("\"lexicon_b\""), "{e}");
    }

    #[test]
    fn a_paraphrase_in_another_domain_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let line = |d: &str, q: &str, a: &str| {
            format!("{{\"domain\": \"{d}\", \"question\": \"{q}\", \"answer\": \"{a}\"}}\n")
        };
        let mut x = String::new();
        let mut y = line("y", "Convert 7 kilometres to metres.", "7000");
        for k in 0..40 {
            x.push_str(&line(
                "x",
                &format!("How many metres are in {k} kilometres?"),
                "0",
            ));
            y.push_str(&line("y", &format!("What is {k} plus 1?"), "1"));
        }
        x.push_str(&line("x", "How many metres are in 7 kilometres?", "7000"));
        std::fs::write(dir.path().join("x.jsonl"), x).unwrap();
        std::fs::write(dir.path().join("y.jsonl"), y).unwrap();
        let small = DomainRoles {
            server: 5,
            labelled: 5,
            prompts: 10,
            test: 5,
            ..DomainRoles::default()
        };
        let field = FieldRoles {
            general: Vec::new(),
            general_size: 0,
            general_valid: 0,
            domains: [("x".into(), small), ("y".into(), small)]
                .into_iter()
                .collect(),
        };
        let c = config(dir.path(), &["x", "y"], field);
        let (_, summary) = Benchmark::build(&c, Path::new("/")).unwrap();
        let y = summary.domains.iter().find(|d| d.domain == "y").unwrap();
        assert_eq!(y.cross_domain_removed, 1, "{summary:?}");
        // "7 plus 1" and "How many metres are in 7 kilometres?" were other instances: kept.
        assert_eq!(y.file_rows - y.cross_domain_removed, 40);
    }
}
