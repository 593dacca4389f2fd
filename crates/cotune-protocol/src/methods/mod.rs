//! The federated methods: one type per method, behind [`FederatedMethod`].
//!
//! A round has the same shape for every method, and the runner ([`crate::runner`]) drives it
//! without knowing any method by name:
//!
//! 1. [`broadcast`](FederatedMethod::broadcast): the server may send every participating device
//!    the same message (FedMKT's public sample);
//! 2. [`device_step`](FederatedMethod::device_step), on every participating device in parallel:
//!    local work, and what the device uploads;
//! 3. [`server_step`](FederatedMethod::server_step): the server reads the uploads, learns, and
//!    says what each device downloads;
//! 4. [`device_receive`](FederatedMethod::device_receive), on every device with a download, in
//!    parallel.
//!
//! The roles only exchange bytes: every message is counted in the round's [`Traffic`]
//! (crate::records::Traffic). Before round 1 a method sets itself up on both sides:
//! [`server_setup`](FederatedMethod::server_setup) once on the server, after the LLM exists
//! (the first DPM), returning what each device receives then; and
//! [`device_setup`](FederatedMethod::device_setup) on every device with what it received
//! (its proxy, its transfer questions), after its SLM exists. Both fleets, the devices of one
//! process and the device processes of a deployment, call the same two functions.
//!
//! Adding a method is one new file with a type implementing [`FederatedMethod`], a `mod` line
//! and one entry in [`REGISTRY`]; `method = "<its name>"` then selects it in a config and a
//! comparison, in one process and deployed alike.

mod centralized;
mod co_plms;
mod fedavg;
mod fedmkt;
mod llm_kd;
pub(crate) mod proxies;
mod seq_kd;
mod standalone;

use std::fmt;

use cotune_data::{DataConfig, QaRecord};
use cotune_host::Example;

use crate::config::{Aggregation, ExperimentConfig, Plugins, PrivacyConfig, RoundSettings};
use crate::records::{DeviceLosses, ServerLosses, UploadChecks};
use crate::roles::{Device, Server};
use crate::seed::{Party, RoundSeed};
use crate::tokens::Codecs;
use crate::uploads::ExpectedUpload;

/// Every method `method = "..."` accepts, in the order tables list them.
pub static REGISTRY: &[&dyn FederatedMethod] = &[
    &co_plms::CO_PLMS,
    &standalone::Standalone,
    &fedavg::Fedavg,
    &fedmkt::Fedmkt,
    &co_plms::CO_PLMS_NO_DST,
    &co_plms::CO_PLMS_NO_SAML,
    &centralized::Centralized,
    &seq_kd::SeqKd,
    &llm_kd::LlmKd,
];

/// A federated method: what it builds, what each role does in a round, what crosses the
/// network.
pub trait FederatedMethod: Sync {
    /// The name in configs and tables (`co-plms`).
    fn name(&self) -> &'static str;

    /// One line for listings and errors.
    fn summary(&self) -> &'static str;

    /// Whether devices hold a distilled proxy model (evaluated every round).
    fn uses_dpm(&self) -> bool {
        false
    }

    /// Whether the server LLM changes during the rounds (it is then re-evaluated).
    fn trains_llm(&self) -> bool {
        false
    }

    /// Whether the SLMs change during the rounds (they are then evaluated every round).
    fn trains_slms(&self) -> bool {
        true
    }

    /// How the server treats uploaded DPMs, for methods that use them.
    fn aggregation(&self, settings: &RoundSettings) -> Aggregation {
        settings.aggregation
    }

    /// Checks the settings the method needs; `Err((key, reason))` names the key.
    fn check(&self, _config: &ExperimentConfig) -> Result<(), (String, String)> {
        Ok(())
    }

    /// Once on the server, after the LLM is built: what the method adds there. Returns what
    /// each device receives before round 1 (its messages, one list per device in device
    /// order; every byte is counted in its first round's traffic).
    fn server_setup(&self, setup: &mut ServerSetup<'_>) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        Ok(vec![Vec::new(); setup.devices])
    }

