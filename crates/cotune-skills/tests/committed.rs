//! The committed `data/skills` files are what the generator writes for seed 0.

use std::path::PathBuf;

fn repo_root() -> PathBuf {
    // crates/cotune-skills -> the repository root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is two folders below the root")
        .to_path_buf()
}

#[test]
fn committed_files_regenerate_exactly() {
    for domain in ["addition", "lexicon_a"] {
        let path = repo_root()
            .join("data")
            .join("skills")
            .join(format!("{domain}.jsonl"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let regenerated: String = cotune_skills::generate(domain, 5_000, 0)
            .unwrap()
            .iter()
            .map(|record| cotune_skills::json_line(record) + "\n")
            .collect();
        assert!(
            committed == regenerated,
            "{} differs from the generator's output for seed 0; regenerate data/skills",
            path.display()
        );
    }
}

#[test]
fn every_committed_file_loads_with_the_documented_rows() {
    let dir = repo_root().join("data").join("skills");
    for domain in cotune_skills::DOMAINS {
        let rows = 5_000.min(cotune_skills::capacity(domain).unwrap());
        let path = dir.join(format!("{domain}.jsonl"));
        let records = cotune_data::load_jsonl(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert_eq!(records.len(), rows, "{}", path.display());
        assert!(records.iter().all(|r| r.domain == *domain));
    }
}
