//! What the deployment's commands of `cotune_cli` do, for both binaries that offer them
//! (`cotune-run` and `cargo xtask`): the parsed arguments mapped to this crate's options.

use std::path::{Path, PathBuf};

use cotune_cli::{DeviceArgs, ServeArgs, SplitArgs};
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
        address_file: args.address_file,
        data: args.data,
    })
}

/// `device`: one device until the run finishes. Relative paths from `root`.
pub fn device_command(args: DeviceArgs, root: PathBuf) -> anyhow::Result<()> {
    crate::run_device(&DeviceOptions {
        dir: args.dir(&root),
        server: args.server,
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
