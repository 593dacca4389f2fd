//! The command lines that `cotune-run` and `cargo xtask` share: `run`, `serve`, `device`,
//! `certs`, `split` and `score`, as clap definitions. `cotune-run --help`,
//! `cargo xtask --help` and `<command> --help` list the flags and their defaults; the doc
//! comments here are that text.
//!
//! Parsing ends in a [`Command`]; each binary maps it to library calls itself (`cargo xtask`
//! builds the plugins and enters the workspace root first, `cotune-run` takes the current
//! folder as the root), so this crate depends on nothing of the workspace. [`CotuneRun`] is
//! `cotune-run`'s whole command line, which also takes `run`'s arguments without the word
//! `run` (`cotune-run configs/smoke.toml`).
//!
//! Every value is checked while parsing, and an error names the flag and the value
//! (`invalid value 'localhost:x' for '--listen <ADDR>': ...`).

#![warn(missing_docs)]
// The doc comments are `--help` text, where `<I>` stands for a flag's value as clap writes it,
// not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand};

/// The config `run` reads when none is given (relative, like every path, to the folder the
/// binary takes as the root).
pub const DEFAULT_CONFIG: &str = "configs/default.toml";

/// A command both `cotune-run` and `cargo xtask` offer.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run an experiment or comparison config into a new run folder, or resume one.
    ///
    /// Prints the run folder (`runs/<name>-<timestamp>` unless --runs-dir or the config's
    /// `runs_dir` say otherwise). A comparison config runs each of its variants and seeds.
    Run(RunArgs),
    /// The server side of a run whose devices are their own processes (gRPC, mutual TLS).
    ///
    /// Writes the same run folder and metrics as `run`; the devices connect with `device`
    /// (docs/deployment.md).
    Serve(ServeArgs),
    /// One device of a run that `serve` runs: it dials the server and trains its own models.
    ///
    /// It stops by itself when the run has finished, and at once on a TLS or authentication
    /// failure.
    Device(DeviceArgs),
    /// A CA, a server certificate and one client certificate per device, as PEM, each party in
    /// a folder of its own; or `certs add-device`: one more device's certificate later.
    ///
    /// Writes ca/ (the CA's certificate and its kept key), server/ and device-<i>/ under --out;
    /// private keys with mode 0600. The server certificate names --server-name and --server-ip,
    /// by default localhost, 127.0.0.1 and ::1. Each call makes a new CA: certificates of two
    /// calls do not trust each other.
    Certs(CertsArgs),
    /// Write each party's data into its own folder, for `serve --data` and `device --data`.
    Split(SplitArgs),
    /// Exact match and Rouge-L of a file of {"prediction", "reference"} JSON lines.
    Score(ScoreArgs),
}

/// `run`: the config, or the run folder to resume, and where the run's folders go.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunArgs {
    /// The experiment or comparison config (TOML); the same as --config.
    #[arg(value_name = "CONFIG", conflicts_with = "config")]
    config_file: Option<PathBuf>,
    /// The experiment or comparison config (TOML).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Continue the run (or comparison) in RUN_DIR from its last completed round, with the
    /// config it saved (a config given with it is not read).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Where the run's folders go.
    #[command(flatten)]
    pub folders: RunFolders,
}

impl RunArgs {
    /// The config file: the positional one, else `--config` (default [`DEFAULT_CONFIG`]).
    pub fn config(&self) -> &Path {
        self.config_file.as_deref().unwrap_or(&self.config)
    }
}

