//! `cargo xtask generate` and `cargo xtask export`: Hugging Face model folders (and GGUF files)
//! from the command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cotune_host::hf::HfCheckpoint;
use cotune_host::{open_checkpoint, DeviceChoice, GenerateOptions, Model, Plugin};

use crate::{build_plugins, take_flag, USAGE};

fn no_extra(rest: &[String]) -> Result<()> {
    if let Some(extra) = rest.first() {
        eprint!("{USAGE}");
        bail!("unexpected argument `{extra}`");
    }
    Ok(())
}

fn read_text(path: Option<&String>, what: &str) -> Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {what} {p}")),
        None => Ok(String::new()),
    }
}

/// `generate --checkpoint <folder or file.gguf> (--prompt TEXT | --prompt-ids 1,2,3) --max-new-tokens N
/// [--ids] [--eos-id ID] [--extra-config F]`: the greedy continuation of the prompt as text
/// (and, with `--ids`, as token ids).
pub fn generate(args: &[String]) -> Result<()> {
    let show_ids = args.iter().any(|a| a == "--ids");
    let args: Vec<String> = args.iter().filter(|a| *a != "--ids").cloned().collect();
    let (checkpoint, rest) = take_flag(&args, "--checkpoint")?;
    let (prompt, rest) = take_flag(&rest, "--prompt")?;
    let (prompt_ids, rest) = take_flag(&rest, "--prompt-ids")?;
    let (max_new, rest) = take_flag(&rest, "--max-new-tokens")?;
    let (eos, rest) = take_flag(&rest, "--eos-id")?;
    let (extra, rest) = take_flag(&rest, "--extra-config")?;
    no_extra(&rest)?;
    let Some(checkpoint) = checkpoint else {
        eprint!("{USAGE}");
        bail!("generate needs --checkpoint <folder or file.gguf>");
    };
    let max_new_tokens: u32 = match max_new {
        Some(n) => n
            .parse()
            .with_context(|| format!("--max-new-tokens {n:?} is not a count"))?,
        None => 20,
    };
    let hf = HfCheckpoint::read(&checkpoint).map_err(anyhow::Error::msg)?;
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
    let ids: Vec<u32> = match (prompt, prompt_ids, &tokenizer) {
        (Some(_), Some(_), _) => bail!("give --prompt or --prompt-ids, not both"),
        (Some(text), None, Some(tok)) => tok
            .encode(text.as_str(), true)
            .map_err(|e| anyhow::anyhow!("encoding the prompt {text:?}: {e}"))?
            .get_ids()
            .to_vec(),
        (Some(_), None, None) => bail!(
            "{} has no {}, so the prompt must be given as --prompt-ids",
            hf.folder.display(),
            if hf.is_gguf() {
                "tokenizer metadata"
            } else {
                "tokenizer.json"
            }
        ),
        (None, Some(list), _) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .with_context(|| format!("--prompt-ids: {s:?} is not a token id"))
            })
            .collect::<Result<_>>()?,
        (None, None, _) => bail!("generate needs --prompt TEXT or --prompt-ids 1,2,3"),
    };
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    if show_ids {
        eprintln!("prompt ids: {ids:?}");
    }
    let eos_id = match eos {
        Some(id) => id
            .parse()
            .with_context(|| format!("--eos-id {id:?} is not a token id"))?,
        None => hf.eos_token_id().with_context(|| {
            format!(
                "{} has no eos_token_id; pass --eos-id",
                hf.config_path().display()
            )
        })?,
    };
    build_plugins()?;
    let extra = read_text(extra.as_ref(), "extra config")?;
    let (_, model) =
        open_checkpoint(&hf.folder, &extra, 0, DeviceChoice::FLEX).map_err(anyhow::Error::msg)?;
    let options = GenerateOptions {
        max_new_tokens,
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
    if show_ids && tokenizer.is_some() {
        println!("{out:?}");
    }
    Ok(())
}

/// `export --out <folder> (--checkpoint <folder or file.gguf> [--config F] | --plugin P [--arch A] --config F)
/// [--load <cotune checkpoint file>]`: writes a model as a Hugging Face folder (with the
/// tokenizer of the checkpoint it was opened from: a folder's `tokenizer.json`, or the one a GGUF
/// file's metadata describes).
pub fn export(args: &[String]) -> Result<()> {
    let (out, rest) = take_flag(args, "--out")?;
    let (checkpoint, rest) = take_flag(&rest, "--checkpoint")?;
    let (plugin, rest) = take_flag(&rest, "--plugin")?;
    let (arch, rest) = take_flag(&rest, "--arch")?;
    let (config, rest) = take_flag(&rest, "--config")?;
    let (load, rest) = take_flag(&rest, "--load")?;
    no_extra(&rest)?;
    let Some(out) = out else {
        eprint!("{USAGE}");
        bail!("export needs --out <folder>");
    };
    let config = read_text(config.as_ref(), "config")?;
    build_plugins()?;
    let mut gguf = None;
    let mut model: Model = match (checkpoint, plugin) {
        (Some(folder), None) => {
            if cotune_host::hf::is_gguf(folder.as_ref()) {
                gguf = Some(HfCheckpoint::read(&folder).map_err(anyhow::Error::msg)?);
            }
            open_checkpoint(&folder, &config, 0, DeviceChoice::FLEX)
                .map_err(anyhow::Error::msg)?
                .1
        }
        (None, Some(name)) => {
            if config.trim().is_empty() {
                bail!("export --plugin needs --config <model.toml>");
            }
            let plugin = Plugin::open(&name).map_err(anyhow::Error::msg)?;
            let arch = arch.unwrap_or_else(|| plugin.architectures()[0].clone());
            plugin
                .new_model(&arch, &config, 0, DeviceChoice::FLEX)
                .map_err(anyhow::Error::msg)?
        }
        _ => bail!("export needs either --checkpoint <folder or file.gguf> or --plugin <name>"),
    };
    if let Some(file) = load {
        model.load(&file).map_err(anyhow::Error::msg)?;
    }
    let out = PathBuf::from(out);
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
