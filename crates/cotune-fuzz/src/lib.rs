//! What the workspace's fuzz tests share (`tests/fuzz_decoders.rs` of each crate that decodes
//! outside data): an allocator that records the largest single allocation, the bound a decoder's
//! allocations must keep, byte-level mutations of valid inputs, structural mutations of JSON,
//! and scratch files. A test binary installs the allocator itself:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: cotune_fuzz::Tracking = cotune_fuzz::Tracking;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The largest single allocation a decoder makes, per thread.

/// The allocator every fuzz test binary installs (`#[global_allocator]`): it passes every call
/// on to `System` and records the largest single allocation per thread.
pub struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // A panic hook's backtrace is not the decoder's doing.
    if !std::thread::panicking() {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every call is passed on to `System` unchanged; `note` only records the size.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

/// What a decoder may allocate at once for an input of `len` bytes: a fixed allowance plus a
/// small multiple of the input (decoded values, their names, a vector's doubling).
pub fn allowance(len: usize) -> usize {
    (1 << 20) + 16 * len
}

pub fn assert_bounded(what: &str, largest: usize, len: usize) {
    assert!(
        largest <= allowance(len),
        "{what}: one allocation of {largest} bytes for an input of {len} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
pub enum Edit {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A little-endian `u64` written over 8 bytes: a length field made huge.
    Word {
        at: usize,
        value: u64,
    },
}

/// Values a length field is set to: the extremes, powers of two, anything.
pub fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 60),
        Just(1 << 62),
        Just(1 << 32),
        Just(u64::from(u32::MAX)),
        0u64..64,
        any::<u64>(),
    ]
}

/// Text pieces that make JSON and TOML interesting.
pub const SNIPPETS: &[&str] = &[
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    "[[",
    "]]",
    ",",
    ":",
    "=",
    ".",
    "\n",
    "\\",
    "#",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "-0.0",
    "nan",
    "inf",
    "18446744073709551616",
    "99999999999999999999999",
    "1152921504606846976",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
    "é",
    "\"\"\"",
    "x = 1\n",
    "[a]\n",
    "{\"a\":",
    "]]]]]]]]",
    "[[[[[[[[",
];

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), prop::sample::select(SNIPPETS)).prop_map(|(at, s)| Edit::Insert {
            at,
            bytes: s.as_bytes().to_vec()
        }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Edit::Delete { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (any::<usize>(), huge()).prop_map(|(at, value)| Edit::Word { at, value }),
    ]
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

pub fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match e {
            Edit::Flip { at, bit } if n > 0 => bytes[at % n] ^= 1 << bit,
            Edit::Set { at, byte } if n > 0 => bytes[at % n] = *byte,
            Edit::Insert { at, bytes: new } => {
                let i = at % (n + 1);
                bytes.splice(i..i, new.iter().copied());
            }
            Edit::Delete { at, len } => {
                let i = at % (n + 1);
                bytes.drain(i..(i + len).min(n));
            }
            Edit::Truncate { at } => bytes.truncate(at % (n + 1)),
            Edit::Word { at, value } if n > 0 => {
                let i = at % n;
                for (k, b) in value.to_le_bytes().into_iter().enumerate() {
                    if let Some(x) = bytes.get_mut(i + k) {
                        *x = b;
                    }
                }
            }
            _ => {}
        }
    }
    bytes
}

pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Structural mutations of JSON: a node replaced by an awkward value, or removed.

/// One JSON edit: the node at `depth` (1 = the root's children, ...) and `index` (among the
/// nodes of that depth) is replaced by `with`, or removed when `with` is `None`.
#[derive(Debug, Clone)]
pub struct JsonEdit {
    depth: usize,
    index: usize,
    with: Option<serde_json::Value>,
}

