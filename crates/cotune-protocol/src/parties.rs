//! Who holds which data. The benchmark's split ([`cotune_data::Benchmark`]) is cut into the
//! parties' shares: the server holds the public corpus and its own evaluation sets for the
//! LLM ([`ServerData`]); each device holds its training, validation and test records
//! ([`DeviceData`]). Every party also holds every model's tokenizer (a tokenizer is a
//! vocabulary, agreed before the run like the models' configs).
//!
//! In one process the split is made in memory ([`prepare_parties`]); for a deployment
//! `cargo xtask split` writes each share into a folder of its own ([`write_parties`]:
//! `server/`, `device-<i>/`) and each process reads only its own ([`ServerData::read`],
//! [`DeviceData::read`]). Both paths hand the parties the same records, so a run gives the
//! same numbers either way.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cotune_data::{prepare, Benchmark, QaRecord, SeededRng, Tokenizer};
use cotune_distill::stable_hash;
use serde::{Deserialize, Serialize};

use crate::config::{EvalSplit, ExperimentConfig, SlmInit};
use crate::tokens::Codecs;

/// What the server holds.
pub struct ServerData {
    /// The public training corpus (after `max_public`).
    pub public_train: Vec<QaRecord>,
    /// The public validation split.
    pub public_valid: Vec<QaRecord>,
    /// The records the LLM is scored on (its test or validation set, per `eval_split`).
    pub llm_eval: Vec<QaRecord>,
    /// Field benchmark: public prompts without answers.
    pub public_prompts: Vec<QaRecord>,
    /// Every model's tokenizer.
    pub codecs: Codecs,
    /// The devices' names, from the config alone.
    pub device_names: Vec<String>,
}

/// What one device holds.
pub struct DeviceData {
    /// Its index in the config.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// The domains its records are of.
    pub domains: Vec<String>,
    /// Its training records.
    pub train: Vec<QaRecord>,
    /// Field benchmark: its users' questions, without answers.
    pub prompts: Vec<QaRecord>,
    /// The records every round scores it on (its test or validation split, per `eval_split`).
    pub eval: Vec<QaRecord>,
    /// The public corpus `(train after max_public, valid)`, for an SLM pre-trained on it.
    pub public: Option<(Vec<QaRecord>, Vec<QaRecord>)>,
    /// Every model's tokenizer.
    pub codecs: Codecs,
}

