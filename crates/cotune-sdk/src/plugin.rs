//! The `abi_stable` glue between a [`Trainer`] and the host, and the [`export_plugin!`] macro.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use burn::tensor::Device;
use cotune_abi::{
    AnswerExample, DeviceChoice, DeviceKind, ErrorKind, GenerateOptions, Logits, ModelBox,
    ModelObject, ModelObject_TO, ModelSpec, NamedTensor, ParamSelection, PluginError, PluginResult,
    StepReport, TrainOptions,
};

use crate::unwind::panic_message;
use crate::{LanguageModel, Trainer};

/// The exported name of the root module's library header (what abi_stable's
/// `#[export_root_module]` would emit); a test checks it against abi_stable's own constant.
pub const ROOT_MODULE_LOADER_NAME: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Runs `f`, turning a panic into a [`PluginError`] of kind `Panic` so it never unwinds across
/// the library boundary.
pub fn guard<T>(call: &str, f: impl FnOnce() -> Result<T, PluginError>) -> PluginResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(PluginError::new(
            ErrorKind::Panic,
            format!(
                "the plugin panicked in {call}: {}",
                panic_message(&*payload)
            ),
        )),
    }
}

/// The burn device for a device choice, when this build has its backend.
pub fn burn_device(choice: DeviceChoice) -> Result<Device, PluginError> {
    match choice.kind {
        #[cfg(feature = "flex")]
        DeviceKind::Flex => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        DeviceKind::NdArray => Ok(Device::ndarray()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(choice.index as usize)),
        #[allow(unreachable_patterns)]
        other => Err(PluginError::new(
            ErrorKind::Unsupported,
            format!("device {other:?} is not compiled into this plugin (enable its cargo feature)"),
        )),
    }
}

/// A [`Trainer`] behind the stable model interface.
pub struct PluginModel<M: LanguageModel> {
    trainer: Trainer<M>,
    /// The `config.json` of the Hugging Face folder the model was built from, if any: an export
    /// writes its keys back.
    hf_config: Option<serde_json::Value>,
}

impl<M: LanguageModel> PluginModel<M> {
    /// Wraps a trainer.
    pub fn new(trainer: Trainer<M>) -> Self {
        Self {
            trainer,
            hf_config: None,
        }
    }

    /// Wraps a trainer built from a Hugging Face folder with that folder's `config.json`.
    pub fn from_hf(trainer: Trainer<M>, hf_config: serde_json::Value) -> Self {
        Self {
            trainer,
            hf_config: Some(hf_config),
        }
    }
}

impl<M: LanguageModel + Sync> ModelObject for PluginModel<M> {
    fn spec(&self) -> ModelSpec {
        self.trainer.spec()
    }

    fn answer_logits(&self, batch: &RVec<AnswerExample>) -> PluginResult<Logits> {
        guard("answer_logits", || self.trainer.answer_logits(batch))
    }

    fn train_step(
        &mut self,
        batch: &RVec<AnswerExample>,
        soft_targets: &ROption<Logits>,
        options: &TrainOptions,
    ) -> PluginResult<StepReport> {
        guard("train_step", || {
            self.trainer
                .train_step(batch, soft_targets.as_ref().into_option(), options)
        })
    }

    fn generate(
        &self,
        prompts: &RVec<RVec<u32>>,
        options: &GenerateOptions,
    ) -> PluginResult<RVec<RVec<u32>>> {
        guard("generate", || {
            let prompts: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
            let out = self.trainer.generate(&prompts, options)?;
            Ok(out.into_iter().map(RVec::from).collect())
        })
    }

    fn export_params(&self, selection: ParamSelection) -> PluginResult<RVec<NamedTensor>> {
        guard("export_params", || {
            self.trainer.export_params(selection).map(RVec::from)
        })
    }

    fn import_params(&mut self, params: &RVec<NamedTensor>) -> PluginResult<()> {
        guard("import_params", || self.trainer.import_params(params))
    }

    fn save(&self, path: RStr<'_>) -> PluginResult<()> {
        guard("save", || self.trainer.save(path.as_str()))
    }

    fn load(&mut self, path: RStr<'_>) -> PluginResult<()> {
        guard("load", || self.trainer.load(path.as_str()))
    }

    fn export_hf(&self, folder: RStr<'_>) -> PluginResult<()> {
        guard("export_hf", || {
            crate::hf::export(
                &self.trainer,
                self.hf_config.as_ref(),
                std::path::Path::new(folder.as_str()),
            )
        })
    }
}

/// Builds a boxed model of type `M`: what a plugin's constructor returns for one architecture.
pub fn new_model<M: LanguageModel + Sync>(
    config_toml: RStr<'_>,
    seed: u64,
    device: DeviceChoice,
) -> PluginResult<ModelBox> {
    guard("new_model", || {
        let device = burn_device(device)?;
        let trainer = Trainer::<M>::from_toml(config_toml.as_str(), seed, device)?;
        Ok(ModelObject_TO::from_value(
            PluginModel::new(trainer),
            TD_Opaque,
        ))
    })
}

