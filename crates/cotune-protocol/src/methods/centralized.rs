//! `centralized`: the devices send their training records to the server and the LLM is tuned on
//! all of them, beside the same seeded sample of the server's own corpus that co-plms's LLM
//! learns on each round (so that it keeps what it knew). Privacy broken on purpose: an upper
//! bound for the LLM, not a method to deploy. The SLMs do not change.

use anyhow::Context;
use cotune_data::QaRecord;

use super::{DeviceStep, FederatedMethod, Round, ServerStep, Upload};
use crate::progress::Progress;
use crate::records::ServerLosses;
use crate::roles::{Device, Server};
use crate::seed::Stream;
use crate::uploads::ExpectedUpload;

/// The LLM trained on every device's data.
pub struct Centralized;

impl FederatedMethod for Centralized {
    fn name(&self) -> &'static str {
        "centralized"
    }

    fn summary(&self) -> &'static str {
        "the LLM tuned on all devices' data: an upper bound that breaks privacy"
    }

    fn trains_llm(&self) -> bool {
        true
    }

    fn trains_slms(&self) -> bool {
        false
    }

    /// Each device's training records, at most as many as the config gives a device.
    fn expected_uploads(
        &self,
        round: &Round<'_>,
        _server: &Server,
        _broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, ExpectedUpload)>> {
        let max_records = crate::config::train_records_bound(round.data, None);
        Ok(round
            .participants
            .iter()
            .map(|&d| (d, ExpectedUpload::Records { max_records }))
            .collect())
    }

    /// The device's training records, as JSON.
    fn device_step(
        &self,
        _round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        Ok(DeviceStep {
            losses: Default::default(),
            upload: Some(serde_json::to_vec(&device.train_records)?),
        })
    }

    fn server_step(
        &self,
        round: &Round<'_>,
        server: &mut Server,
        uploads: Vec<Upload>,
    ) -> anyhow::Result<ServerStep> {
        let s = round.settings;
        let mut all = Vec::new();
        for u in &uploads {
            let records: Vec<QaRecord> = serde_json::from_slice(&u.bytes)
                .with_context(|| format!("the records of device {}", u.device))?;
            all.extend(round.encode_for_llm(&records));
        }
        all.extend(server.public_sample(
            s.server_public_sample,
            round.server_seed().of(Stream::PublicSample, 0),
        ));
        let seed = round.server_seed();
        let mut last = None;
        let bar = Progress::new("server LLM on all device data", s.local_epochs);
        for e in 0..s.local_epochs {
            last = Some(cotune_distill::train_epoch(
                &mut server.llm,
                None,
                &all,
                &s.llm,
                seed.of(Stream::CentralizedLlm, e),
                &mut server.llm_step,
            )?);
            bar.tick();
        }
        Ok(ServerStep {
            checks: Default::default(),
            losses: ServerLosses {
                llm: last,
                ..ServerLosses::default()
            },
            downloads: Vec::new(),
        })
    }
}
