//! `fedavg`: every device tunes its SLM and its DPM on its own data; the server averages the
//! DPMs (weighted by local examples) and sends the average back. No mutual learning, and the
//! LLM does not change.

use super::{
    proxies, DeviceSetup, DeviceStep, FederatedMethod, Round, ServerSetup, ServerStep, Upload,
};
use crate::config::{Aggregation, RoundSettings};
use crate::records::DeviceLosses;
use crate::roles::{Device, Server};

/// Federated averaging of the proxies.
pub struct Fedavg;

impl FederatedMethod for Fedavg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn summary(&self) -> &'static str {
        "DPMs trained on local data and averaged; no mutual learning"
    }

    fn uses_dpm(&self) -> bool {
        true
    }

    fn aggregation(&self, settings: &RoundSettings) -> Aggregation {
        // One DPM for every device: any rule that combines the uploads into one.
        if settings.aggregation.one_slot() {
            settings.aggregation
        } else {
            Aggregation::Fedavg
        }
    }

    fn server_setup(&self, setup: &mut ServerSetup<'_>) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        let first = proxies::attach(setup, self.aggregation(&setup.config.train))?;
        Ok(vec![vec![first]; setup.devices])
    }

    fn device_setup(
        &self,
        setup: &DeviceSetup<'_>,
        device: &mut Device,
        received: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        proxies::attach_proxy(setup, device, received, self.name())
    }

    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        let (s, seed) = (round.settings, round.device_seed(device.index));
        let losses = DeviceLosses {
            slm: device.tune_slm_locally(s.local_epochs, &s.slm, seed)?,
            dpm: device.tune_dpm_locally(s.local_epochs, &s.dpm, seed)?,
            ..DeviceLosses::default()
        };
        Ok(DeviceStep {
            losses,
            upload: Some(proxies::upload(device)?),
        })
    }

    fn server_step(
        &self,
        round: &Round<'_>,
        server: &mut Server,
        uploads: Vec<Upload>,
    ) -> anyhow::Result<ServerStep> {
        let checks = proxies::aggregate(round, server, &uploads, self.aggregation(round.settings))?;
        Ok(ServerStep {
            checks,
            losses: Default::default(),
            downloads: proxies::to_every_device(round, server)?,
        })
    }
}
