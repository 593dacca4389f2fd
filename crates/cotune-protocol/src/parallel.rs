//! Work spread over threads with results in a fixed order: every item's work touches only that
//! item, so the numbers do not depend on the thread count.

use anyhow::bail;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Worker threads for `configured` (0: one per available core).
pub(crate) fn worker_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// `f` over `items`, `threads` at a time, results in the items' order. A panic in one item
/// becomes an error naming it, after every item has finished.
pub(crate) fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    if threads <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    type Slot<R> = Mutex<Option<std::thread::Result<anyhow::Result<R>>>>;
    let results: Vec<Slot<R>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(slot) = queue.get(k) else { break };
                let item = slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("each item is taken once");
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item)));
                *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            match r
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item ran")
            {
                Ok(r) => r,
                Err(panic) => bail!("worker {k} panicked: {}", panic_text(&panic)),
            }
        })
        .collect()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_the_threads() {
        for threads in [1, 2, 5] {
            let out = parallel_map((0..20).collect(), threads, |k: u64| Ok(k * k)).unwrap();
            assert_eq!(out, (0..20).map(|k| k * k).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_panic_or_an_error_names_the_item() {
        let err = parallel_map(vec![1, 2, 3], 2, |k: i32| {
            if k == 2 {
                panic!("item two broke");
            }
            Ok(k)
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("worker 1 panicked: item two broke"),
            "{err}"
        );
        let err = parallel_map(vec![1, 2], 2, |k: i32| {
            if k == 1 {
                anyhow::bail!("bad item {k}");
            }
            Ok(k)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "bad item 1");
    }

    #[test]
    fn zero_threads_means_one_per_core() {
        assert!(worker_threads(0) >= 1);
        assert_eq!(worker_threads(3), 3);
    }
}
