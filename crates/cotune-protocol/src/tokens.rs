//! Each model's tokenizer (`tokenizer =` in a model table) and the way between two of them.
//!
//! A model's tokenizer is, in order: the `tokenizer.json` its table names; a byte-level BPE of
//! the size its table names (`{ vocab_size = N }`), trained on the same training texts as the
//! run's; the `tokenizer.json` of its checkpoint folder; the run's shared tokenizer (`[data]`).
//! Text is what passes between models: every model encodes the records with its own
//! tokenizer ([`Codec::encode`]), and examples one model wrote (a DPM's synthetic questions)
//! reach another as text ([`Codec::translate`]). Where two models learn from each other's
//! distributions, a [`Bridge`] (`cotune_distill::align`) carries logits from one vocabulary to
//! the other, per `[train] alignment`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cotune_data::{DataConfig, QaRecord, Tokenizer};
use cotune_distill::{Alignment, Bridge};
use cotune_host::Example;

use crate::config::{ExperimentConfig, ModelEntry, TokenizerSpec};
use crate::recipes::encode_all;

/// Where a model's tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The run's (`[data]`).
    Shared,
    /// Trained on the training texts with at most this many tokens.
    Trained(usize),
    /// A `tokenizer.json` file (named, or a checkpoint folder's).
    File(PathBuf),
    /// The tokenizer in a GGUF checkpoint's metadata.
    Gguf(PathBuf),
}

impl Source {
    /// The source of `entry`'s tokenizer (paths already resolved against the run root).
    pub(crate) fn of(entry: &ModelEntry, data: &DataConfig) -> Source {
        match &entry.tokenizer {
            Some(TokenizerSpec::File(p)) => Source::File(p.clone()),
            // The run's own tokenizer is trained on the same texts with `data.vocab_size`.
            Some(TokenizerSpec::Trained(n))
                if data.tokenizer.is_none() && *n == data.vocab_size =>
            {
                Source::Shared
            }
            Some(TokenizerSpec::Trained(n)) => Source::Trained(*n),
            None => match &entry.checkpoint {
                Some(file) if cotune_gguf::is_gguf_file(file) => Source::Gguf(file.clone()),
                Some(folder) if folder.join("tokenizer.json").is_file() => {
                    Source::File(folder.join("tokenizer.json"))
                }
                _ => Source::Shared,
            },
        }
    }

    /// In words, for logs and errors.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Shared => "the run's tokenizer".into(),
            Source::Trained(n) => format!("a tokenizer of {n} tokens trained on the public corpus"),
            Source::File(p) => p.display().to_string(),
            Source::Gguf(p) => format!("the tokenizer in {}", p.display()),
        }
    }

    /// The tokenizer of a file source (`File` or `Gguf`); `who` names the model in errors.
    pub(crate) fn load(&self, who: &str) -> anyhow::Result<Option<Tokenizer>> {
        match self {
            Source::Shared | Source::Trained(_) => Ok(None),
            Source::File(path) => load_tokenizer(who, path).map(Some),
            Source::Gguf(path) => {
                let read = || -> anyhow::Result<Tokenizer> {
                    let gguf = cotune_gguf::Gguf::open(path)?;
                    let json = cotune_data::tokenizer_json_from_gguf(&gguf)?;
                    // The file states its special ids; spellings could pick another token.
                    let id = |key: &str| gguf.get_u32(key).ok();
                    Ok(Tokenizer::from_json_text(&json, path)?.with_special_ids(
                        id("tokenizer.ggml.padding_token_id"),
                        id("tokenizer.ggml.bos_token_id"),
                        id("tokenizer.ggml.eos_token_id"),
                        path,
                    )?)
                };
                read()
                    .with_context(|| format!("the tokenizer of {who}"))
                    .map(Some)
            }
        }
    }
}

/// One model's tokenizer.
#[derive(Debug, Clone)]
pub struct Codec {
    /// The tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Where it came from, in words.
    pub origin: String,
    /// `data.max_prompt_tokens`: longer prompts keep their end.
    pub max_prompt: usize,
    /// `data.max_answer_tokens`: longer answers keep their start and the end of sequence.
    pub max_answer: usize,
}

impl Codec {
    /// Records as examples in this tokenizer's ids, cut to the token budgets. The records
    /// were filtered by length in the run's tokenizer, so for it the cut never applies; a
    /// model's own (smaller) tokenizer may spell a record longer, and then its prompt keeps
    /// its last `max_prompt` tokens and its answer its first tokens and the end of sequence.
    pub fn encode(&self, records: &[QaRecord], template: &str) -> Vec<Example> {
        let mut out = encode_all(records, &self.tokenizer, template);
        out.iter_mut().for_each(|e| self.cut(e));
        out
    }

    fn cut(&self, e: &mut Example) {
        let extra = e.prompt.len().saturating_sub(self.max_prompt);
        e.prompt.drain(..extra);
        if e.answer.len() > self.max_answer.max(1) {
            e.answer.truncate(self.max_answer.max(1) - 1);
            e.answer.push(self.tokenizer.eos_id());
        }
    }

    /// Whether `other` is the same tokenizer (it splits every text the same way).
    pub fn same(&self, other: &Codec) -> bool {
        self.tokenizer.fingerprint() == other.tokenizer.fingerprint()
    }