    /// Once on every device, after its SLM is built, with the messages
    /// [`server_setup`](Self::server_setup) made for it.
    fn device_setup(
        &self,
        _setup: &DeviceSetup<'_>,
        _device: &mut Device,
        _received: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// What each participant's upload of this round must be, as the server knows it before the
    /// uploads arrive: what a deployment checks every upload against before accepting it
    /// ([`crate::uploads::check_upload`]), so that an upload it accepts cannot fail
    /// [`server_step`](Self::server_step). `broadcast` is the round's
    /// [`broadcast`](Self::broadcast). By default, for a method with a proxy, a parameter set
    /// like the server's DPM slot of the device; otherwise no message. A method whose device
    /// step sends anything else says what.
    fn expected_uploads(
        &self,
        round: &Round<'_>,
        server: &Server,
        _broadcast: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(usize, ExpectedUpload)>> {
        match self.uses_dpm() {
            true => Ok(proxies::references(
                self.aggregation(round.settings),
                server,
                round.participants,
            )?
            .into_iter()
            .map(|(d, r)| (d, ExpectedUpload::Params(r)))
            .collect()),
            false => Ok(round
                .participants
                .iter()
                .map(|&d| (d, ExpectedUpload::Nothing))
                .collect()),
        }
    }

    /// The message the server sends every participating device before their step, if any.
    fn broadcast(&self, _round: &Round<'_>, _server: &Server) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// One device's work in a round; `received` is the broadcast.
    fn device_step(
        &self,
        round: &Round<'_>,
        device: &mut Device,
        received: Option<&[u8]>,
    ) -> anyhow::Result<DeviceStep>;

    /// The server's work on the uploads (in device order); says what each device downloads.
    /// By default the server does nothing and sends nothing.
    fn server_step(
        &self,
        _round: &Round<'_>,
        _server: &mut Server,
        _uploads: Vec<Upload>,
    ) -> anyhow::Result<ServerStep> {
        Ok(ServerStep::default())
    }

    /// A device's work on its download (`received` is the round's broadcast); may add to its
    /// losses. By default the download is a DPM's shared part and replaces the device proxy's.
    fn device_receive(
        &self,
        _round: &Round<'_>,
        device: &mut Device,
        _received: Option<&[u8]>,
        download: &[u8],
        _losses: &mut DeviceLosses,
    ) -> anyhow::Result<()> {
        proxies::receive(device, download)
    }
}

/// What one round's steps can read: its number, settings, seeds and participants.
pub struct Round<'a> {
    /// The round, from 1.
    pub number: usize,
    /// The experiment seed.
    pub seed: u64,
    /// The round hyper-parameters.
    pub settings: &'a RoundSettings,
    /// The data settings (prompt template, token budgets).
    pub data: &'a DataConfig,
    /// Every model's tokenizer.
    pub codecs: &'a Codecs,
    /// The devices taking part, in index order.
    pub participants: &'a [usize],
    /// How many devices the experiment has.
    pub devices: usize,
    /// Differential privacy of the uploads, if any.
    pub privacy: Option<&'a PrivacyConfig>,
}

impl<'a> Round<'a> {
    /// Round `number` of `config` with `participants` (every model's tokenizer in `codecs`).
    pub fn of(
        config: &'a ExperimentConfig,
        codecs: &'a Codecs,
        number: usize,
        participants: &'a [usize],
    ) -> Round<'a> {
        Round {
            number,
            seed: config.seed,
            settings: &config.train,
            data: &config.data,
            codecs,
            participants,
            devices: config.devices.len(),
            privacy: config.privacy.as_ref(),
        }
    }

    /// The seeds of device `i` this round.
    pub fn device_seed(&self, i: usize) -> RoundSeed {
        RoundSeed::new(self.seed, self.number, Party::Device(i))
    }

    /// The server's seeds this round.
    pub fn server_seed(&self) -> RoundSeed {
        RoundSeed::new(self.seed, self.number, Party::Server)
    }

    /// The server's seeds for its work with device `i`'s own DPM.
    pub fn server_seed_with(&self, i: usize) -> RoundSeed {
        RoundSeed::new(self.seed, self.number, Party::ServerWith(i))
    }

    /// Records as examples in the LLM's tokens, with the prompt template.
    pub fn encode_for_llm(&self, records: &[QaRecord]) -> Vec<Example> {
        self.codecs.llm.encode(records, &self.data.prompt_template)
    }
}

/// What a device sends up.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The sender's index.
    pub device: usize,
    /// The message.
    pub bytes: Vec<u8>,
    /// Its local training examples (FedAvg's weight). It travels with the message; its few
    /// bytes are not counted.
    pub examples: usize,
}

