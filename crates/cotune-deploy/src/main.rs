//! Runs one experiment or comparison config, or resumes a run folder; prints the folder. Also
//! the two sides of a deployment.
//!
//! ```text
//! cotune-run <config.toml> [--resume <run folder>] [--runs-dir <dir>] [--cache-dir <dir>]
//! cotune-run serve <config.toml> --listen ADDR --certs DIR [--resume <run folder>]
//!            [--runs-dir <dir>] [--cache-dir <dir>] [--address-file FILE]
//! cotune-run device --server https://HOST:PORT --device I --certs DIR --dir D
//! ```
//!
//! `cargo xtask run`, `serve` and `device` are the usual entry points; this binary is what they
//! amount to, usable where the workspace is not (and by the tests that kill a run, a server or
//! a device and start it again).

use std::path::PathBuf;

use anyhow::{bail, Context};
use cotune_protocol::{run_with, RunOptions};

const USAGE: &str = "usage: cotune-run <config.toml> [--resume <run folder>] [--runs-dir <dir>] [--cache-dir <dir>]
       cotune-run serve <config.toml> --listen ADDR --certs DIR [--resume <run folder>] [--runs-dir <dir>] [--cache-dir <dir>] [--address-file FILE] [--data DIR]
       cotune-run device --server https://HOST:PORT --device I --certs DIR --dir D [--data DIR]
       cotune-run split <config.toml> --out DIR";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let mode = match args.peek().map(String::as_str) {
        Some("serve") | Some("device") | Some("split") => args.next(),
        _ => None,
    };
    let mut config = None;
    let (mut resume, mut runs_dir, mut cache_dir) = (None, None, None);
    let (mut listen, mut certs, mut address_file) = (None, None, None);
    let (mut server, mut device, mut dir) = (None, None, None);
    let (mut data, mut out) = (None, None);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--resume" => resume = Some(PathBuf::from(value("--resume")?)),
            "--runs-dir" => runs_dir = Some(PathBuf::from(value("--runs-dir")?)),
            "--cache-dir" => cache_dir = Some(PathBuf::from(value("--cache-dir")?)),
            "--listen" => listen = Some(value("--listen")?),
            "--certs" => certs = Some(PathBuf::from(value("--certs")?)),
            "--address-file" => address_file = Some(PathBuf::from(value("--address-file")?)),
            "--server" => server = Some(value("--server")?),
            "--device" => device = Some(value("--device")?),
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}\n{USAGE}"),
            other => config = Some(PathBuf::from(other)),
        }
    }
    match mode.as_deref() {
        Some("device") => {
            let index = device.context("device needs --device I")?;
            let device: usize = index
                .parse()
                .with_context(|| format!("--device {index:?} is not a device index"))?;
            return cotune_deploy::run_device(&cotune_deploy::DeviceOptions {
                server: server.context("device needs --server https://HOST:PORT")?,
                device,
                certs: certs.context("device needs --certs DIR")?,
                dir: dir.context("device needs --dir D")?,
                root: std::env::current_dir()?,
                data,
            });
        }
        Some("split") => {
            let config = config.context("split needs a config")?;
            let out = out.context("split needs --out DIR")?;
            let root = std::env::current_dir()?;
            let checked = cotune_protocol::check_config(&config, &root)?;
            for dir in cotune_protocol::write_parties(&checked, &root, &out)? {
                println!("{}", dir.display());
            }
            return Ok(());
        }
        Some(_) => {
            if config.is_none() && resume.is_none() {
                bail!("serve needs a config (or --resume <run folder>)\n{USAGE}");
            }
            let listen = listen.context("serve needs --listen ADDR")?;
            let dir = cotune_deploy::serve(&cotune_deploy::ServeOptions {
                run: RunOptions {
                    config: config.unwrap_or_default(),
                    resume,
                    root: std::env::current_dir()?,
                    runs_dir,
                    cache_dir,
                },
                listen: listen
                    .parse()
                    .with_context(|| format!("--listen {listen:?} is not an address"))?,
                certs: certs.context("serve needs --certs DIR")?,
                address_file,
                data,
            })?;
            println!("{}", dir.display());
            return Ok(());
        }
        None => {}
    }
    if config.is_none() && resume.is_none() {
        bail!("{USAGE}");
    }
    let comparison = match (&resume, &config) {
        (Some(dir), _) => dir.join("compare.toml").is_file(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|t| cotune_protocol::compare::is_comparison(&t))
            .unwrap_or(false),
        (None, None) => false,
    };
    let dir = if comparison {
        if cache_dir.is_some() {
            bail!(
                "--cache-dir applies to one run; a comparison's runs use their configs' cache_dir"
            );
        }
        cotune_protocol::compare::run_comparison(
            config.as_deref().unwrap_or("".as_ref()),
            resume.as_deref(),
            &std::env::current_dir()?,
            runs_dir.as_deref(),
        )?
    } else if runs_dir.is_none() && cache_dir.is_none() {
        cotune_protocol::run(config.as_deref().unwrap_or("".as_ref()), resume.as_deref())?
    } else {
        run_with(&RunOptions {
            config: config.unwrap_or_default(),
            resume,
            root: std::env::current_dir()?,
            runs_dir,
            cache_dir,
        })?
    };
    println!("{}", dir.display());
    Ok(())
}
