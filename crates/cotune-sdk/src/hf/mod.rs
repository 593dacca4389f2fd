//! Hugging Face checkpoints in and out: `config.json`, `model.safetensors` and the mapping
//! between Hugging Face tensor names and a plugin's parameter names.
//!
//! A plugin opts in by setting [`LanguageModel::HF_ARCHITECTURE`] and implementing
//! [`LanguageModel::config_from_hf`], [`LanguageModel::config_to_hf`] and
//! [`LanguageModel::hf_tensors`], either directly or by implementing [`HfMapping`] and writing
//! [`hf_methods!()`](crate::hf_methods) in its `impl LanguageModel`; the reading, checking,
//! transposing and writing live here, the same for every architecture. A model built from a
//! Hugging Face folder keeps that folder's `config.json`, so an export writes back every key it
//! had (overwriting only the ones the model owns).
//!
//! The safetensors format is small enough to read and write here: an 8-byte little-endian header
//! length, a JSON header mapping each tensor name to its dtype, shape and byte range, then the raw
//! little-endian data. `F32`, `F16`, `BF16` and `F64` tensors are read (converted to `f32`);
//! exports are written in `F32`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::Device;
use cotune_abi::{ErrorKind, NamedTensor, ParamSelection, PluginError};
use serde_json::{json, Value};

pub use serde_json;
pub use toml;

use crate::{params, LanguageModel, Trainer};

pub mod gguf;
mod safetensors;

pub use safetensors::{read_safetensors, write_safetensors, StoredTensor};

/// The configuration file of a Hugging Face model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a Hugging Face model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file of a Hugging Face model folder (optional).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The `transformers` version whose `config.json` keys the plugins' mappings reproduce (written
/// as `transformers_version` by an export of a model not loaded from Hugging Face).
pub const TRANSFORMERS_VERSION: &str = "5.24.0";

/// How one Hugging Face tensor corresponds to one of the model's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTensor {
    /// The name in `model.safetensors`, as `transformers` saves it (e.g. `transformer.wte.weight`).
    pub hf: String,
    /// The model's dotted parameter name (e.g. `wte.weight`).
    pub ours: String,
    /// Whether the 2-D layouts are each other's transpose (PyTorch `nn.Linear` stores
    /// `[out, in]`, burn's `Linear` `[in, out]`).
    pub transpose: bool,
}

impl HfTensor {
    /// A tensor stored with the same layout on both sides.
    pub fn same(hf: impl Into<String>, ours: impl Into<String>) -> Self {
        Self {
            hf: hf.into(),
            ours: ours.into(),
            transpose: false,
        }
    }

    /// A 2-D tensor stored transposed on the Hugging Face side.
    pub fn transposed(hf: impl Into<String>, ours: impl Into<String>) -> Self {
        Self {
            hf: hf.into(),
            ours: ours.into(),
            transpose: true,
        }
    }
}

/// The error for an architecture without a Hugging Face mapping.
pub fn no_mapping(architecture: &str) -> String {
    format!("the `{architecture}` architecture has no Hugging Face mapping")
}

/// A model's Hugging Face mapping in one `impl`, typically in the plugin's `hf.rs`; the
/// [`hf_methods!()`](crate::hf_methods) line inside `impl LanguageModel` turns it into the
/// trait's `HF_ARCHITECTURE`, `config_from_hf`, `config_to_hf`, `hf_tensors` and `hf_ignored`.
///
/// ```ignore
/// impl HfMapping for MyModel {
///     const CLASS: &'static str = "MyModelForCausalLM";
///     fn from_hf_config(hf: &Value) -> Result<toml::Table, String> { /* ... */ }
///     fn to_hf_config(c: &MyConfig) -> Result<Value, String> { /* ... */ }
///     fn tensors(c: &MyConfig) -> Vec<HfTensor> { /* ... */ }
///     fn ignored(name: &str) -> bool { name == "lm_head.weight" }
/// }
///
/// impl LanguageModel for MyModel {
///     // ...
///     cotune_sdk::hf_methods!();
/// }
/// ```
pub trait HfMapping: LanguageModel {
    /// The Hugging Face class whose checkpoints this architecture reads and writes
    /// ([`LanguageModel::HF_ARCHITECTURE`]).
    const CLASS: &'static str;

