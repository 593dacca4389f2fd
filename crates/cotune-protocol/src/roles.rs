//! The two roles of a round: a [`Device`] (its SLM, its private data, and what its method keeps
//! on it: a [`DeviceState`], such as a [`DistilledProxy`]) and the [`Server`] (the LLM, the
//! public corpus, the DPMs it holds). In a round they only exchange bytes (see
//! [`crate::methods`]); each saves and restores its own models for resuming.

use std::any::Any;
use std::path::Path;

use cotune_data::{format_prompt, QaRecord, SeededRng};
use cotune_distill::{
    mutual_learning_epoch, train_epoch, Bridge, Bridges, DistillError, EpochReport, Gate, Learner,
    TrainSettings,
};
use cotune_eval::{generate_answers, EvalOptions};
use cotune_host::{Example, Model, ParamSelection};
use serde::{Deserialize, Serialize};

use crate::message::{decode_params, encode_params};
use crate::seed::{RoundSeed, Stream};
use crate::tokens::Codec;

/// A protocol-level failure, naming who and what.
pub type RoleResult<T> = anyhow::Result<T>;

/// A distilled proxy model on a device.
///
/// The SDK freezes a model's base when adapters are attached, so the proxy is kept as two
/// copies of one architecture: `shared`, without adapters, whose every parameter is the shared
/// part that travels and learns in mutual learning; and `adapted`, the same base with the
/// device's low-rank adapters (the domain-specific part, trained in DST, never sent). The
/// `adapted` copy's base is overwritten with `shared`'s after every change, so it always is
/// "shared part + this device's adapters": the proxy that teaches the SLM and is evaluated.
pub struct DistilledProxy {
    /// Shared part, all trainable.
    pub shared: Model,
    /// Shared part (frozen) plus adapters (trainable).
    pub adapted: Model,
    /// Schedule counter of `shared`.
    pub shared_step: u32,
    /// Schedule counter of `adapted`.
    pub adapted_step: u32,
    /// Its tokenizer.
    pub codec: Codec,
    /// The device's training examples in the proxy's tokens (DST, local tuning).
    pub train: Vec<Example>,
    /// The public transfer examples in the proxy's tokens.
    pub public_transfer: Vec<Example>,
    /// The same public transfer examples in the SLM's tokens.
    pub slm_public_transfer: Vec<Example>,
    /// From the SLM's vocabulary to the proxy's, when they differ.
    pub from_slm: Option<Bridge>,
    /// From the proxy's vocabulary to the SLM's, when they differ.
    pub to_slm: Option<Bridge>,
}

impl DistilledProxy {
    /// Copies the shared part into the adapted copy.
    pub fn sync(&mut self) -> RoleResult<()> {
        let params = self.shared.export_params(ParamSelection::All)?;
        self.adapted.import_params(&params)?;
        Ok(())
    }

    /// The serialised shared part (what is uploaded).
    pub fn upload(&self) -> RoleResult<Vec<u8>> {
        Ok(encode_params(
            &self.adapted.export_params(ParamSelection::Shared)?,
        ))
    }

    /// Replaces the shared part with a downloaded one.
    pub fn download(&mut self, bytes: &[u8]) -> RoleResult<()> {
        let params = decode_params(bytes)?;
        self.shared.import_params(&params)?;
        self.adapted.import_params(&params)?;
        Ok(())
    }
}

/// What a method keeps on a device besides the SLM (a proxy, a transfer set): it is saved,
/// restored and scored with the device. A method reads its own back with
/// [`Device::state`] / [`Device::state_mut`].
pub trait DeviceState: Any + Send + Sync {
    /// The models it holds that are scored every round: `(who, model, tokenizer)`, `who`
    /// naming the prediction files (`<device>-<who>.jsonl`) and the record's score (`dpm`).
    fn scored(&self) -> Vec<(&'static str, &Model, &Codec)> {
        Vec::new()
    }

    /// Writes its models to `dir` as files named from `prefix`; returns what else
    /// [`restore`](Self::restore) needs (schedule counters).
    fn save(&self, _dir: &Path, _prefix: &str) -> RoleResult<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    /// Reads back what [`save`](Self::save) wrote.
    fn restore(
        &mut self,
        _dir: &Path,
        _prefix: &str,
        _saved: &serde_json::Value,
    ) -> RoleResult<()> {
        Ok(())
    }
}

