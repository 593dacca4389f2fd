//! Checkpoints and resuming. After every round each role writes its models to
//! `<run>/state/`, then `state.json` (schedule counters, the first download's bytes, the last
//! completed round) is written last and atomically: its presence means the round's models are
//! whole. Resuming builds the experiment bare ([`crate::setup`]), then [`Experiment::restore`]
//! reads everything back.

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
    /// Each device's counters.
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
    pub(crate) fn save_checkpoint(&self, round: usize) -> anyhow::Result<()> {
        let dir = self.run_dir.join("state");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let server = self.server.save(&dir)?;
        let devices = self
            .devices
            .iter()
            .map(|d| d.save(&dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
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
        if checkpoint.devices.len() != self.devices.len() {
            anyhow::bail!(
                "{} has {} devices, the config {}",
                dir.join("state.json").display(),
                checkpoint.devices.len(),
                self.devices.len()
            );
        }
        self.server.restore(&dir, &checkpoint.server)?;
        for (device, steps) in self.devices.iter_mut().zip(&checkpoint.devices) {
            device.restore(&dir, *steps)?;
        }
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
                dpms: vec![2],
            },
            devices: vec![DeviceSteps {
                slm: 3,
                dpm: (1, 2),
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
            seconds: 0.0,
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
