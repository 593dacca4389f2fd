//! Tests over the shipped data in `data/` at the workspace root.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cotune_data::{
    encode_example, length_bucketed_batches, load_jsonl, normalize_question, prepare, Benchmark,
    DataConfig, DataError, Example, Partition, Prepared, Tokenizer, BOS_ID, EOS_ID, PAD_ID,
};

/// The workspace root, which holds `data/`.
fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cotune-data-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The default configuration prepared once and shared: tokenizer training is the slow part.
fn default_prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| prepare(&DataConfig::default(), &root()).unwrap())
}

fn dirichlet_config() -> DataConfig {
    DataConfig {
        partition: Partition::Dirichlet {
            alpha: 0.5,
            devices: 5,
        },
        seed: 11,
        ..DataConfig::default()
    }
}

/// An experiment file as the runner would read it: the data config is its `[data]` section.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Experiment {
    #[serde(default)]
    data: DataConfig,
}

/// Checks the leakage invariants independently of `Benchmark::check_invariants`.
fn assert_no_leak(benchmark: &Benchmark) {
    benchmark.check_invariants().unwrap();
    let mut trained: HashSet<String> = HashSet::new();
    let mut total = 0;
    for (party, records) in benchmark.parties() {
        if party.ends_with("/test") {
            continue;
        }
        for record in records {
            trained.insert(normalize_question(&record.question));
            total += 1;
        }
    }
    assert_eq!(
        trained.len(),
        total,
        "a question is held twice outside the test sets"
    );
    for device in &benchmark.devices {
        assert!(!device.test.is_empty(), "{} has no test set", device.name);
        for record in &device.test {
            let key = normalize_question(&record.question);
            assert!(
                !trained.contains(&key),
                "test question {key:?} of {} is trained on",
                device.name
            );
        }
    }
}

#[test]
fn default_split_sizes_and_invariants() {
    let (benchmark, summary) = Benchmark::build(&DataConfig::default(), &root()).unwrap();
    assert_no_leak(&benchmark);
    let names: Vec<&str> = benchmark.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["geography", "chemistry", "acronyms", "iso_codes"]);
    for (device, row) in benchmark.devices.iter().zip(&summary.domains) {
        assert_eq!(device.domains, std::slice::from_ref(&device.name));
        assert_eq!(
            (device.train.len(), device.valid.len(), device.test.len()),
            (300, 100, 200)
        );
        assert!(device.train.iter().all(|r| r.domain == device.name));
        let distinct = row.file_rows - row.duplicates_removed - row.cross_domain_removed;
        assert_eq!(
            row.test + row.valid + row.public + row.train + row.llm + row.unused,
            distinct
        );
        // The server's LLM evaluation records: validation and test, per domain.
        assert_eq!(row.llm, 100 + 200);
        // Half of what is left after test and validation goes public (rounded).
        assert_eq!(row.public, (distinct - 300).div_ceil(2));
    }
    // iso_codes holds 4 questions that differ only in case or punctuation.
    assert_eq!(summary.domains[3].duplicates_removed, 4);
    // The trivia file shares about 100 questions with chemistry; at most those are removed.
    let public = &summary.public;
    assert!(public.device_overlap_removed <= 102);
    assert_eq!(
        public.kept + public.device_overlap_removed + public.duplicates_removed,
        public.file_rows
    );
    assert_eq!(public.valid, 200);
    assert_eq!(benchmark.public_valid.len(), 200);
    assert_eq!(
        public.train + public.valid,
        public.kept + public.from_domains
    );
    println!("{}", summary.to_markdown());
}

#[test]
fn the_server_scores_the_llm_on_records_no_device_holds_and_the_public_corpus_lacks() {
    let config = DataConfig {
        llm_test_size: Some(30),
        llm_valid_size: Some(7),
        ..DataConfig::default()
    };
    let (benchmark, summary) = Benchmark::build(&config, &root()).unwrap();
    // `check_invariants` counts the LLM's sets as parties: no question is held twice.
    assert_no_leak(&benchmark);
    for domain in config.unique_domains() {
        let of = |set: &[cotune_data::QaRecord]| set.iter().filter(|r| r.domain == domain).count();
        assert_eq!(of(&benchmark.llm_test), 30, "{domain}");
        assert_eq!(of(&benchmark.llm_valid), 7, "{domain}");
    }
    assert!(summary.domains.iter().all(|d| d.llm == 37));
    // The devices' records and names are those of a split without the LLM's sets, and the
    // names follow from the config alone.
    let (plain, _) = Benchmark::build(&DataConfig::default(), &root()).unwrap();
    assert_eq!(plain.devices, benchmark.devices);
    assert_eq!(plain.public_train, benchmark.public_train);
    let names: Vec<String> = benchmark.devices.iter().map(|d| d.name.clone()).collect();
    assert_eq!(cotune_data::device_names(&config), names);
    assert_eq!(
        cotune_data::device_names(&dirichlet_config()),
        Benchmark::build(&dirichlet_config(), &root())
            .unwrap()
            .0
            .devices
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
    );
    // A domain with too little left is named with the key.
    let greedy = DataConfig {
        llm_test_size: Some(100_000),
        ..DataConfig::default()
    };
    let err = Benchmark::build(&greedy, &root()).unwrap_err().to_string();
    assert!(
        err.contains("llm_test_size") && err.contains("100000"),
        "{err}"
    );
}