/// Where a run's folders go, in place of its config's `runs_dir` and `cache_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct RunFolders {
    /// Make the run folder under DIR [default: the config's runs_dir, itself runs/ by
    /// default].
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Keep pre-trained models in DIR [default: the config's cache_dir, itself runs/cache by
    /// default]; a comparison's runs keep their configs' own.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `serve`: the run (a config or a run folder to resume), the address, the certificates.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
// A config is needed unless the run is resumed; the group puts that in the usage line and
// names every way of giving one when none is.
#[command(group(
    ArgGroup::new("run")
        .args(["config_file", "config", "resume"])
        .required(true)
        .multiple(true)
))]
pub struct ServeArgs {
    /// The experiment config (TOML); the same as --config.
    #[arg(value_name = "CONFIG", conflicts_with = "config")]
    config_file: Option<PathBuf>,
    /// The experiment config (TOML); needed unless --resume is given.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on: an IP address and a port, e.g. 0.0.0.0:50051 (port 0: any
    /// free port; see --address-file).
    #[arg(long, value_name = "ADDR", value_parser = socket_address)]
    pub listen: SocketAddr,
    /// The server's certificate folder (ca.pem, server.pem, server.key): the server/ folder
    /// `certs` wrote, or the folder holding it.
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
    /// The revocation list: lines `device <I>` or `serial <HEX>`, read again whenever it
    /// changes [default: revoked.txt in the server's certificate folder; none: nothing
    /// revoked].
    #[arg(long, value_name = "FILE")]
    pub revoked: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last completed round, with the config it saved;
    /// the devices reconnect by themselves.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Where the run's folders go.
    #[command(flatten)]
    pub folders: RunFolders,
    /// Write the address the server listens on into FILE once it does (useful with port 0).
    #[arg(long, value_name = "FILE")]
    pub address_file: Option<PathBuf>,
    /// The server's own data folder (from `split`): the public corpus and the questions it
    /// scores the LLM on [default: the config's data folder].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl ServeArgs {
    /// The config file, positional or `--config`; `None` only when resuming.
    pub fn config(&self) -> Option<&Path> {
        self.config_file.as_deref().or(self.config.as_deref())
    }
}

/// `device`: which device, the server it dials, its certificates and its folders.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DeviceArgs {
    /// The server's address, https://HOST:PORT.
    #[arg(long, value_name = "URL", value_parser = server_url)]
    pub server: String,
    /// The name the server's certificate must carry, a DNS name or an IP address (when the
    /// address dialled is not a name the certificate carries) [default: the HOST of --server].
    #[arg(long, value_name = "NAME", value_parser = server_name)]
    pub server_name: Option<String>,
    /// This device's index among the config's devices, from 0 (its certificate names it).
    // Negative numbers reach the parser, so `-1` is refused as a value of --device.
    #[arg(long, value_name = "I", allow_negative_numbers = true)]
    pub device: usize,
    /// The device's certificate folder (ca.pem, device.pem, device.key): the device-<I>/ folder
    /// `certs` wrote, or the folder holding it.
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
    /// The device's own folder: the config it was sent, its setup, its state, its predictions
    /// and its pre-training cache [default: runs/device-<I>].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The device's own data folder (from `split`): its training and test questions
    /// [default: the config's data folder].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl DeviceArgs {
    /// The device's folder: `--dir`, else `runs/device-<I>` under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None => root.join(format!("runs/device-{}", self.device)),
        }
    }
}

/// `certs`: where the files go, for how many devices, and the server's names; or
/// `certs add-device`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CertsArgs {
    /// `add-device`: one more device's certificate, from the CA a first call kept.
    #[command(subcommand)]
    pub command: Option<CertsCommand>,
    /// The folder to write ca/, server/ and device-<i>/ into (it must not hold a CA yet).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: Option<PathBuf>,
    /// How many device certificates to make (device-0 to device-<N-1>), at least 1.
    #[arg(
        long,
        value_name = "N",
        value_parser = device_count,
        allow_negative_numbers = true,
        required = true
    )]
    pub devices: Option<usize>,
    /// A DNS name the server certificate carries, the host devices dial (repeatable)
    /// [default: with no --server-ip either, localhost, 127.0.0.1 and ::1].
    #[arg(long = "server-name", value_name = "NAME", value_parser = dns_name)]
    pub server_names: Vec<String>,
    /// An IP address the server certificate carries (repeatable).
    #[arg(long = "server-ip", value_name = "IP")]
    pub server_ips: Vec<IpAddr>,
}

