//! The two roles of a round: a [`Device`] (its SLM, its distilled proxy, its private data) and
//! the [`Server`] (the LLM, the public corpus, the DPMs it holds). They only exchange bytes.

use cotune_data::{format_prompt, QaRecord, SeededRng, Tokenizer};
use cotune_distill::{
    mutual_learning_epoch, train_epoch, DistillError, EpochReport, Learner, TrainSettings,
};
use cotune_eval::{generate_answers, EvalOptions};
use cotune_host::{Example, Model, ParamSelection};

use crate::message::{decode_params, encode_params, weighted_average};

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

/// Losses of one device in one round.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceLosses {
    /// DST (adapters) on local data.
    pub dst: Option<EpochReport>,
    /// The SLM's last pass (local CE, or its side of mutual learning).
    pub slm: Option<EpochReport>,
    /// The DPM shared part's last pass.
    pub dpm: Option<EpochReport>,
    /// Size of the device-side transfer set this round.
    pub transfer_examples: usize,
}

/// An edge device.
pub struct Device {
    /// Its name (its domain).
    pub name: String,
    /// Its small language model.
    pub slm: Model,
    /// The SLM's schedule counter.
    pub slm_step: u32,
    /// Its distilled proxy, for methods that use one.
    pub dpm: Option<DistilledProxy>,
    /// Private training examples.
    pub train: Vec<Example>,
    /// Private training records (for synthetic questions).
    pub train_records: Vec<QaRecord>,
    /// Held-out test records.
    pub test: Vec<QaRecord>,
    /// Public examples received once for the `public` transfer set.
    pub public_transfer: Vec<Example>,
}

fn epoch_seed(seed: u64, round: usize, device: usize, phase: u64, epoch: usize) -> u64 {
    let parts = [
        seed.to_string(),
        round.to_string(),
        device.to_string(),
        phase.to_string(),
        epoch.to_string(),
    ];
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    u64::from_str_radix(&cotune_distill::stable_hash(&refs), 16).expect("hex")
}

/// Seeds of one device's phases in one round.
#[derive(Debug, Clone, Copy)]
pub struct RoundSeed {
    /// The experiment seed.
    pub seed: u64,
    /// The round.
    pub round: usize,
    /// The device index (or `usize::MAX` for the server).
    pub device: usize,
}

impl RoundSeed {
    /// The seed of `phase`'s `epoch`.
    pub fn of(&self, phase: u64, epoch: usize) -> u64 {
        epoch_seed(self.seed, self.round, self.device, phase, epoch)
    }
}

