//! `cargo xtask bench`: tokens per second of every plugin at a fixed shape, through the plugin
//! boundary, side by side with the same model in PyTorch (`transformers`) when a Python with
//! torch is given, plus each model's peak memory and the overhead of the plugin boundary (the
//! GPT-2 model stepped in-process versus through its plugin).
//!
//! Usage: `cotune-bench [--shape default|smollm2] [--steps N] [--torch PYTHON] [--out FILE]
//! [--only NAME[,NAME]]`
//!
//! `--shape default` (the default) measures every plugin at a small shape (batch 16 x (32 + 32)
//! tokens); `--shape smollm2` measures the LLaMA plugin at SmolLM2-135M's shape (hidden 576, 30
//! layers, vocab 49,152; batch 4 x (64 + 64) tokens), full training and LoRA training.
//!
//! For a profiler: `cotune-bench --section PLUGIN --train-only --steps N` runs N training steps
//! of one plugin in this process and nothing else.
//!
//! Every figure is the median over `N` timed repetitions after 3 warm-up repetitions. Tokens are
//! counted as prompt + answer tokens per example for training and answer logits, and as generated
//! tokens for generation.
//!
//! Each plugin runs in a child process of its own (this binary with `--section PLUGIN`), so its
//! peak resident set size is its own: the peak memory reported per model is the process's peak
//! resident set size (`VmHWM`) minus its resident set size once the model is built. Resident
//! size rather than an allocation counter because the model's allocations happen inside the
//! plugin library, whose allocator a counter in this binary does not see; the PyTorch reference
//! measures the same way (`ru_maxrss` minus the size after building), so the two compare.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cotune_host::{
    AnswerExample, DeviceChoice, Example, GenerateOptions, Model, Plugin, TrainOptions,
};
use cotune_sdk::burn::tensor::Device;
use cotune_sdk::Trainer;
use serde_json::{json, Value};

const WARMUP: usize = 3;

/// One model the bench measures: its name in tables and `--only`, its plugin and config, and
/// the batch shape.
struct Shape {
    name: &'static str,
    plugin: &'static str,
    config: &'static str,
    batch: usize,
    prompt: usize,
    answer: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "gpt2",
        plugin: "gpt2",
        config: include_str!("../configs/gpt2.toml"),
        batch: 16,
        prompt: 32,
        answer: 32,
    },
    Shape {
        name: "llama",
        plugin: "llama",
        config: include_str!("../configs/llama.toml"),
        batch: 16,
        prompt: 32,
        answer: 32,
    },
    Shape {
        name: "t5",
        plugin: "t5",
        config: include_str!("../configs/t5.toml"),
        batch: 16,
        prompt: 32,
        answer: 32,
    },
];

/// `--shape smollm2`: SmolLM2-135M's shape, fully trained and with adapters.
const SMOLLM2: &[Shape] = &[
    Shape {
        name: "smollm2",
        plugin: "llama",
        config: include_str!("../configs/smollm2.toml"),
        batch: 4,
        prompt: 64,
        answer: 64,
    },
    Shape {
        name: "smollm2-lora",
        plugin: "llama",
        config: include_str!("../configs/smollm2-lora.toml"),
        batch: 4,
        prompt: 64,
        answer: 64,
    },
];

/// Every shape a section may name.
fn all_shapes() -> impl Iterator<Item = &'static Shape> {
    SHAPES.iter().chain(SMOLLM2)
}

/// The three measures, as (JSON key, table label).
const MEASURES: [(&str, &str); 3] = [
    ("train_tokens_per_s", "train"),
    ("answer_logits_tokens_per_s", "answer logits"),
    ("generate_tokens_per_s", "generate"),
];

fn batch(shape: &Shape, vocab: u32, seed: u64) -> Vec<Example> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % vocab as u64) as u32
    };
    (0..shape.batch)
        .map(|_| {
            Example::new(
                (0..shape.prompt).map(|_| next()).collect(),
                (0..shape.answer).map(|_| next()).collect(),
            )
        })
        .collect()
}

