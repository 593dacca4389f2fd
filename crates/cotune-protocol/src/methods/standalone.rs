//! `standalone`: each SLM tuned on its own data only; nothing crosses the network. The floor
//! every co-tuning method must beat.

use super::{DeviceStep, FederatedMethod, Round};
use crate::records::DeviceLosses;
use crate::roles::Device;

/// Local training alone.
pub struct Standalone;

impl FederatedMethod for Standalone {
    fn name(&self) -> &'static str {
        "standalone"
    }

    fn summary(&self) -> &'static str {
        "each SLM tuned on its own data only"
    }

    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep> {
        let s = round.settings;
        let slm =
            device.tune_slm_locally(s.local_epochs, &s.slm, round.device_seed(device.index))?;
        Ok(DeviceStep {
            losses: DeviceLosses {
                slm,
                ..DeviceLosses::default()
            },
            upload: None,
        })
    }
}
