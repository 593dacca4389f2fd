//! Fuzzed decoders: [`score_jsonl`] gets arbitrary bytes and mutated valid score files (bits
//! flipped, bytes inserted, deleted or overwritten, the file cut short, JSON and TOML pieces
//! inserted) and must return a report or an error naming the file: never panic, and never
//! allocate more than the file could justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use cotune_eval::score_jsonl;
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
// Score files.

/// A valid score file of `pairs`, one JSON object a line, sometimes with an extra field.
fn score_file(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (i, (prediction, reference)) in pairs.iter().enumerate() {
        let mut line = serde_json::json!({ "prediction": prediction, "reference": reference });
        if i % 2 == 1 {
            line["id"] = i.into();
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,24}", "\\PC{0,24}"), 1..6)
}

/// Scores `bytes` written to a file; an error names the file.
fn check(dir: &Path, bytes: &[u8]) -> Option<usize> {
    let path = dir.join("scores.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let (result, largest) = largest_allocation(|| score_jsonl(&path, true));
    assert_bounded("score_jsonl", largest, bytes.len());
    match result {
        Ok(report) => {
            let lines = report.per_line.expect("per-line scores asked for");
            assert_eq!(lines.len(), report.summary.count);
            for l in &lines {
                let f = l.score.rouge_l.fmeasure;
                assert!((0.0..=1.0).contains(&f), "line {}: Rouge-L {f}", l.line);
            }
            Some(lines.len())
        }
        Err(e) => {
            assert!(e.to_string().contains("scores.jsonl"), "{e}");
            None
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn valid_files_score_every_line(pairs in pairs()) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert_eq!(check(dir.path(), &score_file(&pairs)), Some(pairs.len()));
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), &bytes);
    }

    #[test]
    fn arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), pieces.concat().as_bytes());
    }

    #[test]
    fn mutated_files(pairs in pairs(), edits in edits()) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), &apply(score_file(&pairs), &edits));
    }
}
