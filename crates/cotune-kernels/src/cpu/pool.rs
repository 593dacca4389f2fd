//! The worker team of the CPU kernels: the calling thread plus `threads - 1` helper
//! threads that wait for work a short while (yielding the core to any other thread that wants
//! it) before they sleep.
//!
//! Why not rayon's pool: a training step hands the kernels several hundred parallel sections,
//! each a fraction of a millisecond long, from a thread outside any pool. Through rayon every
//! section woke a sleeping worker and put the caller to sleep until it was done (about 1,700
//! context switches per GPT-2 bench step, and the wake-up latency each time). Here the caller
//! works on parts itself, helpers that have just finished a section are still waiting awake when
//! the next one comes, and the caller waits for the others awake too, since they are running.
//! Parts are claimed one at a time by whoever is free, so a helper that is not running (asleep,
//! or its core taken by another process) leaves its parts to the caller instead of delaying it.
//!
//! Waiting threads yield rather than spin: when two models train side by side (devices in a
//! round, or the pre-training of several architectures), each with its own team, the cores go to
//! whichever thread has work. One caller per team at a time: a caller that finds its team busy
//! runs every part itself. Each part computes the same values whoever runs it, so results never
//! depend on who ran what.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// How long a helper waits awake for new work after its last part before it sleeps. Long enough
/// to bridge the single-threaded stretches between a step's parallel sections, short enough that
/// an idle team goes to sleep at once.
const SPIN: Duration = Duration::from_micros(300);

/// The job being run: written by the caller before it publishes the job's epoch.
#[derive(Clone, Copy)]
struct Job {
    epoch: u64,
    /// The caller's task, its lifetime erased: the caller does not return before every part of
    /// the job has finished, and a part can only be claimed while the job is current.
    task: Option<&'static Task<'static>>,
    parts: usize,
}

struct Team {
    /// `epoch << 32 | next part to claim`: claiming a part and checking that the job is still
    /// current are one compare-and-swap.
    claim: AtomicU64,
    job: Mutex<Job>,
    /// Parts of the current job finished (by anyone).
    done: AtomicUsize,
    /// The first panic of the current job's parts, re-raised in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// One caller at a time.
    busy: Mutex<()>,
    sleeping: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    helpers: usize,
}

thread_local! {
    /// Set on helper threads and on a caller while it runs a job: a part that calls `run` again
    /// runs its parts itself.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = team_size() - 1;
        let team: &'static Team = Box::leak(Box::new(Team {
            claim: AtomicU64::new(0),
            job: Mutex::new(Job {
                epoch: 0,
                task: None,
                parts: 0,
            }),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            busy: Mutex::new(()),
            sleeping: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            helpers,
        }));
        for i in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("cotune-kernel-{i}"))
                .spawn(move || helper(team));
            if spawned.is_err() {
                // Without this helper the parts are claimed by the caller and the others.
                break;
            }
        }
        team
    })
}

/// The team's threads, caller included: `RAYON_NUM_THREADS` when set (the count burn's own CPU
/// threads follow), else one per core. Not rayon's current count, which inside a rayon pool is
/// that pool's and would fix the team's size by whichever pool first ran a kernel.
fn team_size() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Values a part holds at least before row-wise work is split over threads: below that, waking
/// a helper costs more than it saves.
const PARALLEL_MIN: usize = 1 << 16;

/// Rows per part when `rows` rows of `width` values are split over the team by whole rows: all
/// of them (one part, run on the calling thread) when the work is small.
pub(crate) fn rows_per_part(rows: usize, width: usize) -> usize {
    let total = rows * width;
    let threads = threads();
    if threads == 1 || total < 2 * PARALLEL_MIN || rows < 2 {
        return rows.max(1);
    }
    let parts = threads.min(total / PARALLEL_MIN).min(rows).max(1);
    rows.div_ceil(parts)
}

/// Runs `f(i, piece)` for every `chunk`-long piece of `data` (the last may be shorter), the
/// pieces as the parts of one parallel section ([`run`]).
pub(crate) fn for_chunks<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    if data.len() <= chunk {
        // One piece (the common case of small work): no locks, no allocation.
        f(0, data);
        return;
    }
    let slots: Vec<Mutex<&mut [T]>> = data.chunks_mut(chunk.max(1)).map(Mutex::new).collect();
    run(slots.len(), &|i| {
        let mut piece = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut piece);
    });
}

