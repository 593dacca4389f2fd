//! Fuzzed decoders on the plugin side: [`read_safetensors`] (`model.safetensors`),
//! [`read_config`] (`config.json`) and [`Trainer::load`] (the SDK's own checkpoints) get
//! arbitrary bytes and mutated valid files (bits flipped, bytes inserted, deleted or
//! overwritten, the file cut short, a length field made huge, JSON header nodes replaced by
//! awkward values or removed) and must return a value or an error naming the file: never
//! panic, and never allocate more than the file could justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cotune_sdk::abi::{AnswerExample, TrainOptions};
use cotune_sdk::burn;
use cotune_sdk::burn::module::Module;
use cotune_sdk::burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use cotune_sdk::burn::tensor::{Device, Int, Tensor};
use cotune_sdk::hf::{read_config, read_safetensors, write_safetensors};
use cotune_sdk::{LanguageModel, Memory, Structure, Trainer};
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
        "cotune-sdk-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Scratch(path)
}

// ---------------------------------------------------------------------------------------------
// model.safetensors.

/// A shipped test checkpoint's weights (F32, as `transformers` saves them).
const SHIPPED: &[u8] = include_bytes!("../../../tests/fixtures/hf/gpt2/model.safetensors");

/// A small valid file: F32 tensors from `write_safetensors`, then an F16, a BF16 and an F64
/// tensor appended by hand.
fn small_safetensors() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch_file("small.safetensors", b"");
        let tensors = vec![
            (
                "a".to_string(),
                vec![2, 3],
                vec![1.0, -2.5, 3.25, 0.0, 0.1, -0.0],
            ),
            ("b.weight".to_string(), vec![1], vec![7.0]),
            ("c".to_string(), vec![0, 4], vec![]),
        ];
        write_safetensors(&path, &tensors).unwrap();
        let written = std::fs::read(&path).unwrap();
        // Rebuild with more dtypes: the header is JSON, the data follows it.
        let header_len = u64::from_le_bytes(written[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value =
            serde_json::from_slice(&written[8..8 + header_len]).unwrap();
        let mut data = written[8 + header_len..].to_vec();
        for (name, dtype, shape, bytes) in [
            ("h", "F16", vec![2], vec![0x00, 0x3c, 0x00, 0xc0]),
            ("g", "BF16", vec![1], vec![0xc0, 0x3f]),
            ("d", "F64", vec![1], 2.5f64.to_le_bytes().to_vec()),
        ] {
            let begin = data.len();
            data.extend_from_slice(&bytes);
            header[name] = serde_json::json!({
                "dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]
            });
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    })
}

/// Splits a safetensors file into its JSON header and its data.
fn split(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap(),
        &bytes[8 + header_len..],
    )
}

fn join(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Reads `bytes` as a safetensors file: every tensor read holds exactly the values its shape
/// says; an error names the file.
fn check_safetensors(bytes: &[u8]) -> Option<usize> {
    let path = scratch_file("model.safetensors", bytes);
    let (result, largest) = largest_allocation(|| read_safetensors(&path));
    assert_bounded("read_safetensors", largest, bytes.len());
    let out = match result {
        Ok(tensors) => {
            for (name, t) in &tensors {
                let n = if t.shape.contains(&0) {
                    Some(0)
                } else {
                    t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
                };
                assert_eq!(
                    n,
                    Some(t.data.len()),
                    "tensor {name} of shape {:?} holds {} values",
                    t.shape,
                    t.data.len()
                );
            }
            Some(tensors.len())
        }
        Err(e) => {
            assert!(e.message.contains("model.safetensors"), "{}", e.message);
            None
        }
    };
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn safetensors_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), len in prop::option::of(0u64..300)) {
        // Half the inputs declare a header length that fits, so the JSON parser is reached.
        let mut bytes = len.map(|l| l.to_le_bytes().to_vec()).unwrap_or_default();
        bytes.extend(tail);
        check_safetensors(&bytes);
    }

    #[test]
    fn safetensors_mutated(edits in edits()) {
        check_safetensors(&apply(small_safetensors().to_vec(), &edits));
    }

    #[test]
    fn safetensors_with_awkward_header_values(edits in json_edits()) {
        let (header, data) = split(small_safetensors());
        check_safetensors(&join(&apply_json(header, &edits), data));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn shipped_safetensors_mutated(edits in edits()) {
        check_safetensors(&apply(SHIPPED.to_vec(), &edits));
    }

    #[test]
    fn shipped_safetensors_with_awkward_header_values(edits in json_edits()) {
        let (header, data) = split(SHIPPED);
        check_safetensors(&join(&apply_json(header, &edits), data));
    }
}