/// What `certs` does besides making a new CA.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CertsCommand {
    /// A certificate for one more device, signed with the CA key a first `certs` kept.
    ///
    /// Writes device-<I>/ (ca.pem, device.pem, device.key) beside the CA's folder, or under
    /// --out; refuses a device folder that exists.
    AddDevice(AddDeviceArgs),
}

/// `certs add-device`: the CA, the device, where its folder goes.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AddDeviceArgs {
    /// The CA's folder (ca.pem, ca.key): the ca/ folder `certs` wrote, or the folder holding
    /// it.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The new device's index.
    #[arg(long, value_name = "I", allow_negative_numbers = true)]
    pub device: u32,
    /// Where device-<I>/ goes [default: the folder holding the CA's folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What a parsed `certs` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertsAction<'a> {
    /// A new CA, the server's certificate for these names and `devices` devices' in `out`.
    Make {
        /// `--out`.
        out: &'a Path,
        /// `--devices`.
        devices: usize,
        /// `--server-name`, possibly none.
        server_names: &'a [String],
        /// `--server-ip`, possibly none.
        server_ips: &'a [IpAddr],
    },
    /// `add-device`.
    AddDevice(&'a AddDeviceArgs),
}

impl CertsArgs {
    /// What to do; an error only for arguments clap would not have let through.
    pub fn action(&self) -> Result<CertsAction<'_>, String> {
        match (&self.command, &self.out, self.devices) {
            (Some(CertsCommand::AddDevice(add)), _, _) => Ok(CertsAction::AddDevice(add)),
            (None, Some(out), Some(devices)) => Ok(CertsAction::Make {
                out,
                devices,
                server_names: &self.server_names,
                server_ips: &self.server_ips,
            }),
            _ => Err("certs needs --out and --devices, or add-device".to_string()),
        }
    }
}

/// `split`: the config whose data is split, and where the parties' folders go.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SplitArgs {
    /// The experiment config (TOML) whose data is split.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The folder to write one folder per party into (the server's, each device's).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `score`: the predictions file and whether to print every line's scores.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ScoreArgs {
    /// A file of {"prediction": ..., "reference": ...} JSON lines, e.g. a run's predictions.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print each line's exact match and Rouge-L too, not only the means.
    #[arg(long)]
    pub per_line: bool,
}

/// `cotune-run`'s command line: one of the [`Command`]s, or `run`'s arguments alone.
#[derive(Debug, Parser)]
#[command(
    name = "cotune-run",
    about = "Runs an experiment or comparison, or one side of a deployment; prints the folder \
             it wrote",
    long_about = "Runs an experiment or comparison, or one side of a deployment; prints the \
                  folder it wrote.\n\nWithout a command, the arguments are run's: \
                  `cotune-run configs/smoke.toml` is `cotune-run run configs/smoke.toml`. \
                  Relative paths are taken from the current folder.",
    // The form without a command keeps working: `run`'s arguments stand at the top level and
    // exclude a command, so the first word is a command only when it names one.
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
pub struct CotuneRun {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

impl CotuneRun {
    /// The command given, or `run` with the top-level arguments.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// `--listen`: a socket address; host names are refused rather than resolved, so the server
/// binds exactly what was asked.
fn socket_address(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        "not an IP address and port such as 0.0.0.0:50051 or [::1]:50051 (host names are not \
         resolved)"
            .to_string()
    })
}