    /// `config.json` to this model's configuration keys ([`LanguageModel::config_from_hf`]).
    fn from_hf_config(hf: &Value) -> Result<toml::Table, String>;

    /// This configuration's `config.json` ([`LanguageModel::config_to_hf`]).
    fn to_hf_config(config: &Self::Config) -> Result<Value, String>;

    /// Every tensor of the class's checkpoint with its parameter
    /// ([`LanguageModel::hf_tensors`]).
    fn tensors(config: &Self::Config) -> Vec<HfTensor>;

    /// Tensors a file may hold that are skipped on load ([`LanguageModel::hf_ignored`]); none
    /// by default.
    fn ignored(name: &str) -> bool {
        let _ = name;
        false
    }
}

/// Inside `impl LanguageModel for M`, where `M` implements [`HfMapping`](crate::hf::HfMapping):
/// defines `HF_ARCHITECTURE`, `config_from_hf`, `config_to_hf`, `hf_tensors` and `hf_ignored`
/// by forwarding to it.
#[macro_export]
macro_rules! hf_methods {
    () => {
        const HF_ARCHITECTURE: ::core::option::Option<&'static str> =
            ::core::option::Option::Some(<Self as $crate::hf::HfMapping>::CLASS);

        fn config_from_hf(
            hf: &$crate::hf::serde_json::Value,
        ) -> ::core::result::Result<$crate::hf::toml::Table, ::std::string::String> {
            <Self as $crate::hf::HfMapping>::from_hf_config(hf)
        }

        fn config_to_hf(
            config: &<Self as $crate::LanguageModel>::Config,
        ) -> ::core::result::Result<$crate::hf::serde_json::Value, ::std::string::String> {
            <Self as $crate::hf::HfMapping>::to_hf_config(config)
        }

        fn hf_tensors(
            config: &<Self as $crate::LanguageModel>::Config,
        ) -> ::std::vec::Vec<$crate::hf::HfTensor> {
            <Self as $crate::hf::HfMapping>::tensors(config)
        }

        fn hf_ignored(name: &str) -> bool {
            <Self as $crate::hf::HfMapping>::ignored(name)
        }
    };
}

pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError::new(kind, message)
}

/// Reads and parses `config.json` at `path`.
pub fn read_config(path: &Path) -> Result<Value, PluginError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(ErrorKind::Io, format!("reading {}: {e}", path.display())))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        err(
            ErrorKind::InvalidConfig,
            format!("{} is not valid JSON: {e}", path.display()),
        )
    })?;
    if !value.is_object() {
        return Err(err(
            ErrorKind::InvalidConfig,
            format!("{} is not a JSON object", path.display()),
        ));
    }
    Ok(value)
}

/// Typed reads of `config.json` keys for [`LanguageModel::config_from_hf`]; each error names the
/// key and the value found.
pub struct HfConfig<'a>(pub &'a Value);

impl HfConfig<'_> {
    /// The raw value of `key`, if present and not `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A non-negative integer, if present.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| format!("`{key}` must be a non-negative integer, got {v}")),
        }
    }

    /// A non-negative integer that must be present.
    pub fn required_usize(&self, key: &str) -> Result<usize, String> {
        self.usize(key)?
            .ok_or_else(|| format!("`{key}` is missing"))
    }

    /// A number, if present.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
        }
    }

    /// A boolean, if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be true or false, got {v}")),
        }
    }

    /// A string, if present.
    pub fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be a string, got {v}")),
        }
    }

    /// Refuses `key` unless it is absent, `null` or equal to `allowed` (a value the model does
    /// not implement otherwise).
    pub fn only(&self, key: &str, allowed: &Value) -> Result<(), String> {
        match self.get(key) {
            Some(v) if v != allowed => {
                Err(format!("`{key}` = {v} is not supported (only {allowed})"))
            }
            _ => Ok(()),
        }
    }
}

