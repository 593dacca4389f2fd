//! The experiment configuration (one TOML file) and its checks before any training.

use std::path::{Path, PathBuf};

use cotune_data::DataConfig;
use cotune_distill::{Alignment, DistillConfig, PretrainConfig, SamlVariant, TrainSettings};
use cotune_eval::EvalOptions;
use cotune_host::{HfCheckpoint, Plugin};
use serde::{Deserialize, Serialize};

/// Everything wrong with a configuration, found before any training starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type (the message
    /// names the key and the line).
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config {}: key `{key}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`devices[2].domain`).
        key: String,
        /// What is wrong and what was expected.
        reason: String,
    },
}

/// The name of a method, `method = "co-plms"`. [`crate::methods::Method::of`] finds its
/// implementation; the config's checks refuse a name no method is registered under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodName(pub String);

impl MethodName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the device-side mutual learning runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferSet {
    /// The device's own training questions.
    #[default]
    Local,
    /// The local questions plus questions of the public corpus, sent down once.
    Public,
    /// The local questions plus questions the DPM writes in the domain's style and answers.
    Synthetic,
    /// The local questions plus up to `transfer_size` of the device's own unlabelled prompts
    /// each round (the field benchmark), answered by `prompt_labeller`: the teacher's answer and
    /// distribution are the only signal on them.
    Prompts,
}

impl TransferSet {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Public => "public",
            Self::Synthetic => "synthetic",
            Self::Prompts => "prompts",
        }
    }
}

/// Which public questions a device keeps for the `public` transfer set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferSelect {
    /// The server sends a seeded random choice of `transfer_size` public questions.
    #[default]
    Random,
    /// The server sends every public question; the device keeps the `transfer_size` closest to
    /// its own questions (TF-IDF cosine, `crate::similarity`). Its data never leaves it.
    Similar,
}

/// Who answers a device's unlabelled prompts under `transfer = "prompts"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptLabeller {
    /// The proxy (after domain-specific tuning): what the LLM's knowledge teaches.
    #[default]
    Proxy,
    /// The SLM itself (self-training): the control with the same data and steps and nothing
    /// from the proxy.
    Own,
}

/// Who answers the server's public prompts of `server_prompts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerPromptLabeller {
    /// Per prompt, the surer of the LLM and the aggregated proxy (the higher mean
    /// log-probability of its own answer): the LLM keeps its own answers where it knows the
    /// domain and learns the proxy's where the devices taught it more.
    #[default]
    Surer,
    /// The aggregated proxy on every prompt.
    Proxy,
}

/// How the server treats the uploaded DPMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Weighted FedAvg (by training-set size) into one DPM.
    #[default]
    Fedavg,
    /// One DPM per device.
    PerDevice,
    /// The coordinate-wise median of the uploads into one DPM (unweighted).
    Median,
    /// The coordinate-wise mean of the uploads after dropping the `trim` share of the lowest
    /// and of the highest values of each coordinate (unweighted).
    TrimmedMean,
    /// Krum (Blanchard et al., 2017): the one upload whose squared distances to its
    /// `n - byzantine - 2` nearest other uploads sum lowest.
    Krum,
}

impl Aggregation {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fedavg => "fedavg",
            Self::PerDevice => "per-device",
            Self::Median => "median",
            Self::TrimmedMean => "trimmed-mean",
            Self::Krum => "krum",
        }
    }

    /// Whether the uploads are combined into one DPM (every rule but `per-device`).
    pub fn one_slot(self) -> bool {
        self != Self::PerDevice
    }
}

/// Differential privacy of the uploaded DPM updates (`[privacy]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// `"central"`: each device clips its update (upload minus the round's DPM) to L2 norm
    /// `clip`; the server clips again, sums, adds Gaussian noise of standard deviation
    /// `noise_multiplier * clip` to the sum and averages. `"local"`: each device adds that
    /// noise to its own clipped update before it leaves.
    pub mode: PrivacyMode,
    /// The L2 norm every update is clipped to.
    pub clip: f64,
    /// Noise standard deviation over `clip` (0: clipping alone, no privacy guarantee).
    pub noise_multiplier: f64,
    /// The delta epsilon is reported at.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn default_delta() -> f64 {
    1e-5
}