/// The split made in one process: the server's share and every device's. Tokenizers are
/// saved to `run_dir` as a run records them.
pub(crate) fn prepare_parties(
    config: &ExperimentConfig,
    root: &Path,
    run_dir: &Path,
) -> anyhow::Result<(ServerData, Vec<DeviceData>)> {
    let t = std::time::Instant::now();
    let (benchmark, codecs) = curate(config, root)?;
    save_tokenizers(&codecs, run_dir, config)?;
    let server = server_share(config, &benchmark, codecs.clone());
    let devices = (0..config.devices.len())
        .map(|i| device_share(config, &benchmark, i, codecs.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sizes: Vec<String> = devices
        .iter()
        .map(|d| format!("{} {}/{}", d.name, d.train.len(), d.eval.len()))
        .collect();
    progress!(
        "data ready: {} public train, {} public valid, {} for the LLM; devices (train/{}) {} ({:.1}s)",
        server.public_train.len(),
        server.public_valid.len(),
        server.llm_eval.len(),
        config.eval_split.describe(),
        sizes.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok((server, devices))
}

/// The benchmark of `config` and every model's tokenizer: what only a curator of the whole
/// data set (one process, or `cargo xtask split`) computes.
fn curate(config: &ExperimentConfig, root: &Path) -> anyhow::Result<(Benchmark, Codecs)> {
    let prepared = prepare(&config.data, root).context("preparing the data")?;
    let benchmark = prepared.benchmark;
    let template = &config.data.prompt_template;
    let texts = || benchmark.training_texts(template);
    let codecs = Codecs::resolve(config, prepared.tokenizer, &|n| {
        Ok(Tokenizer::train(texts(), n)?)
    })?;
    Ok((benchmark, codecs))
}

/// Saves the run's tokenizer and any model's own to `dir` (`tokenizer.json`,
/// `tokenizers/<model>.json`).
pub(crate) fn save_tokenizers(
    codecs: &Codecs,
    dir: &Path,
    config: &ExperimentConfig,
) -> anyhow::Result<()> {
    codecs
        .shared
        .tokenizer
        .save(&dir.join("tokenizer.json"))
        .context("saving the tokenizer")?;
    let own = codecs.own();
    if own.is_empty() {
        return Ok(());
    }
    let sub = dir.join("tokenizers");
    std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    let mut lines = Vec::new();
    for (name, codec) in &own {
        codec
            .tokenizer
            .save(&sub.join(format!("{name}.json")))
            .with_context(|| format!("saving the tokenizer of {name}"))?;
        lines.push(format!(
            "{name} {} tokens ({})",
            codec.tokenizer.vocab_size(),
            codec.origin
        ));
    }
    progress!(
        "own tokenizers: {}; the run's has {} tokens; alignment {}",
        lines.join(", "),
        codecs.shared.tokenizer.vocab_size(),
        config.train.alignment.name()
    );
    Ok(())
}

/// The public training corpus a run uses: all of it, or a seeded `max_public` of it.
fn public_train(config: &ExperimentConfig, mut records: Vec<QaRecord>) -> Vec<QaRecord> {
    if let Some(max) = config.max_public {
        SeededRng::for_stream(config.data.seed, "max-public").shuffle(&mut records);
        records.truncate(max);
    }
    records
}

/// The first `max_test` of `records` (all without it).
fn at_most(config: &ExperimentConfig, mut records: Vec<QaRecord>) -> Vec<QaRecord> {
    if let Some(max) = config.max_test {
        records.truncate(max);
    }
    records
}

fn server_share(config: &ExperimentConfig, b: &Benchmark, codecs: Codecs) -> ServerData {
    let eval = match config.eval_split {
        EvalSplit::Test => &b.llm_test,
        EvalSplit::Valid => &b.llm_valid,
    };
    // `max_test` applies per domain, as it does per device.
    let mut llm_eval = Vec::new();
    for domain in config.data.unique_domains() {
        let of: Vec<QaRecord> = eval
            .iter()
            .filter(|r| r.domain == domain)
            .cloned()
            .collect();
        llm_eval.extend(at_most(config, of));
    }
    ServerData {
        public_train: public_train(config, b.public_train.clone()),
        public_valid: b.public_valid.clone(),
        llm_eval,
        public_prompts: b.public_prompts.clone(),
        codecs,
        device_names: cotune_data::device_names(&config.data),
    }
}

/// Whether device `i`'s SLM is pre-trained on the public corpus (it then holds a copy).
fn needs_public(config: &ExperimentConfig, i: usize) -> bool {
    matches!(
        config.devices[i].init,
        SlmInit::PretrainedPublic | SlmInit::PretrainedGeneral
    )
}

/// The corpus device `i`'s SLM is pre-trained on: the public corpus, or in the field benchmark
/// for `pretrained-general` the general corpus (no device's or server's domain).
fn pretraining_corpus(
    config: &ExperimentConfig,
    b: &Benchmark,
    i: usize,
) -> (Vec<QaRecord>, Vec<QaRecord>) {
    let general = matches!(config.devices[i].init, SlmInit::PretrainedGeneral);
    match config.data.field.is_some() && general {
        true => (b.general_train.clone(), b.general_valid.clone()),
        false => (
            public_train(config, b.public_train.clone()),
            b.public_valid.clone(),
        ),
    }
}

fn device_share(
    config: &ExperimentConfig,
    b: &Benchmark,
    i: usize,
    codecs: Codecs,
) -> anyhow::Result<DeviceData> {
    let d = b
        .devices
        .get(i)
        .ok_or_else(|| anyhow::anyhow!("the data split has no device {i}"))?;
    let eval = match config.eval_split {
        EvalSplit::Test => d.test.clone(),
        EvalSplit::Valid => d.valid.clone(),
    };
    Ok(DeviceData {
        index: i,
        name: d.name.clone(),
        domains: d.domains.clone(),
        train: d.train.clone(),
        prompts: d.prompts.clone(),
        eval: at_most(config, eval),
        public: needs_public(config, i).then(|| pretraining_corpus(config, b, i)),
        codecs,
    })
}

/// `party.json`: what a party folder holds and for which data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PartyFile {
    /// `server` or `device-<i>`.
    party: String,
    /// The device's name (devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// The device's domains (devices only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    domains: Vec<String>,
    /// Fingerprint of the settings the split depends on ([`split_key`]).
    split: String,
}

/// What the split of `config` depends on: the data settings, the devices' domains and every
/// model's tokenizer setting. Parties check it so that a folder split for other settings is
/// refused rather than silently used.
fn split_key(config: &ExperimentConfig) -> anyhow::Result<String> {
    let tokenizers: Vec<String> = std::iter::once(&config.llm)
        .chain(config.devices.iter().map(|d| &d.slm))
        .map(|m| format!("{:?}", m.tokenizer))
        .chain(
            (0..config.devices.len()).map(|i| format!("{:?}", config.dpm_of(i).model().tokenizer)),
        )
        .collect();
    let domains: Vec<&str> = config.devices.iter().map(|d| d.domain.as_str()).collect();
    // Where the data files were read from is no part of the split.
    let mut data = config.data.clone();
    data.dir = PathBuf::new();
    Ok(stable_hash(&[
        "split-v1",
        &serde_json::to_string(&data)?,
        &domains.join(","),
        &tokenizers.join(";"),
    ]))
}

/// Writes every party's share of `config`'s data into its own folder under `out`:
/// `server/` (the public corpus, the LLM's evaluation sets) and `device-<i>/` (its training,
/// validation and test records, and the public corpus when its SLM is pre-trained on it), each
/// with every model's tokenizer. Returns the folders written, the server's first.
pub fn write_parties(
    config: &ExperimentConfig,
    root: &Path,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let (b, codecs) = curate(config, root)?;
    let key = split_key(config)?;
    let mut written = Vec::new();
    let server = out.join("server");
    let party = PartyFile {
        party: "server".into(),
        name: None,
        domains: Vec::new(),
        split: key.clone(),
    };
    write_folder(&server, &party, &codecs, config, |dir| {
        write_records(&dir.join("public-train.jsonl"), &b.public_train)?;
        write_records(&dir.join("public-valid.jsonl"), &b.public_valid)?;
        write_records(&dir.join("llm-valid.jsonl"), &b.llm_valid)?;
        write_records(&dir.join("llm-test.jsonl"), &b.llm_test)?;
        write_records(&dir.join("public-prompts.jsonl"), &b.public_prompts)
    })?;
    written.push(server);
    for (i, d) in b.devices.iter().enumerate() {
        let dir = out.join(format!("device-{i}"));
        let party = PartyFile {
            party: format!("device-{i}"),
            name: Some(d.name.clone()),
            domains: d.domains.clone(),
            split: key.clone(),
        };
        write_folder(&dir, &party, &codecs, config, |dir| {
            write_records(&dir.join("train.jsonl"), &d.train)?;
            write_records(&dir.join("valid.jsonl"), &d.valid)?;
            write_records(&dir.join("test.jsonl"), &d.test)?;
            write_records(&dir.join("prompts.jsonl"), &d.prompts)?;
            if needs_public(config, i) {
                // Written whole: `max_public` applies when read, as in one process.
                let (train, valid) = match config.data.field.is_some()
                    && matches!(config.devices[i].init, SlmInit::PretrainedGeneral)
                {
                    true => (&b.general_train, &b.general_valid),
                    false => (&b.public_train, &b.public_valid),
                };
                write_records(&dir.join("public-train.jsonl"), train)?;
                write_records(&dir.join("public-valid.jsonl"), valid)?;
            }
            Ok(())
        })?;
        written.push(dir);
    }
    Ok(written)
}

/// Writes one party folder through a temporary folder and a rename; refuses a folder that
/// exists, so nothing written before is lost.
fn write_folder(
    dir: &Path,
    party: &PartyFile,
    codecs: &Codecs,
    config: &ExperimentConfig,
    records: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::bail!(
            "{} exists; split writes each party's folder anew (remove it or choose another --out)",
            dir.display()
        );
    }
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    records(&tmp)?;
    save_tokenizers(codecs, &tmp, config)?;
    std::fs::write(tmp.join("party.json"), serde_json::to_vec_pretty(party)?)
        .with_context(|| format!("writing {}", tmp.join("party.json").display()))?;
    std::fs::rename(&tmp, dir).with_context(|| format!("moving {} into place", tmp.display()))?;
    Ok(())
}

fn write_records(path: &Path, records: &[QaRecord]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn read_records(dir: &Path, file: &str) -> anyhow::Result<Vec<QaRecord>> {
    let path = dir.join(file);
    Ok(cotune_data::load_jsonl(&path)?)
}

/// Prompts without answers (`prompts.jsonl`, `public-prompts.jsonl`): every line a record
/// whose answer is blank; a missing file is no prompts (a folder split before they existed).
fn read_prompts(dir: &Path, file: &str) -> anyhow::Result<Vec<QaRecord>> {
    let path = dir.join(file);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (k, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: QaRecord = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a prompt record", path.display(), k + 1))?;
        if r.question.trim().is_empty() || !r.answer.is_empty() {
            anyhow::bail!(
                "{} line {}: a prompt has a question and a blank answer",
                path.display(),
                k + 1
            );
        }
        out.push(r);
    }
    Ok(out)
}

/// Reads `party.json` of `dir`, checking that it is `party`'s share of `config`'s split.
fn read_party(dir: &Path, party: &str, config: &ExperimentConfig) -> anyhow::Result<PartyFile> {
    let path = dir.join("party.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (a folder written by `cargo xtask split` has it)",
            path.display()
        )
    })?;
    let file: PartyFile =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    if file.party != party {
        anyhow::bail!(
            "{} holds the data of {}, not of {party}",
            dir.display(),
            file.party
        );
    }
    if file.split != split_key(config)? {
        anyhow::bail!(
            "{} was split for other data settings than this config's ([data], the devices' \
             domains or a tokenizer differ); split again with `cargo xtask split`",
            dir.display()
        );
    }
    Ok(file)
}

