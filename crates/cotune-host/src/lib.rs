//! Loading cotune model plugins and talking to them safely.
//!
//! [`Plugin::load`] probes the library's raw ABI version symbol before anything else, so a plugin
//! built against another interface is refused with both versions and the file named, before
//! `abi_stable` looks at any layout. [`Model`] wraps a plugin's model object and validates what
//! goes in (non-empty batches, token ids below the vocabulary size, lengths within the context,
//! finite soft targets) and what comes out (shapes, finite values), so a broken plugin is caught
//! at the boundary with a message that names it.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::lib_header_from_path;
use abi_stable::std_types::{RNone, ROption, RResult, RSome, RStr, RString, RVec};
use cotune_abi::{AbiVersionFn, ModelBox, PluginModuleRef, ABI_VERSION_SYMBOL};
pub use cotune_abi::{
    AnswerExample, DeviceChoice, DeviceKind, ErrorKind, GenerateOptions, Logits, ModelSpec,
    NamedTensor, ParamSelection, PluginError, StepReport, Structure, TrainOptions, ABI_VERSION,
};
pub use cotune_data::Example;

/// Everything that can go wrong between the host and a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No plugin library of that name was found in any searched folder.
    #[error("plugin `{name}` not found; looked for {file} in: {searched}")]
    PluginNotFound {
        /// The plugin name asked for.
        name: String,
        /// The library file name looked for.
        file: String,
        /// The folders searched, comma-separated.
        searched: String,
    },
    /// The dynamic library could not be opened or lacks the ABI probe symbol.
    #[error("cannot load plugin {path}: {reason}")]
    Load {
        /// The library file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The plugin was built against another ABI version.
    #[error("plugin {path} has ABI version {plugin}, but this host has ABI version {host}; rebuild the plugin against cotune-abi {host}")]
    AbiMismatch {
        /// The library file.
        path: PathBuf,
        /// The version the plugin reports.
        plugin: u32,
        /// The version of this host.
        host: u32,
    },
    /// The plugin does not offer the requested architecture.
    #[error("plugin `{plugin}` offers no architecture `{architecture}` (it offers: {offered})")]
    UnknownArchitecture {
        /// The plugin's name.
        plugin: String,
        /// The architecture asked for.
        architecture: String,
        /// The architectures it offers, comma-separated.
        offered: String,
    },
    /// The plugin returned an error.
    #[error("{model}: {call} failed: {error}")]
    Plugin {
        /// Which model (plugin/architecture).
        model: String,
        /// Which verb.
        call: &'static str,
        /// The plugin's error.
        error: PluginError,
    },
    /// The caller passed something the model cannot take.
    #[error("{model}: invalid input to {call}: {reason}")]
    InvalidInput {
        /// Which model.
        model: String,
        /// Which verb.
        call: &'static str,
        /// What was wrong, with the value.
        reason: String,
    },
    /// A Hugging Face model folder could not be used: a missing or malformed `config.json`, an
    /// architecture no plugin loads, a tokenizer that cannot be copied.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file or folder at fault.
        path: PathBuf,
        /// What was wrong, with the value.
        reason: String,
    },
    /// The plugin returned something malformed (wrong shape, NaN, ...).
    #[error("{model}: {call} returned invalid output: {reason}")]
    InvalidOutput {
        /// Which model.
        model: String,
        /// Which verb.
        call: &'static str,
        /// What was wrong, with the value.
        reason: String,
    },
}

impl HostError {
    /// The plugin's error kind, when this error came from the plugin.
    pub fn plugin_kind(&self) -> Option<ErrorKind> {
        match self {
            HostError::Plugin { error, .. } => Some(error.kind),
            _ => None,
        }
    }
}

/// The result type of host calls.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// The platform's file name of plugin `name`'s library, e.g. `libcotune_gpt2.so`.
pub fn plugin_file_name(name: &str) -> String {
    let stem = format!("cotune_{}", name.replace('-', "_"));
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        stem,
        std::env::consts::DLL_SUFFIX
    )
}

/// The folders searched for plugins by name, in order: `$COTUNE_PLUGIN_DIR` (colon-separated),
/// then the folder of the running executable and its parent (covers `target/<profile>` and
/// `target/<profile>/deps`), then `$CARGO_TARGET_DIR/<profile>` and `target/<profile>`.
pub fn plugin_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(var) = std::env::var_os("COTUNE_PLUGIN_DIR") {
        dirs.extend(std::env::split_paths(&var));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(parent) = dir.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    for profile in ["release", "debug"] {
        dirs.push(target.join(profile));
    }
    dirs
}