/// Inserts `value` under `key` in a TOML table being built by `config_from_hf`.
pub fn set(table: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    table.insert(key.to_string(), value.into());
}

/// The names `name` may have in a file: itself, and without its first segment (a checkpoint
/// saved from the base model, without the language-model head, drops the `transformer.` or
/// `model.` prefix).
fn candidates(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.split_once('.').map(|(_, rest)| rest))
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn expected_architecture<M: LanguageModel>() -> Result<&'static str, PluginError> {
    M::HF_ARCHITECTURE.ok_or_else(|| err(ErrorKind::Unsupported, no_mapping(M::ARCHITECTURE)))
}

/// Builds a model from the Hugging Face folder `folder`: its `config.json` through
/// [`LanguageModel::config_from_hf`] (with `extra_toml`'s keys added or overriding, e.g. a
/// `[lora]` table), then every tensor of `model.safetensors` through
/// [`LanguageModel::hf_tensors`]. Returns the trainer and the folder's `config.json`.
///
/// `folder` may also be a GGUF file ([`gguf::is_gguf`]): its metadata stands for `config.json`
/// ([`gguf::hf_config`], which is what is returned) and its tensors, dequantised and renamed
/// ([`gguf::hf_tensors`]), for `model.safetensors`.
///
/// Refused, naming the file and the tensor: a missing file, a `config.json` whose
/// `architectures` does not list [`LanguageModel::HF_ARCHITECTURE`], a missing tensor, a tensor
/// of the wrong shape, and a tensor the configuration has no place for.
pub fn load<M: LanguageModel>(
    folder: &Path,
    extra_toml: &str,
    seed: u64,
    device: Device,
) -> Result<(Trainer<M>, Value), PluginError> {
    if gguf::is_gguf(folder) {
        return load_gguf(folder, extra_toml, seed, device);
    }
    let config_path = folder.join(CONFIG_FILE);
    let hf = read_config(&config_path)?;
    let mut trainer = trainer_from_hf_config::<M>(&hf, &config_path, extra_toml, seed, device)?;
    let weights_path = folder.join(WEIGHTS_FILE);
    let stored = read_safetensors(&weights_path)?;
    let source = Source::Folder {
        weights: &weights_path,
        config: &config_path,
    };
    let values = tensors_from_stored(&trainer, stored, &source)?;
    trainer.import_params(&values)?;
    Ok((trainer, hf))
}

/// [`load`] for a GGUF file.
fn load_gguf<M: LanguageModel>(
    file: &Path,
    extra_toml: &str,
    seed: u64,
    device: Device,
) -> Result<(Trainer<M>, Value), PluginError> {
    let gguf = gguf::open(file)?;
    let hf = gguf::hf_config(&gguf)?;
    let mut trainer = trainer_from_hf_config::<M>(&hf, file, extra_toml, seed, device)?;
    let stored = gguf::hf_tensors(&gguf, &hf)?;
    let values = tensors_from_stored(&trainer, stored, &Source::Gguf { file })?;
    trainer.import_params(&values)?;
    Ok((trainer, hf))
}

/// Where the tensors being loaded come from, for messages.
enum Source<'a> {
    /// A Hugging Face folder's `model.safetensors` and `config.json`.
    Folder { weights: &'a Path, config: &'a Path },
    /// A GGUF file: tensors are named and shaped as in it.
    Gguf { file: &'a Path },
}