/// Where the noise of [`PrivacyConfig`] is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyMode {
    /// By the server, to the sum of the clipped updates.
    Central,
    /// By each device, to its clipped update.
    Local,
}

impl PrivacyMode {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Central => "central",
            Self::Local => "local",
        }
    }
}

/// One misbehaving device, for experiments on defences (`[attack]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// The attacking device's index.
    pub device: usize,
    /// What it does to its update `u` (upload minus the round's DPM) before sending.
    pub kind: AttackKind,
    /// `scale`: sends `factor * u`; `sign-flip`: `-factor * u`; `random`: Gaussian noise of the
    /// norm `factor * |u|`; `nan`: ignored.
    #[serde(default = "default_factor")]
    pub factor: f64,
}

fn default_factor() -> f64 {
    10.0
}

/// The kinds of [`AttackConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// The update multiplied by `factor`.
    Scale,
    /// The update multiplied by `-factor`.
    SignFlip,
    /// Gaussian noise in place of the update, `factor` times its norm.
    Random,
    /// Every value NaN.
    Nan,
}

impl AttackKind {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::SignFlip => "sign-flip",
            Self::Random => "random",
            Self::Nan => "nan",
        }
    }
}

/// Where a device's SLM starts: `"random"`, `"pretrained-public"`, `"pretrained-general"`, or
/// any other string, read as a Hugging Face model folder (the same as the SLM's `checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SlmInit {
    /// Random weights (or the SLM's `checkpoint` as it is, when it has one).
    #[default]
    Random,
    /// Pre-trained on the public corpus by the same cached step as the LLM.
    PretrainedPublic,
    /// Pre-trained by the same step on the public corpus without its own device's domain: a
    /// general-purpose model that has not seen the device's kind of question.
    PretrainedGeneral,
    /// A Hugging Face model folder.
    Checkpoint(PathBuf),
}

impl Serialize for SlmInit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SlmInit::Random => s.serialize_str("random"),
            SlmInit::PretrainedPublic => s.serialize_str("pretrained-public"),
            SlmInit::PretrainedGeneral => s.serialize_str("pretrained-general"),
            SlmInit::Checkpoint(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for SlmInit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "random" => SlmInit::Random,
            "pretrained-public" => SlmInit::PretrainedPublic,
            "pretrained-general" => SlmInit::PretrainedGeneral,
            "" => {
                return Err(serde::de::Error::custom(
                    "expected \"random\", \"pretrained-public\", \"pretrained-general\" or a \
                     checkpoint folder, got \"\"",
                ))
            }
            _ => SlmInit::Checkpoint(PathBuf::from(text)),
        })
    }
}

/// A model: which plugin, which architecture, and its config keys; or a Hugging Face model
/// folder to start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The plugin's name (`gpt2`, `llama`, `t5`) or a path to its library. May be left out
    /// with `checkpoint`: the plugin that loads the folder's architecture is found.
    #[serde(default)]
    pub plugin: String,
    /// The architecture; defaults to the one that loads `checkpoint`, or the plugin's first.
    #[serde(default)]
    pub architecture: Option<String>,
    /// The model's config keys, passed to the plugin as TOML text. With `checkpoint` they are
    /// added to (or override) the keys the checkpoint's `config.json` gives.
    #[serde(default)]
    pub config: toml::Table,
    /// A Hugging Face model folder (`config.json`, `model.safetensors`) to start from, relative
    /// to the run root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Its tokenizer: a `tokenizer.json` file, or `{ vocab_size = N }` (trained on the public
    /// corpus like the run's). Without it: the checkpoint folder's `tokenizer.json` when it has
    /// one, else the run's shared tokenizer (`[data]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSpec>,
}