/// Every model's tokenizer, read from a party folder (the run's `tokenizer.json` and the
/// models' own under `tokenizers/`).
fn read_codecs(dir: &Path, config: &ExperimentConfig) -> anyhow::Result<Codecs> {
    let shared = Tokenizer::load(&dir.join("tokenizer.json"))
        .with_context(|| format!("the run's tokenizer in {}", dir.display()))?;
    // A trained tokenizer of size n is the same for every model that names n: any of their
    // files is it.
    let own = dir.join("tokenizers");
    Codecs::resolve(config, shared, &|n| {
        let mut found = None;
        if let Ok(entries) = std::fs::read_dir(&own) {
            for entry in entries.flatten() {
                let t = Tokenizer::load(&entry.path())?;
                if t.vocab_size() == n {
                    found = Some(t);
                    break;
                }
            }
        }
        found.ok_or_else(|| {
            anyhow::anyhow!(
                "{} holds no trained tokenizer of {n} tokens; split again with `cargo xtask split`",
                own.display()
            )
        })
    })
}

impl ServerData {
    /// The server's share from its folder (`cargo xtask split`'s `server/`); it opens nothing
    /// else.
    pub fn read(dir: &Path, config: &ExperimentConfig) -> anyhow::Result<ServerData> {
        read_party(dir, "server", config)?;
        let b = Benchmark {
            public_train: read_records(dir, "public-train.jsonl")?,
            public_valid: read_records(dir, "public-valid.jsonl")?,
            devices: Vec::new(),
            llm_valid: read_records(dir, "llm-valid.jsonl")?,
            llm_test: read_records(dir, "llm-test.jsonl")?,
            public_prompts: read_prompts(dir, "public-prompts.jsonl")?,
            general_train: Vec::new(),
            general_valid: Vec::new(),
        };
        Ok(server_share(config, &b, read_codecs(dir, config)?))
    }

