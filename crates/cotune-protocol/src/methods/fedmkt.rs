//! `fedmkt` (FedMKT): the LLM and the SLMs exchange top-k answer distributions on a sample of
//! the public corpus and learn from each other's; parameters never travel. The knowledge
//! messages and the min-CE selection live in [`crate::fedmkt`].

use anyhow::Context;

use super::{DeviceStep, FederatedMethod, Round, ServerStep, Upload};
use crate::config::ExperimentConfig;
use crate::fedmkt::{decode_examples, decode_topk, encode_examples, encode_topk, select_min_ce};
use crate::fedmkt::{top_k, train_on_targets};
use crate::records::{DeviceLosses, ServerLosses};
use crate::roles::{Device, Server};
use crate::seed::Stream;

/// Federated mutual knowledge transfer.
pub struct Fedmkt;

impl FederatedMethod for Fedmkt {
    fn name(&self) -> &'static str {
        "fedmkt"
    }

    fn summary(&self) -> &'static str {
        "the LLM and the SLMs exchange top-k answer distributions on public examples"
    }

    fn trains_llm(&self) -> bool {
        true
    }

    fn check(&self, config: &ExperimentConfig) -> Result<(), (String, String)> {
        if config.train.top_k == 0 {
            return Err((
                "train.top_k".into(),
                "fedmkt sends the top-k answer distributions; expected k >= 1, got 0".into(),
            ));
        }
        Ok(())
    }

    /// The round's public examples: the server picks them, devices hold no corpus.
    fn broadcast(&self, round: &Round<'_>, server: &Server) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(Some(encode_examples(&sample(round, server))))
    }

    /// Local tuning, then the SLM's knowledge on the public examples.
    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        let s = round.settings;
        let slm =
            device.tune_slm_locally(s.local_epochs, &s.slm, round.device_seed(device.index))?;
        let examples = decode_examples(received.context("fedmkt sends the public sample")?)?;
        let knowledge = top_k(&device.slm, &examples, s.top_k, s.slm.batch_size.max(1))?;
        Ok(DeviceStep {
            losses: DeviceLosses {
                slm,
                ..DeviceLosses::default()
            },
            upload: Some(encode_topk(&knowledge)),
        })
    }

    /// The LLM's own knowledge (sent down), then the LLM learns from the selected uploads.
    fn server_step(
        &self,
        round: &Round<'_>,
        server: &mut Server,
        uploads: Vec<Upload>,
    ) -> anyhow::Result<ServerStep> {
        let s = round.settings;
        let sample = sample(round, server);
        let candidates = uploads
            .iter()
            .map(|u| {
                decode_topk(&u.bytes)
                    .with_context(|| format!("knowledge upload of device {}", u.device))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let down = encode_topk(&top_k(
            &server.llm,
            &sample,
            s.top_k,
            s.slm.batch_size.max(1),
        )?);
        let vocab = server.llm.spec().vocab_size as usize;
        let selected = select_min_ce(&sample, &candidates, vocab)?;
        let seed = round.server_seed();
        let mut last = None;
        for e in 0..s.server_epochs {
            last = Some(train_on_targets(
                &mut server.llm,
                &sample,
                &selected,
                &s.llm,
                seed.of(Stream::LlmFromKnowledge, e),
                &mut server.llm_step,
            )?);
        }
        Ok(ServerStep {
            checks: Default::default(),
            losses: ServerLosses {
                llm: last,
                ..ServerLosses::default()
            },
            downloads: round
                .participants
                .iter()
                .map(|&i| (i, down.clone()))
                .collect(),
        })
    }

    /// The SLM learns from the LLM's knowledge on the same public examples.
    fn device_receive(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        received: Option<&[u8]>,
        download: &[u8],
        losses: &mut DeviceLosses,
    ) -> anyhow::Result<()> {
        let s = round.settings;
        let examples = decode_examples(received.context("fedmkt sends the public sample")?)?;
        let targets = decode_topk(download)?;
        let seed = round.device_seed(device.index);
        let mut last = None;
        for e in 0..s.saml_epochs {
            last = Some(train_on_targets(
                &mut device.slm,
                &examples,
                &targets,
                &s.slm,
                seed.of(Stream::SlmFromKnowledge, e),
                &mut device.slm_step,
            )?);
        }
        losses.slm = last.or(losses.slm);
        losses.transfer_examples = examples.len();
        Ok(())
    }
}

fn sample(round: &Round<'_>, server: &Server) -> Vec<cotune_host::Example> {
    server.public_sample(
        round.settings.server_public_sample,
        round.server_seed().of(Stream::PublicSample, 0),
    )
}