/// A model's own tokenizer (`tokenizer = "path/tokenizer.json"` or
/// `tokenizer = { vocab_size = N }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenizerSpec {
    /// A `tokenizer.json` file, relative to the run root.
    File(PathBuf),
    /// A byte-level BPE of at most this many tokens, trained on the training texts.
    Trained(usize),
}

impl Serialize for TokenizerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            TokenizerSpec::File(p) => s.serialize_str(&p.to_string_lossy()),
            TokenizerSpec::Trained(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("vocab_size", n)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for TokenizerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let expected = "expected a tokenizer.json path or { vocab_size = N }";
        match toml::Value::deserialize(d)? {
            toml::Value::String(path) if !path.is_empty() => Ok(TokenizerSpec::File(path.into())),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "vocab_size") {
                    return Err(D::Error::custom(format!(
                        "unknown key {k} in a tokenizer table; {expected}"
                    )));
                }
                match t.get("vocab_size") {
                    Some(toml::Value::Integer(n)) if *n >= 260 => {
                        Ok(TokenizerSpec::Trained(*n as usize))
                    }
                    Some(v) => Err(D::Error::custom(format!(
                        "tokenizer vocab_size = {v}: expected an integer of at least 260 (the \
                         256 bytes and the special tokens)"
                    ))),
                    None => Err(D::Error::custom(format!(
                        "{expected}, got a table without it"
                    ))),
                }
            }
            other => Err(D::Error::custom(format!("{expected}, got {other}"))),
        }
    }
}

impl ModelEntry {
    /// The config text given to the plugin.
    pub fn config_text(&self) -> String {
        toml::to_string(&self.config).expect("a TOML table always serialises")
    }
}

/// The distilled proxy model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpmEntry {
    /// The plugin's name or library path.
    pub plugin: String,
    /// The architecture; defaults to the plugin's first.
    #[serde(default)]
    pub architecture: Option<String>,
    /// The model's config keys (without `[lora]`).
    pub config: toml::Table,
    /// Rank of the domain-specific low-rank adapters.
    #[serde(default = "default_lora_rank")]
    pub lora_rank: usize,
    /// Where the proxy starts before it is distilled from the LLM.
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: DpmInit,
    /// Its tokenizer (see [`ModelEntry::tokenizer`]); the run's shared one without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSpec>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The split the runner scores (`eval_split`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// Each device's held-out test split (final tables).
    #[default]
    Test,
    /// Each device's validation split (choosing settings).
    Valid,
}

impl EvalSplit {
    /// The split's name in tables and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Valid => "validation",
        }
    }
}

/// Where the distilled proxy starts (`[dpm] init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpmInit {
    /// Random weights, then distilled from the LLM.
    #[default]
    Distilled,
    /// Cut from the LLM (its embeddings and head, evenly spaced layers; the DPM must have the
    /// LLM's family and width), then distilled from it: Offsite-Tuning's emulator
    /// ([`crate::emulator`]).
    LlmLayers,
}

fn default_lora_rank() -> usize {
    4
}

impl DpmEntry {
    /// The plain model (no adapters).
    pub fn model(&self) -> ModelEntry {
        ModelEntry {
            plugin: self.plugin.clone(),
            architecture: self.architecture.clone(),
            config: self.config.clone(),
            checkpoint: None,
            tokenizer: self.tokenizer.clone(),
        }
    }

    /// Config text of the copy with adapters (base frozen).
    pub fn adapted_config_text(&self) -> String {
        format!(
            "{}\n[lora]\nrank = {}\n",
            self.model().config_text(),
            self.lora_rank
        )
    }
}

/// One edge device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// The domain (file stem in the data folder) of its private data.
    pub domain: String,
    /// Its small language model.
    pub slm: ModelEntry,
    /// Where its SLM starts.
    #[serde(default)]
    pub init: SlmInit,
    /// Its own DPM, if not the shared `[dpm]` (FedAvg needs them all equal).
    #[serde(default)]
    pub dpm: Option<DpmEntry>,
}