#[test]
fn dirichlet_split_invariants_and_mixtures() {
    let config = dirichlet_config();
    let (benchmark, summary) = Benchmark::build(&config, &root()).unwrap();
    assert_no_leak(&benchmark);
    assert_eq!(benchmark.devices.len(), 5);
    for (device, row) in benchmark.devices.iter().zip(&summary.devices) {
        assert_eq!(device.name, row.name);
        assert_eq!(device.test.len(), 200);
        assert_eq!(device.valid.len(), 100);
        assert_eq!(device.train.len(), 300);
        let domains: HashSet<&str> = device.train.iter().map(|r| r.domain.as_str()).collect();
        assert!(domains
            .iter()
            .all(|d| device.domains.iter().any(|x| x == d)));
    }
    // With alpha = 0.5 over 4 domains some device must hold more than one domain.
    assert!(benchmark.devices.iter().any(|d| d.domains.len() > 1));
    let again = Benchmark::build(&config, &root()).unwrap();
    assert_eq!(again, (benchmark, summary));
}

#[test]
fn devices_sharing_a_domain_get_their_own_records() {
    let config = DataConfig {
        domains: ["geography", "chemistry", "geography"]
            .map(String::from)
            .to_vec(),
        ..DataConfig::default()
    };
    let (benchmark, summary) = Benchmark::build(&config, &root()).unwrap();
    assert_no_leak(&benchmark);
    let names: Vec<&str> = benchmark.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["geography-1", "chemistry", "geography-2"]);
    for device in &benchmark.devices {
        assert_eq!(device.test.len(), config.test_size);
        assert_eq!(device.train.len(), config.device_train_size);
        assert!(device.train.iter().all(|r| r.domain == device.domains[0]));
    }
    assert_eq!(benchmark.devices[0].domains, ["geography"]);
    // One row per domain file, read once.
    assert_eq!(summary.domains.len(), 2);
    assert_eq!(summary.domains[0].test, 2 * config.test_size);
}

#[test]
fn splits_are_deterministic_and_follow_the_seed() {
    let config = DataConfig::default();
    let first = Benchmark::build(&config, &root()).unwrap();
    let second = Benchmark::build(&config, &root()).unwrap();
    assert_eq!(first, second);
    let other_seed = DataConfig { seed: 1, ..config };
    let third = Benchmark::build(&other_seed, &root()).unwrap();
    assert_ne!(first.0.devices[0].test, third.0.devices[0].test);
    assert_no_leak(&third.0);
}