/// Builds a boxed model of type `M` from a Hugging Face folder (see [`crate::hf::load`]).
pub fn new_model_from_hf<M: LanguageModel + Sync>(
    folder: RStr<'_>,
    extra_toml: RStr<'_>,
    seed: u64,
    device: DeviceChoice,
) -> PluginResult<ModelBox> {
    guard("new_model_from_hf", || {
        let device = burn_device(device)?;
        let (trainer, hf_config) = crate::hf::load::<M>(
            std::path::Path::new(folder.as_str()),
            extra_toml.as_str(),
            seed,
            device,
        )?;
        Ok(ModelObject_TO::from_value(
            PluginModel::from_hf(trainer, hf_config),
            TD_Opaque,
        ))
    })
}

/// The error for an architecture a plugin does not offer.
pub fn unknown_architecture(asked: RStr<'_>, offered: &[&str]) -> PluginResult<ModelBox> {
    RResult::RErr(PluginError::new(
        ErrorKind::UnknownArchitecture,
        format!(
            "this plugin offers no architecture `{}` (it offers: {})",
            asked.as_str(),
            offered.join(", ")
        ),
    ))
}

/// The architectures list as the root module returns it.
pub fn architecture_list(names: &[&str]) -> RVec<RString> {
    names.iter().map(|n| RString::from(*n)).collect()
}

#[doc(hidden)]
pub use abi_stable as __abi_stable;

/// Exports a plugin: the raw ABI version probe and the root module.
///
/// ```ignore
/// cotune_sdk::export_plugin! {
///     name: "gpt2",
///     models: [Gpt2Model],
/// }
/// ```
///
/// Each listed type implements [`LanguageModel`]; its `ARCHITECTURE` is the name the host asks
/// for. The plugin's version is its crate version.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, models: [$($model:ty),+ $(,)?] $(,)?) => {
        /// The ABI version probe the host reads before anything else.
        #[unsafe(no_mangle)]
        pub extern "C" fn cotune_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        mod __cotune_plugin_root {
            use super::*;
            use $crate::plugin::__abi_stable as abi_stable;
            use abi_stable::std_types::{RStr, RString, RVec};
            use abi_stable::prefix_type::PrefixTypeTrait;

            const ARCHITECTURES: &[&str] = &[$(<$model as $crate::LanguageModel>::ARCHITECTURE),+];

            extern "C" fn abi_version() -> u32 {
                $crate::abi::ABI_VERSION
            }
            extern "C" fn name() -> RString {
                RString::from($name)
            }
            extern "C" fn version() -> RString {
                RString::from(env!("CARGO_PKG_VERSION"))
            }
            extern "C" fn architectures() -> RVec<RString> {
                $crate::plugin::architecture_list(ARCHITECTURES)
            }
            extern "C" fn example_config(architecture: RStr<'_>) -> RString {
                $(
                    if architecture.as_str() == <$model as $crate::LanguageModel>::ARCHITECTURE {
                        return RString::from(<$model as $crate::LanguageModel>::EXAMPLE_CONFIG);
                    }
                )+
                RString::new()
            }
            extern "C" fn new_model(
                architecture: RStr<'_>,
                config_toml: RStr<'_>,
                seed: u64,
                device: $crate::abi::DeviceChoice,
            ) -> $crate::abi::PluginResult<$crate::abi::ModelBox> {
                $(
                    if architecture.as_str() == <$model as $crate::LanguageModel>::ARCHITECTURE {
                        return $crate::plugin::new_model::<$model>(config_toml, seed, device);
                    }
                )+
                $crate::plugin::unknown_architecture(architecture, ARCHITECTURES)
            }
            extern "C" fn hf_architecture(architecture: RStr<'_>) -> RString {
                $(
                    if architecture.as_str() == <$model as $crate::LanguageModel>::ARCHITECTURE {
                        return RString::from(
                            <$model as $crate::LanguageModel>::HF_ARCHITECTURE.unwrap_or(""),
                        );
                    }
                )+
                RString::new()
            }
            extern "C" fn new_model_from_hf(
                architecture: RStr<'_>,
                folder: RStr<'_>,
                extra_toml: RStr<'_>,
                seed: u64,
                device: $crate::abi::DeviceChoice,
            ) -> $crate::abi::PluginResult<$crate::abi::ModelBox> {
                $(
                    if architecture.as_str() == <$model as $crate::LanguageModel>::ARCHITECTURE {
                        return $crate::plugin::new_model_from_hf::<$model>(
                            folder, extra_toml, seed, device,
                        );
                    }
                )+
                $crate::plugin::unknown_architecture(architecture, ARCHITECTURES)
            }

            fn root_module() -> $crate::abi::PluginModuleRef {
                $crate::abi::PluginModule {
                    abi_version,
                    name,
                    version,
                    architectures,
                    example_config,
                    new_model,
                    hf_architecture,
                    new_model_from_hf,
                }
                .leak_into_prefix()
            }

            #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
            pub static LIB_HEADER: abi_stable::library::LibHeader = {
                pub extern "C" fn erased_module() -> abi_stable::library::RootModuleResult {
                    abi_stable::library::__call_root_module_loader(root_module)
                }
                unsafe {
                    abi_stable::library::LibHeader::from_constructor::<$crate::abi::PluginModuleRef>(
                        erased_module,
                        abi_stable::library::CheckTypeLayout::Yes,
                    )
                }
            };
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_module_symbol_matches_abi_stable() {
        assert_eq!(
            ROOT_MODULE_LOADER_NAME,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let r: PluginResult<u32> = guard("test", || panic!("boom {}", 7));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(e.message.contains("boom 7"), "{}", e.message);
    }
}
