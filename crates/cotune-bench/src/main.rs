//! `cargo xtask bench`: tokens per second of every plugin at a fixed shape, through the plugin
//! boundary, plus the overhead of that boundary (the GPT-2 model stepped in-process versus
//! through its plugin) and, when asked, the same GPT-2 shape in PyTorch.
//!
//! Usage: `cotune-bench [--steps N] [--torch PYTHON] [--out FILE]`
//!
//! Every figure is the median over `N` timed repetitions after 3 warm-up repetitions. Tokens are
//! counted as prompt + answer tokens per example for training and answer logits, and as generated
//! tokens for generation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cotune_host::{
    AnswerExample, DeviceChoice, Example, GenerateOptions, Model, Plugin, TrainOptions,
};
use cotune_sdk::burn::tensor::Device;
use cotune_sdk::Trainer;
use serde_json::json;

const BATCH: usize = 16;
const PROMPT: usize = 32;
const ANSWER: usize = 32;
const WARMUP: usize = 3;

struct Shape {
    plugin: &'static str,
    config: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        plugin: "gpt2",
        config: include_str!("../configs/gpt2.toml"),
    },
    Shape {
        plugin: "llama",
        config: include_str!("../configs/llama.toml"),
    },
    Shape {
        plugin: "t5",
        config: include_str!("../configs/t5.toml"),
    },
];

fn batch(vocab: u32, seed: u64) -> Vec<Example> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % vocab as u64) as u32
    };
    (0..BATCH)
        .map(|_| {
            Example::new(
                (0..PROMPT).map(|_| next()).collect(),
                (0..ANSWER).map(|_| next()).collect(),
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

/// Peak resident memory of this process so far, in MiB (Linux; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn bench_model(model: &mut Model, reps: usize) -> Result<serde_json::Value> {
    let vocab = model.spec().vocab_size;
    let data = batch(vocab, 1);
    let tokens = (BATCH * (PROMPT + ANSWER)) as f64;
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
    // An end-of-sequence id outside the vocabulary's used range is unlikely to be produced, so
    // every prompt runs to the cap; the count below uses what was really generated.
    let gen_opts = GenerateOptions {
        max_new_tokens: ANSWER as u32,
        eos_id: vocab - 1,
    };
    let mut generated = 0usize;
    let gen = median_secs(reps.min(5), || {
        let out = model.generate(&prompts, &gen_opts)?;
        generated = out.iter().map(|o| o.len().max(1)).sum();
        Ok(())
    })?;
    Ok(json!({
        "params": model.spec().num_params,
        "train_tokens_per_s": tokens / train,
        "answer_logits_tokens_per_s": tokens / logits,
        "generate_tokens_per_s": generated as f64 / gen,
        "train_step_ms": train * 1e3,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// The GPT-2 bench model stepped directly, without the plugin boundary.
fn bench_in_process(reps: usize) -> Result<f64> {
    let mut trainer = Trainer::<cotune_gpt2::Gpt2>::from_toml(SHAPES[0].config, 0, Device::flex())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data: Vec<AnswerExample> = batch(512, 1)
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
    Ok((BATCH * (PROMPT + ANSWER)) as f64 / secs)
}

fn run_torch(python: &str, reps: usize) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/gpt2_torch.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--steps", &reps.to_string()])
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the PyTorch reference's JSON")
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 10usize;
    let mut torch: Option<String> = std::env::var("COTUNE_TORCH_PYTHON").ok();
    let mut out = PathBuf::from("target/cotune-bench/bench.json");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--steps" => reps = value()?.parse().context("--steps takes a number")?,
            "--torch" => torch = Some(value()?.clone()),
            "--out" => out = PathBuf::from(value()?),
            other => {
                bail!("unknown argument `{other}` (use --steps N, --torch PYTHON, --out FILE)")
            }
        }
    }
    if reps == 0 {
        bail!("--steps must be at least 1");
    }
    println!(
        "shape: batch {BATCH} x ({PROMPT} prompt + {ANSWER} answer) tokens; median of {reps} after {WARMUP} warm-up; flex backend, {} rayon threads",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    let mut results = serde_json::Map::new();
    println!("\n| plugin | params | train tok/s | answer-logits tok/s | generate tok/s | step ms | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        let plugin = match Plugin::find(shape.plugin) {
            Ok(p) => p,
            Err(e) => {
                println!("| {} | not built ({e}) | | | | | |", shape.plugin);
                continue;
            }
        };
        let arch = plugin.architectures()[0].clone();
        let mut model = plugin.new_model(&arch, shape.config, 0, DeviceChoice::FLEX)?;
        let r = bench_model(&mut model, reps)?;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            shape.plugin,
            r["params"],
            r["train_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["answer_logits_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["generate_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["train_step_ms"].as_f64().unwrap_or(0.0),
            r["peak_rss_mib"]
                .as_f64()
                .map_or("-".into(), |m| format!("{m:.0}")),
        );
        results.insert(shape.plugin.to_string(), r);
    }
    let in_process = bench_in_process(reps)?;
    let through_plugin = results
        .get("gpt2")
        .and_then(|r| r["train_tokens_per_s"].as_f64());
    if let Some(plugin_tps) = through_plugin {
        println!(
            "\nhost<->plugin overhead (gpt2 training): in-process {in_process:.0} tok/s, through the plugin {plugin_tps:.0} tok/s, ratio {:.3}",
            plugin_tps / in_process
        );
    }
    results.insert(
        "gpt2_in_process".into(),
        json!({ "train_tokens_per_s": in_process }),
    );
    if let Some(python) = torch {
        let t = run_torch(&python, reps)?;
        let ratio = |key: &str| -> Option<f64> {
            Some(results.get("gpt2")?[key].as_f64()? / t[key].as_f64()?)
        };
        println!(
            "\nPyTorch reference (same GPT-2 shape, {} threads): train {:.0} tok/s, answer-logits {:.0} tok/s, generate {:.0} tok/s",
            t["threads"],
            t["train_tokens_per_s"].as_f64().unwrap_or(0.0),
            t["answer_logits_tokens_per_s"].as_f64().unwrap_or(0.0),
            t["generate_tokens_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "cotune gpt2 / PyTorch: train {:.2}x, answer-logits {:.2}x, generate {:.2}x",
            ratio("train_tokens_per_s").unwrap_or(f64::NAN),
            ratio("answer_logits_tokens_per_s").unwrap_or(f64::NAN),
            ratio("generate_tokens_per_s").unwrap_or(f64::NAN)
        );
        results.insert("pytorch_gpt2".into(), t);
    } else {
        println!("\n(PyTorch reference not run: pass --torch PYTHON with torch installed)");
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}
