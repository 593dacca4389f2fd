//! Finding and loading plugin libraries: the ABI probe first, then the root module.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::lib_header_from_path;
use abi_stable::std_types::{RResult, RStr, RString};
use cotune_abi::{AbiVersionFn, PluginModuleRef, ABI_VERSION_SYMBOL};

use crate::{DeviceChoice, ABI_VERSION};
use crate::{HostError, Model, Result};

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
    // The executable's folder is often one of the target folders: each folder once, first
    // place kept.
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
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
