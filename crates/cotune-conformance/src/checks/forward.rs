//! Checks 1-6: metadata, determinism, logits shape, causality, the prompt matters, padding.

use cotune_host::{DeviceChoice, ErrorKind};

use crate::support::*;
use crate::Subject;

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
            "architecture {} not among {}",
            s.architecture,
            p.architectures().join(", ")
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
