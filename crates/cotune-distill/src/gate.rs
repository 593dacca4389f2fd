//! Gated mutual learning: each example's distillation term weighted by how much better the
//! teacher knows it than the student.
//!
//! The paper's mutual learning gives every example the same weight `w` on `T² · KL(p || q)`,
//! with `p` the teacher's and `q` the student's answer distributions at temperature `T`. When
//! the teacher is the weaker model on an example, that term pulls the student towards a worse
//! answer. The gated variant weighs example `b`'s term by
//!
//! ```text
//! g_b = sigmoid(s · (ℓ_teacher(b) − ℓ_student(b)))
//! ```
//!
//! where `s` is the gate's sharpness and `ℓ_m(b)` is the mean over `b`'s answer positions of
//!
//! * [`GateSignal::Reference`] (labelled data: local questions, public questions): the log-
//!   probability model `m` gives the reference token, `log softmax(z_m)[y_t]`; so at `s = 1`,
//!   `g_b = P_t / (P_t + P_s)` with `P` the geometric-mean probability of the reference answer;
//! * [`GateSignal::Confidence`] (unlabelled data, e.g. answers a model wrote itself): the
//!   model's confidence, `max_v log softmax(z_m)[v]`.
//!
//! Both are computed at temperature 1 from the logits taken before either side's step.
//!
//! The weight is applied without any change to the plugins' `train_step`: the soft target of
//! example `b` becomes the mixture `m = g_b · p + (1 − g_b) · q` (with `q` the student's own
//! distribution before the step, as a constant), passed as logits `T · ln m`. The gradient of
//! `KL(m || q)` with respect to the student's logits is `(q − m) / T = g_b · (q − p) / T`: exactly
//! `g_b` times the gradient of the ungated term. So `g_b = 0` removes the example's
//! distillation term, `g_b = 1` is the paper's term, and the cross-entropy term is unchanged.

use cotune_host::{Example, Logits};
use serde::{Deserialize, Serialize};

/// The variant of mutual learning (`[train] saml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamlVariant {
    /// The paper's: every example's KL term with the same weight.
    #[default]
    Paper,
    /// Each example's KL term weighted by the gate of this module.
    Gated,
}

/// What the gate compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateSignal {
    /// The log-probability of the reference answer (labelled data).
    Reference,
    /// The model's own confidence (unlabelled data).
    Confidence,
}

/// The gate of one mutual-learning pass: `None` is the paper's fixed weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// What the two models are compared on.
    pub signal: GateSignal,
    /// The sharpness `s` of the sigmoid.
    pub sharpness: f32,
}

impl Gate {
    /// The gate of `variant` on data of `signal`'s kind; `None` for the paper's variant.
    pub fn of(variant: SamlVariant, signal: GateSignal, sharpness: f32) -> Option<Gate> {
        match variant {
            SamlVariant::Paper => None,
            SamlVariant::Gated => Some(Gate { signal, sharpness }),
        }
    }

    /// The mean score `ℓ(b)` of every example of `batch` under `logits`.
    pub fn scores(&self, batch: &[Example], logits: &Logits) -> Vec<f64> {
        batch
            .iter()
            .enumerate()
            .map(|(b, ex)| {
                if ex.answer.is_empty() {
                    return 0.0;
                }
                let total: f64 = ex
                    .answer
                    .iter()
                    .enumerate()
                    .map(|(t, &y)| {
                        let row = logits.row(b, t);
                        let lse = log_sum_exp(row, 1.0);
                        let chosen = match self.signal {
                            GateSignal::Reference => row.get(y as usize).copied().unwrap_or(0.0),
                            GateSignal::Confidence => {
                                row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                            }
                        };
                        f64::from(chosen) - lse
                    })
                    .sum();
                total / ex.answer.len() as f64
            })
            .collect()
    }

