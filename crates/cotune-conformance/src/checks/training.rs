//! Checks 7-8: learning, and mutual learning toward soft targets.

use cotune_host::{Example, Logits, TrainOptions};

use crate::support::*;
use crate::Subject;

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
