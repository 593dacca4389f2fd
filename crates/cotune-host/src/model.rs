//! A model inside a plugin, behind a handle that validates every call on both sides of the
//! boundary and converts the ABI's types to plain ones.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::std_types::{RNone, ROption, RResult, RSome, RStr, RVec};
use cotune_abi::ModelBox;

use crate::hf::TOKENIZER_FILE;
use crate::{
    AnswerExample, GenerateOptions, Logits, ModelSpec, NamedTensor, ParamSelection, PluginError,
    StepReport, Structure, TrainOptions,
};
use crate::{Example, HostError, Result};

/// A model inside a plugin, with every call validated on both sides of the boundary.
pub struct Model {
    inner: ModelBox,
    spec: ModelSpec,
    label: String,
    /// The Hugging Face folder the model was built from, if any (its tokenizer goes along on
    /// export).
    pub(crate) hf_source: Option<PathBuf>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("label", &self.label)
            .field("spec", &self.spec)
            .finish()
    }
}

fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .copied()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
}

impl Model {
    /// Wraps a plugin's model object after checking its spec.
    pub(crate) fn checked(inner: ModelBox, label: String) -> Result<Model> {
        let spec = inner.spec();
        if spec.vocab_size == 0 || spec.context_len == 0 {
            return Err(HostError::InvalidOutput {
                model: label,
                call: "spec",
                reason: format!(
                    "vocab_size {} and context_len {} must both be positive",
                    spec.vocab_size, spec.context_len
                ),
            });
        }
        Ok(Model {
            inner,
            spec,
            label,
            hf_source: None,
        })
    }

    /// The Hugging Face folder this model was built from, if it was.
    pub fn hf_source(&self) -> Option<&Path> {
        self.hf_source.as_deref()
    }

