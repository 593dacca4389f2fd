//! The checks of an experiment config that can run before any training: values in range, what
//! the method needs, the data files, the plugins, and one DPM for FedAvg.

use std::path::Path;

use cotune_data::Partition;
use cotune_host::{HfCheckpoint, Plugin};

use cotune_distill::{ModelRecipe, TrainSettings};

use crate::config::{
    architecture_of, checkpoint_architecture, Aggregation, ConfigError, DpmInit, ExperimentConfig,
    ModelEntry, Plugins, PrivacyMode, TransferSelect, TransferSet,
};
use crate::methods::Method;
use crate::recipes::recipe;

/// Who checks a config, and so what the check may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckScope {
    /// A run in one process: every data file and every model.
    Everything,
    /// A deployed server with its own data folder: no data file, no device's model.
    Server,
    /// A deployed device with its own data folder: no data file.
    Device,
}

impl ExperimentConfig {
    /// Checks everything that can be checked before training: values, the domain files (data
    /// relative to `root`), the plugins, and that FedAvg has one DPM architecture. Returns the
    /// loaded plugins.
    pub fn check(&self, path: &Path, root: &Path) -> Result<Plugins, ConfigError> {
        self.check_as(path, root, CheckScope::Everything)
    }

    /// [`check`](Self::check) as one party runs it: a party that holds its share of the data
    /// in a folder of its own (`cargo xtask split`) opens no data file, and the server builds
    /// no device's model.
    pub fn check_as(
        &self,
        path: &Path,
        root: &Path,
        scope: CheckScope,
    ) -> Result<Plugins, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        self.check_values().map_err(|(k, r)| invalid(k, r))?;
        if scope == CheckScope::Everything {
            self.check_files(root).map_err(|(k, r)| invalid(k, r))?;
        }
        let plugins = self.find_plugins().map_err(|(k, r)| invalid(k, r))?;
        self.check_models(&plugins, scope != CheckScope::Server)
            .map_err(|(k, r)| invalid(k, r))?;
        self.check_tokenizers(root)
            .map_err(|(k, r)| invalid(k, r))?;
        self.check_fedavg_shapes().map_err(|(k, r)| invalid(k, r))?;
        self.check_emulator(&plugins)
            .map_err(|(k, r)| invalid(k, r))?;
        Ok(plugins)
    }

    /// Values in range and what the method needs; `Err((key, reason))`.
    fn check_values(&self) -> Result<(), (String, String)> {
        if !self.pretrain.llm && self.llm.checkpoint.is_none() {
            return Err((
                "pretrain.llm".into(),
                "false leaves the LLM at random weights: it needs llm.checkpoint (a Hugging Face \
                 folder or a GGUF file)"
                    .into(),
            ));
        }
        if self.devices.is_empty() {
            return Err(("devices".into(), "at least one device".into()));
        }
        let method = Method::named(self.method.as_str()).ok_or_else(|| {
            (
                "method".to_string(),
                format!(
                    "unknown method `{}`, expected one of {}",
                    self.method.as_str(),
                    Method::names()
                ),
            )
        })?;
        method.implementation().check(self)?;
        if self.rounds == 0 {
            return Err(("rounds".into(), "expected at least 1".into()));
        }
        self.check_training()?;
        if !(self.train.device_fraction > 0.0 && self.train.device_fraction <= 1.0) {
            return Err((
                "train.device_fraction".into(),
                format!(
                    "expected a share in (0, 1], got {}",
                    self.train.device_fraction
                ),
            ));
        }
        let sharpness = self.train.gate_sharpness;
        if !(sharpness.is_finite() && sharpness > 0.0) {
            return Err((
                "train.gate_sharpness".into(),
                format!("expected a positive number, got {sharpness}"),
            ));
        }
        if self.train.transfer_select == TransferSelect::Similar
            && self.train.transfer != TransferSet::Public
        {
            return Err((
                "train.transfer_select".into(),
                format!(
                    "\"similar\" chooses public questions; it needs train.transfer = \"public\", got \"{}\"",
                    self.train.transfer.name()
                ),
            ));
        }
        self.check_uploads(&method)?;
        if self.data.partition != Partition::OneDomain {
            return Err((
                "data.partition".into(),
                "the runner maps one device to one domain; use \"one-domain\"".into(),
            ));
        }
        self.data
            .validate()
            .map_err(|e| ("data".to_string(), e.to_string()))
    }

    /// The training keys of `[pretrain]`, `[distill]` and `[train]`: every optimiser table, the
    /// passes and the sample sizes. Checked here because a bad value otherwise surfaces only
    /// at its first training step, possibly after pre-training and distillation.
    fn check_training(&self) -> Result<(), (String, String)> {
        let t = &self.train;
        for (table, settings) in [
            ("pretrain.train", &self.pretrain.train),
            ("distill.train", &self.distill.train),
            ("train.slm", &t.slm),
            ("train.dpm", &t.dpm),
            ("train.dst", &t.dst),
            ("train.llm", &t.llm),
        ] {
            check_train_settings(settings)
                .map_err(|(field, reason)| (format!("{table}.{field}"), reason))?;
        }
        // At 0 none of these stops a run; each quietly changes it: a phase skipped (the
        // ablations that leave one out are methods of their own), the server learning on no
        // public example, or the value read as 1 (pre-training's counts, a mined alignment's k).
        for (key, value, what) in [
            (
                "pretrain.max_epochs",
                self.pretrain.max_epochs,
                "passes over the public corpus; pretrain.llm = false skips pre-training",
            ),
            (
                "pretrain.patience",
                self.pretrain.patience,
                "epochs without a better validation loss before pre-training stops",
            ),
            (
                "train.local_epochs",
                t.local_epochs,
                "passes over the local data per round",
            ),
            (
                "train.saml_epochs",
                t.saml_epochs,
                "passes of the device's mutual learning per round",
            ),
            (
                "train.server_epochs",
                t.server_epochs,
                "passes of the server's mutual learning per round",
            ),
            (
                "train.server_public_sample",
                t.server_public_sample,
                "public examples the server learns on per round",
            ),
            (
                "train.top_k",
                t.top_k,
                "token distributions kept per answer position",
            ),
        ] {
            if value == 0 {
                return Err((key.into(), format!("expected at least 1 ({what}), got 0")));
            }
        }
        if t.transfer != TransferSet::Local && t.transfer_size == 0 {
            return Err((
                "train.transfer_size".into(),
                format!(
                    "transfer = \"{}\" adds this many examples per device and round; expected \
                     at least 1, got 0",
                    t.transfer.name()
                ),
            ));
        }
        Ok(())
    }

    /// `[privacy]`, `[attack]`, `[deploy]` and the aggregation's parameters.
    fn check_uploads(&self, method: &Method) -> Result<(), (String, String)> {
        let t = &self.train;
        let method = method.implementation();
        let rule = method.aggregation(t);
        let bad = |key: &str, reason: String| Err((key.to_string(), reason));
        if !(t.trim.is_finite() && (0.0..0.5).contains(&t.trim)) {
            return bad(
                "train.trim",
                format!(
                    "expected a share in [0, 0.5) trimmed at each end, got {}",
                    t.trim
                ),
            );
        }
        if !(t.screen_ratio == 0.0 || t.screen_ratio.is_finite() && t.screen_ratio >= 1.0) {
            return bad(
                "train.screen_ratio",
                format!(
                    "expected 0 (no screen) or a ratio of at least 1, got {}",
                    t.screen_ratio
                ),
            );
        }
        let n = self.devices.len();
        let taking_part = self.devices_per_round();
        if method.uses_dpm() && rule == Aggregation::Krum && taking_part <= 2 * t.byzantine + 2 {
            return bad(
                "train.byzantine",
                format!(
                    "Krum tolerates byzantine = {} misbehaving devices only with more than {} \
                     uploads a round, but {taking_part} devices take part",
                    t.byzantine,
                    2 * t.byzantine + 2
                ),
            );
        }
        if let Some(d) = &self.deploy {
            check_deploy(d, n)?;
        }
        if let Some(p) = &self.privacy {
            if !method.uses_dpm() {
                return bad(
                    "privacy",
                    format!(
                        "method {} uploads no DPM parameters to protect",
                        self.method.as_str()
                    ),
                );
            }
            if !(p.clip.is_finite() && p.clip > 0.0) {
                return bad(
                    "privacy.clip",
                    format!("expected a positive L2 norm, got {}", p.clip),
                );
            }
            if !(p.noise_multiplier.is_finite() && p.noise_multiplier >= 0.0) {
                return bad(
                    "privacy.noise_multiplier",
                    format!(
                        "expected a number of at least 0, got {}",
                        p.noise_multiplier
                    ),
                );
            }
            if !(p.delta > 0.0 && p.delta < 1.0) {
                return bad(
                    "privacy.delta",
                    format!("expected a probability in (0, 1), got {}", p.delta),
                );
            }
            if p.mode == PrivacyMode::Central && rule != Aggregation::Fedavg {
                return bad(
                    "privacy.mode",
                    format!(
                        "\"central\" adds its noise to the FedAvg sum, but the aggregation is \
                         \"{}\"; use mode = \"local\" with it",
                        rule.name()
                    ),
                );
            }
        }
        if let Some(a) = &self.attack {
            if !method.uses_dpm() {
                return bad(
                    "attack",
                    format!(
                        "method {} uploads no DPM parameters to attack",
                        self.method.as_str()
                    ),
                );
            }
            if a.device >= n {
                return bad(
                    "attack.device",
                    format!("expected a device index below {n}, got {}", a.device),
                );
            }
            if !(a.factor.is_finite() && a.factor > 0.0) {
                return bad(
                    "attack.factor",
                    format!("expected a positive number, got {}", a.factor),
                );
            }
        }
        Ok(())
    }

    /// Every device's domain file and the public corpus exist under `root`.
    fn check_files(&self, root: &Path) -> Result<(), (String, String)> {
        for (i, d) in self.devices.iter().enumerate() {
            let file = self.data.domain_path(root, &d.domain);
            if !file.is_file() {
                return Err((
                    format!("devices[{i}].domain"),
                    format!(
                        "device {i}'s domain {:?} has no data file {}",
                        d.domain,
                        file.display()
                    ),
                ));
            }
        }
        if let Some(field) = &self.data.field {
            // The field benchmark has no public file: every domain and general file it names.
            for name in field.domains.keys().chain(&field.general) {
                let file = self.data.domain_path(root, name);
                if !file.is_file() {
                    return Err((
                        "data.field".into(),
                        format!("domain {name:?} has no data file {}", file.display()),
                    ));
                }
            }
            return Ok(());
        }
        let public = self.data.public_path(root);
        if !public.is_file() {
            return Err((
                "data.public_file".into(),
                format!("no public corpus file {}", public.display()),
            ));
        }
        // Every record is read once here (a few megabytes), so a malformed line is reported
        // before any run folder exists.
        let read = |key: String, path: &Path| {
            let stamp = std::fs::metadata(path)
                .map(|m| format!("{}:{:?}", m.len(), m.modified().ok()))
                .unwrap_or_default();
            let id = format!("data\0{}\0{stamp}", path.display());
            if already_valid(&id) {
                return Ok(());
            }
            cotune_data::load_jsonl(path).map_err(|e| (key, e.to_string()))?;
            remember_valid(id);
            Ok(())
        };
        for (i, d) in self.devices.iter().enumerate() {
            read(
                format!("devices[{i}].domain"),
                &self.data.domain_path(root, &d.domain),
            )?;
        }
        read("data.public_file".to_string(), &public)
    }

    /// Opens every model's plugin.
    fn find_plugins(&self) -> Result<Plugins, (String, String)> {
        let llm = find_plugin("llm.plugin".into(), &self.llm)?;
        let mut dpms = Vec::new();
        let mut slms = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            slms.push(find_plugin(format!("devices[{i}].slm.plugin"), &d.slm)?);
            let key = if d.dpm.is_some() {
                format!("devices[{i}].dpm.plugin")
            } else {
                "dpm.plugin".into()
            };
            dpms.push(find_plugin(key, &self.dpm_of(i).model())?);
        }
        Ok(Plugins { llm, dpms, slms })
    }

    /// Every model (the LLM, each DPM with its adapters, each SLM) is built once, bare, so its
    /// plugin validates its config keys and values before any data is split or model trained;
    /// each must also hold a prompt and its answer in its context.
    fn check_models(&self, plugins: &Plugins, slms: bool) -> Result<(), (String, String)> {
        let (p, a) = (self.data.max_prompt_tokens, self.data.max_answer_tokens);
        let check = |key: String, plugin: &Plugin, entry: &ModelEntry, text: String| {
            let arch = architecture_of(entry, plugin);
            // A model from a checkpoint folder is checked every time (the folder may change);
            // a fresh one once per process for its plugin, config and token budgets.
            let id = format!(
                "model\0{}\0{arch}\0{text}\0{p}\0{a}",
                plugin.path().display()
            );
            let cacheable = entry.checkpoint.is_none();
            if cacheable && already_valid(&id) {
                if let Some(spec) = remembered_spec(&id) {
                    remember_spec(model_key(&key), spec);
                }
                return Ok(());
            }
            let model = ModelRecipe {
                checkpoint: entry.checkpoint.as_deref(),
                ..recipe(plugin, &arch, &text, 0)
            }
            .build()
            .map_err(|err| (key.clone(), err.to_string()))?;
            let spec = model.spec();
            let need = match spec.structure {
                cotune_host::Structure::DecoderOnly => p + a,
                cotune_host::Structure::EncoderDecoder => p.max(a),
            };
            if (spec.context_len as usize) < need {
                return Err((
                    key,
                    format!(
                        "{} has a context of {} tokens, but data.max_prompt_tokens + \
                         data.max_answer_tokens need {need}",
                        model.label(),
                        spec.context_len
                    ),
                ));
            }
            let described = (model.label().to_string(), spec.vocab_size);
            remember_spec(model_key(&key), described.clone());
            if cacheable {
                remember_spec(id.clone(), described);
                remember_valid(id);
            }
            Ok(())
        };
        check(
            "llm.config".into(),
            &plugins.llm,
            &self.llm,
            self.llm.config_text(),
        )?;
        for (i, d) in self.devices.iter().enumerate() {
            let dpm = self.dpm_of(i);
            let key = if d.dpm.is_some() {
                format!("devices[{i}].dpm.config")
            } else {
                "dpm.config".into()
            };
            check(
                key,
                &plugins.dpms[i],
                &dpm.model(),
                dpm.adapted_config_text(),
            )?;
            if slms {
                check(
                    format!("devices[{i}].slm.config"),
                    &plugins.slms[i],
                    &d.slm,
                    d.slm.config_text(),
                )?;
            }
        }
        Ok(())
    }

    /// Every model's tokenizer: its file read, its size within the model's embedding, and
    /// under `alignment = "shared"` one tokenizer for every pair of models that learn from
    /// each other's distributions. Every DPM has one tokenizer (the server averages or holds
    /// them in one vocabulary), and a DPM cut from the LLM's layers has the LLM's.
    fn check_tokenizers(&self, root: &Path) -> Result<(), (String, String)> {
        use crate::tokens::Source;
        let shared = match &self.data.tokenizer {
            Some(path) => {
                let t = cotune_data::Tokenizer::load(&root.join(path))
                    .map_err(|e| ("data.tokenizer".to_string(), e.to_string()))?;
                (Some(t.fingerprint().to_string()), t.vocab_size())
            }
            None => (None, self.data.vocab_size),
        };
        // (key of the model, its tokenizer's identity, size, description)
        let describe =
            |key: &str, entry: &ModelEntry| -> Result<(String, usize, String), (String, String)> {
                let source = Source::of(entry, &self.data);
                let tkey = format!("{key}.tokenizer");
                Ok(match &source {
                    Source::Shared => ("shared".into(), shared.1, source.describe()),
                    Source::Trained(n) => (format!("trained {n}"), *n, source.describe()),
                    file => {
                        let t = file
                            .load(key)
                            .map_err(|e| (tkey, format!("{e:#}")))?
                            .expect("a file source loads a tokenizer");
                        let id = t.fingerprint().to_string();
                        let id = match &shared.0 {
                            Some(s) if *s == id => "shared".to_string(),
                            _ => id,
                        };
                        (id, t.vocab_size(), source.describe())
                    }
                })
            };
        let mut models = vec![("llm".to_string(), self.llm.clone())];
        for (i, d) in self.devices.iter().enumerate() {
            let key = match d.dpm {
                Some(_) => format!("devices[{i}].dpm"),
                None => "dpm".into(),
            };
            models.push((key, self.dpm_of(i).model()));
            models.push((format!("devices[{i}].slm"), d.slm.clone()));
        }
        let mut seen = std::collections::HashMap::new();
        for (key, entry) in &models {
            let (id, size, what) = describe(key, entry)?;
            if let Some((label, vocab)) = remembered_spec(&model_key(&format!("{key}.config"))) {
                if (vocab as usize) < size {
                    return Err((
                        format!("{key}.tokenizer"),
                        format!(
                            "{key} ({label}) has an embedding of {vocab} tokens but its tokenizer \
                             ({what}) has {size}; raise its vocab_size or give it a smaller \
                             tokenizer"
                        ),
                    ));
                }
            }
            seen.insert(key.clone(), (id, size, what));
        }
        let method = Method::named(self.method.as_str()).map(|m| m.implementation());
        let uses_dpm = method.is_some_and(|m| m.uses_dpm());
        let mut pairs: Vec<(String, String)> = Vec::new();
        if uses_dpm {
            for i in 0..self.devices.len() {
                let dpm = match self.devices[i].dpm {
                    Some(_) => format!("devices[{i}].dpm"),
                    None => "dpm".into(),
                };
                pairs.push(("llm".into(), dpm.clone()));
                pairs.push((dpm, format!("devices[{i}].slm")));
            }
            let first = &seen[&models[1].0];
            for (key, _) in models.iter().skip(1).step_by(2) {
                let other = &seen[key];
                if other.0 != first.0 {
                    return Err((
                        format!("{key}.tokenizer"),
                        format!(
                            "every device's DPM needs one tokenizer (the server averages them or \
                             holds them side by side): {key} has {} tokens ({}), {} has {} ({})",
                            other.1, other.2, models[1].0, first.1, first.2
                        ),
                    ));
                }
            }
            if self.dpm_of(0).init == DpmInit::LlmLayers && seen["llm"].0 != first.0 {
                return Err((
                    "dpm.init".into(),
                    format!(
                        "\"llm-layers\" copies the LLM's embeddings, so the DPM needs the LLM's \
                         tokenizer: llm has {} tokens ({}), dpm {} ({})",
                        seen["llm"].1, seen["llm"].2, first.1, first.2
                    ),
                ));
            }
        } else if self.method.as_str() == "fedmkt" {
            for i in 0..self.devices.len() {
                pairs.push(("llm".into(), format!("devices[{i}].slm")));
            }
        }
        if self.train.alignment == cotune_distill::Alignment::Shared {
            for (a, b) in &pairs {
                let (x, y) = (&seen[a], &seen[b]);
                if x.0 != y.0 {
                    return Err((
                        "train.alignment".into(),
                        format!(
                            "\"shared\" needs one tokenizer for {a} and {b}, which learn from \
                             each other: {a} has {} tokens ({}), {b} has {} ({}); set \
                             alignment = \"mined\" or \"uld\", or give both one tokenizer",
                            x.1, x.2, y.1, y.2
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A DPM cut from the LLM's layers must fit them: both models are built bare and the cut
    /// is tried, so a mismatch is reported before any training.
    fn check_emulator(&self, plugins: &Plugins) -> Result<(), (String, String)> {
        let uses_dpm =
            Method::named(self.method.as_str()).is_some_and(|m| m.implementation().uses_dpm());
        let entry = self.dpm_of(0);
        if !uses_dpm || entry.init != DpmInit::LlmLayers {
            return Ok(());
        }
        let key = || "dpm.init".to_string();
        let build = |plugin: &Plugin, e: &ModelEntry| -> Result<_, (String, String)> {
            let arch = architecture_of(e, plugin);
            let text = e.config_text();
            ModelRecipe {
                checkpoint: e.checkpoint.as_deref(),
                ..recipe(plugin, &arch, &text, 0)
            }
            .build()
            .map_err(|err| (key(), format!("{err:#}")))
        };
        let llm = build(&plugins.llm, &self.llm)?;
        let dpm = build(&plugins.dpms[0], &entry.model())?;
        let export = |m: &cotune_host::Model| {
            m.export_params(cotune_host::ParamSelection::All)
                .map_err(|err| (key(), format!("{err:#}")))
        };
        crate::emulator::cut_params(&export(&llm)?, &export(&dpm)?)
            .map(|_| ())
            .map_err(|err| (key(), format!("\"llm-layers\": {err:#}")))
    }

    /// FedAvg averages DPM parameters, so every device needs the same DPM.
    fn check_fedavg_shapes(&self) -> Result<(), (String, String)> {
        let Some(method) = Method::named(self.method.as_str()) else {
            return Ok(());
        };
        let method = method.implementation();
        if !method.uses_dpm() || !method.aggregation(&self.train).one_slot() {
            return Ok(());
        }
        for i in 1..self.devices.len() {
            let (a, b) = (self.dpm_of(0).model(), self.dpm_of(i).model());
            if a != b {
                return Err((
                    format!("devices[{i}].dpm"),
                    format!(
                        "FedAvg averages DPM parameters, so every device needs the same DPM; \
                         device {i} has {}, device 0 has {}",
                        describe_model(&b),
                        describe_model(&a)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The plugin of `entry` (named `key` in errors): by name or path, or the one that loads its
/// `checkpoint` folder; with its `architecture` checked.
fn find_plugin(key: String, entry: &ModelEntry) -> Result<Plugin, (String, String)> {
    let section = key.trim_end_matches(".plugin").to_string();
    let plugin = match (&entry.checkpoint, entry.plugin.is_empty()) {
        (None, true) => {
            return Err((
                key,
                "expected a plugin name or library path, or a `checkpoint` folder".into(),
            ))
        }
        (None, false) => Plugin::open(&entry.plugin).map_err(|e| (key.clone(), e.to_string()))?,
        (Some(folder), _) => {
            let key = format!("{section}.checkpoint");
            let cp =
                HfCheckpoint::read(folder.as_path()).map_err(|e| (key.clone(), e.to_string()))?;
            if entry.plugin.is_empty() {
                cp.find_plugin()
                    .map_err(|e| (key.clone(), e.to_string()))?
                    .0
            } else {
                let plugin = Plugin::open(&entry.plugin)
                    .map_err(|e| (format!("{section}.plugin"), e.to_string()))?;
                if checkpoint_architecture(&plugin, &cp).is_none() {
                    return Err((
                        key,
                        format!(
                            "plugin {} loads no architecture of {} ({})",
                            entry.plugin,
                            folder.display(),
                            cp.architectures.join(", ")
                        ),
                    ));
                }
                plugin
            }
        }
    };
    if let Some(arch) = &entry.architecture {
        if !plugin.architectures().contains(arch) {
            return Err((
                format!("{key}.architecture"),
                format!(
                    "plugin {} offers no architecture `{arch}` (it offers {})",
                    entry.plugin,
                    plugin.architectures().join(", ")
                ),
            ));
        }
    }
    Ok(plugin)
}

/// A model entry in words: `plugin/architecture { key = value, ... }`.
fn describe_model(entry: &ModelEntry) -> String {
    let arch = entry.architecture.as_deref().unwrap_or("(first)");
    let keys: Vec<String> = entry
        .config
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{}/{arch} {{ {} }}", entry.plugin, keys.join(", "))
}

/// What this process already found valid: data files (by path, size and time) and fresh models
/// (by plugin, architecture, config and token budgets). A comparison checks the same models
/// and files for every variant and seed; each is read or built once.
static VALID: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::OnceLock::new();

fn already_valid(id: &str) -> bool {
    VALID
        .get_or_init(Default::default)
        .lock()
        .is_ok_and(|set| set.contains(id))
}

/// What `check_models` found of each model: its label and embedding size, by the model's key
/// (`devices[1].slm`) and, for fresh models, by their validity id.
static SPECS: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<String, (String, u32)>>,
> = std::sync::OnceLock::new();

/// The key a model's spec is remembered under: its config key without `.config`, per thread
/// (checks of different configs may run in parallel in tests).
fn model_key(config_key: &str) -> String {
    format!(
        "{:?}\0{}",
        std::thread::current().id(),
        config_key.trim_end_matches(".config")
    )
}

fn remember_spec(id: String, spec: (String, u32)) {
    if let Ok(mut map) = SPECS.get_or_init(Default::default).lock() {
        map.insert(id, spec);
    }
}

fn remembered_spec(id: &str) -> Option<(String, u32)> {
    SPECS
        .get_or_init(Default::default)
        .lock()
        .ok()
        .and_then(|map| map.get(id).cloned())
}

fn remember_valid(id: String) {
    if let Ok(mut set) = VALID.get_or_init(Default::default).lock() {
        set.insert(id);
    }
}

/// One optimiser table; `Err((field, reason))`. The ranges are those the host enforces at
/// every training step (`cotune_host::Model::train_step`), where a bad value would stop the run
/// midway, plus a learning rate above 0 (at 0 nothing learns) and a cosine decay that has a
/// length (with `total_steps` at or below `warmup_steps` the rate drops to its floor as soon as
/// warm-up ends).
fn check_train_settings(s: &TrainSettings) -> Result<(), (&'static str, String)> {
    let above_0 = |v: f32| v.is_finite() && v > 0.0;
    let at_least_0 = |v: f32| v.is_finite() && v >= 0.0;
    for (field, value, ok, expected) in [
        (
            "learning_rate",
            s.learning_rate,
            above_0(s.learning_rate),
            "a finite rate above 0",
        ),
        (
            "weight_decay",
            s.weight_decay,
            at_least_0(s.weight_decay),
            "a finite decay of at least 0",
        ),
        (
            "grad_clip_norm",
            s.grad_clip_norm,
            at_least_0(s.grad_clip_norm),
            "a finite L2 norm of at least 0 (0: no clipping)",
        ),
        (
            "temperature",
            s.temperature,
            above_0(s.temperature),
            "a finite temperature above 0",
        ),
        (
            "kl_weight",
            s.kl_weight,
            (0.0..=1.0).contains(&s.kl_weight),
            "a weight in [0, 1]",
        ),
    ] {
        if !ok {
            return Err((field, format!("expected {expected}, got {value}")));
        }
    }
    if s.batch_size == 0 {
        return Err((
            "batch_size",
            "expected at least 1 example per step, got 0".into(),
        ));
    }
    if s.total_steps != 0 && s.total_steps <= s.warmup_steps {
        return Err((
            "total_steps",
            format!(
                "expected 0 (a constant rate after warm-up) or more than warmup_steps = {} (the \
                 cosine decays from the end of warm-up to total_steps), got {}",
                s.warmup_steps, s.total_steps
            ),
        ));
    }
    Ok(())
}

/// `[deploy]`'s values: positive finite times, a minimum between 1 and the devices.
fn check_deploy(d: &crate::config::DeployConfig, devices: usize) -> Result<(), (String, String)> {
    let bad = |key: &str, reason: String| Err((format!("deploy.{key}"), reason));
    for (key, v) in [
        ("deadline_seconds", d.deadline_seconds),
        ("setup_deadline_seconds", d.setup_deadline_seconds),
        ("max_upload_mib", d.max_upload_mib),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return bad(key, format!("expected a positive number, got {v}"));
        }
    }
    if !(d.heartbeat_seconds.is_finite() && d.heartbeat_seconds >= 0.01) {
        return bad(
            "heartbeat_seconds",
            format!(
                "expected at least 0.01 seconds, got {}",
                d.heartbeat_seconds
            ),
        );
    }
    if d.missed_heartbeats == 0 {
        return bad(
            "missed_heartbeats",
            "expected at least 1, got 0".to_string(),
        );
    }
    if d.min_devices == 0 || d.min_devices > devices {
        return bad(
            "min_devices",
            format!(
                "expected between 1 and the {devices} devices, got {}",
                d.min_devices
            ),
        );
    }
    if let Some(norm) = d.max_update_norm {
        if !(norm.is_finite() && norm > 0.0) {
            return bad(
                "max_update_norm",
                format!("expected a positive L2 norm, got {norm}"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