impl DeviceState for DistilledProxy {
    fn scored(&self) -> Vec<(&'static str, &Model, &Codec)> {
        vec![("dpm", &self.adapted, &self.codec)]
    }

    fn save(&self, dir: &Path, prefix: &str) -> RoleResult<serde_json::Value> {
        save_model(&self.shared, dir, &format!("{prefix}-dpm-shared"))?;
        save_model(&self.adapted, dir, &format!("{prefix}-dpm-adapted"))?;
        Ok(serde_json::json!([self.shared_step, self.adapted_step]))
    }

    fn restore(&mut self, dir: &Path, prefix: &str, saved: &serde_json::Value) -> RoleResult<()> {
        let (shared, adapted): (u32, u32) = serde_json::from_value(saved.clone())
            .map_err(|e| anyhow::anyhow!("the proxy's schedule counters {saved}: {e}"))?;
        load_model(&mut self.shared, dir, &format!("{prefix}-dpm-shared"))?;
        load_model(&mut self.adapted, dir, &format!("{prefix}-dpm-adapted"))?;
        (self.shared_step, self.adapted_step) = (shared, adapted);
        Ok(())
    }
}

/// The method state `T` in `state`, or an error naming the device and the type.
fn state_in<'a, T: DeviceState>(
    state: &'a mut Option<Box<dyn DeviceState>>,
    device: &str,
) -> RoleResult<&'a mut T> {
    state
        .as_deref_mut()
        .and_then(|s| (s as &mut dyn Any).downcast_mut::<T>())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "device {device} holds no {}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("state")
            )
        })
}

/// An edge device.
pub struct Device {
    /// Its index in the experiment.
    pub index: usize,
    /// Its name (its domain).
    pub name: String,
    /// Its small language model.
    pub slm: Model,
    /// The SLM's tokenizer.
    pub slm_codec: Codec,
    /// The SLM's schedule counter.
    pub slm_step: u32,
    /// What its method keeps on it, if anything (its distilled proxy, ...).
    pub state: Option<Box<dyn DeviceState>>,
    /// Private training examples, in the SLM's tokens.
    pub train: Vec<Example>,
    /// Private training records (for synthetic questions).
    pub train_records: Vec<QaRecord>,
    /// Its users' questions without answers (the field benchmark's unlabelled prompts).
    pub prompts: Vec<QaRecord>,
    /// Held-out records every round is scored on: the test split, or the validation split with
    /// `eval_split = "valid"`.
    pub test: Vec<QaRecord>,
}

impl Device {
    /// Its method state of type `T`, if it holds one.
    pub fn state<T: DeviceState>(&self) -> Option<&T> {
        self.state
            .as_deref()
            .and_then(|s| (s as &dyn Any).downcast_ref::<T>())
    }

    /// Its method state of type `T`, or an error naming the device.
    pub fn state_mut<T: DeviceState>(&mut self) -> RoleResult<&mut T> {
        state_in(&mut self.state, &self.name)
    }

    /// Its distilled proxy, or an error naming the device.
    pub fn proxy(&mut self) -> RoleResult<&mut DistilledProxy> {
        self.state_mut()
    }

