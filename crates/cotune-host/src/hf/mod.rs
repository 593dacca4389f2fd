//! Opening Hugging Face model folders: reading `config.json` to find the plugin whose
//! architecture loads the folder's class, and building the model through it.
//!
//! A GGUF file (llama.cpp's format, [`is_gguf`]) is opened wherever a folder is: its
//! `general.architecture` gives the class (`llama`: `LlamaForCausalLM`, [`gguf_hf_class`]), its
//! tokenizer metadata the tokenizer ([`HfCheckpoint::tokenizer_json`]), and the plugin reads its
//! tensors (`cotune_sdk::hf::gguf`).
//!
//! The plugin does the loading (it owns the mapping between Hugging Face tensor names and its
//! parameters); the host only chooses the plugin. It first tries the plugin named like the
//! folder's `model_type` (`gpt2`, `llama`, `t5`), then every plugin library in
//! [`plugin_search_dirs`](crate::plugin_search_dirs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{plugin_file_name, plugin_search_dirs, DeviceChoice, Model, Plugin, Result};

mod checkpoint;

use checkpoint::checkpoint_err;
pub use checkpoint::{
    gguf_hf_class, is_gguf, HfCheckpoint, CONFIG_FILE, GGUF_EXTENSION, TOKENIZER_FILE, WEIGHTS_FILE,
};

impl HfCheckpoint {
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
            &self.config_path(),
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

/// Opens the Hugging Face folder `folder` (or GGUF file): reads its `config.json`, finds the
/// plugin whose architecture loads its class, and builds the model from its weights. `extra_toml` adds or
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