/// Median seconds of `reps` calls of `f` after warm-up.
fn median_secs(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP {
        f()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

fn options(step: u32) -> TrainOptions {
    TrainOptions {
        learning_rate: 1e-4,
        step,
        ..TrainOptions::default()
    }
}

/// A size line of `/proc/self/status` (`VmHWM`, `VmRSS`) in MiB (Linux; `None` elsewhere).
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn bench_model(shape: &Shape, model: &mut Model, reps: usize) -> Result<Value> {
    let vocab = model.spec().vocab_size;
    let data = batch(shape, vocab, 1);
    let tokens = (shape.batch * (shape.prompt + shape.answer)) as f64;
    let baseline = status_mib("VmRSS:");
    let mut step = 0;
    let train = median_secs(reps, || {
        step += 1;
        model.train_step(&data, None, &options(step))?;
        Ok(())
    })?;
    let logits = median_secs(reps, || {
        model.answer_logits(&data)?;
        Ok(())
    })?;
    let prompts: Vec<Vec<u32>> = data.iter().map(|e| e.prompt.clone()).collect();
    // The last id as end of sequence: an untrained model rarely produces it, so prompts run to
    // the cap. A row that stops early is counted with its end-of-sequence token, the rows still
    // running are what the time is spent on.
    let gen_opts = GenerateOptions {
        max_new_tokens: shape.answer as u32,
        eos_id: vocab - 1,
    };
    let mut generated = 0usize;
    let gen = median_secs(reps.min(5), || {
        let out = model.generate(&prompts, &gen_opts)?;
        generated = out.iter().map(|o| (o.len() + 1).min(shape.answer)).sum();
        Ok(())
    })?;
    let peak = status_mib("VmHWM:");
    Ok(json!({
        "params": model.spec().num_params,
        "train_tokens_per_s": tokens / train,
        "answer_logits_tokens_per_s": tokens / logits,
        "generate_tokens_per_s": generated as f64 / gen,
        "train_step_ms": train * 1e3,
        "peak_rss_mib": peak,
        "model_peak_mib": peak.zip(baseline).map(|(p, b)| p - b),
    }))
}

/// One shape's section, run in this (child) process; prints its JSON on stdout. With
/// `train_only`, runs `reps` training steps and nothing else (for a profiler).
fn section(name: &str, reps: usize, train_only: bool) -> Result<()> {
    let shape = all_shapes()
        .find(|s| s.name == name)
        .with_context(|| format!("no bench shape named `{name}`"))?;
    let loaded = Plugin::find(shape.plugin).map_err(anyhow::Error::msg)?;
    let arch = loaded.architectures()[0].clone();
    let mut model = loaded.new_model(&arch, shape.config, 0, DeviceChoice::FLEX)?;
    if train_only {
        let data = batch(shape, model.spec().vocab_size, 1);
        for step in 0..reps {
            model.train_step(&data, None, &options(step as u32))?;
        }
        return Ok(());
    }
    let r = bench_model(shape, &mut model, reps)?;
    println!("{r}");
    Ok(())
}

/// Runs one plugin's section in a child process and reads its JSON.
fn run_section(plugin: &str, reps: usize) -> Result<Value> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let out = Command::new(&exe)
        .args(["--section", plugin, "--steps", &reps.to_string()])
        .output()
        .with_context(|| format!("running {} --section {plugin}", exe.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the {plugin} section's JSON"))
}

/// The GPT-2 bench model stepped directly, without the plugin boundary.
fn bench_in_process(reps: usize) -> Result<f64> {
    let mut trainer = Trainer::<cotune_gpt2::Gpt2>::from_toml(SHAPES[0].config, 0, Device::flex())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data: Vec<AnswerExample> = batch(&SHAPES[0], 512, 1)
        .into_iter()
        .map(|e| AnswerExample {
            prompt: e.prompt.into(),
            answer: e.answer.into(),
        })
        .collect();
    let mut step = 0;
    let secs = median_secs(reps, || {
        step += 1;
        trainer
            .train_step(&data, None, &options(step))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    })?;
    let s = &SHAPES[0];
    Ok((s.batch * (s.prompt + s.answer)) as f64 / secs)
}

/// The `transformers` model matching `shape`'s bench config, measured by the reference script
/// at the same batch shape.
fn run_torch(python: &str, shape: &Shape, reps: usize) -> Result<Value> {
    let plugin = shape.plugin;
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let script = dir.join("reference/hf_torch.py");
    let config = dir.join(format!("configs/{}.toml", shape.name));
    let out = Command::new(python)
        .arg(&script)
        .args(["--model", plugin, "--steps", &reps.to_string()])
        .args(["--batch", &shape.batch.to_string()])
        .args(["--prompt", &shape.prompt.to_string()])
        .args(["--answer", &shape.answer.to_string(), "--config"])
        .arg(&config)
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference for {plugin} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the PyTorch reference's JSON for {plugin}"))
}

fn fmt_num(v: &Value, key: &str, decimals: usize) -> String {
    v[key]
        .as_f64()
        .map_or("-".into(), |x| format!("{x:.decimals$}"))
}

/// The command line.
struct Args {
    reps: usize,
    torch: Option<String>,
    out: PathBuf,
    only: Option<Vec<String>>,
    section_of: Option<String>,
    train_only: bool,
    smollm2: bool,
}

fn parse_args() -> Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut parsed = Args {
        reps: 10,
        torch: std::env::var("COTUNE_TORCH_PYTHON").ok(),
        out: PathBuf::from("target/cotune-bench/bench.json"),
        only: None,
        section_of: None,
        train_only: false,
        smollm2: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--steps" => parsed.reps = value()?.parse().context("--steps takes a number")?,
            "--torch" => parsed.torch = Some(value()?.clone()),
            "--out" => parsed.out = PathBuf::from(value()?),
            "--only" => parsed.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--section" => parsed.section_of = Some(value()?.clone()),
            "--train-only" => parsed.train_only = true,
            "--shape" => match value()?.as_str() {
                "default" => parsed.smollm2 = false,
                "smollm2" => parsed.smollm2 = true,
                other => bail!("unknown --shape `{other}` (default or smollm2)"),
            },
            other => bail!(
                "unknown argument `{other}` (use --shape default|smollm2, --steps N, --torch PYTHON, --out FILE, --only NAME[,NAME])"
            ),
        }
    }
    if parsed.reps == 0 {
        bail!("--steps must be at least 1");
    }
    Ok(parsed)
}

/// One plugin's measures: cotune's and, given a Python with torch, PyTorch's.
type Row = (&'static str, Value, Option<Value>);

fn main() -> Result<()> {
    let args = parse_args()?;
    let reps = args.reps;
    if let Some(plugin) = &args.section_of {
        return section(plugin, reps, args.train_only);
    }
    let shapes = if args.smollm2 { SMOLLM2 } else { SHAPES };
    let selected: Vec<&Shape> = shapes
        .iter()
        .filter(|s| {
            args.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|p| p == s.name))
        })
        .collect();
    if selected.is_empty() {
        bail!(
            "--only names no bench model of this shape (have {})",
            shapes.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let first = selected[0];
    println!(
        "shape: batch {} x ({} prompt + {} answer) tokens; median of {reps} after {WARMUP} warm-up; cotune on flex ({}), one process per model",
        first.batch,
        first.prompt,
        first.answer,
        std::env::var("RAYON_NUM_THREADS")
            .map(|n| format!("RAYON_NUM_THREADS={n} threads"))
            .unwrap_or_else(|_| "one thread per core".into())
    );
    let mut results = serde_json::Map::new();
    let mut rows: Vec<Row> = Vec::new();
    for shape in &selected {
        let ours = match run_section(shape.name, reps) {
            Ok(r) => r,
            Err(e) => {
                println!("{}: not measured ({e})", shape.name);
                continue;
            }
        };
        let theirs = match &args.torch {
            Some(python) => Some(run_torch(python, shape, reps)?),
            None => None,
        };
        results.insert(shape.name.to_string(), ours.clone());
        if let Some(t) = &theirs {
            results.insert(format!("pytorch_{}", shape.name), t.clone());
        }
        rows.push((shape.name, ours, theirs));
    }
    print_tables(&rows);
    if args.torch.is_none() {
        println!("\n(PyTorch reference not run: pass --torch PYTHON with torch and transformers installed)");
    }
    if selected.iter().any(|s| s.name == "gpt2") {
        let in_process = bench_in_process(reps)?;
        if let Some(plugin_tps) = results
            .get("gpt2")
            .and_then(|r| r["train_tokens_per_s"].as_f64())
        {
            println!(
                "\nhost<->plugin overhead (gpt2 training): in-process {in_process:.0} tok/s, through the plugin {plugin_tps:.0} tok/s, ratio {:.3}",
                plugin_tps / in_process
            );
        }
        results.insert(
            "gpt2_in_process".into(),
            json!({ "train_tokens_per_s": in_process }),
        );
    }
    let out = &args.out;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// The speed table (tokens/s side by side, with ratios) and the size, step and memory table.
fn print_tables(rows: &[Row]) {
    let torch_label = rows
        .iter()
        .find_map(|(_, _, t)| t.as_ref())
        .map(|t| {
            format!(
                "PyTorch {} ({} threads)",
                t["torch"].as_str().unwrap_or("?"),
                t["threads"]
            )
        })
        .unwrap_or_else(|| "PyTorch".into());
    println!("\n| plugin | measure | cotune tok/s | {torch_label} tok/s | cotune / PyTorch |");
    println!("|---|---|---|---|---|");
    for (plugin, ours, theirs) in rows {
        for (key, label) in MEASURES {
            let (t, ratio) = match theirs {
                Some(t) => (
                    fmt_num(t, key, 0),
                    match (ours[key].as_f64(), t[key].as_f64()) {
                        (Some(a), Some(b)) => format!("{:.2}x", a / b),
                        _ => "-".into(),
                    },
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "| {plugin} | {label} | {} | {t} | {ratio} |",
                fmt_num(ours, key, 0)
            );
        }
    }
    println!("\n| plugin | params (cotune / PyTorch) | train step ms (cotune / PyTorch) | model peak MiB (cotune / PyTorch) | process peak RSS MiB (cotune / PyTorch) |");
    println!("|---|---|---|---|---|");
    let none = Value::Null;
    for (plugin, ours, theirs) in rows {
        let t = theirs.as_ref().unwrap_or(&none);
        println!(
            "| {plugin} | {} / {} | {} / {} | {} / {} | {} / {} |",
            fmt_num(ours, "params", 0),
            fmt_num(t, "params", 0),
            fmt_num(ours, "train_step_ms", 1),
            fmt_num(t, "train_step_ms", 1),
            fmt_num(ours, "model_peak_mib", 1),
            fmt_num(t, "model_peak_mib", 1),
            fmt_num(ours, "peak_rss_mib", 0),
            fmt_num(t, "peak_rss_mib", 0),
        );
    }
}
