//! Opening Hugging Face model folders: reading `config.json` to find the plugin whose
//! architecture loads the folder's class, and building the model through it.
//!
//! The plugin does the loading (it owns the mapping between Hugging Face tensor names and its
//! parameters); the host only chooses the plugin. It first tries the plugin named like the
//! folder's `model_type` (`gpt2`, `llama`, `t5`), then every plugin library in
//! [`plugin_search_dirs`](crate::plugin_search_dirs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{plugin_file_name, plugin_search_dirs, DeviceChoice, HostError, Model, Plugin, Result};

/// The configuration file of a Hugging Face model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a Hugging Face model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file of a Hugging Face model folder (optional).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What a Hugging Face folder's `config.json` says about its model.
#[derive(Debug, Clone)]
pub struct HfCheckpoint {
    /// The folder.
    pub folder: PathBuf,
    /// `config.json`'s `architectures` (e.g. `["GPT2LMHeadModel"]`).
    pub architectures: Vec<String>,
    /// `config.json`'s `model_type` (e.g. `gpt2`), if given.
    pub model_type: Option<String>,
    /// The whole `config.json`.
    pub config: Value,
}

fn checkpoint_err(path: &Path, reason: impl Into<String>) -> HostError {
    HostError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl HfCheckpoint {
    /// Reads `folder/config.json`.
    pub fn read(folder: impl AsRef<Path>) -> Result<HfCheckpoint> {
        let folder = folder.as_ref();
        if !folder.is_dir() {
            return Err(checkpoint_err(folder, "no such folder"));
        }
        let path = folder.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| checkpoint_err(&path, format!("cannot read it: {e}")))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| checkpoint_err(&path, format!("not valid JSON: {e}")))?;
        let architectures = match config.get("architectures") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| {
                    n.as_str().map(str::to_string).ok_or_else(|| {
                        checkpoint_err(&path, format!("`architectures` holds {n}, not a name"))
                    })
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(checkpoint_err(
                    &path,
                    format!("`architectures` is {other}, not a list of names"),
                ))
            }
        };
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        if architectures.is_empty() {
            return Err(checkpoint_err(
                &path,
                "`architectures` is missing or empty, so the model class is unknown",
            ));
        }
        Ok(HfCheckpoint {
            folder: folder.to_path_buf(),
            architectures,
            model_type,
            config,
        })
    }

    /// The end-of-sequence token id (`eos_token_id`; the first one when it is a list); `None`
    /// also when it is not a token id (negative, or past `u32`).
    pub fn eos_token_id(&self) -> Option<u32> {
        let id = match self.config.get("eos_token_id")? {
            Value::Array(ids) => ids.first()?,
            id => id,
        };
        id.as_u64().and_then(|id| u32::try_from(id).ok())
    }

    /// The folder's `tokenizer.json`, if it has one.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        Some(self.folder.join(TOKENIZER_FILE)).filter(|p| p.is_file())
    }

    /// The plugin and architecture that load this folder's class.
    pub fn find_plugin(&self) -> Result<(Plugin, String)> {
        let matches = |plugin: &Plugin| -> Option<String> {
            plugin.architectures().iter().find_map(|arch| {
                plugin
                    .hf_architecture(arch)
                    .filter(|hf| self.architectures.contains(hf))
                    .map(|_| arch.clone())
            })
        };
        if let Some(name) = &self.model_type {
            if let Ok(plugin) = Plugin::find(name) {
                if let Some(arch) = matches(&plugin) {
                    return Ok((plugin, arch));
                }
            }
        }
        let mut seen = Vec::new();
        for path in plugin_libraries() {
            let Ok(plugin) = Plugin::load(&path) else {
                continue;
            };
            if let Some(arch) = matches(&plugin) {
                return Ok((plugin, arch));
            }
            let offered: Vec<String> = plugin
                .architectures()
                .iter()
                .filter_map(|a| plugin.hf_architecture(a))
                .collect();
            seen.push(format!("{} ({})", plugin.name(), offered.join(", ")));
        }
        Err(checkpoint_err(
            &self.folder.join(CONFIG_FILE),
            format!(
                "no plugin loads architecture {} (model_type {}); the plugins found load: {}",
                self.architectures.join(", "),
                self.model_type.as_deref().unwrap_or("not given"),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join("; ")
                }
            ),
        ))
    }
}

/// Every plugin library (`libcotune_*.so` on Linux) in the plugin search folders, the first of
/// each file name only.
pub fn plugin_libraries() -> Vec<PathBuf> {
    let sample = plugin_file_name("x");
    let (prefix, suffix) = sample.split_once('x').expect("the name holds the x");
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for dir in plugin_search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
            .collect();
        found.sort();
        for path in found {
            if names.insert(path.file_name().map(|n| n.to_os_string())) {
                out.push(path);
            }
        }
    }
    out
}

/// Opens the Hugging Face folder `folder`: reads its `config.json`, finds the plugin whose
/// architecture loads its class, and builds the model from its weights. `extra_toml` adds or
/// overrides keys of the plugin's own configuration (e.g. a `[lora]` table, or T5's
/// `max_length`) and may be empty; `seed` initialises what the checkpoint does not hold
/// (adapters).
pub fn open_checkpoint(
    folder: impl AsRef<Path>,
    extra_toml: &str,
    seed: u64,
    device: DeviceChoice,
) -> Result<(Plugin, Model)> {
    let checkpoint = HfCheckpoint::read(folder)?;
    let (plugin, architecture) = checkpoint.find_plugin()?;
    let model =
        plugin.new_model_from_hf(&architecture, &checkpoint.folder, extra_toml, seed, device)?;
    Ok((plugin, model))
}
