//! Fuzzed decoders: [`HfCheckpoint::read`] (a Hugging Face folder's `config.json`) gets
//! arbitrary bytes and mutated valid configs (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, JSON nodes replaced by awkward values or removed) and must
//! return a checkpoint or an error naming the file: never panic, and never allocate more than
//! the file could justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cotune_host::HfCheckpoint;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The largest single allocation a decoder makes, per thread.

struct Tracking;

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

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

/// What a decoder may allocate at once for an input of `len` bytes: a fixed allowance plus a
/// small multiple of the input (decoded values, their names, a vector's doubling).
fn allowance(len: usize) -> usize {
    (1 << 20) + 16 * len
}

fn assert_bounded(what: &str, largest: usize, len: usize) {
    assert!(
        largest <= allowance(len),
        "{what}: one allocation of {largest} bytes for an input of {len} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
enum Edit {
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
fn huge() -> impl Strategy<Value = u64> {
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
const SNIPPETS: &[&str] = &[
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

fn edit() -> impl Strategy<Value = Edit> {
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

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
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

fn config(cases: u32) -> ProptestConfig {
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
struct JsonEdit {
    depth: usize,
    index: usize,
    with: Option<serde_json::Value>,
}

fn awkward_json() -> impl Strategy<Value = serde_json::Value> {
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

fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
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

fn apply_json(mut root: serde_json::Value, edits: &[JsonEdit]) -> serde_json::Value {
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
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// A folder of its own under Cargo's per-test temporary directory whose `config.json` holds
/// `bytes`.
fn folder_with_config(bytes: &[u8]) -> Scratch {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cotune-host-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), bytes).unwrap();
    Scratch(dir.join("config.json"))
}

/// The shipped test checkpoints' `config.json` files.
const CONFIGS: [&str; 3] = [
    include_str!("../../../tests/fixtures/hf/gpt2/config.json"),
    include_str!("../../../tests/fixtures/hf/llama/config.json"),
    include_str!("../../../tests/fixtures/hf/t5/config.json"),
];

/// Reads `bytes` as a folder's `config.json`; a checkpoint read is consistent with its JSON.
fn check(bytes: &[u8]) -> Option<HfCheckpoint> {
    let dir = folder_with_config(bytes);
    let (result, largest) = largest_allocation(|| HfCheckpoint::read(dir.0.parent().unwrap()));
    assert_bounded("HfCheckpoint::read", largest, bytes.len());
    let out = match result {
        Ok(checkpoint) => {
            assert!(!checkpoint.architectures.is_empty());
            // The end-of-sequence id is the file's own, never a truncation of it.
            let eos = checkpoint.config.get("eos_token_id").and_then(|v| match v {
                serde_json::Value::Array(ids) => ids.first().and_then(|id| id.as_u64()),
                id => id.as_u64(),
            });
            if let Some(id) = checkpoint.eos_token_id() {
                assert_eq!(Some(u64::from(id)), eos);
            }
            let _ = checkpoint.tokenizer_path();
            Some(checkpoint)
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("config.json"), "{message}");
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn configs_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }

    #[test]
    fn configs_from_arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        check(pieces.concat().as_bytes());
    }

    #[test]
    fn configs_mutated(which in 0usize..3, edits in edits()) {
        check(&apply(CONFIGS[which].as_bytes().to_vec(), &edits));
    }

    #[test]
    fn configs_with_awkward_values(which in 0usize..3, edits in json_edits()) {
        let value = serde_json::from_str(CONFIGS[which]).unwrap();
        check(apply_json(value, &edits).to_string().as_bytes());
    }
}

#[test]
fn the_shipped_configs_read() {
    for text in CONFIGS {
        let checkpoint = check(text.as_bytes()).unwrap();
        assert_eq!(checkpoint.architectures.len(), 1);
    }
}

/// An end-of-sequence id past `u32` is not read as its low 32 bits.
#[test]
fn huge_eos_ids_are_not_truncated() {
    for id in [1u64 << 32, (1 << 32) + 2, u64::MAX, 1 << 60] {
        for eos in [serde_json::json!(id), serde_json::json!([id, 1])] {
            let mut value: serde_json::Value = serde_json::from_str(CONFIGS[0]).unwrap();
            value["eos_token_id"] = eos;
            let checkpoint = check(value.to_string().as_bytes()).unwrap();
            assert_eq!(checkpoint.eos_token_id(), None, "{id}");
        }
    }
}

#[test]
fn a_folder_without_config_is_named() {
    let dir = folder_with_config(b"{}");
    std::fs::remove_file(&dir.0).unwrap();
    let err = HfCheckpoint::read(dir.0.parent().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let folder = dir.0.parent().unwrap().to_path_buf();
    drop(dir);
    let err = HfCheckpoint::read(&folder).unwrap_err().to_string();
    assert!(err.contains("no such folder"), "{err}");
}
