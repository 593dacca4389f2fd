//! `co-plms` (Co-PLMs): on every device, domain-specific tuning (DST) of the proxy's adapters on
//! local data, then structure-agnostic mutual learning (SAML) between the SLM and the proxy on
//! the transfer set; the proxy's shared part goes up; the server averages (or keeps one per
//! device), learns mutually with its LLM on a sample of the public corpus, and sends the result
//! down.
//!
//! The ablations are values of the same type: without DST the adapters stay as they are;
//! without SAML the SLM and the proxy's shared part are each tuned on local data alone.

use cotune_distill::{Gate, GateSignal};
use cotune_host::Example;

use super::{
    proxies, DeviceSetup, DeviceStep, FederatedMethod, Round, ServerSetup, ServerStep, Upload,
};
use crate::config::{Aggregation, PromptLabeller, ServerPromptLabeller, TransferSet};
use crate::records::{DeviceLosses, PairLosses, ServerLosses, UploadChecks};
use crate::roles::{Device, Server};
use crate::seed::{RoundSeed, Stream};

/// Co-PLMs with its two device-side phases as switches.
pub struct CoPlms {
    name: &'static str,
    summary: &'static str,
    /// Domain-specific tuning of the proxy's adapters.
    dst: bool,
    /// Mutual learning between the SLM and the proxy.
    saml: bool,
}

/// The full method.
pub const CO_PLMS: CoPlms = CoPlms {
    name: "co-plms",
    summary: "DST + device SAML + upload + (optional FedAvg) + server SAML + download",
    dst: true,
    saml: true,
};

/// Without domain-specific tuning.
pub const CO_PLMS_NO_DST: CoPlms = CoPlms {
    name: "co-plms-no-dst",
    summary: "co-plms without domain-specific tuning",
    dst: false,
    saml: true,
};

/// Without mutual learning on the device.
pub const CO_PLMS_NO_SAML: CoPlms = CoPlms {
    name: "co-plms-no-saml",
    summary: "co-plms without mutual learning (SLM and DPM each tuned on local data alone)",
    dst: true,
    saml: false,
};

impl FederatedMethod for CoPlms {
    fn name(&self) -> &'static str {
        self.name
    }

    fn summary(&self) -> &'static str {
        self.summary
    }

    fn uses_dpm(&self) -> bool {
        true
    }

    fn trains_llm(&self) -> bool {
        true
    }

    /// The first DPM for every device and, for the `public` transfer set, its public
    /// questions.
    fn server_setup(&self, setup: &mut ServerSetup<'_>) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        let train = &setup.config.train;
        let first = proxies::attach(setup, self.aggregation(train))?;
        let mut messages = vec![vec![first]; setup.devices];
        if self.public_transfer(setup.config) {
            let public = proxies::public_transfer_messages(
                setup,
                train.transfer_size,
                train.transfer_select,
            )?;
            for (m, p) in messages.iter_mut().zip(public) {
                m.push(p);
            }
        }
        Ok(messages)
    }

    /// A proxy holding the first DPM; the transfer set's public questions.
    fn device_setup(
        &self,
        setup: &DeviceSetup<'_>,
        device: &mut Device,
        received: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        proxies::attach_proxy(setup, device, received, self.name())?;
        if self.public_transfer(setup.config) {
            let Some(public) = received.get(1) else {
                anyhow::bail!("the public transfer set was not received");
            };
            proxies::receive_public_transfer(setup, device, public)?;
        }
        Ok(())
    }

    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        let (s, seed) = (round.settings, round.device_seed(device.index));
        let mut l = DeviceLosses::default();
        if self.dst {
            l.dst = device.domain_specific_tuning(s.local_epochs, &s.dst, seed)?;
        }
        if self.saml {
            let transfer = transfer_set(round, device, seed)?;
            l.transfer_examples = transfer.0.len();
            // Self-answered questions carry no reference: the gate compares confidence there.
            let signal = match s.transfer {
                TransferSet::Synthetic | TransferSet::Prompts => GateSignal::Confidence,
                TransferSet::Local | TransferSet::Public => GateSignal::Reference,
            };
            let gate = Gate::of(s.saml, signal, s.gate_sharpness);
            (l.slm, l.dpm) = device.mutual_learning(
                (&transfer.0, &transfer.1),
                s.saml_epochs,
                &s.slm,
                &s.dpm,
                seed,
                gate,
            )?;
        } else {
            l.slm = device.tune_slm_locally(s.local_epochs, &s.slm, seed)?;
            l.dpm = device.tune_dpm_locally(s.local_epochs, &s.dpm, seed)?;
        }
        Ok(DeviceStep {
            losses: l,
            upload: Some(proxies::upload(device)?),
        })
    }

    fn server_step(
        &self,
        round: &Round<'_>,
        server: &mut Server,
        uploads: Vec<Upload>,
    ) -> anyhow::Result<ServerStep> {
        let s = round.settings;
        let sample = server.public_sample_indices(
            s.server_public_sample,
            round.server_seed().of(Stream::PublicSample, 0),
        );
        let mut losses = ServerLosses::default();
        let gate = Gate::of(s.saml, GateSignal::Reference, s.gate_sharpness);
        match self.aggregation(s) {
            rule if rule.one_slot() => {
                let checks = proxies::aggregate(round, server, &uploads, rule)?;
                let seed = round.server_seed();
                let extra = server_prompts(round, server, 0, &mut losses)?;
                (losses.llm, losses.dpm) = server.mutual_learning(
                    0,
                    &sample,
                    &extra,
                    &round.data.prompt_template,
                    s.server_epochs,
                    &s.llm,
                    &s.dpm,
                    seed,
                    gate,
                )?;
                Ok(ServerStep {
                    losses,
                    checks,
                    downloads: proxies::to_every_device(round, server)?,
                })
            }
            _ => {
                let mut checks = UploadChecks {
                    rule: Aggregation::PerDevice.name().to_string(),
                    ..UploadChecks::default()
                };
                let accepted = proxies::check_uploads(round, server, &uploads, |d| d, &mut checks)?;
                let mut accepted = accepted.into_iter().peekable();
                let mut downloads = Vec::new();
                for (k, u) in uploads.iter().enumerate() {
                    let i = u.device;
                    // A refused upload is not learned from: the device gets its slot back as
                    // it was.
                    let Some((_, params)) = accepted.next_if(|(a, _)| *a == k) else {
                        downloads.push((i, server.dpm_message(i)?));
                        continue;
                    };
                    server.proxies()?.dpms[i].import_params(&params)?;
                    let seed = round.server_seed_with(i);
                    let extra = server_prompts(round, server, i, &mut losses)?;
                    let (llm, dpm) = server.mutual_learning(
                        i,
                        &sample,
                        &extra,
                        &round.data.prompt_template,
                        s.server_epochs,
                        &s.llm,
                        &s.dpm,
                        seed,
                        gate,
                    )?;
                    losses.per_device.push(PairLosses {
                        device: i,
                        llm,
                        dpm,
                    });
                    downloads.push((i, server.dpm_message(i)?));
                }
                Ok(ServerStep {
                    losses,
                    checks,
                    downloads,
                })
            }
        }
    }
}

