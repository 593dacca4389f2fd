//! Fuzzed decoders: [`load_jsonl`] (QA records) and [`Tokenizer::load`] (`tokenizer.json`) get
//! arbitrary bytes and mutated valid files (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, JSON nodes replaced by awkward values or removed) and must
//! return a value or an error: never panic, and never allocate more than the file could justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cotune_data::{load_jsonl, DataError, Tokenizer};
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

/// A file of its own under Cargo's per-test temporary directory holding `bytes`.
fn scratch_file(name: &str, bytes: &[u8]) -> Scratch {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cotune-data-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Scratch(path)
}

// ---------------------------------------------------------------------------------------------
// QA records.

/// The first lines of a shipped data file.
fn valid_records() -> Vec<u8> {
    let text = include_str!("../../../data/geography.jsonl");
    text.lines()
        .take(6)
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn check_records(bytes: &[u8]) {
    let path = scratch_file("geography.jsonl", bytes);
    let (result, largest) = largest_allocation(|| load_jsonl(&path));
    assert_bounded("load_jsonl", largest, bytes.len());
    match result {
        Ok(records) => {
            for r in &records {
                assert!(!r.question.trim().is_empty() && !r.answer.trim().is_empty());
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("geography.jsonl"), "{message}");
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn records_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_records(&bytes);
    }

    #[test]
    fn records_mutated(edits in edits()) {
        check_records(&apply(valid_records(), &edits));
    }

    #[test]
    fn records_with_awkward_values(line in 0usize..6, edits in json_edits()) {
        let text = String::from_utf8(valid_records()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let value = serde_json::from_str(&lines[line]).unwrap();
        lines[line] = apply_json(value, &edits).to_string();
        check_records(lines.join("\n").as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers.

/// A small tokenizer trained once, as `tokenizer.json` text.
fn tokenizer_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let texts = [
            "Question: In which country is the region of Maradi?\nAnswer: Niger",
            "Question: What is the atomic number of gold?\nAnswer: 79",
            "Question: Who succeeded William and Mary?\nAnswer: Anne",
        ];
        Tokenizer::train(texts, 300).unwrap().to_json()
    })
}

/// The shipped test checkpoints' `tokenizer.json` (a foreign one: `</s>` and `<unk>`).
const FOREIGN: &str = include_str!("../../../tests/fixtures/hf/gpt2/tokenizer.json");

/// A valid `tokenizer.json`: the trained one or the foreign one.
fn valid_tokenizer(foreign: bool) -> &'static str {
    if foreign {
        FOREIGN
    } else {
        tokenizer_json()
    }
}

/// Loads `bytes` as a `tokenizer.json`; an error names the file.
fn check_tokenizer(bytes: &[u8]) -> Option<Tokenizer> {
    let path = scratch_file("tokenizer.json", bytes);
    let (result, largest) = largest_allocation(|| Tokenizer::load(&path));
    assert_bounded("Tokenizer::load", largest, bytes.len());
    let out = match result {
        Ok(tokenizer) => {
            assert!(tokenizer.vocab_size() > tokenizer.eos_id() as usize);
            Some(tokenizer)
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("tokenizer.json"), "{message}");
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn tokenizers_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_tokenizer(&bytes);
    }

    #[test]
    fn tokenizers_from_arbitrary_json_like_text(pieces in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)) {
        check_tokenizer(pieces.concat().as_bytes());
    }

    #[test]
    fn tokenizers_mutated(foreign in any::<bool>(), edits in edits()) {
        check_tokenizer(&apply(valid_tokenizer(foreign).as_bytes().to_vec(), &edits));
    }

    #[test]
    fn tokenizers_with_awkward_values(foreign in any::<bool>(), edits in json_edits()) {
        let value = serde_json::from_str(valid_tokenizer(foreign)).unwrap();
        check_tokenizer(apply_json(value, &edits).to_string().as_bytes());
    }
}

#[test]
fn the_trained_tokenizer_loads_back() {
    for foreign in [false, true] {
        let loaded = check_tokenizer(valid_tokenizer(foreign).as_bytes()).unwrap();
        assert_eq!(loaded.decode(&loaded.encode("Maradi 79")), "Maradi 79");
    }
}

/// Token ids that do not fit, or leave a huge gap: refused, or a vocabulary size that says so.
#[test]
fn tokenizers_with_huge_ids() {
    for id in [u64::MAX, 1 << 60, 1 << 32, u64::from(u32::MAX)] {
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value["model"]["vocab"]["Ġ"] = id.into();
        let loaded = check_tokenizer(value.to_string().as_bytes());
        if let Some(t) = loaded {
            assert_eq!(t.vocab_size() as u64, id + 1);
        }
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value["added_tokens"][2]["id"] = id.into();
        check_tokenizer(value.to_string().as_bytes());
    }
}

/// A `tokenizer.json` whose padding or truncation settings would make every encoding huge or
/// fail: refused when loaded, or harmless when encoding.
#[test]
fn tokenizers_with_padding_or_truncation() {
    let settings = [
        (
            "padding",
            serde_json::json!({"strategy": {"Fixed": 1u64 << 60}, "direction": "Right",
                "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}),
        ),
        (
            "padding",
            serde_json::json!({"strategy": "BatchLongest", "direction": "Right",
                "pad_to_multiple_of": 1u64 << 60, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}),
        ),
        (
            "truncation",
            serde_json::json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst",
                "stride": 5}),
        ),
        (
            "truncation",
            serde_json::json!({"direction": "Right", "max_length": 0, "strategy": "LongestFirst",
                "stride": 0}),
        ),
    ];
    for (key, setting) in settings {
        let mut value: serde_json::Value = serde_json::from_str(tokenizer_json()).unwrap();
        value[key] = setting.clone();
        let Some(t) = check_tokenizer(value.to_string().as_bytes()) else {
            continue;
        };
        let (ids, largest) = largest_allocation(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.encode("Maradi 79")))
        });
        assert!(
            largest < 1 << 20,
            "{key} {setting}: encoding allocated {largest} bytes"
        );
        let ids = ids.unwrap_or_else(|_| panic!("{key} {setting}: encoding panicked"));
        assert_eq!(t.decode(&ids), "Maradi 79", "{key} {setting}");
    }
}

#[test]
fn a_missing_tokenizer_is_named() {
    let err = Tokenizer::load(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

/// Parts the library's parser panics on rather than failing: a syntax error inside the decoder,
/// a `Precompiled` normalizer whose charsmap is not one.
#[test]
fn tokenizers_the_library_panics_on_are_refused() {
    let json = tokenizer_json();
    let decoder = json.find("\"decoder\"").expect("a decoder");
    let mut broken = json.as_bytes().to_vec();
    let at = decoder + json[decoder..].find('{').unwrap() + 1;
    broken.insert(at, b'!');
    assert!(check_tokenizer(&broken).is_none());
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["normalizer"] =
        serde_json::json!({"type": "Precompiled", "precompiled_charsmap": "AAAA"});
    assert!(check_tokenizer(value.to_string().as_bytes()).is_none());
}