#[test]
fn default_tokenizer_is_lossless_on_every_shipped_text() {
    let tokenizer = &default_prepared().tokenizer;
    assert_eq!(tokenizer.vocab_size(), 1536);
    assert_eq!(
        (tokenizer.pad_id(), tokenizer.bos_id(), tokenizer.eos_id()),
        (PAD_ID, BOS_ID, EOS_ID)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("data"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    let mut checked = 0;
    for file in &files {
        for record in load_jsonl(file).unwrap() {
            for text in [
                record.question.clone(),
                record.answer.clone(),
                format!(" {}", record.answer),
            ] {
                let ids = tokenizer.encode(&text);
                assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
                assert!(!ids.contains(&EOS_ID) && !ids.contains(&PAD_ID));
                assert_eq!(tokenizer.decode(&ids), text, "in {}", file.display());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 35_558);
    // Text no training record contains still round-trips: every byte has a symbol.
    let unseen = "Ωμέγα ✓ 日本語 \t\u{1F600}  double  spaces ";
    assert_eq!(tokenizer.decode(&tokenizer.encode(unseen)), unseen);
    // Specials are skipped when decoding.
    let mut ids = vec![BOS_ID];
    ids.extend(tokenizer.encode("Answer: Anne"));
    ids.extend([EOS_ID, PAD_ID, PAD_ID]);
    assert_eq!(tokenizer.decode(&ids), "Answer: Anne");
}

#[test]
fn tokenizer_training_is_deterministic_and_survives_save_and_load() {
    let prepared = default_prepared();
    let config = DataConfig::default();
    // The texts before the length filter, as `prepare` trained on them.
    let (benchmark, _) = Benchmark::build(&config, &root()).unwrap();
    let again = Tokenizer::train(benchmark.training_texts(&config.prompt_template), 1536).unwrap();
    // Compared without assert_eq so a failure does not print two whole tokenizer files.
    assert!(
        again.to_json() == prepared.tokenizer.to_json(),
        "retraining on the same texts gave a different tokenizer.json"
    );

    let dir = scratch("tokenizer");
    let path = dir.join("tokenizer.json");
    prepared.tokenizer.save(&path).unwrap();
    let loaded = Tokenizer::load(&path).unwrap();
    assert!(loaded.to_json() == prepared.tokenizer.to_json());
    assert_eq!(loaded.vocab_size(), prepared.tokenizer.vocab_size());
    let text = "Question: In which country is the district municipality of Utena?\nAnswer:";
    assert_eq!(loaded.encode(text), prepared.tokenizer.encode(text));

    // The same file through the config's `tokenizer` key.
    let config = DataConfig {
        tokenizer: Some(path.clone()),
        ..DataConfig::default()
    };
    let via_config = prepare(&config, &root()).unwrap();
    assert!(via_config.tokenizer.to_json() == prepared.tokenizer.to_json());
}

#[test]
fn tokenizer_without_special_tokens_is_refused_by_name() {
    let dir = scratch("foreign-tokenizer");
    let path = dir.join("tokenizer.json");
    let json = default_prepared()
        .tokenizer
        .to_json()
        .replace("<eos>", "<stop>");
    std::fs::write(&path, json).unwrap();
    let error = Tokenizer::load(&path).unwrap_err();
    assert!(matches!(error, DataError::MissingSpecialToken { .. }));
    let message = error.to_string();
    assert!(
        message.contains("<eos>") && message.contains("</s>") && message.contains("tokenizer.json"),
        "{message}"
    );
    // Other spellings of the special tokens are found; a missing bos or pad falls back to eos.
    let json = default_prepared()
        .tokenizer
        .to_json()
        .replace("<eos>", "</s>")
        .replace("<bos>", "<start>")
        .replace("<pad>", "<blank>");
    std::fs::write(&path, json).unwrap();
    let foreign = Tokenizer::load(&path).unwrap();
    assert_eq!(foreign.eos_id(), EOS_ID);
    assert_eq!((foreign.bos_id(), foreign.pad_id()), (EOS_ID, EOS_ID));

    let missing = dir.join("nowhere.json");
    let message = Tokenizer::load(&missing).unwrap_err().to_string();
    assert!(message.contains("nowhere.json"), "{message}");
}

#[test]
fn examples_end_with_eos_and_the_length_filter_counts() {
    let prepared = default_prepared();
    let config = DataConfig::default();
    let mut question_tokens = 0;
    let mut answer_tokens = 0;
    let mut records = 0;
    for (party, split) in prepared.benchmark.parties() {
        if !party.ends_with("/train") {
            continue;
        }
        for record in split {
            let example = encode_example(&prepared.tokenizer, &config.prompt_template, record);
            assert_eq!(example.answer.last(), Some(&EOS_ID));
            assert!(example.prompt.len() <= config.max_prompt_tokens);
            assert!(example.answer.len() <= config.max_answer_tokens);
            question_tokens += prepared.tokenizer.encode(&record.question).len();
            answer_tokens += prepared.tokenizer.encode(&record.answer).len();
            records += 1;
        }
    }
    println!(
        "{records} training records; mean tokens per question {:.2}, per answer {:.2}\n{}",
        question_tokens as f64 / records as f64,
        answer_tokens as f64 / records as f64,
        prepared.lengths.to_markdown()
    );
    // The summary is consistent with what is left in the benchmark.
    for row in &prepared.lengths.rows {
        let (_, split) = prepared
            .benchmark
            .parties()
            .into_iter()
            .find(|(party, _)| *party == row.split)
            .unwrap();
        assert_eq!(split.len(), row.kept, "{}", row.split);
    }

    // Tight limits drop training records but never test records.
    let tight = DataConfig {
        max_prompt_tokens: 12,
        max_answer_tokens: 3,
        ..config.clone()
    };
    let mut benchmark = prepared.benchmark.clone();
    let tests_before: Vec<usize> = benchmark.devices.iter().map(|d| d.test.len()).collect();
    let lengths = benchmark.drop_overlong(&prepared.tokenizer, &tight);
    assert!(lengths.total_dropped() > 0);
    let tests_after: Vec<usize> = benchmark.devices.iter().map(|d| d.test.len()).collect();
    assert_eq!(tests_before, tests_after);
    assert!(lengths.rows.iter().any(|row| row.over_limit_kept > 0));

    // Batching real examples covers every index once.
    let examples: Vec<Example> = prepared.benchmark.devices[0]
        .train
        .iter()
        .map(|r| encode_example(&prepared.tokenizer, &config.prompt_template, r))
        .collect();
    let batches = length_bucketed_batches(&examples, 32, 3);
    let mut seen: Vec<usize> = batches.concat();
    seen.sort_unstable();
    assert_eq!(seen, (0..examples.len()).collect::<Vec<_>>());
}

#[test]
fn malformed_line_names_file_and_line() {
    let dir = scratch("malformed");
    let path = dir.join("broken.jsonl");
    std::fs::write(
        &path,
        "{\"domain\": \"x\", \"question\": \"Q1?\", \"answer\": \"A\"}\n\n\
         {\"domain\": \"x\", \"question\": \"Q2?\"\n",
    )
    .unwrap();
    let error = load_jsonl(&path).unwrap_err();
    assert!(
        matches!(error, DataError::MalformedRecord { line: 3, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("broken.jsonl:3"), "{message}");

    std::fs::write(
        &path,
        "{\"domain\": \"x\", \"question\": \"  \", \"answer\": \"A\"}\n",
    )
    .unwrap();
    let message = load_jsonl(&path).unwrap_err().to_string();
    assert!(
        message.contains("broken.jsonl:1") && message.contains("question"),
        "{message}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let missing = root().join("data/no_such_domain.jsonl");
    let message = load_jsonl(&missing).unwrap_err().to_string();
    assert!(message.contains("no_such_domain.jsonl"), "{message}");

    let config = DataConfig {
        domains: vec!["geography".into(), "no_such_domain".into()],
        ..DataConfig::default()
    };
    let message = Benchmark::build(&config, &root()).unwrap_err().to_string();
    assert!(message.contains("no_such_domain.jsonl"), "{message}");
}

#[test]
fn config_toml_shapes_and_unknown_keys() {
    let empty: Experiment = toml::from_str("[data]\n").unwrap();
    assert_eq!(empty.data, DataConfig::default());
    let dirichlet: Experiment = toml::from_str(
        "[data]\nseed = 3\npartition = { dirichlet = { alpha = 0.5, devices = 4 } }\n",
    )
    .unwrap();
    assert_eq!(
        dirichlet.data.partition,
        Partition::Dirichlet {
            alpha: 0.5,
            devices: 4
        }
    );
    let one: Experiment = toml::from_str("[data]\npartition = \"one-domain\"\n").unwrap();
    assert_eq!(one.data.partition, Partition::OneDomain);
    // The resolved config written to a run folder reads back the same.
    let written = toml::to_string(&dirichlet.data).unwrap();
    assert_eq!(
        toml::from_str::<DataConfig>(&written).unwrap(),
        dirichlet.data
    );

    let error = toml::from_str::<Experiment>("[data]\ntest_sise = 10\n").unwrap_err();
    assert!(error.to_string().contains("test_sise"), "{error}");
    let error = toml::from_str::<Experiment>(
        "[data]\npartition = { dirichlet = { alpha = 0.5, device = 4 } }\n",
    )
    .unwrap_err();
    // toml words this differently for enum variants ("unexpected keys in table: device, ...").
    let message = error.to_string();
    assert!(
        message.contains("`device`") || message.contains(": device,"),
        "{message}"
    );
}

#[test]
fn sizes_beyond_the_data_name_key_and_value() {
    let config = DataConfig {
        test_size: 6000,
        ..DataConfig::default()
    };
    let message = Benchmark::build(&config, &root()).unwrap_err().to_string();
    assert!(message.contains("test_size = 6000"), "{message}");
    assert!(message.contains("geography"), "{message}");

    let config = DataConfig {
        public_share: 0.0,
        public_valid_size: 5000,
        ..DataConfig::default()
    };
    let message = Benchmark::build(&config, &root()).unwrap_err().to_string();
    assert!(message.contains("public_valid_size = 5000"), "{message}");
}
