//! The checks every cotune model plugin must pass.
//!
//! Each check is a public function over a [`Subject`] (a loaded plugin, an architecture and a
//! configuration), so the same suite runs over our plugins and over a stranger's library:
//!
//! ```ignore
//! let subject = Subject::open("path/to/libcotune_mine.so", None, None)?;
//! let outcomes = cotune_conformance::run_suite(&subject);
//! println!("{}", cotune_conformance::format_table(&subject, &outcomes));
//! ```
//!
//! Checks assert behaviour (shapes, causality, learning, exact round trips), with fixed seeds and
//! tolerances stated in each check, never timings.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use cotune_host::{
    DeviceChoice, ErrorKind, Example, GenerateOptions, HostError, Logits, Model, ParamSelection,
    Plugin, Structure, TrainOptions,
};

/// What a suite runs on: a plugin, one of its architectures and a configuration.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The loaded plugin.
    pub plugin: Plugin,
    /// The architecture under test.
    pub architecture: String,
    /// The model configuration (TOML).
    pub config: String,
}

impl Subject {
    /// Opens a plugin by name or path; the architecture defaults to the plugin's first and the
    /// configuration to the plugin's example configuration.
    pub fn open(
        plugin: &str,
        architecture: Option<&str>,
        config: Option<String>,
    ) -> Result<Subject, String> {
        let plugin = Plugin::open(plugin).map_err(|e| e.to_string())?;
        let architecture = match architecture {
            Some(a) => a.to_string(),
            None => plugin
                .architectures()
                .first()
                .cloned()
                .ok_or_else(|| format!("plugin {} offers no architecture", plugin.name()))?,
        };
        let config = match config {
            Some(c) => c,
            None => plugin.example_config(&architecture).ok_or_else(|| {
                format!(
                    "plugin {} has no example configuration for `{architecture}`; pass one",
                    plugin.name()
                )
            })?,
        };
        Ok(Subject {
            plugin,
            architecture,
            config,
        })
    }

    /// A fresh model with `seed`.
    pub fn model(&self, seed: u64) -> Result<Model, String> {
        self.plugin
            .new_model(&self.architecture, &self.config, seed, DeviceChoice::FLEX)
            .map_err(|e| e.to_string())
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured, or why it failed.
    pub detail: String,
    /// Wall time in milliseconds (informational only).
    pub millis: u128,
}

/// A check: `Ok(what was measured)` or `Err(why it failed)`.
pub type Check = fn(&Subject) -> Result<String, String>;

/// Every check, in order.
pub const CHECKS: &[(&str, Check)] = &[
    ("metadata", metadata),
    ("determinism", determinism),
    ("logits-shape", logits_shape),
    ("causality", causality),
    ("prompt-matters", prompt_matters),
    ("padding-invariance", padding_invariance),
    ("learning", learning),
    ("mutual-learning", mutual_learning),
    ("generation", generation),
    ("param-round-trip", param_round_trip),
    ("checkpoint", checkpoint),
    ("bad-input", bad_input),
    ("lora-split", lora_split),
    ("lora-round-trip", lora_round_trip),
];

/// Runs every check; a check that panics fails with the panic's message.
pub fn run_suite(subject: &Subject) -> Vec<CheckOutcome> {
    CHECKS
        .iter()
        .map(|&(name, check)| run_check(subject, name, check))
        .collect()
}

/// Runs one check, catching panics.
pub fn run_check(subject: &Subject, name: &'static str, check: Check) -> CheckOutcome {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| check(subject))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("the check panicked: {msg}"))
    });
    let (passed, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckOutcome {
        name,
        passed,
        detail,
        millis: start.elapsed().as_millis(),
    }
}

