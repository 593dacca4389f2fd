//! What the deployment's commands of `cotune_cli` do, for both binaries that offer them
//! (`cotune-run` and `cargo xtask`): the parsed arguments mapped to this crate's options, and
//! `certs`.

use std::path::{Path, PathBuf};

use cotune_cli::{CertsAction, CertsArgs, DeviceArgs, ServeArgs, SplitArgs};
use cotune_net::{PartyFiles, ServerNames};
use cotune_protocol::RunOptions;

use crate::{DeviceOptions, ServeOptions};

/// `serve`: the server side of a run; returns its run folder. Relative paths from `root`.
pub fn serve_command(args: ServeArgs, root: PathBuf) -> anyhow::Result<PathBuf> {
    crate::serve(&ServeOptions {
        run: RunOptions {
            config: args.config().map(Path::to_path_buf).unwrap_or_default(),
            resume: args.resume,
            root,
            runs_dir: args.folders.runs_dir,
            cache_dir: args.folders.cache_dir,
        },
        listen: args.listen,
        certs: args.certs,
        revoked: args.revoked,
        address_file: args.address_file,
        data: args.data,
    })
}

/// `device`: one device until the run finishes. Relative paths from `root`.
pub fn device_command(args: DeviceArgs, root: PathBuf) -> anyhow::Result<()> {
    crate::run_device(&DeviceOptions {
        dir: args.dir(&root),
        server: args.server,
        server_name: args.server_name,
        device: args.device,
        certs: args.certs,
        data: args.data,
        root,
    })
}

/// `split`: every party's share of the config's data in a folder of its own under `--out`;
/// returns the folders written (the server's first).
pub fn split_command(args: &SplitArgs, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let config = cotune_protocol::check_config(&args.config, root)?;
    cotune_protocol::write_parties(&config, root, &args.out)
}

/// `certs`: a new CA with the server's and every device's certificate, or one more device's
/// certificate from a kept CA; returns the lines to print (what was written, and where each
/// folder goes).
pub fn certs_command(args: &CertsArgs) -> anyhow::Result<Vec<String>> {
    let folder = |files: &PartyFiles, goes: String| {
        format!(
            "  {}: {}, {}, {} ({goes})",
            files.dir.display(),
            file_name(&files.ca),
            file_name(&files.cert),
            file_name(&files.key)
        )
    };
    match args.action().map_err(anyhow::Error::msg)? {
        CertsAction::Make {
            out,
            devices,
            server_names,
            server_ips,
        } => {
            let names = match (server_names.is_empty(), server_ips.is_empty()) {
                (true, true) => ServerNames::loopback(),
                _ => ServerNames {
                    dns: server_names.to_vec(),
                    ips: server_ips.to_vec(),
                },
            };
            let made = cotune_net::make_certs(out, devices, &names)?;
            let mut lines = vec![
                format!(
                    "wrote a CA, a server certificate for {} and {devices} device certificates \
                     to {}:",
                    names.all().join(", "),
                    out.display()
                ),
                format!(
                    "  {}: ca.pem, ca.key, issued.txt (keep it private: `certs add-device` signs \
                     with its key)",
                    made.ca_dir().display()
                ),
                folder(
                    &made.server,
                    "copy it to the server: serve --certs".to_string(),
                ),
            ];
            for (i, files) in made.devices.iter().enumerate() {
                lines.push(folder(
                    files,
                    format!("copy it to device {i}: device --certs"),
                ));
            }
            Ok(lines)
        }
        CertsAction::AddDevice(add) => {
            let files = cotune_net::add_device(&add.ca, add.out.as_deref(), add.device)?;
            Ok(vec![
                format!("wrote a certificate for device {}:", add.device),
                folder(
                    &files,
                    format!("copy it to device {}: device --certs", add.device),
                ),
            ])
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}