pub fn awkward_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 60)),
        Just(json!(1u64 << 32)),
        Just(json!(u32::MAX)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!("")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true)),
        Just(json!([u64::MAX, u64::MAX])),
        Just(json!([1u64 << 32, 1u64 << 32])),
        (0u64..1000).prop_map(|n| json!(n)),
        ".{0,8}".prop_map(Value::String),
    ]
}

pub fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    prop::collection::vec(
        (
            1usize..8,
            any::<usize>(),
            prop::option::weighted(0.8, awkward_json()),
        )
            .prop_map(|(depth, index, with)| JsonEdit { depth, index, with }),
        1..4,
    )
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The paths of every node below the root, by depth.
fn json_paths(value: &serde_json::Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Vec<Step>>>) {
    let children: Vec<(Step, &serde_json::Value)> = match value {
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect()
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Index(i), v))
            .collect(),
        _ => Vec::new(),
    };
    for (step, child) in children {
        path.push(step);
        if out.len() < path.len() {
            out.push(Vec::new());
        }
        out[path.len() - 1].push(path.clone());
        json_paths(child, path, out);
        path.pop();
    }
}

fn json_node<'a>(root: &'a mut serde_json::Value, path: &[Step]) -> &'a mut serde_json::Value {
    path.iter().fold(root, |node, step| match step {
        Step::Key(k) => &mut node[k.as_str()],
        Step::Index(i) => &mut node[*i],
    })
}

pub fn apply_json(mut root: serde_json::Value, edits: &[JsonEdit]) -> serde_json::Value {
    for e in edits {
        let mut by_depth = Vec::new();
        json_paths(&root, &mut Vec::new(), &mut by_depth);
        if by_depth.is_empty() {
            break;
        }
        let level = &by_depth[(e.depth - 1) % by_depth.len()];
        let path = &level[e.index % level.len()];
        match &e.with {
            Some(v) => *json_node(&mut root, path) = v.clone(),
            None => {
                let (last, parent) = path.split_last().expect("below the root");
                match (json_node(&mut root, parent), last) {
                    (serde_json::Value::Object(map), Step::Key(k)) => {
                        map.remove(k);
                    }
                    (serde_json::Value::Array(items), Step::Index(i)) => {
                        items.remove(*i);
                    }
                    _ => unreachable!("a path follows the value's structure"),
                }
            }
        }
    }
    root
}

/// A scratch path whose folder is removed when it drops, a failing case's too.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// A file `name` holding `bytes` in a folder of its own under `tmp` (a test passes Cargo's
/// `env!("CARGO_TARGET_TMPDIR")`), named after `prefix`; the folder goes when it drops.
pub fn scratch_file(tmp: &str, prefix: &str, name: &str, bytes: &[u8]) -> Scratch {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(tmp).join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Scratch(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: Tracking = Tracking;

    #[test]
    fn the_tracker_sees_a_large_allocation_and_the_bound_refuses_it() {
        let (v, largest) = largest_allocation(|| vec![1u8; 5 << 20]);
        assert_eq!(v.len(), 5 << 20);
        assert!(largest >= 5 << 20, "recorded {largest}");
        assert!(largest > allowance(100));
        let ((), small) = largest_allocation(|| ());
        assert_eq!(small, 0);
    }

    #[test]
    fn edits_stay_inside_the_input_and_scratch_files_go_away() {
        let bytes = b"{\"a\": [1, 2]}".to_vec();
        let edits = [
            Edit::Word {
                at: 3,
                value: u64::MAX,
            },
            Edit::Delete { at: 1, len: 2 },
        ];
        assert_eq!(apply(bytes.clone(), &edits).len(), bytes.len() - 2);
        let path = {
            let f = scratch_file(
                &std::env::temp_dir().display().to_string(),
                "cotune-fuzz-self",
                "x",
                &bytes,
            );
            assert_eq!(std::fs::read(&*f).unwrap(), bytes);
            f.parent().unwrap().to_path_buf()
        };
        assert!(!path.exists());
    }
}