/// A device's step: its losses, and its upload if it sends one.
#[derive(Debug, Default)]
pub struct DeviceStep {
    /// Losses of its phases.
    pub losses: DeviceLosses,
    /// The message it sends up.
    pub upload: Option<Vec<u8>>,
}

/// The server's step: its losses and the downloads, per device.
#[derive(Debug, Default)]
pub struct ServerStep {
    /// Its losses.
    pub losses: ServerLosses,
    /// What its checks of the uploads found, and how it combined them.
    pub checks: UploadChecks,
    /// `(device, message)`, each device at most once.
    pub downloads: Vec<(usize, Vec<u8>)>,
}

/// What [`FederatedMethod::server_setup`] works with.
pub struct ServerSetup<'a> {
    /// The checked config.
    pub config: &'a ExperimentConfig,
    /// Its plugins.
    pub plugins: &'a Plugins,
    /// Every model's tokenizer.
    pub codecs: &'a Codecs,
    /// The server (its LLM built, no DPMs yet).
    pub server: &'a mut Server,
    /// How many devices the experiment has.
    pub devices: usize,
    /// The cache of pre-trained and distilled models.
    pub cache_dir: &'a std::path::Path,
    /// What identifies the data in cache keys.
    pub data_key: &'a str,
    /// False when resuming: models are about to be restored from the run's checkpoints, so
    /// nothing needs training.
    pub fresh: bool,
}

/// What [`FederatedMethod::device_setup`] works with.
pub struct DeviceSetup<'a> {
    /// The checked config.
    pub config: &'a ExperimentConfig,
    /// Its plugins.
    pub plugins: &'a Plugins,
    /// Every model's tokenizer.
    pub codecs: &'a Codecs,
}

/// A method as a config value: `method = "co-plms"` names one of [`REGISTRY`].
#[derive(Clone, Copy)]
pub struct Method(&'static dyn FederatedMethod);

impl Method {
    /// The method `config` names, or an error naming the unknown name.
    pub fn of(config: &ExperimentConfig) -> anyhow::Result<Method> {
        let name = config.method.as_str();
        Method::named(name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown method `{name}`, expected one of {}",
                Method::names()
            )
        })
    }

    /// The method registered under `name`.
    pub fn named(name: &str) -> Option<Method> {
        REGISTRY
            .iter()
            .find(|m| m.name() == name)
            .map(|m| Method(*m))
    }

    /// Every registered method.
    pub fn all() -> impl Iterator<Item = Method> {
        REGISTRY.iter().map(|m| Method(*m))
    }

    /// The registered names, comma-separated (for errors).
    pub fn names() -> String {
        REGISTRY
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Whether devices hold a distilled proxy.
    pub fn uses_dpm(self) -> bool {
        self.0.uses_dpm()
    }

    /// Whether the server LLM changes during the rounds.
    pub fn trains_llm(self) -> bool {
        self.0.trains_llm()
    }

    /// The implementation.
    pub fn implementation(self) -> &'static dyn FederatedMethod {
        self.0
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Method {}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method({})", self.name())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_registered_once_and_parses_by_name() {
        let names: Vec<&str> = Method::all().map(Method::name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in names {
            assert_eq!(Method::named(name).unwrap().name(), name);
        }
        assert!(Method::named("fedprox").is_none());
        assert!(Method::names().contains("co-plms"));
    }

    #[test]
    fn what_each_method_builds_and_trains() {
        let m = |n| Method::named(n).unwrap();
        assert!(m("co-plms").uses_dpm() && m("co-plms").trains_llm());
        assert!(m("fedavg").uses_dpm() && !m("fedavg").trains_llm());
        assert!(!m("standalone").uses_dpm() && !m("standalone").trains_llm());
        assert!(!m("fedmkt").uses_dpm() && m("fedmkt").trains_llm());
        assert!(!m("centralized").implementation().trains_slms());
        let fedavg_settings = RoundSettings {
            aggregation: Aggregation::PerDevice,
            ..RoundSettings::default()
        };
        assert_eq!(
            m("fedavg").implementation().aggregation(&fedavg_settings),
            Aggregation::Fedavg
        );
        assert_eq!(
            m("co-plms").implementation().aggregation(&fedavg_settings),
            Aggregation::PerDevice
        );
    }
}