/// Threads a parallel section may use: the caller plus the team's helpers, or rayon's thread
/// count inside a rayon pool of another size (tests use one to vary it).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `f(0)` .. `f(parts - 1)` and returns when all are done. Parts run concurrently when the
/// team is free; a panic in any part is re-raised here once every part has stopped.
pub(crate) fn run(parts: usize, f: &Task<'_>) {
    if parts <= 1 || INSIDE.with(Cell::get) {
        (0..parts).for_each(f);
        return;
    }
    let team = team();
    let busy = match team.busy.try_lock() {
        _ if team.helpers == 0 => None,
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(guard)) => Some(guard.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    let Some(busy) = busy else {
        (0..parts).for_each(f);
        return;
    };
    INSIDE.with(|c| c.set(true));
    // SAFETY: the erased lifetime is never outlived: this function returns only after `done`
    // reaches `parts`, and no part can be claimed once they are all claimed (or the epoch moves
    // on), so nobody calls `task` after it returns.
    let task: &'static Task<'static> = unsafe { std::mem::transmute::<&Task<'_>, _>(f) };
    let epoch = {
        let mut job = team.job.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = (job.epoch + 1) & 0xffff_ffff;
        *job = Job {
            epoch,
            task: Some(task),
            parts,
        };
        epoch
    };
    team.done.store(0, Ordering::Relaxed);
    team.claim.store(epoch << 32, Ordering::SeqCst);
    if team.sleeping.load(Ordering::SeqCst) > 0 {
        let _sleep = team.sleep.lock().unwrap_or_else(|e| e.into_inner());
        team.wake.notify_all();
    }
    work(team, epoch, parts, task);
    let mut spins = 0u32;
    while team.done.load(Ordering::Acquire) < parts {
        spins += 1;
        if spins < 1 << 8 {
            std::hint::spin_loop();
        } else {
            // A helper still busy, or preempted mid-part: let others run meanwhile.
            std::thread::yield_now();
        }
    }
    INSIDE.with(|c| c.set(false));
    let panic = team.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(busy);
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
}

/// Claims and runs parts of job `epoch` until none is left.
fn work(team: &Team, epoch: u64, parts: usize, task: &Task<'_>) {
    loop {
        let current = team.claim.load(Ordering::Acquire);
        if current >> 32 != epoch || (current & 0xffff_ffff) as usize >= parts {
            return;
        }
        if team
            .claim
            .compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let part = (current & 0xffff_ffff) as usize;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| task(part))) {
            team.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(panic);
        }
        team.done.fetch_add(1, Ordering::Release);
    }
}

fn helper(team: &'static Team) {
    INSIDE.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let epoch = team.claim.load(Ordering::Acquire) >> 32;
            if epoch != seen {
                break epoch;
            }
            spins += 1;
            if spins.is_multiple_of(16) && started.elapsed() > SPIN {
                let guard = team.sleep.lock().unwrap_or_else(|e| e.into_inner());
                team.sleeping.fetch_add(1, Ordering::SeqCst);
                let guard = team
                    .wake
                    .wait_while(guard, |_| team.claim.load(Ordering::SeqCst) >> 32 == seen)
                    .unwrap_or_else(|e| e.into_inner());
                team.sleeping.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            } else {
                // Yielding rather than spinning: when other threads (another model training
                // side by side) want this core, they get it.
                std::thread::yield_now();
            }
        };
        seen = epoch;
        let job = *team.job.lock().unwrap_or_else(|e| e.into_inner());
        if job.epoch != epoch {
            continue;
        }
        if let Some(task) = job.task {
            work(team, epoch, job.parts, task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once() {
        for parts in [0, 1, 2, 3, 17] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..100 {
                run(parts, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 100));
        }
    }

    #[test]
    fn a_panicking_part_panics_the_caller_after_the_others_finish() {
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run(4, &|i| {
                if i == 1 {
                    panic!("part {i} failed");
                }
                std::thread::sleep(Duration::from_millis(5));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        let panic = result.expect_err("the part's panic reaches the caller");
        assert_eq!(panic.downcast_ref::<String>().unwrap(), "part 1 failed");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // The team still works afterwards.
        let sum = AtomicUsize::new(0);
        run(3, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        assert_eq!(sum.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn concurrent_callers_and_nested_calls_all_finish() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(3, &|_| {
                            run(2, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 200 * 3 * 2);
    }
}
