//! `cargo xtask generate` and `cargo xtask export`: Hugging Face model folders (and GGUF files)
//! from the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use cotune_host::hf::HfCheckpoint;
use cotune_host::{open_checkpoint, DeviceChoice, GenerateOptions, Model, Plugin};

use crate::build_plugins;

/// `generate`: the model, the prompt and how to continue it.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model: a Hugging Face folder (config.json, weights, tokenizer.json) or a GGUF file.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    #[command(flatten)]
    prompt: Prompt,
    /// The most tokens to generate.
    // Negative numbers reach the parser, so `-1` is refused as a value of the flag.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20,
        allow_negative_numbers = true
    )]
    max_new_tokens: u32,
    /// Print the token ids too: the prompt's (on stderr) and the continuation's.
    #[arg(long)]
    ids: bool,
    /// The token that ends the continuation [default: the checkpoint's eos_token_id].
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    eos_id: Option<u32>,
    /// Model config keys (TOML) added to the checkpoint's own.
    #[arg(long, value_name = "FILE")]
    extra_config: Option<PathBuf>,
}

/// The prompt, as text or as token ids: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Prompt {
    /// The prompt as text, encoded with the checkpoint's tokenizer.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// The prompt as token ids, comma-separated (1,2,3): for a checkpoint without a tokenizer.
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        value_parser = token_id,
        allow_negative_numbers = true
    )]
    prompt_ids: Option<Vec<u32>>,
}

/// `export`: the model (a checkpoint, or a plugin and its config), a saved state, the folder.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The folder to write the Hugging Face model into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    model: ExportModel,
    /// The architecture, with --plugin [default: the plugin's first].
    #[arg(long, value_name = "A", requires = "plugin")]
    arch: Option<String>,
    /// The model config (TOML): needed with --plugin; with --checkpoint, keys added to the
    /// checkpoint's own.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A saved cotune checkpoint file to load into the model before writing it.
    #[arg(long, value_name = "FILE")]
    load: Option<PathBuf>,
}

/// Where `export`'s model comes from: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ExportModel {
    /// A Hugging Face folder or a GGUF file to open.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// A plugin, by name or path to its library, to build a fresh model with (with --config).
    #[arg(long, value_name = "P", requires = "config")]
    plugin: Option<String>,
}

/// `--prompt-ids`: one token id (spaces around it allowed).
fn token_id(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a token id"))
}

fn read_text(path: Option<&Path>, what: &str) -> Result<String> {
    match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {what} {}", p.display()))
        }
        None => Ok(String::new()),
    }
}

/// `generate`: the greedy continuation of the prompt as text (and, with `--ids`, as token ids).
pub fn generate(args: GenerateArgs) -> Result<()> {
    let hf = HfCheckpoint::read(&args.checkpoint).map_err(anyhow::Error::msg)?;
    // A folder's tokenizer.json, or the one a GGUF file's metadata describes.
    let tokenizer = match hf.tokenizer_json().map_err(anyhow::Error::msg)? {
        Some(text) => {
            let source = hf.tokenizer_path().unwrap_or_else(|| hf.folder.clone());
            Some(
                text.parse::<tokenizers::Tokenizer>()
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", source.display()))?,
            )
        }
        None => None,
    };
    let ids: Vec<u32> = match (args.prompt.prompt_ids, args.prompt.prompt, &tokenizer) {
        (Some(ids), _, _) => ids,
        (None, text, Some(tok)) => {
            let text = text.expect("clap requires --prompt or --prompt-ids");
            tok.encode(text.as_str(), true)
                .map_err(|e| anyhow::anyhow!("encoding the prompt {text:?}: {e}"))?
                .get_ids()
                .to_vec()
        }
        (None, _, None) => bail!(
            "{} has no {}, so the prompt must be given as --prompt-ids",
            hf.folder.display(),
            if hf.is_gguf() {
                "tokenizer metadata"
            } else {
                "tokenizer.json"
            }
        ),
    };
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    if args.ids {
        eprintln!("prompt ids: {ids:?}");
    }
    let eos_id = match args.eos_id {
        Some(id) => id,
        None => hf.eos_token_id().with_context(|| {
            format!(
                "{} has no eos_token_id; pass --eos-id",
                hf.config_path().display()
            )
        })?,
    };
    build_plugins()?;
    let extra = read_text(args.extra_config.as_deref(), "extra config")?;
    let (_, model) =
        open_checkpoint(&hf.folder, &extra, 0, DeviceChoice::FLEX).map_err(anyhow::Error::msg)?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        eos_id,
    };
    let out = model
        .generate(&[ids], &options)
        .map_err(anyhow::Error::msg)?
        .remove(0);
    match &tokenizer {
        Some(tok) => {
            let text = tok
                .decode(&out, true)
                .map_err(|e| anyhow::anyhow!("decoding {out:?}: {e}"))?;
            println!("{text}");
        }
        None => println!("{out:?}"),
    }
    if args.ids && tokenizer.is_some() {
        println!("{out:?}");
    }
    Ok(())
}

/// `export`: writes a model as a Hugging Face folder (with the tokenizer of the checkpoint it
/// was opened from: a folder's `tokenizer.json`, or the one a GGUF file's metadata describes).
pub fn export(args: ExportArgs) -> Result<()> {
    let config = read_text(args.config.as_deref(), "config")?;
    // Before the build: a fresh model has nothing to be built from without its config.
    if let (Some(name), Some(file)) = (&args.model.plugin, &args.config) {
        if config.trim().is_empty() {
            bail!(
                "export --plugin {name}: the model config {} is empty",
                file.display()
            );
        }
    }
    build_plugins()?;
    let mut gguf = None;
    let mut model: Model = match (args.model.checkpoint, args.model.plugin) {
        (Some(folder), _) => {
            if cotune_host::hf::is_gguf(&folder) {
                gguf = Some(HfCheckpoint::read(&folder).map_err(anyhow::Error::msg)?);
            }
            open_checkpoint(&folder, &config, 0, DeviceChoice::FLEX)
                .map_err(anyhow::Error::msg)?
                .1
        }
        (None, name) => {
            let name = name.expect("clap requires --checkpoint or --plugin");
            let plugin = Plugin::open(&name).map_err(anyhow::Error::msg)?;
            let arch = args
                .arch
                .unwrap_or_else(|| plugin.architectures()[0].clone());
            plugin
                .new_model(&arch, &config, 0, DeviceChoice::FLEX)
                .map_err(anyhow::Error::msg)?
        }
    };
    if let Some(file) = args.load {
        model.load(&file).map_err(anyhow::Error::msg)?;
    }
    let out = args.out;
    model.export_hf(&out).map_err(anyhow::Error::msg)?;
    // `Model::export_hf` copies a folder's tokenizer.json; a GGUF file's is built here.
    if let Some(checkpoint) = &gguf {
        checkpoint
            .write_tokenizer(&out)
            .map_err(anyhow::Error::msg)?;
    }
    println!(
        "wrote {} as a Hugging Face folder: {}",
        model.label(),
        out.display()
    );
    Ok(())
}