/// Training hyper-parameters of the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundSettings {
    /// Passes over the local data per round (SLM and DPM local tuning, DST).
    pub local_epochs: usize,
    /// Passes of device-side mutual learning per round.
    pub saml_epochs: usize,
    /// Passes of server-side mutual learning per round.
    pub server_epochs: usize,
    /// Public examples subsampled per round for the server side.
    pub server_public_sample: usize,
    /// The device-side transfer set.
    pub transfer: TransferSet,
    /// Extra transfer examples per device per round (`public` and `synthetic`).
    pub transfer_size: usize,
    /// Which public questions make the `public` transfer set.
    pub transfer_select: TransferSelect,
    /// Who answers the prompts of `transfer = "prompts"`.
    #[serde(skip_serializing_if = "is_default")]
    pub prompt_labeller: PromptLabeller,
    /// Public prompts per round the server adds to its mutual learning (answered by the
    /// aggregated proxy), so that the LLM meets the devices' domains (field benchmark).
    #[serde(skip_serializing_if = "is_default")]
    pub server_prompts: usize,
    /// Who answers the `server_prompts`.
    #[serde(skip_serializing_if = "is_default")]
    pub server_prompt_labeller: ServerPromptLabeller,
    /// The server's treatment of uploaded DPMs.
    pub aggregation: Aggregation,
    /// Share of devices taking part in each round (at least one does).
    pub device_fraction: f64,
    /// `trimmed-mean`: the share of values dropped at each end of every coordinate, in
    /// [0, 0.5).
    pub trim: f64,
    /// `krum`: the number of misbehaving devices tolerated; Krum needs more than
    /// `2 * byzantine + 2` uploads.
    pub byzantine: usize,
    /// The server's screen of uploads before it learns from them: each uploaded DPM's
    /// cross-entropy on the public validation split is compared with the lower median of the
    /// round's uploads, and one above `screen_ratio` times that median is refused (0: no
    /// screen). Uploads with a non-finite value are always refused.
    #[serde(skip_serializing_if = "is_default")]
    pub screen_ratio: f64,
    /// `fedmkt`: token distributions kept per answer position in a knowledge message; with
    /// `alignment = "mined"`, the teacher's tokens carried to another vocabulary per position.
    pub top_k: usize,
    /// How two models with different tokenizers learn from each other's distributions:
    /// `"shared"` (one tokenizer; differing ones refused), `"mined"` or `"uld"`
    /// (`cotune_distill::align`).
    #[serde(skip_serializing_if = "is_default")]
    pub alignment: Alignment,
    /// Mutual learning (device and server side): `"paper"`, every example's distillation term
    /// with the same weight, or `"gated"`, each weighted by how much better the teaching model
    /// knows the example than the learning one (`cotune_distill::Gate`).
    pub saml: SamlVariant,
    /// The gate's sharpness `s` in `sigmoid(s * (teacher score - student score))`.
    pub gate_sharpness: f32,
    /// SLM optimiser and loss settings.
    pub slm: TrainSettings,
    /// DPM settings (SAML and local tuning of its shared part).
    pub dpm: TrainSettings,
    /// DST settings (the adapters).
    pub dst: TrainSettings,
    /// LLM settings.
    pub llm: TrainSettings,
}