    /// The server's share of the split made from the data files themselves (no party folder):
    /// the whole benchmark is built and everything but the server's share dropped.
    pub(crate) fn from_files(
        config: &ExperimentConfig,
        root: &Path,
        run_dir: &Path,
    ) -> anyhow::Result<ServerData> {
        Ok(prepare_parties(config, root, run_dir)?.0)
    }
}

impl DeviceData {
    /// Device `index`'s share from its folder (`cargo xtask split`'s `device-<i>/`); it opens
    /// nothing else.
    pub fn read(dir: &Path, config: &ExperimentConfig, index: usize) -> anyhow::Result<DeviceData> {
        let party = read_party(dir, &format!("device-{index}"), config)?;
        let eval = match config.eval_split {
            EvalSplit::Test => read_records(dir, "test.jsonl")?,
            EvalSplit::Valid => read_records(dir, "valid.jsonl")?,
        };
        let general = config.data.field.is_some()
            && matches!(config.devices[index].init, SlmInit::PretrainedGeneral);
        let public = match needs_public(config, index) {
            true if general => Some((
                read_records(dir, "public-train.jsonl")?,
                read_records(dir, "public-valid.jsonl")?,
            )),
            true => Some((
                public_train(config, read_records(dir, "public-train.jsonl")?),
                read_records(dir, "public-valid.jsonl")?,
            )),
            false => None,
        };
        Ok(DeviceData {
            index,
            name: party.name.unwrap_or_else(|| format!("device-{index}")),
            domains: party.domains,
            train: read_records(dir, "train.jsonl")?,
            prompts: read_prompts(dir, "prompts.jsonl")?,
            eval: at_most(config, eval),
            public,
            codecs: read_codecs(dir, config)?,
        })
    }