impl Source<'_> {
    /// The file the tensors are read from.
    fn file(&self) -> String {
        match self {
            Source::Folder { weights, .. } => weights.display().to_string(),
            Source::Gguf { file } => file.display().to_string(),
        }
    }

    /// The file the configuration is read from.
    fn config(&self) -> String {
        match self {
            Source::Folder { config, .. } => config.display().to_string(),
            Source::Gguf { file } => file.display().to_string(),
        }
    }

    /// The tensor's name in the file.
    fn tensor(&self, hf: &str) -> String {
        match self {
            Source::Gguf { .. } => gguf::llama_gguf_name(hf).unwrap_or_else(|| hf.to_string()),
            Source::Folder { .. } => hf.to_string(),
        }
    }

    /// A Hugging Face shape as the file writes it: GGUF lists dims innermost first.
    fn shape(&self, shape: &[usize]) -> String {
        match self {
            Source::Gguf { .. } => {
                let dims: Vec<usize> = shape.iter().rev().copied().collect();
                format!("dims {dims:?}")
            }
            Source::Folder { .. } => format!("shape {shape:?}"),
        }
    }
}

/// A fresh trainer from the configuration `hf` (a `config.json` read from `config_path`,
/// checked to name the architecture) with `extra_toml`'s keys on top.
fn trainer_from_hf_config<M: LanguageModel>(
    hf: &Value,
    config_path: &Path,
    extra_toml: &str,
    seed: u64,
    device: Device,
) -> Result<Trainer<M>, PluginError> {
    let expected = expected_architecture::<M>()?;
    if let Some(listed) = hf.get("architectures").filter(|v| !v.is_null()) {
        let names: Vec<&str> = listed
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !names.contains(&expected) {
            return Err(err(
                ErrorKind::UnknownArchitecture,
                format!(
                    "{}: `architectures` is {listed}, but the `{}` plugin architecture loads {expected}",
                    config_path.display(),
                    M::ARCHITECTURE
                ),
            ));
        }
    }
    let mut table = M::config_from_hf(hf).map_err(|e| {
        err(
            ErrorKind::InvalidConfig,
            format!("{}: {e}", config_path.display()),
        )
    })?;
    if !extra_toml.trim().is_empty() {
        let extra: toml::Table = toml::from_str(extra_toml).map_err(|e| {
            err(
                ErrorKind::InvalidConfig,
                format!("the extra configuration of {}: {e}", M::ARCHITECTURE),
            )
        })?;
        table.extend(extra);
    }
    let config_text = toml::to_string(&table).map_err(|e| {
        err(
            ErrorKind::Internal,
            format!("writing the translated configuration: {e}"),
        )
    })?;
    Trainer::<M>::from_toml(&config_text, seed, device).map_err(|e| {
        err(
            e.kind,
            format!("{} (translated from {})", e.message, config_path.display()),
        )
    })
}

