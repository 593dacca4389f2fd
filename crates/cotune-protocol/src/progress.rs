//! Progress on standard error. Log lines always; when standard error is a terminal, a live
//! line below them with a bar for the rounds, a bar for the current phase, and the training
//! steps taken with their rate.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bar of `width` cells, `done` of `total` filled.
pub fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

struct Shared {
    rounds: (usize, usize),
    phase: String,
    phase_done: usize,
    phase_total: usize,
}

/// What the live line shows; one run at a time draws it.
static SHARED: Mutex<Shared> = Mutex::new(Shared {
    rounds: (0, 0),
    phase: String::new(),
    phase_done: 0,
    phase_total: 0,
});

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rounds completed of the current run.
pub fn rounds_done(done: usize) {
    shared().rounds.0 = done;
}

/// A new phase of `total` parts.
pub fn phase(name: &str, total: usize) {
    let mut s = shared();
    s.phase = name.to_string();
    s.phase_done = 0;
    s.phase_total = total;
}

/// One more part of the phase done.
pub fn tick() {
    shared().phase_done += 1;
}

/// The live status line of a run; it stops drawing when dropped.
pub struct Status {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Status {
    /// Starts the status line (it draws only when standard error is a terminal).
    pub fn start(rounds_total: usize) -> Self {
        {
            let mut s = shared();
            s.rounds = (0, rounds_total);
        }
        phase("setup", 0);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let steps0 = cotune_distill::steps_taken();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let line = {
                        let s = shared();
                        let steps = cotune_distill::steps_taken() - steps0;
                        let secs = started.elapsed().as_secs_f64();
                        format!(
                            "rounds {} {}/{} | {} {} {}/{} | {steps} steps ({:.1}/s) | {:.0}s",
                            bar(s.rounds.0, s.rounds.1, 10),
                            s.rounds.0,
                            s.rounds.1,
                            s.phase,
                            bar(s.phase_done, s.phase_total, 10),
                            s.phase_done,
                            s.phase_total,
                            steps as f64 / secs.max(1e-9),
                            secs
                        )
                    };
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}\r");
                    let _ = err.flush();
                }
                let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            })
        });
        Self { stop, worker }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A counted part of a phase, logged as it completes (`label 2/5`).
pub struct Progress {
    label: String,
    total: usize,
    done: AtomicUsize,
}

impl Progress {
    /// A phase of `total` parts.
    pub fn new(label: &str, total: usize) -> Self {
        Self {
            label: label.into(),
            total,
            done: AtomicUsize::new(0),
        }
    }

    /// One more part done.
    pub fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        eprintln!(
            "[cotune]   {} {} {done}/{}",
            self.label,
            bar(done, self.total, 10),
            self.total
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 8), "[........]");
        assert_eq!(bar(2, 4, 8), "[####....]");
        assert_eq!(bar(4, 4, 8), "[########]");
        assert_eq!(bar(9, 4, 8), "[########]");
        assert_eq!(bar(0, 0, 4), "[####]");
    }
}