/// A Markdown table of the outcomes, headed by the subject.
pub fn format_table(subject: &Subject, outcomes: &[CheckOutcome]) -> String {
    let mut s = format!(
        "conformance: plugin `{}` {} ({}), architecture `{}`\n\n| # | check | result | ms | detail |\n|---|---|---|---|---|\n",
        subject.plugin.name(),
        subject.plugin.version(),
        subject.plugin.path().display(),
        subject.architecture
    );
    for (i, o) in outcomes.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i + 1,
            o.name,
            if o.passed { "pass" } else { "FAIL" },
            o.millis,
            o.detail.replace('|', "\\|").replace('\n', " ")
        ));
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name)
        .collect();
    if failed.is_empty() {
        s.push_str(&format!("\nall {} checks passed\n", outcomes.len()));
    } else {
        s.push_str(&format!("\nFAILED: {}\n", failed.join(", ")));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn e(err: HostError) -> String {
    err.to_string()
}

/// A deterministic token stream (SplitMix64), so checks never depend on luck.
struct Tokens(u64);

impl Tokens {
    fn next(&mut self, below: u32) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % below as u64) as u32
    }
    fn seq(&mut self, len: usize, vocab: u32) -> Vec<u32> {
        (0..len).map(|_| self.next(vocab)).collect()
    }
    fn float(&mut self) -> f32 {
        self.next(1 << 24) as f32 / (1 << 24) as f32
    }
}

fn vocab(model: &Model) -> u32 {
    model.spec().vocab_size
}