#[test]
fn valid_safetensors_read() {
    assert_eq!(check_safetensors(small_safetensors()), Some(6));
    assert!(check_safetensors(SHIPPED).unwrap() > 0);
}

/// Header lengths, shapes and offsets that claim more than the file holds, or more than fits
/// in memory: refused, quickly, with no allocation sized by the claim.
#[test]
fn safetensors_with_huge_claims_are_refused() {
    let mut claims = Vec::new();
    for header_len in [u64::MAX, 1 << 60, 1 << 32, u64::MAX - 7] {
        let mut bytes = small_safetensors().to_vec();
        bytes[..8].copy_from_slice(&header_len.to_le_bytes());
        claims.push(bytes);
    }
    let shapes = [
        serde_json::json!([1u64 << 32, 1u64 << 32]),
        serde_json::json!([1u64 << 62]),
        serde_json::json!([1u64 << 61, 4, 2]),
        serde_json::json!([u64::MAX, 0]),
        serde_json::json!([0, u64::MAX, 2]),
        serde_json::json!([u64::MAX]),
    ];
    for dtype in ["F32", "F16", "BF16", "F64"] {
        for shape in &shapes {
            for offsets in [serde_json::json!([0, 0]), serde_json::json!([0, 8])] {
                let header = serde_json::json!({
                    "w": { "dtype": dtype, "shape": shape, "data_offsets": offsets }
                });
                claims.push(join(&header, &[0; 8]));
            }
        }
        for offsets in [
            serde_json::json!([0, u64::MAX]),
            serde_json::json!([1u64 << 60, 1u64 << 61]),
            serde_json::json!([u64::MAX, u64::MAX]),
            serde_json::json!([8, 4]),
        ] {
            let header = serde_json::json!({
                "w": { "dtype": dtype, "shape": [2], "data_offsets": offsets }
            });
            claims.push(join(&header, &[0; 8]));
        }
    }
    let started = std::time::Instant::now();
    for bytes in &claims {
        let path = scratch_file("model.safetensors", bytes);
        let (result, largest) = largest_allocation(|| read_safetensors(&path));
        assert_bounded("read_safetensors", largest, bytes.len());
        let header = String::from_utf8_lossy(&bytes[8..bytes.len().min(200)]).into_owned();
        match result {
            Ok(tensors) => {
                // Only a zero-sized claim may be read: `[u64::MAX, 0]` holds no values.
                for t in tensors.values() {
                    assert!(t.data.is_empty() && t.shape.contains(&0), "{header}");
                }
            }
            Err(e) => assert!(e.message.contains("model.safetensors"), "{}", e.message),
        }
    }
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// config.json.

const CONFIGS: [&str; 3] = [
    include_str!("../../../tests/fixtures/hf/gpt2/config.json"),
    include_str!("../../../tests/fixtures/hf/llama/config.json"),
    include_str!("../../../tests/fixtures/hf/t5/config.json"),
];

fn check_config(bytes: &[u8]) {
    let path = scratch_file("config.json", bytes);
    let (result, largest) = largest_allocation(|| read_config(&path));
    assert_bounded("read_config", largest, bytes.len());
    match result {
        Ok(value) => assert!(value.is_object()),
        Err(e) => assert!(e.message.contains("config.json"), "{}", e.message),
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn configs_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_config(&bytes);
    }

    #[test]
    fn configs_mutated(which in 0usize..3, edits in edits()) {
        check_config(&apply(CONFIGS[which].as_bytes().to_vec(), &edits));
    }
}

// ---------------------------------------------------------------------------------------------
// The SDK's checkpoints: `Trainer::save` and `Trainer::load`.

/// The smallest language model: an embedding and a head.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TinyConfig {
    vocab_size: usize,
    width: usize,
}

#[derive(Module, Debug)]
struct Tiny {
    embed: Embedding,
    head: Linear,
}

impl LanguageModel for Tiny {
    type Config = TinyConfig;
    type Cache = ();
    const ARCHITECTURE: &'static str = "tiny";
    const STRUCTURE: Structure = Structure::DecoderOnly;
    const EXAMPLE_CONFIG: &'static str = "vocab_size = 8\nwidth = 4\n";

    fn validate(c: &TinyConfig) -> Result<(), String> {
        cotune_sdk::config::positive(&[("vocab_size", c.vocab_size), ("width", c.width)])
    }

