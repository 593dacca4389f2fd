//! `fedmkt` (FedMKT): the LLM and the SLMs exchange top-k answer distributions on a sample of
//! the public corpus and learn from each other's; parameters never travel. The knowledge
//! messages and the min-CE selection live in [`crate::fedmkt`].
//!
//! When an SLM's tokenizer differs from the LLM's, the public sample goes down as text (each
//! side encodes it in its own tokens) and knowledge is carried between vocabularies with
//! `[train] alignment` ([`crate::fedmkt::carry_top_k`]): the server carries each upload into
//! the LLM's vocabulary before its min-CE selection (it knows every device's tokenizer, as it
//! hands out their configs), and a device carries the LLM's knowledge into its own (the LLM's
//! tokenizer is public, like the model's config).

use anyhow::Context;

use super::{DeviceStep, FederatedMethod, Round, ServerStep, Upload};
use crate::config::ExperimentConfig;
use crate::fedmkt::{carry_top_k, top_k, train_on_targets};
use crate::fedmkt::{decode_examples, decode_topk, encode_examples, encode_topk, select_min_ce};
use crate::records::{DeviceLosses, ServerLosses};
use crate::roles::{Device, Server};
use crate::seed::Stream;
use crate::tokens::{bridge, Codec};
use crate::uploads::ExpectedUpload;

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

    /// The round's public examples: the server picks them, devices hold no corpus. As the
    /// LLM's token ids when every SLM shares its tokenizer, else as text.
    fn broadcast(&self, round: &Round<'_>, server: &Server) -> anyhow::Result<Option<Vec<u8>>> {
        if field(server) {
            return Ok(Some(serde_json::to_vec(&answered_prompts(round, server)?)?));
        }
        if as_text(round) {
            let records: Vec<_> = sample_indices(round, server)
                .into_iter()
                .map(|i| server.public_records[i].clone())
                .collect();
            return Ok(Some(serde_json::to_vec(&records)?));
        }
        Ok(Some(encode_examples(&sample(round, server))))
    }

    /// Each device's top-k knowledge on the broadcast sample, as the device encodes it.
    fn expected_uploads(
        &self,
        round: &Round<'_>,
        _server: &Server,
        broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, ExpectedUpload)>> {
        let received = broadcast.context("fedmkt sends the public sample")?;
        round
            .participants
            .iter()
            .map(|&d| {
                let codec = round
                    .codecs
                    .slms
                    .get(d)
                    .with_context(|| format!("no tokenizer for device {d}"))?;
                let examples = sample_for(round, codec, received)?;
                Ok((
                    d,
                    ExpectedUpload::Knowledge {
                        answer_lens: examples.iter().map(|e| e.answer.len()).collect(),
                        max_k: round.settings.top_k,
                    },
                ))
            })
            .collect()
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
        let received = received.context("fedmkt sends the public sample")?;
        let examples = sample_for(round, &device.slm_codec, received)?;
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
        let (sample, records) = match field(server) {
            true => {
                let records = answered_prompts(round, server)?;
                let template = &round.data.prompt_template;
                (server.llm_codec.encode(&records, template), records)
            }
            false => {
                let records: Vec<_> = sample_indices(round, server)
                    .iter()
                    .map(|&i| server.public_records[i].clone())
                    .collect();
                (sample(round, server), records)
            }
        };
        let template = &round.data.prompt_template;
        let batch = s.slm.batch_size.max(1);
        let candidates = uploads
            .iter()
            .map(|u| {
                let topk = decode_topk(&u.bytes)
                    .with_context(|| format!("knowledge upload of device {}", u.device))?;
                let codec = &round.codecs.slms[u.device];
                let who = format!("devices[{}].slm", u.device);
                let Some(b) = bridge(
                    s.alignment,
                    s.top_k,
                    (&who, codec),
                    ("llm", &round.codecs.llm),
                )?
                else {
                    return Ok(topk);
                };
                // Into the LLM's vocabulary, at its positions of the same texts.
                let vocab = server.llm.spec().vocab_size as usize;
                carry_top_k(
                    &topk,
                    &codec.encode(&records, template),
                    codec.tokenizer.vocab_size(),
                    &sample,
                    vocab,
                    &b,
                    Some(&server.llm),
                    s.top_k,
                    batch,
                )
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
        let received = received.context("fedmkt sends the public sample")?;
        let examples = sample_for(round, &device.slm_codec, received)?;
        let mut targets = decode_topk(download)?;
        let llm = &round.codecs.llm;
        let who = format!("devices[{}].slm", device.index);
        if let Some(b) = bridge(
            s.alignment,
            s.top_k,
            ("llm", llm),
            (&who, &device.slm_codec),
        )? {
            // The LLM's knowledge into the SLM's vocabulary, at its positions.
            let theirs = sample_for(round, llm, received)?;
            targets = carry_top_k(
                &targets,
                &theirs,
                llm.tokenizer.vocab_size(),
                &examples,
                device.slm.spec().vocab_size as usize,
                &b,
                Some(&device.slm),
                s.top_k,
                s.slm.batch_size.max(1),
            )?;
        }
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

fn sample_indices(round: &Round<'_>, server: &Server) -> Vec<usize> {
    server.public_sample_indices(
        round.settings.server_public_sample,
        round.server_seed().of(Stream::PublicSample, 0),
    )
}

/// Whether the public sample goes down as text: some SLM has a tokenizer of its own, or the
/// sample is the LLM's answers to public prompts (the field benchmark).
fn as_text(round: &Round<'_>) -> bool {
    round.data.field.is_some() || round.codecs.slms.iter().any(|c| !c.same(&round.codecs.llm))
}

/// Whether the server holds public prompts without answers (the field benchmark): the round's
/// sample is then `server_public_sample` of them answered by the LLM, never a gold answer.
fn field(server: &Server) -> bool {
    !server.public_prompts.is_empty()
}

/// The round's public prompts (a seeded choice) with the LLM's answers.
fn answered_prompts(
    round: &Round<'_>,
    server: &Server,
) -> anyhow::Result<Vec<cotune_data::QaRecord>> {
    let (s, data) = (round.settings, round.data);
    let chosen = crate::roles::choose(
        &server.public_prompts,
        s.server_public_sample,
        round.server_seed().of(Stream::PublicSample, 0),
        "fedmkt-prompts",
    );
    crate::roles::answer_prompts(
        &server.llm,
        &server.llm_codec,
        &chosen,
        &data.prompt_template,
        data.max_answer_tokens,
        64,
    )
}

/// The broadcast public sample in `codec`'s tokens.
fn sample_for(
    round: &Round<'_>,
    codec: &Codec,
    received: &[u8],
) -> anyhow::Result<Vec<cotune_host::Example>> {
    if !as_text(round) {
        return Ok(decode_examples(received)?);
    }
    let records: Vec<cotune_data::QaRecord> =
        serde_json::from_slice(received).context("the public sample as text")?;
    Ok(codec.encode(&records, &round.data.prompt_template))
}
