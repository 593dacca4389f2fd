//! Loading cotune model plugins and talking to them safely.
//!
//! [`Plugin::load`] probes the library's raw ABI version symbol before anything else, so a plugin
//! built against another interface is refused with both versions and the file named, before
//! `abi_stable` looks at any layout. [`Model`] wraps a plugin's model object and validates what
//! goes in (non-empty batches, token ids below the vocabulary size, lengths within the context,
//! finite soft targets) and what comes out (shapes, finite values), so a broken plugin is caught
//! at the boundary with a message that names it.

mod model;
mod plugin;

pub mod hf;

use std::path::PathBuf;

pub use cotune_abi::{
    AnswerExample, DeviceChoice, DeviceKind, ErrorKind, GenerateOptions, Logits, ModelSpec,
    NamedTensor, ParamSelection, PluginError, StepReport, Structure, TrainOptions, ABI_VERSION,
};
pub use cotune_data::Example;
pub use hf::{open_checkpoint, HfCheckpoint};
pub use model::{Model, Unvalidated};
pub use plugin::{plugin_file_name, plugin_search_dirs, probe_abi_version, Plugin};

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

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::library::RootModule;
    use cotune_abi::PluginModuleRef;
    use std::path::Path;

    #[test]
    fn plugin_file_names_follow_the_platform() {
        let f = plugin_file_name("gpt2");
        assert!(f.contains("cotune_gpt2"), "{f}");
        assert!(plugin_file_name("my-arch").contains("cotune_my_arch"));
    }

    #[test]
    fn each_search_folder_is_listed_once() {
        // Under `cargo test` the executable's parent folder is the target's `debug` folder,
        // which `CARGO_TARGET_DIR` names as well.
        let dirs = plugin_search_dirs();
        let mut unique = dirs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), dirs.len(), "{dirs:?}");
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