impl CoPlms {
    /// Whether devices receive public questions for their transfer set.
    fn public_transfer(&self, config: &crate::config::ExperimentConfig) -> bool {
        self.saml && config.train.transfer == TransferSet::Public
    }
}

/// `server_prompts` of the server's public prompts (a seeded choice per round), answered per
/// `server_prompt_labeller`: by DPM slot `slot` after it learned from the devices, or per
/// prompt by the surer of it and the LLM. This is how the LLM meets the devices' domains
/// without unlearning its own. Counts in `losses` who answered what.
fn server_prompts(
    round: &Round<'_>,
    server: &mut Server,
    slot: usize,
    losses: &mut ServerLosses,
) -> anyhow::Result<Vec<cotune_data::QaRecord>> {
    let (s, data) = (round.settings, round.data);
    if s.server_prompts == 0 || server.public_prompts.is_empty() {
        return Ok(Vec::new());
    }
    let chosen = crate::roles::choose(
        &server.public_prompts,
        s.server_prompts,
        round.server_seed().of(Stream::ServerPrompts, slot),
        "server-prompts",
    );
    let template = &data.prompt_template;
    let proxies = server.proxies()?;
    let (dpm, codec) = (&proxies.dpms[slot], &proxies.codec);
    let by_proxy =
        crate::roles::answer_prompts(dpm, codec, &chosen, template, data.max_answer_tokens, 64)?;
    if s.server_prompt_labeller == ServerPromptLabeller::Proxy {
        return Ok(by_proxy);
    }
    let proxy_sure = crate::roles::answer_confidence(dpm, codec, &by_proxy, template, 64)?;
    let (llm, llm_codec) = (&server.llm, &server.llm_codec);
    let by_llm = crate::roles::answer_prompts(
        llm,
        llm_codec,
        &chosen,
        template,
        data.max_answer_tokens,
        64,
    )?;
    let llm_sure = crate::roles::answer_confidence(llm, llm_codec, &by_llm, template, 64)?;
    Ok(surer_answers(
        by_proxy,
        by_llm,
        &proxy_sure,
        &llm_sure,
        &mut losses.proxy_answers,
    ))
}