    /// Writes the model as a Hugging Face folder that `transformers` loads: `config.json` and
    /// `model.safetensors` (adapters merged into their weights), plus the `tokenizer.json` of
    /// the folder the model was built from, when it has one.
    pub fn export_hf(&self, folder: impl AsRef<Path>) -> Result<()> {
        let folder = folder.as_ref();
        let text = folder.to_string_lossy().into_owned();
        self.plugin_result("export_hf", self.inner.export_hf(RStr::from_str(&text)))?;
        if let Some(source) = &self.hf_source {
            let tokenizer = source.join(TOKENIZER_FILE);
            if tokenizer.is_file() {
                std::fs::copy(&tokenizer, folder.join(TOKENIZER_FILE)).map_err(|e| {
                    HostError::Checkpoint {
                        path: tokenizer.clone(),
                        reason: format!("copying it to {}: {e}", folder.display()),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The model's metadata.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `plugin/architecture`, used in messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn invalid_input(&self, call: &'static str, reason: String) -> HostError {
        HostError::InvalidInput {
            model: self.label.clone(),
            call,
            reason,
        }
    }

    fn invalid_output(&self, call: &'static str, reason: String) -> HostError {
        HostError::InvalidOutput {
            model: self.label.clone(),
            call,
            reason,
        }
    }

    fn plugin_result<T>(&self, call: &'static str, r: RResult<T, PluginError>) -> Result<T> {
        r.into_result().map_err(|error| HostError::Plugin {
            model: self.label.clone(),
            call,
            error,
        })
    }

    fn check_ids(&self, call: &'static str, what: &str, index: usize, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(self.invalid_input(call, format!("{what} of example {index} is empty")));
        }
        if let Some((pos, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id >= self.spec.vocab_size)
        {
            return Err(self.invalid_input(
                call,
                format!(
                    "token id {id} at position {pos} of {what} of example {index} is out of range (vocab_size {})",
                    self.spec.vocab_size
                ),
            ));
        }
        Ok(())
    }

    fn check_batch(&self, call: &'static str, batch: &[Example]) -> Result<()> {
        if batch.is_empty() {
            return Err(self.invalid_input(call, "the batch is empty".into()));
        }
        let ctx = self.spec.context_len as usize;
        for (i, ex) in batch.iter().enumerate() {
            self.check_ids(call, "the prompt", i, &ex.prompt)?;
            self.check_ids(call, "the answer", i, &ex.answer)?;
            let too_long = match self.spec.structure {
                Structure::DecoderOnly => ex.prompt.len() + ex.answer.len() > ctx,
                Structure::EncoderDecoder => ex.prompt.len() > ctx || ex.answer.len() > ctx,
            };
            if too_long {
                return Err(self.invalid_input(
                    call,
                    format!(
                        "example {i} (prompt {} + answer {} tokens) exceeds the context length {ctx}",
                        ex.prompt.len(),
                        ex.answer.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn to_abi_batch(batch: &[Example]) -> RVec<AnswerExample> {
        batch
            .iter()
            .map(|e| AnswerExample {
                prompt: RVec::from(e.prompt.clone()),
                answer: RVec::from(e.answer.clone()),
            })
            .collect()
    }

    fn check_logits(&self, call: &'static str, batch: &[Example], logits: &Logits) -> Result<()> {
        let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
        let expected = [batch.len(), answer_len, self.spec.vocab_size as usize];
        let got = [
            logits.batch as usize,
            logits.answer_len as usize,
            logits.vocab as usize,
        ];
        if expected != got || logits.data.len() != got.iter().product::<usize>() {
            return Err(self.invalid_output(
                call,
                format!(
                    "logits shape {got:?} with {} values, expected {expected:?}",
                    logits.data.len()
                ),
            ));
        }
        for (b, ex) in batch.iter().enumerate() {
            for t in 0..ex.answer.len() {
                if let Some((v, value)) = first_non_finite(logits.row(b, t)) {
                    return Err(self.invalid_output(
                        call,
                        format!("logit {value} at example {b}, answer position {t}, token {v}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The next-token logits at every answer position, `[batch, answer_len, vocab]`.
    pub fn answer_logits(&self, batch: &[Example]) -> Result<Logits> {
        const CALL: &str = "answer_logits";
        self.check_batch(CALL, batch)?;
        let out = self.inner.answer_logits(&Self::to_abi_batch(batch));
        let logits = self.plugin_result(CALL, out)?;
        self.check_logits(CALL, batch, &logits)?;
        Ok(logits)
    }

    /// One optimiser step; `soft_targets` are teacher logits shaped like `answer_logits`.
    pub fn train_step(
        &mut self,
        batch: &[Example],
        soft_targets: Option<Logits>,
        options: &TrainOptions,
    ) -> Result<StepReport> {
        const CALL: &str = "train_step";
        self.check_batch(CALL, batch)?;
        self.check_options(CALL, options)?;
        if let Some(soft) = &soft_targets {
            let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
            let expected = [batch.len(), answer_len, self.spec.vocab_size as usize];
            let got = [
                soft.batch as usize,
                soft.answer_len as usize,
                soft.vocab as usize,
            ];
            if expected != got || soft.data.len() != got.iter().product::<usize>() {
                return Err(self.invalid_input(
                    CALL,
                    format!(
                        "soft targets shape {got:?} with {} values, expected {expected:?}",
                        soft.data.len()
                    ),
                ));
            }
            if let Some((i, value)) = first_non_finite(&soft.data) {
                return Err(self.invalid_input(
                    CALL,
                    format!("soft target value {value} at flat index {i} is not finite"),
                ));
            }
        }
        let soft: ROption<Logits> = match soft_targets {
            Some(s) => RSome(s),
            None => RNone,
        };
        let out = self
            .inner
            .train_step(&Self::to_abi_batch(batch), &soft, options);
        let report = self.plugin_result(CALL, out)?;
        for (what, v) in [
            ("loss", report.loss),
            ("cross_entropy", report.cross_entropy),
            ("kl", report.kl),
        ] {
            if !v.is_finite() {
                return Err(self.invalid_output(CALL, format!("{what} is {v}")));
            }
        }
        Ok(report)
    }

    fn check_options(&self, call: &'static str, o: &TrainOptions) -> Result<()> {
        let bad = if !(o.learning_rate.is_finite() && o.learning_rate >= 0.0) {
            Some(("learning_rate", o.learning_rate))
        } else if !(o.temperature.is_finite() && o.temperature > 0.0) {
            Some(("temperature", o.temperature))
        } else if !(0.0..=1.0).contains(&o.kl_weight) {
            Some(("kl_weight", o.kl_weight))
        } else if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            Some(("weight_decay", o.weight_decay))
        } else if !(o.grad_clip_norm.is_finite() && o.grad_clip_norm >= 0.0) {
            Some(("grad_clip_norm", o.grad_clip_norm))
        } else if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            Some(("min_lr_ratio", o.min_lr_ratio))
        } else {
            None
        };
        match bad {
            Some((key, value)) => {
                Err(self.invalid_input(call, format!("option {key} = {value} is out of range")))
            }
            None => Ok(()),
        }
    }

    /// Greedy continuations of `prompts` (without the prompt and the end-of-sequence id).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        const CALL: &str = "generate";
        if prompts.is_empty() {
            return Err(self.invalid_input(CALL, "no prompts".into()));
        }
        for (i, p) in prompts.iter().enumerate() {
            self.check_ids(CALL, "the prompt", i, p)?;
        }
        if options.eos_id >= self.spec.vocab_size {
            return Err(self.invalid_input(
                CALL,
                format!(
                    "eos_id {} is out of range (vocab_size {})",
                    options.eos_id, self.spec.vocab_size
                ),
            ));
        }
        let abi_prompts: RVec<RVec<u32>> = prompts.iter().map(|p| RVec::from(p.clone())).collect();
        let out = self.inner.generate(&abi_prompts, options);
        let out = self.plugin_result(CALL, out)?;
        if out.len() != prompts.len() {
            return Err(self.invalid_output(
                CALL,
                format!("{} outputs for {} prompts", out.len(), prompts.len()),
            ));
        }
        let mut result = Vec::with_capacity(out.len());
        for (i, seq) in out.into_iter().enumerate() {
            if seq.len() > options.max_new_tokens as usize {
                return Err(self.invalid_output(
                    CALL,
                    format!(
                        "output {i} has {} tokens, above max_new_tokens {}",
                        seq.len(),
                        options.max_new_tokens
                    ),
                ));
            }
            if let Some(&id) = seq.iter().find(|&&id| id >= self.spec.vocab_size) {
                return Err(self.invalid_output(
                    CALL,
                    format!("output {i} has token id {id} outside the vocabulary"),
                ));
            }
            result.push(seq.into_vec());
        }
        Ok(result)
    }

    /// The selected parameters by name.
    pub fn export_params(&self, selection: ParamSelection) -> Result<Vec<NamedTensor>> {
        const CALL: &str = "export_params";
        let params = self.plugin_result(CALL, self.inner.export_params(selection))?;
        for p in params.iter() {
            let n: u64 = p.shape.iter().product();
            if n as usize != p.data.len() {
                return Err(self.invalid_output(
                    CALL,
                    format!(
                        "tensor {} has shape {:?} but {} values",
                        p.name,
                        p.shape.as_slice(),
                        p.data.len()
                    ),
                ));
            }
            if let Some((i, v)) = first_non_finite(&p.data) {
                return Err(self.invalid_output(
                    CALL,
                    format!("tensor {} has value {v} at flat index {i}", p.name),
                ));
            }
        }
        Ok(params.into_vec())
    }

    /// Overwrites the named parameters (all or nothing).
    pub fn import_params(&mut self, params: &[NamedTensor]) -> Result<()> {
        const CALL: &str = "import_params";
        for p in params {
            let n: u64 = p.shape.iter().product();
            if n as usize != p.data.len() {
                return Err(self.invalid_input(
                    CALL,
                    format!(
                        "tensor {} has shape {:?} but {} values",
                        p.name,
                        p.shape.as_slice(),
                        p.data.len()
                    ),
                ));
            }
            if let Some((i, v)) = first_non_finite(&p.data) {
                return Err(self.invalid_input(
                    CALL,
                    format!("tensor {} has value {v} at flat index {i}", p.name),
                ));
            }
        }
        let params: RVec<NamedTensor> = params.iter().cloned().collect();
        let out = self.inner.import_params(&params);
        self.plugin_result(CALL, out)
    }

    /// The plugin's own calls without the host's validation, so the conformance suite can check
    /// that a plugin refuses bad input by itself (a stranger's host may not validate).
    pub fn unvalidated(&mut self) -> Unvalidated<'_> {
        Unvalidated { model: self }
    }

    /// Writes a checkpoint (parameters and optimiser state) to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.plugin_result("save", self.inner.save(RStr::from_str(&path)))
    }

    /// Reads a checkpoint written by [`Model::save`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref().to_string_lossy().into_owned();
        let out = self.inner.load(RStr::from_str(&path));
        self.plugin_result("load", out)
    }
}

/// Direct plugin calls that skip the host's input checks (see [`Model::unvalidated`]).
pub struct Unvalidated<'a> {
    model: &'a mut Model,
}

impl Unvalidated<'_> {
    /// `answer_logits` exactly as given.
    pub fn answer_logits(&self, batch: &[Example]) -> Result<Logits, PluginError> {
        self.model
            .inner
            .answer_logits(&Model::to_abi_batch(batch))
            .into_result()
    }

    /// `train_step` exactly as given.
    pub fn train_step(
        &mut self,
        batch: &[Example],
        soft_targets: Option<Logits>,
        options: &TrainOptions,
    ) -> Result<StepReport, PluginError> {
        let soft: ROption<Logits> = soft_targets.map_or(RNone, RSome);
        self.model
            .inner
            .train_step(&Model::to_abi_batch(batch), &soft, options)
            .into_result()
    }

    /// `generate` exactly as given.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>, PluginError> {
        let prompts: RVec<RVec<u32>> = prompts.iter().map(|p| RVec::from(p.clone())).collect();
        self.model
            .inner
            .generate(&prompts, options)
            .into_result()
            .map(|out| out.into_iter().map(RVec::into_vec).collect())
    }
}