/// `--server`: devices reach the server over TLS only, so anything but https:// is a mistake
/// best caught before the device sets up.
fn server_url(value: &str) -> Result<String, String> {
    match value.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with(':') => Ok(value.to_string()),
        _ => Err("not a server address of the form https://HOST:PORT".to_string()),
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens (not at either end of a
/// label), each at most 63 characters, at most 253 in all; not an IP address.
fn is_dns_name(value: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !value.is_empty()
        && value.len() <= 253
        && value.parse::<IpAddr>().is_err()
        && value.split('.').all(label)
        // The last label of a name is never all digits (that would be an address).
        && !value
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// `certs --server-name`: a DNS name (addresses go to --server-ip).
fn dns_name(value: &str) -> Result<String, String> {
    if value.parse::<IpAddr>().is_ok() {
        return Err("an IP address: give it with --server-ip".to_string());
    }
    match is_dns_name(value) {
        true => Ok(value.to_string()),
        false => {
            Err("not a DNS name (letters, digits and hyphens in dot-separated labels)".to_string())
        }
    }
}

/// `device --server-name`: a DNS name or an IP address.
fn server_name(value: &str) -> Result<String, String> {
    match value.parse::<IpAddr>().is_ok() || is_dns_name(value) {
        true => Ok(value.to_string()),
        false => Err("neither a DNS name nor an IP address".to_string()),
    }
}

/// `--devices`: a count of at least one.
fn device_count(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("a deployment needs at least one device".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a count of devices".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    /// `cotune-run` parsing `args` (without the program name).
    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        CotuneRun::try_parse_from(std::iter::once("cotune-run").chain(args.iter().copied()))
            .map(CotuneRun::into_command)
    }

    /// The rendered error of a command line that must fail, checked to name every `expect`.
    fn refused(args: &[&str], expect: &[&str]) -> clap::Error {
        let err = parse(args).expect_err(&format!("{args:?} was accepted"));
        let text = err.to_string();
        for e in expect {
            assert!(text.contains(e), "{args:?}: {e:?} not in:\n{text}");
        }
        err
    }

    const SERVE: [&str; 6] = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--certs",
        "certs",
        "configs/smoke.toml",
    ];
    const DEVICE: [&str; 7] = [
        "device",
        "--server",
        "https://127.0.0.1:50051",
        "--device",
        "2",
        "--certs",
        "certs",
    ];

    #[test]
    fn the_definitions_pass_clap_s_own_checks() {
        CotuneRun::command().debug_assert();
    }

    #[test]
    fn every_command_s_help_renders_with_its_flags_and_defaults() {
        for (command, expect) in [
            (
                "run",
                &[
                    "--config",
                    "--resume",
                    "--runs-dir",
                    "--cache-dir",
                    DEFAULT_CONFIG,
                ][..],
            ),
            (
                "serve",
                &[
                    "--listen",
                    "--certs",
                    "--revoked",
                    "--resume",
                    "--address-file",
                    "--data",
                    "--runs-dir",
                ],
            ),
            (
                "device",
                &[
                    "--server",
                    "--server-name",
                    "the HOST of --server",
                    "--device",
                    "--certs",
                    "--dir",
                    "runs/device-<I>",
                    "--data",
                ],
            ),
            (
                "certs",
                &[
                    "--out",
                    "--devices",
                    "at least 1",
                    "--server-name",
                    "--server-ip",
                    "add-device",
                ],
            ),
            ("split", &["--config", "--out"]),
            ("score", &["<FILE>", "--per-line"]),
        ] {
            let err = parse(&[command, "--help"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{command}");
            let help = err.to_string();
            for e in expect {
                assert!(help.contains(e), "{command} --help lacks {e:?}:\n{help}");
            }
        }
        let top = parse(&["--help"]).unwrap_err().to_string();
        for command in ["run", "serve", "device", "certs", "split", "score"] {
            assert!(top.contains(command), "{command} not in:\n{top}");
        }
    }

    #[test]
    fn run_takes_its_config_by_position_or_flag_and_defaults_it() {
        let config = |args: &[&str]| match parse(args).unwrap() {
            Command::Run(run) => run.config().to_path_buf(),
            other => panic!("{args:?} parsed as {other:?}"),
        };
        assert_eq!(config(&["run", "a.toml"]), Path::new("a.toml"));
        assert_eq!(config(&["run", "--config", "b.toml"]), Path::new("b.toml"));
        assert_eq!(config(&["run"]), Path::new(DEFAULT_CONFIG));
        refused(
            &["run", "a.toml", "--config", "b.toml"],
            &["'[CONFIG]' cannot be used with '--config <FILE>'"],
        );
    }

    #[test]
    fn without_a_command_the_arguments_are_run_s() {
        let Command::Run(run) = parse(&[
            "configs/smoke.toml",
            "--runs-dir",
            "r",
            "--cache-dir",
            "c",
            "--resume",
            "runs/x",
        ])
        .unwrap() else {
            panic!("not run");
        };
        assert_eq!(run.config(), Path::new("configs/smoke.toml"));
        assert_eq!(run.folders.runs_dir.as_deref(), Some(Path::new("r")));
        assert_eq!(run.folders.cache_dir.as_deref(), Some(Path::new("c")));
        assert_eq!(run.resume.as_deref(), Some(Path::new("runs/x")));
        // The same with the word.
        assert!(matches!(
            parse(&["run", "configs/smoke.toml"]),
            Ok(Command::Run(_))
        ));
        // Nothing at all: the help, as an error (nothing was run).
        let err = parse(&[]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        // A command after run's arguments is not one.
        refused(&["configs/smoke.toml", "serve"], &["'serve'"]);
    }

    #[test]
    fn serve_parses_every_flag() {
        let mut args = SERVE.to_vec();
        args.extend([
            "--resume",
            "runs/r",
            "--runs-dir",
            "rd",
            "--cache-dir",
            "cd",
            "--address-file",
            "addr",
            "--data",
            "server-data",
            "--revoked",
            "revoked.txt",
        ]);
        let Command::Serve(serve) = parse(&args).unwrap() else {
            panic!("not serve");
        };
        assert_eq!(serve.config(), Some(Path::new("configs/smoke.toml")));
        assert_eq!(serve.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(serve.certs, Path::new("certs"));
        assert_eq!(serve.resume.as_deref(), Some(Path::new("runs/r")));
        assert_eq!(serve.folders.runs_dir.as_deref(), Some(Path::new("rd")));
        assert_eq!(serve.folders.cache_dir.as_deref(), Some(Path::new("cd")));
        assert_eq!(serve.address_file.as_deref(), Some(Path::new("addr")));
        assert_eq!(serve.data.as_deref(), Some(Path::new("server-data")));
        assert_eq!(serve.revoked.as_deref(), Some(Path::new("revoked.txt")));
        // --config instead of the position; --resume alone.
        let by_flag = parse(&[
            "serve", "--config", "c.toml", "--listen", "[::1]:1", "--certs", "d",
        ]);
        assert!(
            matches!(by_flag, Ok(Command::Serve(s)) if s.config() == Some(Path::new("c.toml")))
        );
        let resumed = parse(&[
            "serve", "--resume", "runs/r", "--listen", "[::1]:1", "--certs", "d",
        ]);
        assert!(matches!(resumed, Ok(Command::Serve(s)) if s.config().is_none()));
    }

    #[test]
    fn serve_refuses_a_bad_or_missing_value_naming_the_flag() {
        refused(
            &["serve", "c.toml", "--listen", "localhost:x", "--certs", "d"],
            &["--listen", "'localhost:x'", "not an IP address and port"],
        );
        refused(
            &["serve", "c.toml", "--listen", "127.0.0.1", "--certs", "d"],
            &["--listen", "'127.0.0.1'"],
        );
        refused(&["serve", "c.toml", "--certs", "d"], &["--listen <ADDR>"]);
        refused(
            &["serve", "c.toml", "--listen", "127.0.0.1:0"],
            &["--certs <DIR>"],
        );
        // Neither a config nor a run folder: every way of giving one is named.
        refused(
            &["serve", "--listen", "127.0.0.1:0", "--certs", "d"],
            &["<CONFIG|--config <FILE>|--resume <RUN_DIR>>"],
        );
        refused(
            &[
                "serve",
                "a.toml",
                "--config",
                "b.toml",
                "--listen",
                "127.0.0.1:0",
                "--certs",
                "d",
            ],
            &["--config", "cannot be used with"],
        );
        let mut args = SERVE.to_vec();
        args.push("--runs-dir");
        refused(&args, &["--runs-dir <DIR>", "a value is required"]);
        let mut args = SERVE.to_vec();
        args.push("--bogus");
        refused(&args, &["'--bogus'"]);
    }

    #[test]
    fn device_parses_every_flag_and_defaults_its_folder() {
        let Command::Device(device) = parse(&DEVICE).unwrap() else {
            panic!("not device");
        };
        assert_eq!(device.server, "https://127.0.0.1:50051");
        assert_eq!(device.device, 2);
        assert_eq!(device.certs, Path::new("certs"));
        assert_eq!(device.dir(Path::new("/r")), Path::new("/r/runs/device-2"));
        assert_eq!(device.data, None);
        assert_eq!(device.server_name, None);
        let mut args = DEVICE.to_vec();
        args.extend(["--dir", "mine", "--data", "device-data"]);
        args.extend(["--server-name", "server.example.org"]);
        let Command::Device(device) = parse(&args).unwrap() else {
            panic!("not device");
        };
        assert_eq!(device.dir(Path::new("/r")), Path::new("mine"));
        assert_eq!(device.data.as_deref(), Some(Path::new("device-data")));
        assert_eq!(device.server_name.as_deref(), Some("server.example.org"));
        // An address is a name a certificate can carry too.
        let mut args = DEVICE.to_vec();
        args.extend(["--server-name", "::1"]);
        assert!(matches!(
            parse(&args),
            Ok(Command::Device(d)) if d.server_name.as_deref() == Some("::1")
        ));
    }

    #[test]
    fn device_refuses_a_bad_or_missing_value_naming_the_flag() {
        let with = |flag: &str, value: &'static str| {
            let mut args = DEVICE.to_vec();
            let at = args.iter().position(|a| *a == flag).unwrap();
            args[at + 1] = value;
            args
        };
        refused(&with("--device", "one"), &["--device <I>", "'one'"]);
        refused(
            &with("--device", "-1"),
            &["invalid value '-1' for '--device <I>'"],
        );
        refused(
            &with("--server", "http://127.0.0.1:1"),
            &[
                "--server <URL>",
                "'http://127.0.0.1:1'",
                "https://HOST:PORT",
            ],
        );
        refused(
            &with("--server", "https://"),
            &["--server <URL>", "'https://'"],
        );
        refused(
            &["device", "--device", "0", "--certs", "d"],
            &["--server <URL>"],
        );
        refused(
            &["device", "--server", "https://h:1", "--certs", "d"],
            &["--device <I>"],
        );
        refused(
            &["device", "--server", "https://h:1", "--device", "0"],
            &["--certs <DIR>"],
        );
        refused(&["device", "--bogus"], &["'--bogus'"]);
        let mut args = DEVICE.to_vec();
        args.extend(["--server-name", "not a name"]);
        refused(
            &args,
            &[
                "invalid value 'not a name' for '--server-name <NAME>'",
                "neither a DNS name nor an IP address",
            ],
        );
    }

    #[test]
    fn certs_needs_a_folder_and_at_least_one_device() {
        let Command::Certs(certs) = parse(&["certs", "--out", "c", "--devices", "3"]).unwrap()
        else {
            panic!("not certs");
        };
        assert_eq!(
            certs.action().unwrap(),
            CertsAction::Make {
                out: Path::new("c"),
                devices: 3,
                server_names: &[],
                server_ips: &[],
            }
        );
        refused(
            &["certs", "--out", "c", "--devices", "0"],
            &["--devices <N>", "'0'", "at least one device"],
        );
        refused(
            &["certs", "--out", "c", "--devices", "two"],
            &["--devices <N>", "'two'", "not a count"],
        );
        refused(&["certs", "--devices", "2"], &["--out <DIR>"]);
        refused(&["certs", "--out", "c"], &["--devices <N>"]);
        refused(
            &["certs", "--out", "c", "--devices", "-2"],
            &["invalid value '-2' for '--devices <N>'"],
        );
    }

    #[test]
    fn certs_takes_the_server_s_names_and_addresses_and_checks_them() {
        let Command::Certs(certs) = parse(&[
            "certs",
            "--out",
            "c",
            "--devices",
            "2",
            "--server-name",
            "server.example.org",
            "--server-name",
            "cotune-1",
            "--server-ip",
            "127.0.0.2",
            "--server-ip",
            "::1",
        ])
        .unwrap() else {
            panic!("not certs");
        };
        let CertsAction::Make {
            server_names,
            server_ips,
            ..
        } = certs.action().unwrap()
        else {
            panic!("not make");
        };
        assert_eq!(server_names, ["server.example.org", "cotune-1"]);
        assert_eq!(
            server_ips,
            [
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let make = ["certs", "--out", "c", "--devices", "1"];
        for (flag, value, expect) in [
            (
                "--server-name",
                "127.0.0.2",
                "an IP address: give it with --server-ip",
            ),
            ("--server-name", "bad name", "not a DNS name"),
            ("--server-name", "x-.example.org", "not a DNS name"),
            ("--server-name", "a..b", "not a DNS name"),
            ("--server-name", "*.example.org", "not a DNS name"),
            (
                "--server-ip",
                "server.example.org",
                "invalid IP address syntax",
            ),
        ] {
            let mut args = make.to_vec();
            args.extend([flag, value]);
            refused(
                &args,
                &[&format!("invalid value '{value}' for '{flag} <"), expect],
            );
        }
    }

    #[test]
    fn certs_add_device_needs_the_ca_and_the_device() {
        let Command::Certs(certs) =
            parse(&["certs", "add-device", "--ca", "c/ca", "--device", "4"]).unwrap()
        else {
            panic!("not certs");
        };
        assert_eq!(
            certs.action().unwrap(),
            CertsAction::AddDevice(&AddDeviceArgs {
                ca: "c/ca".into(),
                device: 4,
                out: None,
            })
        );
        let Command::Certs(certs) = parse(&[
            "certs",
            "add-device",
            "--ca",
            "c",
            "--device",
            "0",
            "--out",
            "elsewhere",
        ])
        .unwrap() else {
            panic!("not certs");
        };
        assert!(matches!(
            certs.action(),
            Ok(CertsAction::AddDevice(a)) if a.out.as_deref() == Some(Path::new("elsewhere"))
        ));
        refused(&["certs", "add-device", "--device", "1"], &["--ca <DIR>"]);
        refused(&["certs", "add-device", "--ca", "c"], &["--device <I>"]);
        refused(
            &["certs", "add-device", "--ca", "c", "--device", "-1"],
            &["invalid value '-1' for '--device <I>'"],
        );
        // A new CA's flags do not mix with add-device.
        refused(
            &[
                "certs",
                "--out",
                "c",
                "add-device",
                "--ca",
                "c",
                "--device",
                "1",
            ],
            &["add-device"],
        );
    }

    #[test]
    fn split_needs_a_config_and_a_folder() {
        assert_eq!(
            parse(&["split", "--config", "c.toml", "--out", "parts"]).unwrap(),
            Command::Split(SplitArgs {
                config: "c.toml".into(),
                out: "parts".into()
            })
        );
        refused(&["split", "--out", "parts"], &["--config <FILE>"]);
        refused(&["split", "--config", "c.toml"], &["--out <DIR>"]);
        refused(&["split", "c.toml", "--out", "parts"], &["'c.toml'"]);
    }

    #[test]
    fn score_takes_one_file() {
        assert_eq!(
            parse(&["score", "p.jsonl", "--per-line"]).unwrap(),
            Command::Score(ScoreArgs {
                file: "p.jsonl".into(),
                per_line: true
            })
        );
        refused(&["score"], &["<FILE>"]);
        refused(&["score", "a.jsonl", "b.jsonl"], &["'b.jsonl'"]);
        refused(&["score", "a.jsonl", "--per-line=yes"], &["--per-line"]);
    }

    #[test]
    fn an_unknown_command_is_named() {
        // Without a command the first word is run's config; a second is not expected.
        refused(&["frobnicate", "x"], &["'x'"]);
        refused(&["--frobnicate"], &["'--frobnicate'"]);
    }
}
