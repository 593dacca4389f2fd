//! What a Hugging Face model folder's `config.json`, or a GGUF file's metadata, says about its
//! model: the class, the `model_type`, the tokenizer. Reading it needs no plugin, so this module
//! uses neither `Plugin` nor `Model`: `Model`, which copies the folder's tokenizer when it
//! exports, names these files without depending on the plugin search that builds models
//! (`hf`).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{HostError, Result};

/// The configuration file of a Hugging Face model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a Hugging Face model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file of a Hugging Face model folder (optional).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub use cotune_gguf::{
    hf_class as gguf_hf_class, is_gguf_file as is_gguf, EXTENSION as GGUF_EXTENSION,
};

/// A GGUF reader's error as a checkpoint error: the file, then where and what.
fn gguf_err(path: &Path, e: &cotune_gguf::Error) -> HostError {
    let at = e
        .offset()
        .map_or(String::new(), |o| format!("at byte {o}: "));
    checkpoint_err(path, format!("{at}{}", e.kind()))
}

/// What a Hugging Face folder's `config.json` (or a GGUF file's metadata) says about its model.
#[derive(Debug, Clone)]
pub struct HfCheckpoint {
    /// The folder, or the GGUF file.
    pub folder: PathBuf,
    /// `config.json`'s `architectures` (e.g. `["GPT2LMHeadModel"]`).
    pub architectures: Vec<String>,
    /// `config.json`'s `model_type` (e.g. `gpt2`), if given.
    pub model_type: Option<String>,
    /// The whole `config.json`; for a GGUF file, the class, `model_type` and the tokenizer's
    /// `bos_token_id` and `eos_token_id` (the plugin translates the rest of its metadata).
    pub config: Value,
}

/// A checkpoint error naming `path`.
pub(super) fn checkpoint_err(path: &Path, reason: impl Into<String>) -> HostError {
    HostError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl HfCheckpoint {
    /// Reads `folder/config.json`, or the metadata of the GGUF file `folder` ([`is_gguf`]).
    pub fn read(folder: impl AsRef<Path>) -> Result<HfCheckpoint> {
        let folder = folder.as_ref();
        if is_gguf(folder) {
            return HfCheckpoint::read_gguf(folder);
        }
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

    /// A GGUF file's header: `general.architecture` to its class; refused, naming the file and
    /// the value (or the byte offset at fault), when it is not a GGUF file or its architecture
    /// is not one the plugins read.
    fn read_gguf(path: &Path) -> Result<HfCheckpoint> {
        let gguf = cotune_gguf::Gguf::open(path).map_err(|e| gguf_err(path, &e))?;
        let arch = gguf.architecture().map_err(|e| gguf_err(path, &e))?;
        let class = gguf_hf_class(arch).ok_or_else(|| {
            checkpoint_err(
                path,
                format!("GGUF architecture `{arch}` (general.architecture) cannot be loaded; only `llama` can"),
            )
        })?;
        let mut config = json!({ "architectures": [class], "model_type": arch });
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ] {
            let id = match gguf.get(key) {
                Some(cotune_gguf::Value::U32(id)) => Some(u64::from(*id)),
                Some(cotune_gguf::Value::I32(id)) => u64::try_from(*id).ok(),
                Some(cotune_gguf::Value::U64(id)) => Some(*id),
                _ => None,
            };
            if let Some(id) = id {
                config[name] = json!(id);
            }
        }
        Ok(HfCheckpoint {
            folder: path.to_path_buf(),
            architectures: vec![class.to_string()],
            model_type: Some(arch.to_string()),
            config,
        })
    }

    /// Whether the checkpoint is a GGUF file rather than a folder.
    pub fn is_gguf(&self) -> bool {
        self.folder.is_file()
    }

    /// The file the configuration was read from: `config.json`, or the GGUF file.
    pub fn config_path(&self) -> PathBuf {
        if self.is_gguf() {
            self.folder.clone()
        } else {
            self.folder.join(CONFIG_FILE)
        }
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

    /// The folder's `tokenizer.json`, if it has one (a GGUF file has none: see
    /// [`HfCheckpoint::tokenizer_json`]).
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        if self.is_gguf() {
            return None;
        }
        Some(self.folder.join(TOKENIZER_FILE)).filter(|p| p.is_file())
    }

    /// The checkpoint's `tokenizer.json` text, if it has a tokenizer: the folder's file, or the
    /// one built from a GGUF file's tokenizer metadata
    /// ([`cotune_data::tokenizer_json_from_gguf`]; a file without `tokenizer.ggml.model` has
    /// none). Refused, naming the file, when it cannot be read or built.
    pub fn tokenizer_json(&self) -> Result<Option<String>> {
        if self.is_gguf() {
            let path = &self.folder;
            let gguf = cotune_gguf::Gguf::open(path).map_err(|e| gguf_err(path, &e))?;
            if gguf.get("tokenizer.ggml.model").is_none() {
                return Ok(None);
            }
            return cotune_data::tokenizer_json_from_gguf(&gguf)
                .map(Some)
                .map_err(|e| checkpoint_err(path, e.to_string()));
        }
        match self.tokenizer_path() {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| checkpoint_err(&path, format!("cannot read it: {e}"))),
        }
    }

    /// Writes the checkpoint's tokenizer ([`HfCheckpoint::tokenizer_json`]) as `tokenizer.json`
    /// in `folder`; whether there was one. What `Model::export_hf` does not do for a model
    /// opened from a GGUF file.
    pub fn write_tokenizer(&self, folder: &Path) -> Result<bool> {
        let Some(text) = self.tokenizer_json()? else {
            return Ok(false);
        };
        let path = folder.join(TOKENIZER_FILE);
        std::fs::write(&path, text)
            .map_err(|e| checkpoint_err(&path, format!("cannot write it: {e}")))?;
        Ok(true)
    }
}
