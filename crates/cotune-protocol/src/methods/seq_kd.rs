//! `seq-kd`: sequence-level knowledge distillation (Kim & Rush, EMNLP 2016) from the LLM to
//! every SLM, once. At setup the server's LLM answers `train.transfer_size` public questions
//! (greedy decoding, a seeded choice per run) and every device receives the questions with the
//! LLM's answers as text; each round a device tunes its SLM on its own examples followed by
//! the LLM's answers in its own tokens. Nothing crosses the network after setup, and no gold
//! answer of the public corpus reaches a device: the LLM's outputs are the only signal.
//!
//! It is the example of a method with its own setup on both sides: one file, a `mod` line and
//! a registry entry, and it runs in one process and deployed alike.

use std::path::Path;

use anyhow::Context;
use cotune_data::{QaRecord, SeededRng};
use cotune_eval::{generate_answers, EvalOptions};
use cotune_host::Example;

use super::{DeviceSetup, DeviceStep, FederatedMethod, Round, ServerSetup};
use crate::records::DeviceLosses;
use crate::roles::{Device, DeviceState, RoleResult};

/// One-shot sequence-level distillation of the LLM's answers.
pub struct SeqKd;

/// What a device keeps: the LLM's answers to the public questions it received, in its SLM's
/// tokens.
pub(super) struct TeacherAnswers {
    pub(super) examples: Vec<Example>,
}

impl DeviceState for TeacherAnswers {
    fn save(&self, dir: &Path, prefix: &str) -> RoleResult<serde_json::Value> {
        let path = dir.join(format!("{prefix}-seq-kd.json"));
        let pairs: Vec<(&[u32], &[u32])> = self
            .examples
            .iter()
            .map(|e| (&e.prompt[..], &e.answer[..]))
            .collect();
        std::fs::write(&path, serde_json::to_vec(&pairs)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(serde_json::Value::Null)
    }

    fn restore(&mut self, dir: &Path, prefix: &str, _saved: &serde_json::Value) -> RoleResult<()> {
        let path = dir.join(format!("{prefix}-seq-kd.json"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        self.examples = pairs.into_iter().map(|(p, a)| Example::new(p, a)).collect();
        Ok(())
    }
}

impl FederatedMethod for SeqKd {
    fn name(&self) -> &'static str {
        "seq-kd"
    }

    fn summary(&self) -> &'static str {
        "the LLM's answers to public questions, sent once; each SLM tuned on them and its data"
    }

    fn check(&self, config: &crate::config::ExperimentConfig) -> Result<(), (String, String)> {
        if config.train.transfer_size == 0 {
            return Err((
                "train.transfer_size".into(),
                "seq-kd sends the LLM's answers to this many public questions; expected at \
                 least 1, got 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The LLM answers a seeded choice of public questions; every device receives them as
    /// text. When resuming nothing is generated: the devices restore what they kept.
    fn server_setup(&self, setup: &mut ServerSetup<'_>) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        if !setup.fresh {
            return Ok(vec![Vec::new(); setup.devices]);
        }
        let (config, server) = (setup.config, &*setup.server);
        let mut idx: Vec<usize> = (0..server.public_records.len()).collect();
        SeededRng::for_stream(config.seed, "seq-kd").shuffle(&mut idx);
        idx.truncate(config.train.transfer_size);
        idx.sort_unstable();
        let prompts: Vec<Vec<u32>> = idx
            .iter()
            .map(|&k| server.public_train[k].prompt.clone())
            .collect();
        let codec = &server.llm_codec;
        let options = EvalOptions {
            max_new_tokens: config.data.max_answer_tokens.saturating_sub(1).max(1) as u32,
            ..config.eval
        };
        let answers = generate_answers(&server.llm, &prompts, codec.tokenizer.eos_id(), &options)?;
        let taught: Vec<QaRecord> = idx
            .iter()
            .zip(answers)
            .map(|(&k, ids)| QaRecord {
                answer: codec.tokenizer.decode(&ids).trim().to_string(),
                ..server.public_records[k].clone()
            })
            .collect();
        progress!(
            "seq-kd: the LLM answered {} public questions for the devices",
            taught.len()
        );
        let message = serde_json::to_vec(&taught)?;
        Ok(vec![vec![message]; setup.devices])
    }

    /// The LLM's answers in the SLM's tokens.
    fn device_setup(
        &self,
        setup: &DeviceSetup<'_>,
        device: &mut Device,
        received: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let examples = match received.first() {
            Some(message) => {
                let records: Vec<QaRecord> =
                    serde_json::from_slice(message).context("the LLM's answers")?;
                device
                    .slm_codec
                    .encode(&records, &setup.config.data.prompt_template)
            }
            None => Vec::new(),
        };
        device.state = Some(Box::new(TeacherAnswers { examples }));
        Ok(())
    }

    /// The SLM tuned on its own examples and the LLM's answers.
    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        tune_on_teacher_answers(round, device, round.settings.local_epochs)
    }
}

/// The SLM tuned `epochs` passes on its own examples followed by the teacher's answers it
/// keeps ([`TeacherAnswers`]); nothing goes up.
pub(super) fn tune_on_teacher_answers(
    round: &Round<'_>,
    device: &mut Device,
    epochs: usize,
) -> anyhow::Result<DeviceStep> {
    let s = round.settings;
    let seed = round.device_seed(device.index);
    let mut examples = device.train.clone();
    examples.extend(
        device
            .state_mut::<TeacherAnswers>()?
            .examples
            .iter()
            .cloned(),
    );
    let last = device.tune_slm_on(&examples, epochs, &s.slm, seed)?;
    Ok(DeviceStep {
        losses: DeviceLosses {
            slm: last,
            transfer_examples: examples.len() - device.train.len(),
            ..DeviceLosses::default()
        },
        upload: None,
    })
}