    /// Trains the SLM on its local data alone.
    pub fn tune_slm_locally(
        &mut self,
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> Result<Option<EpochReport>, DistillError> {
        let train = std::mem::take(&mut self.train);
        let done = self.tune_slm_on(&train, epochs, settings, seed);
        self.train = train;
        done
    }

    /// Trains the SLM on `examples` (in its tokens) with cross-entropy, `epochs` passes.
    pub fn tune_slm_on(
        &mut self,
        examples: &[Example],
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> Result<Option<EpochReport>, DistillError> {
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut self.slm,
                None,
                examples,
                settings,
                seed.of(Stream::SlmLocalTuning, e),
                &mut self.slm_step,
            )?);
        }
        Ok(last)
    }

    /// Trains the DPM's shared part on local data alone (FedAvg, and the no-SAML ablation).
    pub fn tune_dpm_locally(
        &mut self,
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> RoleResult<Option<EpochReport>> {
        let proxy = self.proxy()?;
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut proxy.shared,
                None,
                &proxy.train,
                settings,
                seed.of(Stream::DpmLocalTuning, e),
                &mut proxy.shared_step,
            )?);
        }
        proxy.sync()?;
        Ok(last)
    }

    /// Domain-specific tuning: the adapters learn the local data, the shared part frozen.
    pub fn domain_specific_tuning(
        &mut self,
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> RoleResult<Option<EpochReport>> {
        let proxy = self.proxy()?;
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut proxy.adapted,
                None,
                &proxy.train,
                settings,
                seed.of(Stream::DomainSpecificTuning, e),
                &mut proxy.adapted_step,
            )?);
        }
        Ok(last)
    }

    /// Structure-agnostic mutual learning between the SLM and the DPM over the transfer set
    /// (`transfer`: the SLM's and the proxy's tokens of the same texts), gated per example with
    /// `gate` (the paper's fixed weights without), across vocabularies through the proxy's
    /// bridges.
    #[allow(clippy::too_many_arguments)]
    pub fn mutual_learning(
        &mut self,
        transfer: (&[Example], &[Example]),
        epochs: usize,
        slm_settings: &TrainSettings,
        dpm_settings: &TrainSettings,
        seed: RoundSeed,
        gate: Option<Gate>,
    ) -> RoleResult<(Option<EpochReport>, Option<EpochReport>)> {
        let proxy: &mut DistilledProxy = state_in(&mut self.state, &self.name)?;
        let mut last = (None, None);
        for e in 0..epochs {
            let (a, b) = mutual_learning_epoch(
                Learner {
                    model: &mut self.slm,
                    teacher_view: None,
                    settings: slm_settings,
                    step: &mut self.slm_step,
                    examples: transfer.0,
                },
                Learner {
                    model: &mut proxy.shared,
                    teacher_view: Some(&proxy.adapted),
                    settings: dpm_settings,
                    step: &mut proxy.shared_step,
                    examples: transfer.1,
                },
                seed.of(Stream::DeviceMutualLearning, e),
                gate,
                Bridges {
                    to_left: proxy.to_slm.as_ref(),
                    to_right: proxy.from_slm.as_ref(),
                },
            )?;
            proxy.sync()?;
            last = (Some(a), Some(b));
        }
        Ok(last)
    }

    /// `count` questions the DPM writes in the style of the local ones (prompted with the first
    /// half of a local question) and answers itself, in the DPM's tokens; nothing leaves the
    /// device.
    pub fn synthetic_transfer(
        &self,
        template: &str,
        count: usize,
        max_prompt_tokens: usize,
        max_answer_tokens: usize,
        seed: RoundSeed,
    ) -> RoleResult<Vec<Example>> {
        let Some(proxy) = self.state::<DistilledProxy>() else {
            anyhow::bail!("device {} holds no DistilledProxy", self.name);
        };
        if count == 0 || self.train_records.is_empty() {
            return Ok(Vec::new());
        }
        let tokenizer = &*proxy.codec.tokenizer;
        let mut rng = SeededRng::for_stream(seed.of(Stream::SyntheticQuestions, 0), "synthetic");
        let prefixes: Vec<String> = (0..count)
            .map(|_| {
                let q = &self.train_records[rng.below(self.train_records.len())].question;
                let words: Vec<&str> = q.split_whitespace().collect();
                words[..words.len().div_ceil(2)].join(" ")
            })
            .collect();
        let stem = template.split("{question}").next().unwrap_or("");
        let prompts: Vec<Vec<u32>> = prefixes
            .iter()
            .map(|p| tokenizer.encode(&format!("{stem}{p}")))
            .collect();
        let options = EvalOptions {
            max_new_tokens: 12,
            batch_size: 32,
            first_line: false,
        };
        let tails = generate_answers(&proxy.adapted, &prompts, tokenizer.eos_id(), &options)?;
        let questions: Vec<QaRecord> = prefixes
            .iter()
            .zip(&tails)
            .map(|(p, t)| {
                let tail = tokenizer.decode(t);
                let tail = tail.split(['\n', '?']).next().unwrap_or("");
                QaRecord {
                    domain: self.name.clone(),
                    question: format!("{p}{}?", tail.trim_end()),
                    answer: String::new(),
                }
            })
            .collect();
        let prompts: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| {
                let mut ids = tokenizer.encode(&format_prompt(template, q));
                let keep = ids.len().saturating_sub(max_prompt_tokens);
                ids.drain(..keep);
                ids
            })
            .collect();
        let options = EvalOptions {
            max_new_tokens: max_answer_tokens.saturating_sub(1).max(1) as u32,
            batch_size: 32,
            first_line: false,
        };
        let answers = generate_answers(&proxy.adapted, &prompts, tokenizer.eos_id(), &options)?;
        Ok(prompts
            .into_iter()
            .zip(answers)
            // An empty answer is kept as a lone eos: the KL still speaks about the question.
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, mut a)| {
                a.push(tokenizer.eos_id());
                Example::new(p, a)
            })
            .collect())
    }
}