/// A loaded plugin library.
#[derive(Clone)]
pub struct Plugin {
    path: PathBuf,
    name: String,
    version: String,
    architectures: Vec<String>,
    module: PluginModuleRef,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("architectures", &self.architectures)
            .finish()
    }
}

/// Reads the raw ABI version symbol of the library at `path` without touching its root module.
pub fn probe_abi_version(path: &Path) -> Result<u32> {
    let load_err = |reason: String| HostError::Load {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(load_err("no such file".into()));
    }
    // SAFETY: loading a library runs its initialisers; plugins are trusted code the user chose
    // to load. The symbol's type is fixed by the ABI contract and checked by name only.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| load_err(e.to_string()))?;
        let probe: libloading::Symbol<AbiVersionFn> =
            lib.get(ABI_VERSION_SYMBOL.as_bytes()).map_err(|e| {
                load_err(format!(
                    "it does not export `{ABI_VERSION_SYMBOL}`, so it is not a cotune plugin ({e})"
                ))
            })?;
        let version = probe();
        // The library stays loaded: abi_stable opens it again right after, and unloading
        // libraries that spawned threads (burn's thread pools) is not safe.
        std::mem::forget(lib);
        Ok(version)
    }
}

impl Plugin {
    /// Loads the plugin library at `path`, checking its ABI version first.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin> {
        let path = path.as_ref();
        let version = probe_abi_version(path)?;
        if version != ABI_VERSION {
            return Err(HostError::AbiMismatch {
                path: path.to_path_buf(),
                plugin: version,
                host: ABI_VERSION,
            });
        }
        let load_err = |reason: String| HostError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let header = lib_header_from_path(path).map_err(|e| load_err(e.to_string()))?;
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| load_err(e.to_string()))?;
        // The root module's own version field must agree with the probe.
        let reported = (module.abi_version())();
        if reported != ABI_VERSION {
            return Err(HostError::AbiMismatch {
                path: path.to_path_buf(),
                plugin: reported,
                host: ABI_VERSION,
            });
        }
        Ok(Plugin {
            path: path.to_path_buf(),
            name: (module.name())().into_string(),
            version: (module.version())().into_string(),
            architectures: (module.architectures())()
                .into_iter()
                .map(RString::into_string)
                .collect(),
            module,
        })
    }

    /// Loads a plugin by name (`gpt2` finds `libcotune_gpt2.so`) from [`plugin_search_dirs`].
    pub fn find(name: &str) -> Result<Plugin> {
        let file = plugin_file_name(name);
        let dirs = plugin_search_dirs();
        match dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
            Some(path) => Plugin::load(path),
            None => Err(HostError::PluginNotFound {
                name: name.to_string(),
                file,
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Loads `spec` as a path when it names a file, else as a plugin name.
    pub fn open(spec: &str) -> Result<Plugin> {
        let as_path = Path::new(spec);
        if as_path.is_file() || spec.contains(std::path::MAIN_SEPARATOR) {
            Plugin::load(as_path)
        } else {
            Plugin::find(spec)
        }
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The architectures it offers.
    pub fn architectures(&self) -> &[String] {
        &self.architectures
    }

    /// The plugin's small example configuration of `architecture` (TOML), if it offers one.
    pub fn example_config(&self, architecture: &str) -> Option<String> {
        let text = (self.module.example_config())(RStr::from_str(architecture)).into_string();
        (!text.trim().is_empty()).then_some(text)
    }

    /// Builds a model of `architecture` from TOML configuration text.
    pub fn new_model(
        &self,
        architecture: &str,
        config_toml: &str,
        seed: u64,
        device: DeviceChoice,
    ) -> Result<Model> {
        if !self.architectures.iter().any(|a| a == architecture) {
            return Err(HostError::UnknownArchitecture {
                plugin: self.name.clone(),
                architecture: architecture.to_string(),
                offered: self.architectures.join(", "),
            });
        }
        let label = format!("{}/{}", self.name, architecture);
        let inner = match (self.module.new_model())(
            RStr::from_str(architecture),
            RStr::from_str(config_toml),
            seed,
            device,
        ) {
            RResult::ROk(m) => m,
            RResult::RErr(error) => {
                return Err(HostError::Plugin {
                    model: label,
                    call: "new_model",
                    error,
                })
            }
        };
        Model::checked(inner, label)
    }

    /// The Hugging Face class (e.g. `GPT2LMHeadModel`) whose checkpoints `architecture` loads,
    /// if it has a Hugging Face mapping.
    pub fn hf_architecture(&self, architecture: &str) -> Option<String> {
        let text = (self.module.hf_architecture())(RStr::from_str(architecture)).into_string();
        (!text.is_empty()).then_some(text)
    }

    /// Builds a model of `architecture` from the Hugging Face folder `folder` (`config.json`,
    /// `model.safetensors`); `extra_toml` adds or overrides keys of the plugin's own
    /// configuration (e.g. a `[lora]` table) and may be empty. [`open_checkpoint`] finds the
    /// plugin and architecture by itself.
    pub fn new_model_from_hf(
        &self,
        architecture: &str,
        folder: impl AsRef<Path>,
        extra_toml: &str,
        seed: u64,
        device: DeviceChoice,
    ) -> Result<Model> {
        let folder = folder.as_ref();
        if !self.architectures.iter().any(|a| a == architecture) {
            return Err(HostError::UnknownArchitecture {
                plugin: self.name.clone(),
                architecture: architecture.to_string(),
                offered: self.architectures.join(", "),
            });
        }
        let label = format!("{}/{}", self.name, architecture);
        let folder_text = folder.to_string_lossy().into_owned();
        let inner = (self.module.new_model_from_hf())(
            RStr::from_str(architecture),
            RStr::from_str(&folder_text),
            RStr::from_str(extra_toml),
            seed,
            device,
        )
        .into_result()
        .map_err(|error| HostError::Plugin {
            model: label.clone(),
            call: "new_model_from_hf",
            error,
        })?;
        let mut model = Model::checked(inner, label)?;
        model.hf_source = Some(folder.to_path_buf());
        Ok(model)
    }

    /// Builds the plugin's first architecture.
    pub fn new_default_model(&self, config_toml: &str, seed: u64) -> Result<Model> {
        let arch = self.architectures.first().cloned().unwrap_or_default();
        self.new_model(&arch, config_toml, seed, DeviceChoice::FLEX)
    }
}

/// A model inside a plugin, with every call validated on both sides of the boundary.
pub struct Model {
    inner: ModelBox,
    spec: ModelSpec,
    label: String,
    /// The Hugging Face folder the model was built from, if any (its tokenizer goes along on
    /// export).
    hf_source: Option<PathBuf>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("label", &self.label)
            .field("spec", &self.spec)
            .finish()
    }
}

fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .copied()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
}

impl Model {
    /// Wraps a plugin's model object after checking its spec.
    fn checked(inner: ModelBox, label: String) -> Result<Model> {
        let spec = inner.spec();
        if spec.vocab_size == 0 || spec.context_len == 0 {
            return Err(HostError::InvalidOutput {
                model: label,
                call: "spec",
                reason: format!(
                    "vocab_size {} and context_len {} must both be positive",
                    spec.vocab_size, spec.context_len
                ),
            });
        }
        Ok(Model {
            inner,
            spec,
            label,
            hf_source: None,
        })
    }

    /// The Hugging Face folder this model was built from, if it was.
    pub fn hf_source(&self) -> Option<&Path> {
        self.hf_source.as_deref()
    }

    /// Writes the model as a Hugging Face folder that `transformers` loads: `config.json` and
    /// `model.safetensors` (adapters merged into their weights), plus the `tokenizer.json` of
    /// the folder the model was built from, when it has one.
    pub fn export_hf(&self, folder: impl AsRef<Path>) -> Result<()> {
        let folder = folder.as_ref();
        let text = folder.to_string_lossy().into_owned();
        self.plugin_result("export_hf", self.inner.export_hf(RStr::from_str(&text)))?;
        if let Some(source) = &self.hf_source {
            let tokenizer = source.join(hf::TOKENIZER_FILE);
            if tokenizer.is_file() {
                std::fs::copy(&tokenizer, folder.join(hf::TOKENIZER_FILE)).map_err(|e| {
                    HostError::Checkpoint {
                        path: tokenizer.clone(),
                        reason: format!("copying it to {}: {e}", folder.display()),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The model's metadata.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `plugin/architecture`, used in messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn invalid_input(&self, call: &'static str, reason: String) -> HostError {
        HostError::InvalidInput {
            model: self.label.clone(),
            call,
            reason,
        }
    }

    fn invalid_output(&self, call: &'static str, reason: String) -> HostError {
        HostError::InvalidOutput {
            model: self.label.clone(),
            call,
            reason,
        }
    }

    fn plugin_result<T>(&self, call: &'static str, r: RResult<T, PluginError>) -> Result<T> {
        r.into_result().map_err(|error| HostError::Plugin {
            model: self.label.clone(),
            call,
            error,
        })
    }

    fn check_ids(&self, call: &'static str, what: &str, index: usize, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(self.invalid_input(call, format!("{what} of example {index} is empty")));
        }
        if let Some((pos, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id >= self.spec.vocab_size)
        {
            return Err(self.invalid_input(
                call,
                format!(
                    "token id {id} at position {pos} of {what} of example {index} is out of range (vocab_size {})",
                    self.spec.vocab_size
                ),
            ));
        }
        Ok(())
    }

    fn check_batch(&self, call: &'static str, batch: &[Example]) -> Result<()> {
        if batch.is_empty() {
            return Err(self.invalid_input(call, "the batch is empty".into()));
        }
        let ctx = self.spec.context_len as usize;
        for (i, ex) in batch.iter().enumerate() {
            self.check_ids(call, "the prompt", i, &ex.prompt)?;
            self.check_ids(call, "the answer", i, &ex.answer)?;
            let too_long = match self.spec.structure {
                Structure::DecoderOnly => ex.prompt.len() + ex.answer.len() > ctx,
                Structure::EncoderDecoder => ex.prompt.len() > ctx || ex.answer.len() > ctx,
            };
            if too_long {
                return Err(self.invalid_input(
                    call,
                    format!(
                        "example {i} (prompt {} + answer {} tokens) exceeds the context length {ctx}",
                        ex.prompt.len(),
                        ex.answer.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn to_abi_batch(batch: &[Example]) -> RVec<AnswerExample> {
        batch
            .iter()
            .map(|e| AnswerExample {
                prompt: RVec::from(e.prompt.clone()),
                answer: RVec::from(e.answer.clone()),
            })
            .collect()
    }

    fn check_logits(&self, call: &'static str, batch: &[Example], logits: &Logits) -> Result<()> {
        let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
        let expected = [batch.len(), answer_len, self.spec.vocab_size as usize];
        let got = [
            logits.batch as usize,
            logits.answer_len as usize,
            logits.vocab as usize,
        ];
        if expected != got || logits.data.len() != got.iter().product::<usize>() {
            return Err(self.invalid_output(
                call,
                format!(
                    "logits shape {got:?} with {} values, expected {expected:?}",
                    logits.data.len()
                ),
            ));
        }
        for (b, ex) in batch.iter().enumerate() {
            for t in 0..ex.answer.len() {
                if let Some((v, value)) = first_non_finite(logits.row(b, t)) {
                    return Err(self.invalid_output(
                        call,
                        format!("logit {value} at example {b}, answer position {t}, token {v}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The next-token logits at every answer position, `[batch, answer_len, vocab]`.
    pub fn answer_logits(&self, batch: &[Example]) -> Result<Logits> {
        const CALL: &str = "answer_logits";
        self.check_batch(CALL, batch)?;
        let out = self.inner.answer_logits(&Self::to_abi_batch(batch));
        let logits = self.plugin_result(CALL, out)?;
        self.check_logits(CALL, batch, &logits)?;
        Ok(logits)
    }

    /// One optimiser step; `soft_targets` are teacher logits shaped like `answer_logits`.
    pub fn train_step(
        &mut self,
        batch: &[Example],
        soft_targets: Option<Logits>,
        options: &TrainOptions,
    ) -> Result<StepReport> {
        const CALL: &str = "train_step";
        self.check_batch(CALL, batch)?;
        self.check_options(CALL, options)?;
        if let Some(soft) = &soft_targets {
            let answer_len = batch.iter().map(|e| e.answer.len()).max().unwrap_or(0);
            let expected = [batch.len(), answer_len, self.spec.vocab_size as usize];
            let got = [
                soft.batch as usize,
                soft.answer_len as usize,
                soft.vocab as usize,
            ];
            if expected != got || soft.data.len() != got.iter().product::<usize>() {
                return Err(self.invalid_input(
                    CALL,
                    format!(
                        "soft targets shape {got:?} with {} values, expected {expected:?}",
                        soft.data.len()
                    ),
                ));
            }
            if let Some((i, value)) = first_non_finite(&soft.data) {
                return Err(self.invalid_input(
                    CALL,
                    format!("soft target value {value} at flat index {i} is not finite"),
                ));
            }
        }
        let soft: ROption<Logits> = match soft_targets {
            Some(s) => RSome(s),
            None => RNone,
        };
        let out = self
            .inner
            .train_step(&Self::to_abi_batch(batch), &soft, options);
        let report = self.plugin_result(CALL, out)?;
        for (what, v) in [
            ("loss", report.loss),
            ("cross_entropy", report.cross_entropy),
            ("kl", report.kl),
        ] {
            if !v.is_finite() {
                return Err(self.invalid_output(CALL, format!("{what} is {v}")));
            }
        }
        Ok(report)
    }

    fn check_options(&self, call: &'static str, o: &TrainOptions) -> Result<()> {
        let bad = if !(o.learning_rate.is_finite() && o.learning_rate >= 0.0) {
            Some(("learning_rate", o.learning_rate))
        } else if !(o.temperature.is_finite() && o.temperature > 0.0) {
            Some(("temperature", o.temperature))
        } else if !(0.0..=1.0).contains(&o.kl_weight) {
            Some(("kl_weight", o.kl_weight))
        } else if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            Some(("weight_decay", o.weight_decay))
        } else if !(o.grad_clip_norm.is_finite() && o.grad_clip_norm >= 0.0) {
            Some(("grad_clip_norm", o.grad_clip_norm))
        } else if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            Some(("min_lr_ratio", o.min_lr_ratio))
        } else {
            None
        };
        match bad {
            Some((key, value)) => {
                Err(self.invalid_input(call, format!("option {key} = {value} is out of range")))
            }
            None => Ok(()),
        }
    }

    /// Greedy continuations of `prompts` (without the prompt and the end-of-sequence id).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        const CALL: &str = "generate";
        if prompts.is_empty() {
            return Err(self.invalid_input(CALL, "no prompts".into()));
        }
        for (i, p) in prompts.iter().enumerate() {
            self.check_ids(CALL, "the prompt", i, p)?;
        }
        if options.eos_id >= self.spec.vocab_size {
            return Err(self.invalid_input(
                CALL,
                format!(
                    "eos_id {} is out of range (vocab_size {})",
                    options.eos_id, self.spec.vocab_size
                ),
            ));
        }
        let abi_prompts: RVec<RVec<u32>> = prompts.iter().map(|p| RVec::from(p.clone())).collect();
        let out = self.inner.generate(&abi_prompts, options);
        let out = self.plugin_result(CALL, out)?;
        if out.len() != prompts.len() {
            return Err(self.invalid_output(
                CALL,
                format!("{} outputs for {} prompts", out.len(), prompts.len()),
            ));
        }
        let mut result = Vec::with_capacity(out.len());
        for (i, seq) in out.into_iter().enumerate() {
            if seq.len() > options.max_new_tokens as usize {
                return Err(self.invalid_output(
                    CALL,
                    format!(
                        "output {i} has {} tokens, above max_new_tokens {}",
                        seq.len(),
                        options.max_new_tokens
                    ),
                ));
            }
            if let Some(&id) = seq.iter().find(|&&id| id >= self.spec.vocab_size) {
                return Err(self.invalid_output(
                    CALL,
                    format!("output {i} has token id {id} outside the vocabulary"),
                ));
            }
            result.push(seq.into_vec());
        }
        Ok(result)
    }

    /// The selected parameters by name.
    pub fn export_params(&self, selection: ParamSelection) -> Result<Vec<NamedTensor>> {
        const CALL: &str = "export_params";
        let params = self.plugin_result(CALL, self.inner.export_params(selection))?;
        for p in params.iter() {
            let n: u64 = p.shape.iter().product();
            if n as usize != p.data.len() {
                return Err(self.invalid_output(
                    CALL,
                    format!(
                        "tensor {} has shape {:?} but {} values",
                        p.name,
                        p.shape.as_slice(),
                        p.data.len()
                    ),
                ));
            }
            if let Some((i, v)) = first_non_finite(&p.data) {
                return Err(self.invalid_output(
                    CALL,
                    format!("tensor {} has value {v} at flat index {i}", p.name),
                ));
            }
        }
        Ok(params.into_vec())
    }

    /// Overwrites the named parameters (all or nothing).
    pub fn import_params(&mut self, params: &[NamedTensor]) -> Result<()> {
        const CALL: &str = "import_params";
        for p in params {
            let n: u64 = p.shape.iter().product();
            if n as usize != p.data.len() {
                return Err(self.invalid_input(
                    CALL,
                    format!(
                        "tensor {} has shape {:?} but {} values",
                        p.name,
                        p.shape.as_slice(),
                        p.data.len()
                    ),
                ));
            }
            if let Some((i, v)) = first_non_finite(&p.data) {
                return Err(self.invalid_input(
                    CALL,
                    format!("tensor {} has value {v} at flat index {i}", p.name),
                ));
            }
        }
        let params: RVec<NamedTensor> = params.iter().cloned().collect();
        let out = self.inner.import_params(&params);
        self.plugin_result(CALL, out)
    }

    /// The plugin's own calls without the host's validation, so the conformance suite can check
    /// that a plugin refuses bad input by itself (a stranger's host may not validate).
    pub fn unvalidated(&mut self) -> Unvalidated<'_> {
        Unvalidated { model: self }
    }

    /// Writes a checkpoint (parameters and optimiser state) to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.plugin_result("save", self.inner.save(RStr::from_str(&path)))
    }

    /// Reads a checkpoint written by [`Model::save`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref().to_string_lossy().into_owned();
        let out = self.inner.load(RStr::from_str(&path));
        self.plugin_result("load", out)
    }
}

pub mod hf;
pub use hf::{open_checkpoint, HfCheckpoint};

/// Direct plugin calls that skip the host's input checks (see [`Model::unvalidated`]).
pub struct Unvalidated<'a> {
    model: &'a mut Model,
}

impl Unvalidated<'_> {
    /// `answer_logits` exactly as given.
    pub fn answer_logits(&self, batch: &[Example]) -> Result<Logits, PluginError> {
        self.model
            .inner
            .answer_logits(&Model::to_abi_batch(batch))
            .into_result()
    }

    /// `train_step` exactly as given.
    pub fn train_step(
        &mut self,
        batch: &[Example],
        soft_targets: Option<Logits>,
        options: &TrainOptions,
    ) -> Result<StepReport, PluginError> {
        let soft: ROption<Logits> = soft_targets.map_or(RNone, RSome);
        self.model
            .inner
            .train_step(&Model::to_abi_batch(batch), &soft, options)
            .into_result()
    }

    /// `generate` exactly as given.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>, PluginError> {
        let prompts: RVec<RVec<u32>> = prompts.iter().map(|p| RVec::from(p.clone())).collect();
        self.model
            .inner
            .generate(&prompts, options)
            .into_result()
            .map(|out| out.into_iter().map(RVec::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::library::RootModule;

    #[test]
    fn plugin_file_names_follow_the_platform() {
        let f = plugin_file_name("gpt2");
        assert!(f.contains("cotune_gpt2"), "{f}");
        assert!(plugin_file_name("my-arch").contains("cotune_my_arch"));
    }

    #[test]
    fn a_missing_plugin_names_the_file_and_folders() {
        let err = Plugin::find("no-such-plugin").unwrap_err().to_string();
        assert!(err.contains("no-such-plugin"), "{err}");
        assert!(err.contains("cotune_no_such_plugin"), "{err}");
    }

    #[test]
    fn a_missing_file_is_refused_with_its_path() {
        let err = Plugin::load("/nonexistent/libcotune_x.so")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/libcotune_x.so"), "{err}");
    }

    #[test]
    fn a_library_without_the_probe_is_not_a_plugin() {
        // libc is a real shared library with no cotune symbol.
        let candidates = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/libc.so.6",
        ];
        if let Some(path) = candidates.iter().find(|p| Path::new(p).is_file()) {
            let err = Plugin::load(path).unwrap_err().to_string();
            assert!(err.contains("cotune_abi_version"), "{err}");
        }
    }

    #[test]
    fn root_module_layout_is_loadable_type() {
        // The root module name is stable: plugins and host agree on it.
        assert_eq!(PluginModuleRef::NAME, "cotune_plugin");
    }
}
