//! Checkpoints and resuming. After every round the server writes its models to
//! `<run>/state/` and the fleet what the run holds of its devices (in one process their
//! models; deployed devices keep their own state), then `state.json` (schedule counters, the
//! first download's bytes, the last completed round) is written last and atomically: its
//! presence means the round's models are whole. Resuming builds the experiment bare
//! ([`crate::setup`], [`crate::fleet`]), then [`Experiment::restore`] reads everything back.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::records::{read_metrics, RoundRecord};
use crate::roles::{DeviceSteps, ServerSteps};
use crate::setup::Experiment;

/// `state/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The last completed round.
    pub completed: usize,
    /// The server's counters.
    pub server: ServerSteps,
    /// Each device's counters (none for devices that keep their own state).
    #[serde(default)]
    pub devices: Vec<DeviceSteps>,
    /// Bytes each device received before round 1.
    pub initial_down: Vec<u64>,
}

/// What a run folder holds to resume from: its checkpoint and the records of the completed
/// rounds.
pub(crate) struct Resumable {
    pub checkpoint: Checkpoint,
    pub records: Vec<RoundRecord>,
}

/// Reads the resumable state of `run_dir`; `None` when it was stopped before round 1 was
/// checkpointed (the run then starts over in the same folder).
pub(crate) fn read(run_dir: &Path) -> anyhow::Result<Option<Resumable>> {
    let path = run_dir.join("state/state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let checkpoint: Checkpoint =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let metrics = run_dir.join("metrics.jsonl");
    let records = if metrics.is_file() {
        read_metrics(&metrics)?
    } else {
        Vec::new()
    };
    let records = records
        .into_iter()
        .filter(|r| r.round <= checkpoint.completed)
        .collect();
    Ok(Some(Resumable {
        checkpoint,
        records,
    }))
}

impl Experiment {
    /// Writes every model and then `state.json` for round `round`.
    pub(crate) fn save_checkpoint(&mut self, round: usize) -> anyhow::Result<()> {
        let dir = self.run_dir.join("state");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let server = self.server.save(&dir)?;
        let devices = self.fleet.save(&dir)?;
        let checkpoint = Checkpoint {
            completed: round,
            server,
            devices,
            initial_down: self.initial_down.clone(),
        };
        let partial = dir.join("state.json.partial");
        std::fs::write(&partial, serde_json::to_string_pretty(&checkpoint)?)?;
        std::fs::rename(&partial, dir.join("state.json"))?;
        Ok(())
    }

    /// Reads back every model and counter of `checkpoint`.
    pub(crate) fn restore(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let dir = self.run_dir.join("state");
        self.server.restore(&dir, &checkpoint.server)?;
        self.fleet.restore(&dir, &checkpoint.devices)?;
        self.initial_down = checkpoint.initial_down.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_state_starts_over_and_a_bad_state_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/state.json"), "{\"completed\": 1}").unwrap();
        let err = format!("{:#}", read(dir.path()).err().unwrap());
        assert!(err.contains("state.json"), "{err}");
    }

    #[test]
    fn only_completed_rounds_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let checkpoint = Checkpoint {
            completed: 1,
            server: ServerSteps {
                llm: 4,
                method: serde_json::json!([2]),
            },
            devices: vec![DeviceSteps {
                slm: 3,
                method: serde_json::json!([1, 2]),
            }],
            initial_down: vec![10],
        };
        std::fs::write(
            dir.path().join("state/state.json"),
            serde_json::to_string(&checkpoint).unwrap(),
        )
        .unwrap();
        let record = |round| RoundRecord {
            round,
            method: "standalone".into(),
            devices: Vec::new(),
            llm: None,
            server_losses: Default::default(),
            uploads: None,
            seconds: 0.0,
            alignment_seconds: None,
        };
        let lines: Vec<String> = (0..3)
            .map(|r| serde_json::to_string(&record(r)).unwrap())
            .collect();
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let r = read(dir.path()).unwrap().unwrap();
        assert_eq!(r.checkpoint, checkpoint);
        assert_eq!(r.records.len(), 2, "rounds 0 and 1");
    }
}

/// `read` on damaged run folders (`state/state.json` and `metrics.jsonl` with bytes flipped,
/// inserted, deleted, cut short, numbers made awkward): a value or an error naming the file,
/// never a panic. The public decoders are fuzzed in `tests/fuzz_decoders.rs`.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const METRICS: &str = include_str!("../tests/fixtures/smoke/co-plms.jsonl");

    fn valid_state() -> String {
        let checkpoint = Checkpoint {
            completed: 1,
            server: ServerSteps {
                llm: 4,
                method: serde_json::json!([2, 3]),
            },
            devices: vec![
                DeviceSteps {
                    slm: 3,
                    method: serde_json::json!([1, 2]),
                };
                2
            ],
            initial_down: vec![10, 20],
        };
        serde_json::to_string_pretty(&checkpoint).unwrap()
    }

    /// Applies `(at, kind, byte)` edits: flip a bit, set, insert, delete a byte, truncate.
    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, kind, byte) in edits {
            let n = bytes.len();
            let i = at % (n + 1);
            match kind {
                0 if i < n => bytes[i] ^= 1 << (byte % 8),
                1 if i < n => bytes[i] = byte,
                2 => bytes.insert(i, byte),
                3 if i < n => {
                    bytes.remove(i);
                }
                4 => bytes.truncate(i),
                _ => {}
            }
        }
        bytes
    }

    fn check(state: &[u8], metrics: Option<&[u8]>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/state.json"), state).unwrap();
        if let Some(m) = metrics {
            std::fs::write(dir.path().join("metrics.jsonl"), m).unwrap();
        }
        match read(dir.path()) {
            Ok(Some(r)) => assert!(r.records.iter().all(|x| x.round <= r.checkpoint.completed)),
            Ok(None) => panic!("state.json is there"),
            Err(e) => {
                let m = format!("{e:#}");
                assert!(
                    m.contains("state.json") || m.contains("metrics.jsonl"),
                    "{m}"
                );
            }
        }
    }

    fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        prop::collection::vec((any::<usize>(), 0u8..5, any::<u8>()), 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn state_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            check(&bytes, None);
        }

        #[test]
        fn state_mutated(edits in edits()) {
            check(&mutate(valid_state().into_bytes(), &edits), Some(METRICS.as_bytes()));
        }

        #[test]
        fn state_with_awkward_numbers(at in any::<usize>(), number in prop::sample::select(&[
            "-1", "18446744073709551616", "4294967296", "1e999", "1.5", "null", "[]", "\"1\"",
        ][..])) {
            // The `at`-th run of digits replaced.
            let state = valid_state();
            let runs: Vec<(usize, usize)> = state
                .char_indices()
                .filter(|&(i, c)| c.is_ascii_digit() && !state[..i].ends_with(|p: char| p.is_ascii_digit()))
                .map(|(i, _)| (i, i + state[i..].find(|c: char| !c.is_ascii_digit()).unwrap()))
                .collect();
            let (begin, end) = runs[at % runs.len()];
            check(format!("{}{number}{}", &state[..begin], &state[end..]).as_bytes(), None);
        }

        #[test]
        fn metrics_mutated(edits in edits()) {
            check(valid_state().as_bytes(), Some(&mutate(METRICS.as_bytes().to_vec(), &edits)));
        }
    }
}