/// `records`' questions answered by `model` (greedy decoding, in `codec`'s tokens), the
/// answers as text: what a teacher says on prompts that have no reference. An empty answer is
/// kept (a lone end of sequence): the teacher's distribution still speaks about the prompt.
pub fn answer_prompts(
    model: &Model,
    codec: &Codec,
    records: &[QaRecord],
    template: &str,
    max_answer_tokens: usize,
    batch_size: usize,
) -> RoleResult<Vec<QaRecord>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let prompts: Vec<Vec<u32>> = codec
        .encode(records, template)
        .into_iter()
        .map(|e| e.prompt)
        .collect();
    let options = EvalOptions {
        max_new_tokens: max_answer_tokens.saturating_sub(1).max(1) as u32,
        batch_size: batch_size.max(1),
        first_line: true,
    };
    let tokenizer = &*codec.tokenizer;
    let answers = generate_answers(model, &prompts, tokenizer.eos_id(), &options)?;
    Ok(records
        .iter()
        .zip(answers)
        .map(|(r, ids)| {
            let text = tokenizer.decode(&ids);
            QaRecord {
                answer: text.lines().next().unwrap_or("").trim().to_string(),
                ..r.clone()
            }
        })
        .collect())
}

/// How sure `model` is of each of `records`' answers: the mean log-probability per answer
/// token (end of sequence included) in `codec`'s tokens. Higher is surer; 0 is certain.
pub fn answer_confidence(
    model: &Model,
    codec: &Codec,
    records: &[QaRecord],
    template: &str,
    batch_size: usize,
) -> RoleResult<Vec<f64>> {
    let examples = codec.encode(records, template);
    // The gate's reference score is this mean log-probability.
    let score = cotune_distill::Gate {
        signal: cotune_distill::GateSignal::Reference,
        sharpness: 1.0,
    };
    let mut out = Vec::with_capacity(examples.len());
    for batch in examples.chunks(batch_size.max(1)) {
        let logits = model.answer_logits(batch)?;
        out.extend(score.scores(batch, &logits));
    }
    Ok(out)
}

/// A seeded choice of at most `size` of `records` (all of them, in a seeded order, when there
/// are fewer).
pub fn choose(records: &[QaRecord], size: usize, seed: u64, stream: &str) -> Vec<QaRecord> {
    let mut idx: Vec<usize> = (0..records.len()).collect();
    SeededRng::for_stream(seed, stream).shuffle(&mut idx);
    idx.truncate(size);
    idx.into_iter().map(|i| records[i].clone()).collect()
}

/// What a method keeps on the server besides the LLM and the public corpus (the DPM slots): it
/// is saved and restored with the server. A method reads its own back with
/// [`Server::state`] / [`Server::state_mut`].
pub trait ServerState: Any + Send + Sync {
    /// Writes its models to `dir`; returns what else [`restore`](Self::restore) needs.
    fn save(&self, _dir: &Path) -> RoleResult<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    /// Reads back what [`save`](Self::save) wrote.
    fn restore(&mut self, _dir: &Path, _saved: &serde_json::Value) -> RoleResult<()> {
        Ok(())
    }
}

/// The DPMs the server holds for the methods with a proxy, and what it learns with them.
pub struct ServerProxies {
    /// One (aggregated) or one per device.
    pub dpms: Vec<Model>,
    /// Their schedule counters.
    pub dpm_steps: Vec<u32>,
    /// The public training corpus in the DPMs' tokens (the same texts, in the same order as
    /// the server's).
    pub public_dpm: Vec<Example>,
    /// The public validation split in the DPMs' tokens (the screen of uploads,
    /// `train.screen_ratio`).
    pub public_valid: Vec<Example>,
    /// The DPMs' tokenizer (every slot's: FedAvg needs one DPM).
    pub codec: Codec,
    /// From the DPMs' vocabulary to the LLM's, when they differ.
    pub to_llm: Option<Bridge>,
    /// From the LLM's vocabulary to the DPMs', when they differ.
    pub to_dpm: Option<Bridge>,
}