    /// `examples` written in `from`'s ids, as text re-encoded in this tokenizer's: the prompt
    /// decoded and encoded again, the answer likewise and closed by this tokenizer's
    /// end-of-sequence id. Unchanged when the two are the same tokenizer.
    pub fn translate(&self, examples: &[Example], from: &Codec) -> Vec<Example> {
        if self.same(from) {
            return examples.to_vec();
        }
        examples
            .iter()
            .map(|e| {
                let prompt = from.tokenizer.decode(&e.prompt);
                let answer = from.tokenizer.decode(&e.answer);
                let mut ids = self.tokenizer.encode(&answer);
                ids.push(self.tokenizer.eos_id());
                let mut e = Example::new(self.tokenizer.encode(&prompt), ids);
                self.cut(&mut e);
                e
            })
            .collect()
    }
}

/// Every model's tokenizer in a run.
#[derive(Debug, Clone)]
pub struct Codecs {
    /// The run's shared tokenizer.
    pub shared: Codec,
    /// The server LLM's.
    pub llm: Codec,
    /// Each device's DPM's.
    pub dpms: Vec<Codec>,
    /// Each device's SLM's.
    pub slms: Vec<Codec>,
}

impl Codecs {
    /// Every model's tokenizer: files read; a trained one of `n` tokens from `trained(n)`
    /// (trained on the texts the shared one was trained on, or read from where it was saved).
    pub(crate) fn resolve(
        config: &ExperimentConfig,
        shared: Tokenizer,
        trained: &dyn Fn(usize) -> anyhow::Result<Tokenizer>,
    ) -> anyhow::Result<Codecs> {
        let (max_prompt, max_answer) =
            (config.data.max_prompt_tokens, config.data.max_answer_tokens);
        let shared = Codec {
            tokenizer: Arc::new(shared),
            origin: Source::Shared.describe(),
            max_prompt,
            max_answer,
        };
        let mut made: HashMap<Source, Codec> = HashMap::new();
        made.insert(Source::Shared, shared.clone());
        let mut get = |who: &str, entry: &ModelEntry| -> anyhow::Result<Codec> {
            let source = Source::of(entry, &config.data);
            if let Some(c) = made.get(&source) {
                return Ok(c.clone());
            }
            let tokenizer = match &source {
                Source::Trained(n) => {
                    trained(*n).with_context(|| format!("the trained tokenizer of {who}"))?
                }
                other => other.load(who)?.expect("a file source loads a tokenizer"),
            };
            let codec = Codec {
                tokenizer: Arc::new(tokenizer),
                origin: source.describe(),
                max_prompt,
                max_answer,
            };
            made.insert(source, codec.clone());
            Ok(codec)
        };
        let llm = get("llm", &config.llm)?;
        let mut dpms = Vec::new();
        let mut slms = Vec::new();
        for (i, d) in config.devices.iter().enumerate() {
            let dpm_key = match d.dpm {
                Some(_) => format!("devices[{i}].dpm"),
                None => "dpm".into(),
            };
            dpms.push(get(&dpm_key, &config.dpm_of(i).model())?);
            slms.push(get(&format!("devices[{i}].slm"), &d.slm)?);
        }
        Ok(Codecs {
            shared,
            llm,
            dpms,
            slms,
        })
    }

    /// Each distinct tokenizer once, the shared one first.
    pub fn distinct(&self) -> Vec<&Codec> {
        let mut out: Vec<&Codec> = vec![&self.shared];
        for c in std::iter::once(&self.llm)
            .chain(&self.dpms)
            .chain(&self.slms)
        {
            if !out.iter().any(|o| o.same(c)) {
                out.push(c);
            }
        }
        out
    }

    /// Each model with a tokenizer other than the run's: `(file stem, codec)`.
    pub fn own(&self) -> Vec<(String, &Codec)> {
        let mut all = vec![("llm".to_string(), &self.llm)];
        for (i, (d, s)) in self.dpms.iter().zip(&self.slms).enumerate() {
            all.push((format!("device-{i}-dpm"), d));
            all.push((format!("device-{i}-slm"), s));
        }
        all.retain(|(_, c)| !c.same(&self.shared));
        all
    }
}

/// Loads the `tokenizer.json` of `who`, naming both in errors.
pub(crate) fn load_tokenizer(who: &str, path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::load(path).with_context(|| format!("the tokenizer of {who}"))
}

/// The bridge carrying `teacher`'s logits to `student`'s vocabulary under `alignment`; `None`
/// when they share a tokenizer. Names both models (and both sizes) when `shared` refuses.
pub(crate) fn bridge(
    alignment: Alignment,
    top_k: usize,
    teacher: (&str, &Codec),
    student: (&str, &Codec),
) -> anyhow::Result<Option<Bridge>> {
    Ok(Bridge::new(
        alignment,
        (teacher.0, &teacher.1.tokenizer),
        (student.0, &student.1.tokenizer),
        top_k,
    )?)
}

/// The data part of cache keys for models trained on the public corpus in `codec`'s tokens:
/// the data settings, `max_public` and the tokenizer.
pub(crate) fn data_key(config: &ExperimentConfig, codec: &Codec) -> anyhow::Result<String> {
    Ok(cotune_distill::stable_hash(&[
        &serde_json::to_string(&config.data)?,
        &format!("{:?}", config.max_public),
        &codec.tokenizer.to_json(),
    ]))
}
