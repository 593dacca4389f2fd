//! Runs an experiment config until `cargo xtask run` is wired:
//! `cargo run --release -p cotune-protocol --example run -- configs/smoke.toml [--resume DIR]`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = args
        .first()
        .map(String::as_str)
        .unwrap_or("configs/default.toml");
    let resume = match args.iter().position(|a| a == "--resume") {
        Some(i) => Some(std::path::PathBuf::from(
            args.get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("--resume needs a run folder"))?,
        )),
        None => None,
    };
    let dir = cotune_protocol::run(std::path::Path::new(config), resume.as_deref())?;
    println!("{}", dir.display());
    Ok(())
}