impl ServerState for ServerProxies {
    fn save(&self, dir: &Path) -> RoleResult<serde_json::Value> {
        for (k, m) in self.dpms.iter().enumerate() {
            save_model(m, dir, &format!("server-dpm-{k}"))?;
        }
        Ok(serde_json::json!(self.dpm_steps))
    }

    fn restore(&mut self, dir: &Path, saved: &serde_json::Value) -> RoleResult<()> {
        let steps: Vec<u32> = serde_json::from_value(saved.clone())
            .map_err(|e| anyhow::anyhow!("the server DPMs' schedule counters {saved}: {e}"))?;
        if steps.len() != self.dpms.len() {
            anyhow::bail!(
                "the checkpoint has {} server DPM counters, the server holds {} DPMs",
                steps.len(),
                self.dpms.len()
            );
        }
        for (k, m) in self.dpms.iter_mut().enumerate() {
            load_model(m, dir, &format!("server-dpm-{k}"))?;
        }
        self.dpm_steps = steps;
        Ok(())
    }
}

impl ServerProxies {
    /// The serialised shared part in DPM slot `slot` (what is downloaded).
    pub fn message(&self, slot: usize) -> RoleResult<Vec<u8>> {
        Ok(encode_params(
            &self.dpms[slot].export_params(ParamSelection::All)?,
        ))
    }
}

/// The cloud server.
pub struct Server {
    /// The large language model.
    pub llm: Model,
    /// The LLM's schedule counter.
    pub llm_step: u32,
    /// The public training corpus as records.
    pub public_records: Vec<QaRecord>,
    /// The public validation split as records.
    pub public_valid_records: Vec<QaRecord>,
    /// Public prompts without answers (the field benchmark).
    pub public_prompts: Vec<QaRecord>,
    /// The public training corpus in the LLM's tokens.
    pub public_train: Vec<Example>,
    /// The LLM's tokenizer.
    pub llm_codec: Codec,
    /// What its method keeps on it, if anything (DPM slots, ...).
    pub state: Option<Box<dyn ServerState>>,
}

/// The method state `T` in `state`, or an error naming the type.
fn server_state_in<T: ServerState>(state: &mut Option<Box<dyn ServerState>>) -> RoleResult<&mut T> {
    state
        .as_deref_mut()
        .and_then(|s| (s as &mut dyn Any).downcast_mut::<T>())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the server holds no {}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("state")
            )
        })
}

impl Server {
    /// Its method state of type `T`, if it holds one.
    pub fn state<T: ServerState>(&self) -> Option<&T> {
        self.state
            .as_deref()
            .and_then(|s| (s as &dyn Any).downcast_ref::<T>())
    }

    /// Its method state of type `T`, or an error naming the type.
    pub fn state_mut<T: ServerState>(&mut self) -> RoleResult<&mut T> {
        server_state_in(&mut self.state)
    }

    /// Its DPM slots, or an error.
    pub fn proxies(&mut self) -> RoleResult<&mut ServerProxies> {
        self.state_mut()
    }

    /// The serialised shared part in DPM slot `slot` (what is downloaded).
    pub fn dpm_message(&self, slot: usize) -> RoleResult<Vec<u8>> {
        self.state::<ServerProxies>()
            .ok_or_else(|| anyhow::anyhow!("the server holds no DPMs"))?
            .message(slot)
    }