impl Default for RoundSettings {
    fn default() -> Self {
        Self {
            local_epochs: 1,
            saml_epochs: 1,
            server_epochs: 1,
            server_public_sample: 200,
            transfer: TransferSet::Local,
            transfer_size: 100,
            transfer_select: TransferSelect::Random,
            prompt_labeller: PromptLabeller::Proxy,
            server_prompts: 0,
            server_prompt_labeller: ServerPromptLabeller::Surer,
            aggregation: Aggregation::Fedavg,
            device_fraction: 1.0,
            trim: 0.1,
            byzantine: 1,
            screen_ratio: 0.0,
            top_k: 16,
            alignment: Alignment::Shared,
            saml: SamlVariant::Paper,
            gate_sharpness: 1.0,
            slm: TrainSettings::default(),
            dpm: TrainSettings::default(),
            dst: TrainSettings::default(),
            llm: TrainSettings {
                learning_rate: 3e-4,
                ..TrainSettings::default()
            },
        }
    }
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The run's name (the run folder is `<runs_dir>/<name>-<timestamp>`).
    pub name: String,
    /// The method, by name (see [`crate::methods::REGISTRY`]).
    pub method: MethodName,
    /// Seed of every model initialisation and sampling.
    #[serde(default)]
    pub seed: u64,
    /// Seed of the cached pre-training of the LLM and of pre-trained SLMs; defaults to `seed`.
    /// Fixing it across seeds treats them as given pre-trained checkpoints, as real ones are.
    #[serde(default)]
    pub pretrain_seed: Option<u64>,
    /// Devices trained (and evaluated) at the same time; 0 means one per available core.
    /// Results do not depend on it.
    #[serde(default)]
    pub threads: usize,
    /// Co-tuning rounds.
    pub rounds: usize,
    /// Where run folders go (relative to the run root).
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Where cached pre-trained and distilled models go (relative to the run root).
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// The data; `domains` is replaced by the devices' domains.
    #[serde(default)]
    pub data: DataConfig,
    /// Answer generation in evaluation.
    #[serde(default)]
    pub eval: EvalOptions,
    /// Most public training examples used (a seeded subsample; all when absent).
    #[serde(default)]
    pub max_public: Option<usize>,
    /// Most test records evaluated per device (all when absent).
    #[serde(default)]
    pub max_test: Option<usize>,
    /// The split every round is scored on: `"test"` for final tables, `"valid"` (each device's
    /// validation split) for choosing settings without looking at the test questions.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eval_split: EvalSplit,
    /// Pre-training of the LLM (and of pre-trained SLMs).
    #[serde(default)]
    pub pretrain: PretrainConfig,
    /// Distillation of the first DPM.
    #[serde(default)]
    pub distill: DistillConfig,
    /// Round hyper-parameters.
    #[serde(default)]
    pub train: RoundSettings,
    /// Differential privacy of the uploads (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyConfig>,
    /// One misbehaving device (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackConfig>,
    /// The server's LLM.
    pub llm: ModelEntry,
    /// The distilled proxy model.
    pub dpm: DpmEntry,
    /// The edge devices.
    pub devices: Vec<DeviceEntry>,
    /// Rounds over the network (`cargo xtask serve` and `device`); a run in one process
    /// ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployConfig>,
}

/// `[deploy]`: deadlines, the minimum of devices and the upload checks of a deployment over
/// the network (`crate::deploy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Seconds a round's phase (the devices' step, or their download and evaluation) stays
    /// open at most; a device that has not uploaded by then is dropped from it.
    pub deadline_seconds: f64,
    /// The same for round 0, in which devices set up (pre-training their SLM if the config
    /// says so) before they evaluate.
    pub setup_deadline_seconds: f64,
    /// The fewest devices whose upload must be accepted for a phase to complete.
    pub min_devices: usize,
    /// Interval of the devices' heartbeats, in seconds.
    pub heartbeat_seconds: f64,
    /// A device silent for this many intervals is dropped from the open round.
    pub missed_heartbeats: u32,
    /// Largest L2 norm of an uploaded DPM update (against the round's DPM) the server accepts;
    /// no bound when absent.
    pub max_update_norm: Option<f64>,
    /// Largest upload the server accepts, in MiB.
    pub max_upload_mib: f64,
    /// Whether devices send their prediction files (their test questions, answers and
    /// references) with their scores, so the server's run folder holds them as a run in one
    /// process does; `false` keeps them on the devices.
    pub send_predictions: bool,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            deadline_seconds: 600.0,
            setup_deadline_seconds: 3600.0,
            min_devices: 1,
            heartbeat_seconds: 5.0,
            missed_heartbeats: 3,
            max_update_norm: None,
            max_upload_mib: 512.0,
            send_predictions: true,
        }
    }
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("runs/cache")
}