    /// Device `index`'s share of the split made from the data files themselves (the whole
    /// benchmark is built and everything but the device's share dropped); its tokenizers are
    /// saved to `dir`.
    pub fn from_files(
        config: &ExperimentConfig,
        root: &Path,
        dir: &Path,
        index: usize,
    ) -> anyhow::Result<DeviceData> {
        let (b, codecs) = curate(config, root)?;
        save_tokenizers(&codecs, dir, config)?;
        device_share(config, &b, index, codecs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_party_file_names_its_party_and_refuses_another_split() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.toml"),
        )
        .unwrap();
        let config = ExperimentConfig::parse(&text, Path::new("smoke.toml")).unwrap();
        let file = PartyFile {
            party: "device-1".into(),
            name: Some("chemistry".into()),
            domains: vec!["chemistry".into()],
            split: split_key(&config).unwrap(),
        };
        std::fs::write(
            dir.path().join("party.json"),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        assert!(read_party(dir.path(), "device-1", &config).is_ok());
        let err = read_party(dir.path(), "server", &config).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds the data of device-1, not of server"),
            "{err}"
        );
        let mut other = config.clone();
        other.data.seed += 1;
        let err = read_party(dir.path(), "device-1", &other).unwrap_err();
        assert!(err.to_string().contains("other data settings"), "{err}");
        let err = read_party(&dir.path().join("none"), "server", &config).unwrap_err();
        assert!(err.to_string().contains("party.json"), "{err}");
    }
}