    /// The indices of a seeded subsample of the public corpus, in corpus order.
    pub fn public_sample_indices(&self, size: usize, seed: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.public_train.len()).collect();
        SeededRng::for_stream(seed, "public-sample").shuffle(&mut idx);
        idx.truncate(size.min(idx.len()));
        idx.sort_unstable();
        idx
    }

    /// A seeded subsample of the public corpus, in the LLM's tokens.
    pub fn public_sample(&self, size: usize, seed: u64) -> Vec<Example> {
        self.public_sample_indices(size, seed)
            .into_iter()
            .map(|i| self.public_train[i].clone())
            .collect()
    }

    /// Mutual learning between the LLM and DPM slot `slot` on the public examples at
    /// `sample` (indices into the corpus) followed by `extra` (prompts a model answered, as
    /// text in `template`), gated per example with `gate` (the paper's fixed
    /// weights without), across vocabularies through the server's bridges.
    #[allow(clippy::too_many_arguments)]
    pub fn mutual_learning(
        &mut self,
        slot: usize,
        sample: &[usize],
        extra: &[QaRecord],
        template: &str,
        epochs: usize,
        llm_settings: &TrainSettings,
        dpm_settings: &TrainSettings,
        seed: RoundSeed,
        gate: Option<Gate>,
    ) -> RoleResult<(Option<EpochReport>, Option<EpochReport>)> {
        let mut last = (None, None);
        let mut llm_side: Vec<Example> = sample
            .iter()
            .map(|&i| self.public_train[i].clone())
            .collect();
        let p: &mut ServerProxies = server_state_in(&mut self.state)?;
        let mut dpm_side: Vec<Example> = match p.to_dpm.is_some() || p.to_llm.is_some() {
            true => sample.iter().map(|&i| p.public_dpm[i].clone()).collect(),
            false => llm_side.clone(),
        };
        llm_side.extend(self.llm_codec.encode(extra, template));
        dpm_side.extend(p.codec.encode(extra, template));
        for e in 0..epochs {
            let (a, b) = mutual_learning_epoch(
                Learner {
                    model: &mut self.llm,
                    teacher_view: None,
                    settings: llm_settings,
                    step: &mut self.llm_step,
                    examples: &llm_side,
                },
                Learner {
                    model: &mut p.dpms[slot],
                    teacher_view: None,
                    settings: dpm_settings,
                    step: &mut p.dpm_steps[slot],
                    examples: &dpm_side,
                },
                seed.of(Stream::ServerMutualLearning(slot), e),
                gate,
                Bridges {
                    to_left: p.to_llm.as_ref(),
                    to_right: p.to_dpm.as_ref(),
                },
            )?;
            last = (Some(a), Some(b));
        }
        Ok(last)
    }
}

/// The schedule counters of a device's models, saved with its checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceSteps {
    /// The SLM's.
    pub slm: u32,
    /// What the method's state saved besides its models ([`DeviceState::save`]).
    #[serde(default)]
    pub method: serde_json::Value,
}

fn save_model(model: &Model, dir: &Path, name: &str) -> RoleResult<()> {
    let path = dir.join(format!("{name}.ckpt"));
    model.save(&path)?;
    Ok(())
}

fn load_model(model: &mut Model, dir: &Path, name: &str) -> RoleResult<()> {
    use anyhow::Context;
    let path = dir.join(format!("{name}.ckpt"));
    model
        .load(&path)
        .with_context(|| format!("resuming {}", path.display()))
}

impl Device {
    /// Writes its models to `dir` and returns their schedule counters.
    pub fn save(&self, dir: &Path) -> RoleResult<DeviceSteps> {
        let prefix = format!("device-{}", self.index);
        save_model(&self.slm, dir, &format!("{prefix}-slm"))?;
        let method = match &self.state {
            Some(state) => state.save(dir, &prefix)?,
            None => serde_json::Value::Null,
        };
        Ok(DeviceSteps {
            slm: self.slm_step,
            method,
        })
    }

    /// Reads back what [`save`](Self::save) wrote.
    pub fn restore(&mut self, dir: &Path, steps: &DeviceSteps) -> RoleResult<()> {
        let prefix = format!("device-{}", self.index);
        load_model(&mut self.slm, dir, &format!("{prefix}-slm"))?;
        self.slm_step = steps.slm;
        if let Some(state) = &mut self.state {
            state.restore(dir, &prefix, &steps.method)?;
        }
        Ok(())
    }
}

/// The schedule counters of the server's models, saved with its checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSteps {
    /// The LLM's.
    pub llm: u32,
    /// What the method's state saved besides its models ([`ServerState::save`]).
    #[serde(default)]
    pub method: serde_json::Value,
}

impl Server {
    /// Writes its models to `dir` and returns their schedule counters.
    pub fn save(&self, dir: &Path) -> RoleResult<ServerSteps> {
        save_model(&self.llm, dir, "llm")?;
        let method = match &self.state {
            Some(state) => state.save(dir)?,
            None => serde_json::Value::Null,
        };
        Ok(ServerSteps {
            llm: self.llm_step,
            method,
        })
    }

    /// Reads back what [`save`](Self::save) wrote.
    pub fn restore(&mut self, dir: &Path, steps: &ServerSteps) -> RoleResult<()> {
        load_model(&mut self.llm, dir, "llm")?;
        if let Some(state) = &mut self.state {
            state.restore(dir, &steps.method)?;
        }
        self.llm_step = steps.llm;
        Ok(())
    }
}