    fn init(c: &TinyConfig, device: &Device) -> Self {
        Tiny {
            embed: EmbeddingConfig::new(c.vocab_size, c.width).init(device),
            head: LinearConfig::new(c.width, c.vocab_size).init(device),
        }
    }

    fn vocab_size(c: &TinyConfig) -> usize {
        c.vocab_size
    }

    fn context_len(_: &TinyConfig) -> usize {
        16
    }

    fn decode(&self, tokens: Tensor<2, Int>, _memory: Option<&Memory>) -> Tensor<3> {
        self.embed.forward(tokens)
    }

    fn decode_cached(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<&Memory>,
        _cache: &mut (),
    ) -> Tensor<3> {
        self.decode(tokens, memory)
    }

    fn new_cache(&self) {}

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head.forward(hidden)
    }
}

fn trainer() -> Trainer<Tiny> {
    Trainer::from_toml(Tiny::EXAMPLE_CONFIG, 7, Device::flex()).unwrap()
}

/// A checkpoint of the tiny model after one step (so the optimiser has state).
fn checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut t = trainer();
        let batch = [AnswerExample {
            prompt: vec![1, 2, 3].into(),
            answer: vec![4, 5].into(),
        }];
        t.train_step(&batch, None, &TrainOptions::default())
            .unwrap();
        let path = scratch_file("model.ckpt", b"");
        t.save(path.to_str().unwrap()).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// The offsets of the checkpoint's three length fields (architecture, parameters, optimiser).
fn length_fields(bytes: &[u8]) -> Vec<usize> {
    let mut fields = Vec::new();
    let mut at = 8;
    for _ in 0..3 {
        fields.push(at);
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    fields
}

/// Loads `bytes` as a checkpoint into a fresh trainer; an error names the file.
fn check_checkpoint(bytes: &[u8]) -> bool {
    let path = scratch_file("model.ckpt", bytes);
    let mut t = trainer();
    let (result, largest) = largest_allocation(|| t.load(path.to_str().unwrap()));
    assert_bounded("Trainer::load", largest, bytes.len());
    match result {
        Ok(()) => true,
        Err(e) => {
            assert!(e.message.contains("model.ckpt"), "{}", e.message);
            false
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn checkpoints_from_arbitrary_bytes(tail in prop::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
        let mut bytes = if magic { b"COTUNE01".to_vec() } else { Vec::new() };
        bytes.extend(tail);
        check_checkpoint(&bytes);
    }

    #[test]
    fn checkpoints_mutated(edits in edits()) {
        check_checkpoint(&apply(checkpoint().to_vec(), &edits));
    }

    /// Edits confined to one part (architecture, parameters, optimiser state, settings), so
    /// each inner decoder sees damage with valid framing around it.
    #[test]
    fn checkpoint_parts_mutated(part in 0usize..4, edits in edits()) {
        let bytes = checkpoint();
        let fields = length_fields(bytes);
        let (begin, end) = match part {
            3 => (fields[2] + 8 + u64::from_le_bytes(bytes[fields[2]..fields[2] + 8].try_into().unwrap()) as usize, bytes.len()),
            p => (fields[p] + 8, if p < 2 { fields[p + 1] } else { fields[2] + 8 + u64::from_le_bytes(bytes[fields[2]..fields[2] + 8].try_into().unwrap()) as usize }),
        };
        let inner = apply(bytes[begin..end].to_vec(), &edits);
        let mut out = bytes[..begin].to_vec();
        if part < 3 {
            // Keep the framing consistent: the part's length field says its new length.
            out[fields[part]..fields[part] + 8].copy_from_slice(&(inner.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(&inner);
        out.extend_from_slice(&bytes[end..]);
        check_checkpoint(&out);
    }
}

#[test]
fn a_checkpoint_loads_back() {
    assert!(check_checkpoint(checkpoint()));
}

/// Each length field set to each huge value: refused, quickly, with no allocation sized by the
/// claim.
#[test]
fn checkpoints_with_huge_lengths_are_refused() {
    let bytes = checkpoint();
    let started = std::time::Instant::now();
    for field in length_fields(bytes) {
        for value in [
            u64::MAX,
            u64::MAX - 7,
            1 << 60,
            1 << 62,
            1 << 32,
            u64::from(u32::MAX),
        ] {
            let mut bad = bytes.to_vec();
            bad[field..field + 8].copy_from_slice(&value.to_le_bytes());
            assert!(!check_checkpoint(&bad), "length at {field} set to {value}");
        }
    }
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