/// The loaded plugins of a checked configuration.
pub struct Plugins {
    /// The LLM's.
    pub llm: Plugin,
    /// Each device's DPM's (the shared `[dpm]` or the device's own).
    pub dpms: Vec<Plugin>,
    /// Each device's SLM's.
    pub slms: Vec<Plugin>,
}

impl ExperimentConfig {
    /// Parses `text`, read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: ExperimentConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.data.domains = config.devices.iter().map(|d| d.domain.clone()).collect();
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Makes relative checkpoint folders (or GGUF files) and tokenizer files relative to
    /// `root`; a leading `~/` is the home folder (`$HOME`), where model caches live.
    pub fn resolve_paths(&mut self, root: &Path) {
        let resolve = |p: &mut PathBuf| {
            if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), std::env::var_os("HOME")) {
                *p = PathBuf::from(home).join(rest);
            } else if p.is_relative() {
                *p = root.join(&*p);
            }
        };
        let fix_tokenizer = |t: &mut Option<TokenizerSpec>| {
            if let Some(TokenizerSpec::File(p)) = t {
                resolve(p);
            }
        };
        let fix = |e: &mut ModelEntry| {
            if let Some(c) = &mut e.checkpoint {
                resolve(c);
            }
            fix_tokenizer(&mut e.tokenizer);
        };
        fix(&mut self.llm);
        fix_tokenizer(&mut self.dpm.tokenizer);
        for d in &mut self.devices {
            if let SlmInit::Checkpoint(folder) = &d.init {
                d.slm.checkpoint = Some(folder.clone());
                d.init = SlmInit::Random;
            }
            fix(&mut d.slm);
            if let Some(dpm) = &mut d.dpm {
                fix_tokenizer(&mut dpm.tokenizer);
            }
        }
    }

    /// How many devices take part in each round: `train.device_fraction` of them, rounded, at
    /// least one.
    pub fn devices_per_round(&self) -> usize {
        let n = self.devices.len();
        ((n as f64 * self.train.device_fraction).round() as usize).clamp(1, n.max(1))
    }

    /// The DPM of device `i`.
    pub fn dpm_of(&self, i: usize) -> &DpmEntry {
        self.devices[i].dpm.as_ref().unwrap_or(&self.dpm)
    }
}

/// The architecture of `plugin` that loads the checkpoint's class.
pub(crate) fn checkpoint_architecture(
    plugin: &Plugin,
    checkpoint: &HfCheckpoint,
) -> Option<String> {
    plugin.architectures().iter().find_map(|arch| {
        plugin
            .hf_architecture(arch)
            .filter(|hf| checkpoint.architectures.contains(hf))
            .map(|_| arch.clone())
    })
}

/// The most training records a device holds under `data`: `device_train_size`, or on the
/// field benchmark the labelled records per device of `domain` (of any domain when `None`).
/// What a deployment bounds a device's claims by (FedAvg's weight, centralized's records).
pub fn train_records_bound(data: &DataConfig, domain: Option<&str>) -> usize {
    match &data.field {
        Some(field) => match domain.and_then(|d| field.domains.get(d)) {
            Some(roles) => roles.labelled,
            None => field
                .domains
                .values()
                .map(|r| r.labelled)
                .max()
                .unwrap_or(0),
        },
        None => data.device_train_size,
    }
}

/// The architecture of `entry` on `plugin`: the one named, else the one that loads its
/// checkpoint, else the plugin's first.
pub fn architecture_of(entry: &ModelEntry, plugin: &Plugin) -> String {
    entry
        .architecture
        .clone()
        .or_else(|| {
            let folder = entry.checkpoint.as_ref()?;
            checkpoint_architecture(plugin, &HfCheckpoint::read(folder.as_path()).ok()?)
        })
        .or_else(|| plugin.architectures().first().cloned())
        .unwrap_or_default()
}