fn example(t: &mut Tokens, prompt: usize, answer: usize, vocab: u32) -> Example {
    Example::new(t.seq(prompt, vocab), t.seq(answer, vocab))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mean cross-entropy of the answers under `logits`, computed on the host.
fn cross_entropy(batch: &[Example], logits: &Logits) -> f32 {
    let mut total = 0.0f64;
    let mut n = 0usize;
    for (b, ex) in batch.iter().enumerate() {
        for (t, &target) in ex.answer.iter().enumerate() {
            let row = logits.row(b, t);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&v| ((v - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[target as usize] as f64;
            n += 1;
        }
    }
    (total / n as f64) as f32
}

fn options(lr: f32) -> TrainOptions {
    TrainOptions {
        learning_rate: lr,
        warmup_steps: 0,
        total_steps: 0,
        step: 0,
        min_lr_ratio: 1.0,
        weight_decay: 0.0,
        grad_clip_norm: 1.0,
        temperature: 1.0,
        kl_weight: 0.0,
    }
}

/// `steps` training steps on one batch, the schedule position counting from zero.
fn train(
    model: &mut Model,
    batch: &[Example],
    soft: Option<&Logits>,
    steps: u32,
    opts: TrainOptions,
) -> Result<(), String> {
    for step in 0..steps {
        model
            .train_step(batch, soft.cloned(), &TrainOptions { step, ..opts })
            .map_err(e)?;
    }
    Ok(())
}

fn small_batch(model: &Model, seed: u64) -> Vec<Example> {
    let v = vocab(model);
    let mut t = Tokens(seed);
    vec![
        example(&mut t, 5, 4, v),
        example(&mut t, 7, 3, v),
        example(&mut t, 4, 5, v),
        example(&mut t, 6, 4, v),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks

/// 1. The plugin's metadata is complete, and a malformed config or an unknown key is refused with
///    a message naming the key.
pub fn metadata(s: &Subject) -> Result<String, String> {
    let p = &s.plugin;
    if p.name().trim().is_empty() || p.version().trim().is_empty() {
        return Err(format!(
            "plugin name {:?} and version {:?} must be non-empty",
            p.name(),
            p.version()
        ));
    }
    if !p.architectures().iter().any(|a| a == &s.architecture) {
        return Err(format!(
            "architecture {} not among {:?}",
            s.architecture,
            p.architectures()
        ));
    }
    let model = s.model(0)?;
    let spec = model.spec();
    if spec.architecture.as_str() != s.architecture {
        return Err(format!(
            "spec names architecture {}, expected {}",
            spec.architecture, s.architecture
        ));
    }
    if spec.num_params == 0 || spec.num_trainable_params == 0 {
        return Err(format!(
            "parameter counts are zero: {} total, {} trainable",
            spec.num_params, spec.num_trainable_params
        ));
    }
    match p.new_model(&s.architecture, "this is [not toml", 0, DeviceChoice::FLEX) {
        Ok(_) => return Err("a malformed config was accepted".into()),
        Err(err) if err.plugin_kind() == Some(ErrorKind::InvalidConfig) => {}
        Err(err) => return Err(format!("a malformed config gave the wrong error: {err}")),
    }
    let key = "conformance_unknown_key";
    let bad = format!("{}\n{key} = 1\n", s.config);
    match p.new_model(&s.architecture, &bad, 0, DeviceChoice::FLEX) {
        Ok(_) => {
            return Err(format!(
                "a config with the unknown key `{key}` was accepted"
            ))
        }
        Err(err) if err.to_string().contains(key) => {}
        Err(err) => {
            return Err(format!(
                "the unknown-key error does not name `{key}`: {err}"
            ))
        }
    }
    if p.new_model("no-such-architecture", &s.config, 0, DeviceChoice::FLEX)
        .is_ok()
    {
        return Err("an unknown architecture was accepted".into());
    }
    Ok(format!(
        "{} {} {:?}, vocab {}, context {}, {} params",
        spec.architecture,
        p.version(),
        spec.structure,
        spec.vocab_size,
        spec.context_len,
        spec.num_params
    ))
}

/// 2. The same seed gives bit-identical logits; another seed gives different ones.
pub fn determinism(s: &Subject) -> Result<String, String> {
    let a = s.model(7)?;
    let b = s.model(7)?;
    let c = s.model(8)?;
    let batch = small_batch(&a, 1);
    let la = a.answer_logits(&batch).map_err(e)?;
    let lb = b.answer_logits(&batch).map_err(e)?;
    let lc = c.answer_logits(&batch).map_err(e)?;
    if la.data != lb.data {
        return Err(format!(
            "seed 7 twice gave logits differing by up to {}",
            max_abs_diff(&la.data, &lb.data)
        ));
    }
    let diff = max_abs_diff(&la.data, &lc.data);
    if diff == 0.0 {
        return Err("seeds 7 and 8 gave identical logits".into());
    }
    Ok(format!(
        "seed 7 twice: identical; seed 8: differs by {diff:.3e}"
    ))
}

/// 3. `answer_logits` has shape `[batch, answer_len, vocab]` with finite values (the host
///    validates both) and zeros past each example's answer.
pub fn logits_shape(s: &Subject) -> Result<String, String> {
    let model = s.model(1)?;
    let batch = small_batch(&model, 2);
    let logits = model.answer_logits(&batch).map_err(e)?;
    for (b, ex) in batch.iter().enumerate() {
        for t in ex.answer.len()..logits.answer_len as usize {
            if logits.row(b, t).iter().any(|&v| v != 0.0) {
                return Err(format!(
                    "example {b} position {t} is past its answer but not zero"
                ));
            }
        }
    }
    Ok(format!(
        "[{}, {}, {}], finite",
        logits.batch, logits.answer_len, logits.vocab
    ))
}

/// 4. Changing answer token `j` leaves the logits at positions `≤ j` unchanged (tolerance 1e-5)
///    and changes position `j + 1`.
pub fn causality(s: &Subject) -> Result<String, String> {
    let model = s.model(2)?;
    let v = vocab(&model);
    let mut t = Tokens(3);
    let base = example(&mut t, 6, 7, v);
    let before = model
        .answer_logits(std::slice::from_ref(&base))
        .map_err(e)?;
    let mut worst_unchanged = 0.0f32;
    for j in [0usize, 2, 5] {
        let mut changed = base.clone();
        changed.answer[j] = (changed.answer[j] + 1 + t.next(v - 1)) % v;
        let after = model.answer_logits(&[changed]).map_err(e)?;
        for pos in 0..=j {
            let d = max_abs_diff(before.row(0, pos), after.row(0, pos));
            worst_unchanged = worst_unchanged.max(d);
            if d > 1e-5 {
                return Err(format!(
                    "changing answer token {j} changed the logits at position {pos} by {d:.3e}: the model sees the future"
                ));
            }
        }
        let d_next = max_abs_diff(before.row(0, j + 1), after.row(0, j + 1));
        if d_next == 0.0 {
            return Err(format!(
                "changing answer token {j} left position {} unchanged: the model ignores the answer so far",
                j + 1
            ));
        }
    }
    Ok(format!(
        "positions <= j unchanged (max diff {worst_unchanged:.1e}), j+1 changes"
    ))
}

/// 5. Changing the prompt changes the answer logits.
pub fn prompt_matters(s: &Subject) -> Result<String, String> {
    let model = s.model(3)?;
    let v = vocab(&model);
    let mut t = Tokens(4);
    let base = example(&mut t, 6, 4, v);
    let before = model
        .answer_logits(std::slice::from_ref(&base))
        .map_err(e)?;
    let mut changed = base.clone();
    changed.prompt[0] = (changed.prompt[0] + 1) % v;
    let after = model.answer_logits(&[changed]).map_err(e)?;
    let d = max_abs_diff(&before.data, &after.data);
    if d < 1e-6 {
        return Err(format!(
            "changing the first prompt token changed the answer logits by only {d:.3e}"
        ));
    }
    Ok(format!(
        "first prompt token changed: logits move by {d:.3e}"
    ))
}

/// 6. An example's logits are the same alone and in a batch padded for a longer neighbour
///    (tolerance 1e-4).
pub fn padding_invariance(s: &Subject) -> Result<String, String> {
    let model = s.model(4)?;
    let v = vocab(&model);
    let mut t = Tokens(5);
    let short = example(&mut t, 3, 2, v);
    let long = example(&mut t, 11, 6, v);
    let alone = model
        .answer_logits(std::slice::from_ref(&short))
        .map_err(e)?;
    let batched = model.answer_logits(&[long, short.clone()]).map_err(e)?;
    let mut worst = 0.0f32;
    for pos in 0..short.answer.len() {
        worst = worst.max(max_abs_diff(alone.row(0, pos), batched.row(1, pos)));
    }
    if worst > 1e-4 {
        return Err(format!(
            "padding changed the short example's logits by {worst:.3e}"
        ));
    }
    Ok(format!("alone vs padded: max diff {worst:.1e}"))
}

/// 7. 50 steps on a 4-example batch cut its cross-entropy by at least 80%.
pub fn learning(s: &Subject) -> Result<String, String> {
    let mut model = s.model(5)?;
    let batch = small_batch(&model, 6);
    let before = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    let opts = options(1e-2);
    train(&mut model, &batch, None, 50, opts)?;
    let after = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    let cut = 1.0 - after / before;
    if cut.is_nan() || cut < 0.8 {
        return Err(format!(
            "cross-entropy {before:.3} -> {after:.3} after 50 steps: cut {:.0}%, need 80%",
            cut * 100.0
        ));
    }
    Ok(format!(
        "cross-entropy {before:.3} -> {after:.3} ({:.0}% cut)",
        cut * 100.0
    ))
}

fn kl_to(batch: &[Example], target: &Logits, logits: &Logits, temperature: f32) -> f32 {
    let mut total = 0.0f64;
    let mut n = 0;
    for (b, ex) in batch.iter().enumerate() {
        for t in 0..ex.answer.len() {
            let p = log_softmax(target.row(b, t), temperature);
            let q = log_softmax(logits.row(b, t), temperature);
            total += p
                .iter()
                .zip(&q)
                .map(|(&lp, &lq)| lp.exp() * (lp - lq))
                .sum::<f64>();
            n += 1;
        }
    }
    (total / n as f64) as f32
}

fn log_softmax(row: &[f32], temperature: f32) -> Vec<f64> {
    let scaled: Vec<f64> = row.iter().map(|&v| v as f64 / temperature as f64).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    scaled.iter().map(|v| v - lse).collect()
}

/// 8. With the mixing weight at pure KL, training toward a fixed target distribution lowers the
///    KL to it by at least half in 40 steps; the KL to the model's own distribution is ~0.
pub fn mutual_learning(s: &Subject) -> Result<String, String> {
    let mut model = s.model(6)?;
    let batch = small_batch(&model, 7);
    let own = model.answer_logits(&batch).map_err(e)?;
    let zero_lr = TrainOptions {
        kl_weight: 1.0,
        temperature: 2.0,
        ..options(0.0)
    };
    let self_kl = model
        .train_step(&batch, Some(own.clone()), &zero_lr)
        .map_err(e)?
        .kl;
    if self_kl.abs() > 1e-4 {
        return Err(format!(
            "KL to the model's own distribution is {self_kl:.3e}, not ~0"
        ));
    }
    let mut t = Tokens(8);
    let target = Logits {
        data: own.data.iter().map(|_| 4.0 * t.float() - 2.0).collect(),
        ..own.clone()
    };
    let temperature = 2.0;
    let before = kl_to(&batch, &target, &own, temperature);
    let opts = TrainOptions {
        kl_weight: 1.0,
        temperature,
        ..options(1e-2)
    };
    train(&mut model, &batch, Some(&target), 40, opts)?;
    let after = kl_to(
        &batch,
        &target,
        &model.answer_logits(&batch).map_err(e)?,
        temperature,
    );
    if after.is_nan() || after > 0.5 * before {
        return Err(format!(
            "KL to a fixed target went {before:.4} -> {after:.4} in 40 pure-KL steps; need at least halved"
        ));
    }
    Ok(format!(
        "self-KL {self_kl:.1e}; KL to target {before:.4} -> {after:.4}"
    ))
}

/// 9. Greedy output (with the key/value cache) equals step-by-step argmax recomputed through
///    `answer_logits` (tolerance 1e-4 on the chosen logit), stops at EOS, respects the cap.
pub fn generation(s: &Subject) -> Result<String, String> {
    let mut model = s.model(9)?;
    // A little training gives the model preferences, so argmax is not a coin toss.
    let batch = small_batch(&model, 10);
    train(&mut model, &batch, None, 5, options(1e-2))?;
    let v = vocab(&model);
    let mut t = Tokens(11);
    let prompts = vec![t.seq(5, v), t.seq(5, v), t.seq(8, v), t.seq(3, v)];
    let cap = 8u32;
    // An EOS id the model is unlikely to produce first: check the cap and argmax agreement.
    let never = GenerateOptions {
        max_new_tokens: cap,
        eos_id: v - 1,
    };
    let free = model.generate(&prompts, &never).map_err(e)?;
    verify_greedy(&model, &prompts, &free, &never)?;
    // Now stop at the token the first prompt produced third: output must end before it.
    let Some(&stop) = free[0].get(2) else {
        return Err(format!(
            "prompt 0 produced only {} tokens before EOS {}; cannot test stopping",
            free[0].len(),
            never.eos_id
        ));
    };
    let with_eos = GenerateOptions {
        max_new_tokens: cap,
        eos_id: stop,
    };
    let stopped = model.generate(&prompts, &with_eos).map_err(e)?;
    let expected: Vec<u32> = free[0].iter().copied().take_while(|&x| x != stop).collect();
    if stopped[0] != expected {
        return Err(format!(
            "with EOS {stop}, prompt 0 gave {:?}, expected {:?}",
            stopped[0], expected
        ));
    }
    verify_greedy(&model, &prompts, &stopped, &with_eos)?;
    let one = GenerateOptions {
        max_new_tokens: 1,
        eos_id: v - 1,
    };
    let short = model.generate(&prompts, &one).map_err(e)?;
    if short.iter().any(|o| o.len() > 1) {
        return Err("max_new_tokens = 1 produced more than one token".into());
    }
    Ok(format!(
        "4 prompts, cap {cap}: cached greedy = uncached argmax; stops at EOS {stop} after {} tokens",
        expected.len()
    ))
}

fn verify_greedy(
    model: &Model,
    prompts: &[Vec<u32>],
    outputs: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<(), String> {
    for (i, (prompt, out)) in prompts.iter().zip(outputs).enumerate() {
        if out.len() > opts.max_new_tokens as usize {
            return Err(format!("output {i} exceeds the cap: {} tokens", out.len()));
        }
        let mut answer = out.clone();
        let hit_eos = out.len() < opts.max_new_tokens as usize;
        if hit_eos {
            answer.push(opts.eos_id);
        }
        if answer.is_empty() {
            continue;
        }
        if out.contains(&opts.eos_id) {
            return Err(format!("output {i} contains the EOS id {}", opts.eos_id));
        }
        let ctx = model.spec().context_len as usize;
        if model.spec().structure == Structure::DecoderOnly && prompt.len() + answer.len() > ctx {
            continue;
        }
        let logits = model
            .answer_logits(&[Example::new(prompt.clone(), answer.clone())])
            .map_err(e)?;
        for (j, &tok) in answer.iter().enumerate() {
            let row = logits.row(0, j);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if row[tok as usize] < max - 1e-4 {
                return Err(format!(
                    "prompt {i}, step {j}: generation chose {tok} (logit {}), but the uncached argmax logit is {max}",
                    row[tok as usize]
                ));
            }
        }
    }
    Ok(())
}

/// 10. Export then import is exact; a wrong name or shape is refused and changes nothing.
pub fn param_round_trip(s: &Subject) -> Result<String, String> {
    let source = s.model(10)?;
    let mut target = s.model(11)?;
    let exported = source.export_params(ParamSelection::All).map_err(e)?;
    if exported.is_empty() {
        return Err("export_params(All) returned nothing".into());
    }
    let before = target.export_params(ParamSelection::All).map_err(e)?;
    let mut wrong_name = exported.clone();
    wrong_name[0].name = "conformance.no_such_parameter".into();
    match target.import_params(&wrong_name) {
        Ok(()) => return Err("an unknown parameter name was accepted".into()),
        Err(err) if err.to_string().contains("conformance.no_such_parameter") => {}
        Err(err) => return Err(format!("the unknown-name error does not name it: {err}")),
    }
    let mut wrong_shape = exported.clone();
    let last = wrong_shape.len() - 1;
    let p = &mut wrong_shape[last];
    let n = p.data.len() as u64;
    p.shape = vec![n, 1].into();
    if n == 1 {
        p.shape = vec![1, 1, 1].into();
    }
    let mut wrong_size = exported.clone();
    wrong_size[0].shape = vec![wrong_size[0].data.len() as u64 + 1].into();
    wrong_size[0].data.push(0.0);
    for (what, bad) in [("shape", &wrong_shape), ("size", &wrong_size)] {
        if target.import_params(bad).is_ok() {
            return Err(format!("an import with a wrong {what} was accepted"));
        }
    }
    let unchanged = target.export_params(ParamSelection::All).map_err(e)?;
    if unchanged != before {
        return Err("a refused import changed the model".into());
    }
    target.import_params(&exported).map_err(e)?;
    let after = target.export_params(ParamSelection::All).map_err(e)?;
    if after != exported {
        return Err("parameters after import differ from the exported ones".into());
    }
    let batch = small_batch(&source, 12);
    let ls = source.answer_logits(&batch).map_err(e)?;
    let lt = target.answer_logits(&batch).map_err(e)?;
    if ls.data != lt.data {
        return Err(format!(
            "after import, logits differ by {:.3e}",
            max_abs_diff(&ls.data, &lt.data)
        ));
    }
    // Imported parameters must still train: every tensor moves in the next step.
    target.train_step(&batch, None, &options(1e-2)).map_err(e)?;
    let trained = target.export_params(ParamSelection::All).map_err(e)?;
    let frozen: Vec<&str> = trained
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.data == b.data)
        .map(|(a, _)| a.name.as_str())
        .take(5)
        .collect();
    if !frozen.is_empty() {
        return Err(format!(
            "after import, a training step left these tensors unchanged (frozen by the import?): {frozen:?}"
        ));
    }
    let shared = source.export_params(ParamSelection::Shared).map_err(e)?;
    let specific = source
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    if shared.len() + specific.len() != exported.len() {
        return Err(format!(
            "shared ({}) + domain-specific ({}) != all ({}) tensors",
            shared.len(),
            specific.len(),
            exported.len()
        ));
    }
    let values: usize = exported.iter().map(|p| p.data.len()).sum();
    Ok(format!(
        "{} tensors ({values} values) exact and still trainable; wrong name/shape/size refused",
        exported.len()
    ))
}

/// 11. Save then load gives identical logits and an identical next training step.
pub fn checkpoint(s: &Subject) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("model.ckpt");
    let mut a = s.model(12)?;
    let batch = small_batch(&a, 13);
    let opts = options(5e-3);
    train(&mut a, &batch, None, 3, opts)?;
    a.save(&path).map_err(e)?;
    let mut b = s.model(99)?;
    b.load(&path).map_err(e)?;
    let la = a.answer_logits(&batch).map_err(e)?;
    let lb = b.answer_logits(&batch).map_err(e)?;
    if la.data != lb.data {
        return Err(format!(
            "loaded model's logits differ by {:.3e}",
            max_abs_diff(&la.data, &lb.data)
        ));
    }
    let next = TrainOptions { step: 3, ..opts };
    let ra = a.train_step(&batch, None, &next).map_err(e)?;
    let rb = b.train_step(&batch, None, &next).map_err(e)?;
    let la = a.answer_logits(&batch).map_err(e)?;
    let lb = b.answer_logits(&batch).map_err(e)?;
    if ra != rb || la.data != lb.data {
        return Err(format!(
            "the step after loading differs (loss {} vs {}, logits by {:.3e}): optimiser state was not restored",
            ra.loss,
            rb.loss,
            max_abs_diff(&la.data, &lb.data)
        ));
    }
    let missing = dir.path().join("missing.ckpt");
    match b.load(&missing) {
        Ok(()) => return Err("loading a missing file succeeded".into()),
        Err(err) if err.to_string().contains("missing.ckpt") => {}
        Err(err) => {
            return Err(format!(
                "the missing-file error does not name the file: {err}"
            ))
        }
    }
    let garbage = dir.path().join("garbage.ckpt");
    std::fs::write(&garbage, b"not a checkpoint").map_err(|err| err.to_string())?;
    if b.load(&garbage).is_ok() {
        return Err("loading a garbage file succeeded".into());
    }
    let lb2 = b.answer_logits(&batch).map_err(e)?;
    if lb2.data != lb.data {
        return Err("a failed load changed the model".into());
    }
    Ok("identical logits and next step after load; bad files refused".into())
}

/// 12. A token id ≥ vocab size, an empty batch, a NaN soft target: each a clear error from the
///     host and from the plugin itself (not a caught panic), and the model still works.
pub fn bad_input(s: &Subject) -> Result<String, String> {
    let mut model = s.model(13)?;
    let v = vocab(&model);
    let batch = small_batch(&model, 14);
    let mut out_of_range = batch.clone();
    out_of_range[1].answer[0] = v;
    let good_logits = model.answer_logits(&batch).map_err(e)?;
    let mut nan_soft = good_logits.clone();
    nan_soft.data[3] = f32::NAN;
    let opts = options(1e-3);

    let host_refuses = |r: Result<(), HostError>, what: &str, needle: &str| match r {
        Ok(()) => Err(format!("the host accepted {what}")),
        Err(err) if err.to_string().contains(needle) => Ok(()),
        Err(err) => Err(format!(
            "the host's error for {what} does not say `{needle}`: {err}"
        )),
    };
    host_refuses(
        model.answer_logits(&out_of_range).map(|_| ()),
        "a token id >= vocab",
        &v.to_string(),
    )?;
    host_refuses(
        model.answer_logits(&[]).map(|_| ()),
        "an empty batch",
        "empty",
    )?;
    host_refuses(
        model
            .train_step(&batch, Some(nan_soft.clone()), &opts)
            .map(|_| ()),
        "a NaN soft target",
        "NaN",
    )?;

    let plugin_refuses = |r: Result<(), cotune_host::PluginError>, what: &str| match r {
        Ok(()) => Err(format!("the plugin itself accepted {what}")),
        Err(err) if err.kind == ErrorKind::Panic => Err(format!(
            "the plugin panicked on {what} (caught, but not a clear error): {}",
            err.message
        )),
        Err(_) => Ok(()),
    };
    let mut raw = model.unvalidated();
    plugin_refuses(
        raw.answer_logits(&out_of_range).map(|_| ()),
        "a token id >= vocab",
    )?;
    plugin_refuses(raw.answer_logits(&[]).map(|_| ()), "an empty batch")?;
    plugin_refuses(
        raw.train_step(&batch, Some(nan_soft), &opts).map(|_| ()),
        "a NaN soft target",
    )?;
    plugin_refuses(
        raw.generate(
            &[vec![v + 5]],
            &GenerateOptions {
                max_new_tokens: 2,
                eos_id: 0,
            },
        )
        .map(|_| ()),
        "a prompt token id >= vocab",
    )?;
    plugin_refuses(
        raw.train_step(&[Example::new(vec![1], vec![])], None, &opts)
            .map(|_| ()),
        "an empty answer",
    )?;
    let after = model.answer_logits(&batch).map_err(e)?;
    if after.data != good_logits.data {
        return Err("refused inputs changed the model".into());
    }
    Ok("host and plugin refuse each with a clear error; model unchanged".into())
}

impl Subject {
    /// The subject's configuration with low-rank adapters of rank 2 switched on.
    pub fn lora_config(&self) -> String {
        format!("{}\n[lora]\nrank = 2\nalpha = 4.0\n", self.config)
    }

    /// A fresh model with adapters, with `seed`.
    pub fn lora_model(&self, seed: u64) -> Result<Model, String> {
        self.plugin
            .new_model(
                &self.architecture,
                &self.lora_config(),
                seed,
                DeviceChoice::FLEX,
            )
            .map_err(|e| e.to_string())
    }
}

/// 13. With adapters on (`[lora] rank = 2`), training changes only adapter tensors: shared
///     tensors stay bit-identical, adapter tensors move.
pub fn lora_split(s: &Subject) -> Result<String, String> {
    let mut model = s.lora_model(14)?;
    let spec = model.spec().clone();
    if spec.num_trainable_params >= spec.num_params {
        return Err(format!(
            "with adapters, {} of {} parameters are trainable",
            spec.num_trainable_params, spec.num_params
        ));
    }
    let shared = model.export_params(ParamSelection::Shared).map_err(e)?;
    let adapters = model
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    if adapters.is_empty() {
        return Err("export_params(DomainSpecific) is empty with adapters on".into());
    }
    let adapter_values: usize = adapters.iter().map(|p| p.data.len()).sum();
    if adapter_values as u64 != spec.num_trainable_params {
        return Err(format!(
            "adapter tensors hold {adapter_values} values, spec says {} trainable",
            spec.num_trainable_params
        ));
    }
    let batch = small_batch(&model, 15);
    let before = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    train(&mut model, &batch, None, 10, options(1e-2))?;
    let after = cross_entropy(&batch, &model.answer_logits(&batch).map_err(e)?);
    let shared_after = model.export_params(ParamSelection::Shared).map_err(e)?;
    if shared_after != shared {
        let moved: Vec<&str> = shared
            .iter()
            .zip(&shared_after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.name.as_str())
            .take(3)
            .collect();
        return Err(format!(
            "training with adapters changed shared tensors: {moved:?}"
        ));
    }
    let adapters_after = model
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    let moved = adapters
        .iter()
        .zip(&adapters_after)
        .filter(|(a, b)| a.data != b.data)
        .count();
    if moved == 0 {
        return Err("training with adapters changed no adapter tensor".into());
    }
    if after.is_nan() || after >= before {
        return Err(format!(
            "adapter training did not lower the loss: {before:.3} -> {after:.3}"
        ));
    }
    Ok(format!(
        "{} adapter tensors ({adapter_values} values); shared bit-identical, {moved} adapters moved; CE {before:.3} -> {after:.3}",
        adapters.len()
    ))
}

/// 14. Adapter export then import round trips exactly, and importing the shared part too gives
///     the same logits.
pub fn lora_round_trip(s: &Subject) -> Result<String, String> {
    let mut source = s.lora_model(16)?;
    let batch = small_batch(&source, 17);
    train(&mut source, &batch, None, 3, options(1e-2))?;
    let adapters = source
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?;
    let shared = source.export_params(ParamSelection::Shared).map_err(e)?;
    let mut target = s.lora_model(18)?;
    target.import_params(&adapters).map_err(e)?;
    if target
        .export_params(ParamSelection::DomainSpecific)
        .map_err(e)?
        != adapters
    {
        return Err("adapters after import differ from the exported ones".into());
    }
    target.import_params(&shared).map_err(e)?;
    let ls = source.answer_logits(&batch).map_err(e)?;
    let lt = target.answer_logits(&batch).map_err(e)?;
    if ls.data != lt.data {
        return Err(format!(
            "after importing shared and adapter tensors, logits differ by {:.3e}",
            max_abs_diff(&ls.data, &lt.data)
        ));
    }
    Ok(format!(
        "{} adapter + {} shared tensors round trip exactly",
        adapters.len(),
        shared.len()
    ))
}

/// Convenience for tests: runs the suite and returns the names of failed checks.
pub fn failed_checks(subject: &Subject) -> Vec<&'static str> {
    run_suite(subject)
        .into_iter()
        .filter(|o| !o.passed)
        .map(|o| o.name)
        .collect()
}
