//! `llm-kd`: the SLM's upper reference that ignores privacy. At setup the server sends its
//! whole LLM to every device (the server's model leaves it, which no deployment of co-tuning
//! would allow); the device's copy answers up to `train.transfer_size` of the device's own
//! unlabelled prompts (greedy decoding), and each round the SLM is tuned on its labelled
//! examples followed by the LLM's answers, `train.saml_epochs` passes, the passes co-plms's
//! mutual learning makes over the same prompts. What co-plms recovers of this method's gain
//! over `standalone` is the share of the achievable gain it recovers.

use anyhow::Context;
use cotune_data::SeededRng;

use super::seq_kd::{tune_on_teacher_answers, TeacherAnswers};
use super::{DeviceSetup, DeviceStep, FederatedMethod, Round, ServerSetup};
use crate::config::{architecture_of, ExperimentConfig};
use crate::message::{decode_params, encode_params};
use crate::recipes::recipe;
use crate::roles::{answer_prompts, Device};

/// Distillation of the LLM's answers on the device's own prompts, the LLM shipped whole.
pub struct LlmKd;

impl FederatedMethod for LlmKd {
    fn name(&self) -> &'static str {
        "llm-kd"
    }

    fn summary(&self) -> &'static str {
        "upper reference: the LLM sent to every device answers its prompts; the SLM learns them"
    }

    fn check(&self, config: &ExperimentConfig) -> Result<(), (String, String)> {
        if config.train.transfer_size == 0 {
            return Err((
                "train.transfer_size".into(),
                "llm-kd answers this many of each device's prompts; expected at least 1, got 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The LLM's parameters, to every device. When resuming nothing is sent: the devices
    /// restore the answers they kept.
    fn server_setup(&self, setup: &mut ServerSetup<'_>) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        if !setup.fresh {
            return Ok(vec![Vec::new(); setup.devices]);
        }
        let params = setup
            .server
            .llm
            .export_params(cotune_host::ParamSelection::All)?;
        let message = encode_params(&params);
        Ok(vec![vec![message]; setup.devices])
    }

    /// The device's copy of the LLM answers its prompts; the answers are kept in the SLM's
    /// tokens and the copy is dropped.
    fn device_setup(
        &self,
        setup: &DeviceSetup<'_>,
        device: &mut Device,
        received: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let config = setup.config;
        let examples = match received.first() {
            Some(message) => {
                let arch = architecture_of(&config.llm, &setup.plugins.llm);
                let text = config.llm.config_text();
                let mut llm = recipe(&setup.plugins.llm, &arch, &text, 0).build()?;
                llm.import_params(&decode_params(message).context("the LLM's parameters")?)
                    .context("the LLM sent does not fit [llm]")?;
                let mut idx: Vec<usize> = (0..device.prompts.len()).collect();
                SeededRng::for_stream(config.seed, &format!("llm-kd/{}", device.index))
                    .shuffle(&mut idx);
                idx.truncate(config.train.transfer_size);
                let chosen: Vec<_> = idx.iter().map(|&i| device.prompts[i].clone()).collect();
                let data = &config.data;
                let answered = answer_prompts(
                    &llm,
                    &setup.codecs.llm,
                    &chosen,
                    &data.prompt_template,
                    data.max_answer_tokens,
                    64,
                )?;
                device.slm_codec.encode(&answered, &data.prompt_template)
            }
            None => Vec::new(),
        };
        device.state = Some(Box::new(TeacherAnswers { examples }));
        Ok(())
    }

    /// The SLM tuned on its own examples and the LLM's answers, co-plms's SAML passes.
    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        tune_on_teacher_answers(round, device, round.settings.saml_epochs)
    }
}
