//! Writes every skill domain's file: `write_skills <dir> <count> <seed>`.
//!
//! `cargo run -p cotune-skills --example write_skills -- data/skills 5000 0`

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, count, seed] = args.as_slice() else {
        anyhow::bail!("usage: write_skills <dir> <count> <seed>");
    };
    let count: usize = count
        .parse()
        .with_context(|| format!("count `{count}` is not a whole number"))?;
    let seed: u64 = seed
        .parse()
        .with_context(|| format!("seed `{seed}` is not a whole number"))?;
    for written in cotune_skills::write_all(&PathBuf::from(dir), count, seed)? {
        println!("{:>6} {}", written.rows, written.path.display());
    }
    Ok(())
}