    /// The weight `g_b` of every example, from the teacher's and the student's scores.
    pub fn weights(&self, teacher: &[f64], student: &[f64]) -> Vec<f32> {
        teacher
            .iter()
            .zip(student)
            .map(|(t, s)| sigmoid(f64::from(self.sharpness) * (t - s)) as f32)
            .collect()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln Σ exp(z / t)`.
fn log_sum_exp(row: &[f32], t: f32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| f64::from((v - max) / t).exp()).sum();
    f64::from(max / t) + sum.ln()
}

/// The soft targets whose KL gradient is `weights[b]` times the teacher's: per answer position
/// of example `b`, `T · ln(g · softmax(teacher / T) + (1 − g) · softmax(student / T))`. Positions
/// past an example's answer (padding, masked by the loss) keep the teacher's logits.
pub fn mix_targets(
    batch: &[Example],
    teacher: &Logits,
    student: &Logits,
    weights: &[f32],
    temperature: f32,
) -> Logits {
    let v = teacher.vocab as usize;
    let a = teacher.answer_len as usize;
    let mut data = teacher.data.to_vec();
    let t = temperature;
    for (b, ex) in batch.iter().enumerate() {
        let g = f64::from(weights[b]);
        for pos in 0..ex.answer.len().min(a) {
            let (p_row, q_row) = (teacher.row(b, pos), student.row(b, pos));
            let (lp, lq) = (log_sum_exp(p_row, t), log_sum_exp(q_row, t));
            let out = &mut data[(b * a + pos) * v..(b * a + pos + 1) * v];
            for k in 0..v {
                let p = (f64::from(p_row[k] / t) - lp).exp();
                let q = (f64::from(q_row[k] / t) - lq).exp();
                let m = (g * p + (1.0 - g) * q).max(1e-30);
                out[k] = (f64::from(t) * m.ln()) as f32;
            }
        }
    }
    Logits::new(teacher.batch, teacher.answer_len, teacher.vocab, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(answer: Vec<u32>) -> Example {
        Example::new(vec![1, 2], answer)
    }

    fn softmax(row: &[f32], t: f32) -> Vec<f64> {
        let lse = log_sum_exp(row, t);
        row.iter()
            .map(|&z| (f64::from(z / t) - lse).exp())
            .collect()
    }

    /// The gradient of `KL(softmax(target/T) || softmax(z/T))` in `z` is `(q − p) / T`: the
    /// mixed target's gradient must be `g` times the teacher's.
    #[test]
    fn mixed_targets_scale_the_gradient_by_the_gate() {
        let batch = vec![example(vec![0, 2]), example(vec![1])];
        let teacher = Logits::new(
            2,
            2,
            3,
            vec![2.0, 0.5, -1.0, 0.0, 1.0, 3.0, -0.5, 1.5, 0.2, 9.0, 9.0, 9.0],
        );
        let student = Logits::new(
            2,
            2,
            3,
            vec![0.1, 0.2, 0.3, 1.0, -1.0, 0.0, 0.7, 0.1, -0.3, 0.0, 0.0, 0.0],
        );
        let weights = [0.25f32, 0.8];
        let t = 2.0;
        let mixed = mix_targets(&batch, &teacher, &student, &weights, t);
        for (b, ex) in batch.iter().enumerate() {
            for pos in 0..ex.answer.len() {
                let p = softmax(teacher.row(b, pos), t);
                let q = softmax(student.row(b, pos), t);
                let m = softmax(mixed.row(b, pos), t);
                for k in 0..3 {
                    let want = f64::from(weights[b]) * (q[k] - p[k]);
                    assert!(((q[k] - m[k]) - want).abs() < 1e-6, "b {b} pos {pos} k {k}");
                }
            }
        }
        // Padding past the second example's answer keeps the teacher's logits.
        assert_eq!(mixed.row(1, 1), teacher.row(1, 1));
    }

    #[test]
    fn the_gate_opens_for_the_model_that_knows_the_reference() {
        let gate = Gate {
            signal: GateSignal::Reference,
            sharpness: 1.0,
        };
        let batch = vec![example(vec![0])];
        let knows = Logits::new(1, 1, 3, vec![5.0, 0.0, 0.0]);
        let guesses = Logits::new(1, 1, 3, vec![0.0, 5.0, 0.0]);
        let (k, g) = (gate.scores(&batch, &knows), gate.scores(&batch, &guesses));
        assert!(gate.weights(&k, &g)[0] > 0.99, "a knowing teacher teaches");
        assert!(
            gate.weights(&g, &k)[0] < 0.01,
            "a guessing teacher is shut out"
        );
        let even = gate.weights(&k, &k)[0];
        assert!((even - 0.5).abs() < 1e-6);
        // At sharpness 1 the gate is P_t / (P_t + P_s).
        let (pt, ps) = (
            softmax(knows.row(0, 0), 1.0)[0],
            softmax(guesses.row(0, 0), 1.0)[0],
        );
        let want = pt / (pt + ps);
        assert!((f64::from(gate.weights(&k, &g)[0]) - want).abs() < 1e-6);
    }

    #[test]
    fn confidence_ignores_the_reference() {
        let gate = Gate {
            signal: GateSignal::Confidence,
            sharpness: 2.0,
        };
        let batch = vec![example(vec![0])];
        let sure = Logits::new(1, 1, 3, vec![0.0, 6.0, 0.0]);
        let unsure = Logits::new(1, 1, 3, vec![0.0, 0.1, 0.0]);
        let w = gate.weights(&gate.scores(&batch, &sure), &gate.scores(&batch, &unsure));
        assert!(w[0] > 0.85, "{w:?}");
        assert_eq!(
            Gate::of(SamlVariant::Paper, GateSignal::Reference, 1.0),
            None
        );
    }
}