/// The stored tensors (Hugging Face names), mapped to the trainer's parameter names, shapes
/// checked and transposed where the mapping says so; every parameter and every stored tensor
/// accounted for.
fn tensors_from_stored<M: LanguageModel>(
    trainer: &Trainer<M>,
    mut stored: BTreeMap<String, StoredTensor>,
    source: &Source<'_>,
) -> Result<Vec<NamedTensor>, PluginError> {
    let shown = source.file();
    let ours: BTreeMap<String, Vec<usize>> = params::list(trainer.model())
        .into_iter()
        .filter(|p| !p.adapter)
        .map(|p| (p.name, p.shape))
        .collect();
    let map = M::hf_tensors(trainer.config());
    let mut mapped = BTreeSet::new();
    let mut values = Vec::with_capacity(map.len());
    for t in &map {
        let shape = ours.get(&t.ours).ok_or_else(|| {
            err(
                ErrorKind::Internal,
                format!(
                    "the `{}` mapping names a parameter `{}` the model does not have",
                    M::ARCHITECTURE,
                    t.ours
                ),
            )
        })?;
        let want: Vec<usize> = if t.transpose {
            shape.iter().rev().copied().collect()
        } else {
            shape.clone()
        };
        let found = candidates(&t.hf)
            .find(|n| stored.contains_key(*n))
            .map(str::to_string);
        let Some(found) = found else {
            return Err(err(
                ErrorKind::UnknownParameter,
                format!(
                    "{shown}: tensor `{}` ({}) is missing",
                    source.tensor(&t.hf),
                    source.shape(&want)
                ),
            ));
        };
        let tensor = stored.remove(&found).expect("just found");
        if tensor.shape != want {
            return Err(err(
                ErrorKind::ShapeMismatch,
                format!(
                    "{shown}: tensor `{}` has {}, expected {}",
                    source.tensor(&found),
                    source.shape(&tensor.shape),
                    source.shape(&want)
                ),
            ));
        }
        if let Some(v) = tensor.data.iter().find(|v| !v.is_finite()) {
            return Err(err(
                ErrorKind::NonFinite,
                format!(
                    "{shown}: tensor `{}` contains the value {v}",
                    source.tensor(&found)
                ),
            ));
        }
        let data = if t.transpose {
            transpose(&tensor.data, want[0], want[1])
        } else {
            tensor.data
        };
        mapped.insert(t.ours.clone());
        values.push(NamedTensor {
            name: t.ours.as_str().into(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            data: data.into(),
        });
    }
    if let Some(unmapped) = ours.keys().find(|n| !mapped.contains(*n)) {
        return Err(err(
            ErrorKind::Internal,
            format!(
                "the `{}` mapping gives parameter `{unmapped}` no Hugging Face tensor",
                M::ARCHITECTURE
            ),
        ));
    }
    if let Some(extra) = stored.keys().find(|n| !M::hf_ignored(n)) {
        return Err(err(
            ErrorKind::UnknownParameter,
            format!(
                "{shown}: tensor `{}` has no place in a `{}` model of this configuration ({})",
                source.tensor(extra),
                M::ARCHITECTURE,
                source.config()
            ),
        ));
    }
    Ok(values)
}

/// Writes `trainer`'s model as a Hugging Face folder: `config.json` (the keys of `original`, a
/// `config.json` the model was loaded from, overwritten by [`LanguageModel::config_to_hf`]'s,
/// whose `null`s keep the original's values) and `model.safetensors` in `F32`, with low-rank adapters merged into their weights.
pub fn export<M: LanguageModel>(
    trainer: &Trainer<M>,
    original: Option<&Value>,
    folder: &Path,
) -> Result<(), PluginError> {
    let architecture = expected_architecture::<M>()?;
    let own = M::config_to_hf(trainer.config()).map_err(|e| {
        err(
            ErrorKind::InvalidConfig,
            format!("{}: {e}", M::ARCHITECTURE),
        )
    })?;
    let mut config = original
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Value::Object(own) = own {
        // A value the model does not know (`null`: its token ids) keeps the original's.
        for (key, value) in own {
            if value.is_null() && config.get(&key).is_some_and(|v| !v.is_null()) {
                continue;
            }
            config.insert(key, value);
        }
    }
    config.insert("architectures".into(), json!([architecture]));

    // Folding the adapters gives the effective weights under the base names.
    let merged = trainer.model().valid().materialize();
    let mut ours: BTreeMap<String, NamedTensor> = params::export(&merged, ParamSelection::All)?
        .into_iter()
        .map(|p| (p.name.to_string(), p))
        .collect();
    let mut tensors = Vec::new();
    for t in M::hf_tensors(trainer.config()) {
        let p = ours.remove(&t.ours).ok_or_else(|| {
            err(
                ErrorKind::Internal,
                format!(
                    "the `{}` mapping names a parameter `{}` the model does not have",
                    M::ARCHITECTURE,
                    t.ours
                ),
            )
        })?;
        let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
        if t.transpose {
            let (rows, cols) = (shape[0], shape[1]);
            tensors.push((t.hf, vec![cols, rows], transpose(&p.data, rows, cols)));
        } else {
            tensors.push((t.hf, shape, p.data.into_vec()));
        }
    }
    if let Some(left) = ours.keys().next() {
        return Err(err(
            ErrorKind::Internal,
            format!(
                "the `{}` mapping gives parameter `{left}` no Hugging Face tensor",
                M::ARCHITECTURE
            ),
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));

    std::fs::create_dir_all(folder)
        .map_err(|e| err(ErrorKind::Io, format!("creating {}: {e}", folder.display())))?;
    let config_path = folder.join(CONFIG_FILE);
    let mut text = serde_json::to_string_pretty(&Value::Object(config)).expect("JSON values");
    text.push('\n');
    std::fs::write(&config_path, text).map_err(|e| {
        err(
            ErrorKind::Io,
            format!("writing {}: {e}", config_path.display()),
        )
    })?;
    write_safetensors(&folder.join(WEIGHTS_FILE), &tensors)
}

#[cfg(test)]
mod tests {
    use super::safetensors::f16_to_f32;
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cotune-sdk-hf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn safetensors_round_trip_bit_identically() {
        let dir = temp_dir("round-trip");
        let path = dir.join("t.safetensors");
        let tensors = vec![
            (
                "a".to_string(),
                vec![2, 3],
                vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.1, -0.0],
            ),
            ("b.weight".to_string(), vec![1], vec![7.0]),
        ];
        write_safetensors(&path, &tensors).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header_len) % 8, 0, "the data starts 8-byte aligned");
        let back = read_safetensors(&path).unwrap();
        for (name, shape, data) in &tensors {
            let t = &back[name];
            assert_eq!(&t.shape, shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&t.data), bits(data));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn half_precision_converts_exactly() {
        for (bits, value) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(bits), value, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn f16_and_bf16_files_are_read_as_f32() {
        let dir = temp_dir("half");
        let path = dir.join("h.safetensors");
        let header = br#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#;
        let mut buf = (header.len() as u64).to_le_bytes().to_vec();
        buf.extend_from_slice(header);
        buf.extend_from_slice(&0x3c00u16.to_le_bytes());
        buf.extend_from_slice(&0xc000u16.to_le_bytes());
        buf.extend_from_slice(&((1.5f32.to_bits() >> 16) as u16).to_le_bytes());
        std::fs::write(&path, buf).unwrap();
        let t = read_safetensors(&path).unwrap();
        assert_eq!(t["h"].data, vec![1.0, -2.0]);
        assert_eq!(t["b"].data, vec![1.5]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_files_are_refused_with_the_file_and_tensor() {
        let dir = temp_dir("malformed");
        let path = dir.join("bad.safetensors");
        let header = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let mut buf = (header.len() as u64).to_le_bytes().to_vec();
        buf.extend_from_slice(header);
        buf.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &buf).unwrap();
        let e = read_safetensors(&path).unwrap_err().message.to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("`w`") && e.contains("12 bytes"),
            "{e}"
        );

        std::fs::write(&path, [1, 0]).unwrap();
        let e = read_safetensors(&path).unwrap_err().message.to_string();
        assert!(e.contains("too short"), "{e}");

        let header = br#"{"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#;
        let mut buf = (header.len() as u64).to_le_bytes().to_vec();
        buf.extend_from_slice(header);
        buf.push(0);
        std::fs::write(&path, &buf).unwrap();
        let e = read_safetensors(&path).unwrap_err().message.to_string();
        assert!(e.contains("I8"), "{e}");

        let e = read_safetensors(&dir.join("absent.safetensors"))
            .unwrap_err()
            .message
            .to_string();
        assert!(e.contains("absent.safetensors"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn config_reads_name_the_key_and_value() {
        let v = json!({"n": 3, "x": "a", "f": 1.5, "b": true, "z": null, "act": "relu"});
        let c = HfConfig(&v);
        assert_eq!(c.usize("n").unwrap(), Some(3));
        assert_eq!(c.usize("z").unwrap(), None);
        assert!(c.usize("x").unwrap_err().contains("`x`"));
        assert!(c
            .required_usize("missing")
            .unwrap_err()
            .contains("`missing` is missing"));
        assert_eq!(c.f64("f").unwrap(), Some(1.5));
        assert_eq!(c.bool("b").unwrap(), Some(true));
        let e = c.only("act", &json!("silu")).unwrap_err();
        assert!(e.contains("`act`") && e.contains("relu"), "{e}");
        assert!(c.only("absent", &json!("silu")).is_ok());
    }
}