/// Per prompt, the proxy's answer where it is strictly surer of it than the LLM of its own,
/// else the LLM's; counted per domain in `counts` as (answered by the proxy, prompts).
fn surer_answers(
    by_proxy: Vec<cotune_data::QaRecord>,
    by_llm: Vec<cotune_data::QaRecord>,
    proxy_sure: &[f64],
    llm_sure: &[f64],
    counts: &mut std::collections::BTreeMap<String, (usize, usize)>,
) -> Vec<cotune_data::QaRecord> {
    let mut answered = Vec::with_capacity(by_proxy.len());
    for ((p, l), (ps, ls)) in by_proxy
        .into_iter()
        .zip(by_llm)
        .zip(proxy_sure.iter().zip(llm_sure))
    {
        let count = counts.entry(p.domain.clone()).or_default();
        count.1 += 1;
        if ps > ls {
            count.0 += 1;
            answered.push(p);
        } else {
            answered.push(l);
        }
    }
    answered
}

/// Up to `transfer_size` of the device's unlabelled prompts (a seeded choice per round),
/// answered by `prompt_labeller`: the proxy after its domain-specific tuning, or the SLM itself
/// (the self-training control). Nothing leaves the device.
fn prompt_transfer(
    round: &Round<'_>,
    device: &Device,
    proxy: &crate::roles::DistilledProxy,
    seed: RoundSeed,
) -> anyhow::Result<Vec<cotune_data::QaRecord>> {
    let (s, data) = (round.settings, round.data);
    let chosen = crate::roles::choose(
        &device.prompts,
        s.transfer_size,
        seed.of(Stream::DevicePrompts, 0),
        "device-prompts",
    );
    let (model, codec) = match s.prompt_labeller {
        PromptLabeller::Proxy => (&proxy.adapted, &proxy.codec),
        PromptLabeller::Own => (&device.slm, &device.slm_codec),
    };
    crate::roles::answer_prompts(
        model,
        codec,
        &chosen,
        &data.prompt_template,
        data.max_answer_tokens,
        64,
    )
}

/// The device's local examples plus, per `train.transfer`, the public questions it received
/// or questions its proxy writes: `(in the SLM's tokens, in the proxy's tokens)`, the same
/// texts in the same order.
fn transfer_set(
    round: &Round<'_>,
    device: &Device,
    seed: RoundSeed,
) -> anyhow::Result<(Vec<Example>, Vec<Example>)> {
    let (s, data) = (round.settings, round.data);
    let mut slm_side = device.train.clone();
    let synthetic = match s.transfer {
        TransferSet::Synthetic => device.synthetic_transfer(
            &data.prompt_template,
            s.transfer_size,
            data.max_prompt_tokens,
            data.max_answer_tokens,
            seed,
        )?,
        _ => Vec::new(),
    };
    let Some(proxy) = device.state::<crate::roles::DistilledProxy>() else {
        anyhow::bail!("device {} holds no DistilledProxy", device.name);
    };
    let mut dpm_side = proxy.train.clone();
    match s.transfer {
        TransferSet::Local => {}
        TransferSet::Prompts => {
            let answered = prompt_transfer(round, device, proxy, seed)?;
            let template = &data.prompt_template;
            slm_side.extend(device.slm_codec.encode(&answered, template));
            dpm_side.extend(proxy.codec.encode(&answered, template));
        }
        TransferSet::Public => {
            slm_side.extend(proxy.slm_public_transfer.iter().cloned());
            dpm_side.extend(proxy.public_transfer.iter().cloned());
        }
        TransferSet::Synthetic => {
            // The proxy wrote them in its tokens; the SLM reads their text in its own.
            slm_side.extend(device.slm_codec.translate(&synthetic, &proxy.codec));
            dpm_side.extend(synthetic);
        }
    }
    Ok((slm_side, dpm_side))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cotune_data::QaRecord;

    #[test]
    fn each_prompt_takes_the_surer_answer_and_is_counted_under_its_domain() {
        let record = |domain: &str, answer: &str| QaRecord {
            domain: domain.into(),
            question: format!("q {answer}"),
            answer: answer.into(),
        };
        let by_proxy = vec![record("a", "p0"), record("a", "p1"), record("c", "p2")];
        let by_llm = vec![record("a", "l0"), record("a", "l1"), record("c", "l2")];
        let mut counts = std::collections::BTreeMap::new();
        // The proxy is surer on the first and the third prompt; a tie goes to the LLM.
        let got = surer_answers(
            by_proxy,
            by_llm,
            &[-0.1, -0.5, -0.2],
            &[-0.3, -0.5, -2.0],
            &mut counts,
        );
        let answers: Vec<&str> = got.iter().map(|r| r.answer.as_str()).collect();
        assert_eq!(answers, ["p0", "l1", "p2"]);
        assert_eq!(counts["a"], (1, 2));
        assert_eq!(counts["c"], (1, 1));
    }
}