impl Device {
    fn proxy(&mut self) -> RoleResult<&mut DistilledProxy> {
        let name = self.name.clone();
        self.dpm
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("device {name} has no distilled proxy"))
    }

    /// Trains the SLM on its local data alone.
    pub fn tune_slm_locally(
        &mut self,
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> Result<Option<EpochReport>, DistillError> {
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut self.slm,
                None,
                &self.train,
                settings,
                seed.of(1, e),
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
        let train = std::mem::take(&mut self.train);
        let proxy = self.proxy()?;
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut proxy.shared,
                None,
                &train,
                settings,
                seed.of(2, e),
                &mut proxy.shared_step,
            )?);
        }
        proxy.sync()?;
        self.train = train;
        Ok(last)
    }

    /// Domain-specific tuning: the adapters learn the local data, the shared part frozen.
    pub fn domain_specific_tuning(
        &mut self,
        epochs: usize,
        settings: &TrainSettings,
        seed: RoundSeed,
    ) -> RoleResult<Option<EpochReport>> {
        let train = std::mem::take(&mut self.train);
        let proxy = self.proxy()?;
        let mut last = None;
        for e in 0..epochs {
            last = Some(train_epoch(
                &mut proxy.adapted,
                None,
                &train,
                settings,
                seed.of(3, e),
                &mut proxy.adapted_step,
            )?);
        }
        self.train = train;
        Ok(last)
    }

    /// Structure-agnostic mutual learning between the SLM and the DPM over `transfer`.
    pub fn mutual_learning(
        &mut self,
        transfer: &[Example],
        epochs: usize,
        slm_settings: &TrainSettings,
        dpm_settings: &TrainSettings,
        seed: RoundSeed,
    ) -> RoleResult<(Option<EpochReport>, Option<EpochReport>)> {
        let Some(proxy) = self.dpm.as_mut() else {
            anyhow::bail!("device {} has no distilled proxy", self.name);
        };
        let mut last = (None, None);
        for e in 0..epochs {
            let (a, b) = mutual_learning_epoch(
                Learner {
                    model: &mut self.slm,
                    teacher_view: None,
                    settings: slm_settings,
                    step: &mut self.slm_step,
                },
                Learner {
                    model: &mut proxy.shared,
                    teacher_view: Some(&proxy.adapted),
                    settings: dpm_settings,
                    step: &mut proxy.shared_step,
                },
                transfer,
                seed.of(4, e),
            )?;
            proxy.sync()?;
            last = (Some(a), Some(b));
        }
        Ok(last)
    }

    /// `count` questions the DPM writes in the style of the local ones (prompted with the first
    /// half of a local question) and answers itself; nothing leaves the device.
    pub fn synthetic_transfer(
        &self,
        tokenizer: &Tokenizer,
        template: &str,
        count: usize,
        max_prompt_tokens: usize,
        max_answer_tokens: usize,
        seed: RoundSeed,
    ) -> RoleResult<Vec<Example>> {
        let Some(proxy) = self.dpm.as_ref() else {
            anyhow::bail!("device {} has no distilled proxy", self.name);
        };
        if count == 0 || self.train_records.is_empty() {
            return Ok(Vec::new());
        }
        let mut rng = SeededRng::for_stream(seed.of(5, 0), "synthetic");
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

/// The cloud server.
pub struct Server {
    /// The large language model.
    pub llm: Model,
    /// The LLM's schedule counter.
    pub llm_step: u32,
    /// The DPMs it holds: one (aggregated) or one per device.
    pub dpms: Vec<Model>,
    /// Their schedule counters.
    pub dpm_steps: Vec<u32>,
    /// The public training corpus.
    pub public_train: Vec<Example>,
}

impl Server {
    /// Weighted FedAvg of uploaded shared parts into DPM slot `slot`; returns the serialised
    /// average.
    pub fn aggregate(&mut self, uploads: &[(Vec<u8>, f64)], slot: usize) -> RoleResult<Vec<u8>> {
        let sets = uploads
            .iter()
            .map(|(bytes, w)| Ok((decode_params(bytes)?, *w)))
            .collect::<RoleResult<Vec<_>>>()?;
        let avg = weighted_average(&sets).map_err(|e| anyhow::anyhow!("FedAvg: {e}"))?;
        self.dpms[slot].import_params(&avg)?;
        Ok(encode_params(&avg))
    }

    /// Stores one device's upload in its slot.
    pub fn receive(&mut self, bytes: &[u8], slot: usize) -> RoleResult<()> {
        let params = decode_params(bytes)?;
        self.dpms[slot].import_params(&params)?;
        Ok(())
    }

    /// The serialised shared part in DPM slot `slot` (what is downloaded).
    pub fn dpm_message(&self, slot: usize) -> RoleResult<Vec<u8>> {
        Ok(encode_params(
            &self.dpms[slot].export_params(ParamSelection::All)?,
        ))
    }

    /// A seeded subsample of the public corpus.
    pub fn public_sample(&self, size: usize, seed: u64) -> Vec<Example> {
        let mut idx: Vec<usize> = (0..self.public_train.len()).collect();
        SeededRng::for_stream(seed, "public-sample").shuffle(&mut idx);
        idx.truncate(size.min(idx.len()));
        idx.sort_unstable();
        idx.into_iter()
            .map(|i| self.public_train[i].clone())
            .collect()
    }

    /// Mutual learning between the LLM and DPM slot `slot` on `examples`.
    pub fn mutual_learning(
        &mut self,
        slot: usize,
        examples: &[Example],
        epochs: usize,
        llm_settings: &TrainSettings,
        dpm_settings: &TrainSettings,
        seed: RoundSeed,
    ) -> RoleResult<(Option<EpochReport>, Option<EpochReport>)> {
        let mut last = (None, None);
        for e in 0..epochs {
            let (a, b) = mutual_learning_epoch(
                Learner {
                    model: &mut self.llm,
                    teacher_view: None,
                    settings: llm_settings,
                    step: &mut self.llm_step,
                },
                Learner {
                    model: &mut self.dpms[slot],
                    teacher_view: None,
                    settings: dpm_settings,
                    step: &mut self.dpm_steps[slot],
                },
                examples,
                seed.of(6 + slot as u64, e),
            )?;
            last = (Some(a), Some(b));
        }
        Ok(last)
    }
}
