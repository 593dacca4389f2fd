//! What happens to a DPM's shared parameters between a device's training and the server's
//! learning: the device's clipping and noise (differential privacy), an attacker's changes (for
//! experiments), and the server's checks and combination rules.
//!
//! An *update* is an upload minus the DPM the round started from (the *reference*). Every rule
//! here works on whole parameter sets (the shared part, every tensor in a fixed order) and
//! refuses sets whose names or shapes differ, naming the tensor.
//!
//! - Clipping scales an update down to L2 norm `clip` over all its tensors together.
//! - Noise adds independent Gaussian values of a given standard deviation to every coordinate.
//! - `median`, `trimmed_mean` work coordinate by coordinate; both are translation-equivariant,
//!   so applying them to the uploads or to the updates gives the same DPM. `krum` picks one
//!   upload: the one whose squared distances to its `n - f - 2` nearest others sum lowest
//!   (Blanchard et al., 2017), which tolerates `f` arbitrary uploads when `n > 2f + 2`.
//!
//! [`ExpectedUpload`] and [`check_upload`] are what a deployment checks every upload against
//! before accepting it over the network, whatever its kind (a parameter set, FedMKT's
//! knowledge, centralized's records, or nothing): an upload that passes cannot fail the
//! server's step.

use cotune_data::SeededRng;
use cotune_host::NamedTensor;

use crate::config::{AttackConfig, AttackKind, PrivacyConfig, PrivacyMode};
use crate::message::{decode_params, encode_params};
use crate::seed::{RoundSeed, Stream};

/// What a device did to its upload (for the round's record).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    /// The update's L2 norm before clipping.
    pub norm: f64,
    /// Whether it was scaled down to `clip`.
    pub clipped: bool,
    /// Whether this device attacked.
    pub attacked: bool,
}

/// The device's last step before its upload leaves: an honest device clips its update to
/// `privacy.clip` and, with local privacy, adds its noise; the attacking device of `attack`
/// changes its update as configured instead. `reference` is the shared part the round started
/// from; `seed` the device's seeds this round.
pub fn prepare_upload(
    bytes: &mut Vec<u8>,
    reference: &[NamedTensor],
    privacy: Option<&PrivacyConfig>,
    attack: Option<&AttackConfig>,
    device: usize,
    seed: RoundSeed,
) -> Result<Prepared, String> {
    let mut set = decode_params(bytes).map_err(|e| e.to_string())?;
    check_like(&set, reference)?;
    let norm = update_norm(&set, reference);
    let mut prepared = Prepared {
        norm,
        clipped: false,
        attacked: false,
    };
    match (attack, privacy) {
        (Some(a), _) if a.device == device => {
            let mut rng = SeededRng::for_stream(seed.of(Stream::Attack, 0), "attack");
            self::attack(&mut set, reference, a.kind, a.factor, &mut rng);
            prepared.attacked = true;
        }
        (_, Some(p)) => {
            clip_update(&mut set, reference, p.clip);
            prepared.clipped = norm > p.clip;
            if p.mode == PrivacyMode::Local {
                let mut rng = SeededRng::for_stream(seed.of(Stream::UploadNoise, 0), "noise");
                add_noise(&mut set, p.noise_multiplier * p.clip, &mut rng);
            }
        }
        _ => return Ok(prepared),
    }
    *bytes = encode_params(&set);
    Ok(prepared)
}

/// Checks that `set` has the names and shapes of `reference`; names the first difference.
pub fn check_like(set: &[NamedTensor], reference: &[NamedTensor]) -> Result<(), String> {
    if set.len() != reference.len() {
        return Err(format!(
            "{} tensors where the DPM has {}",
            set.len(),
            reference.len()
        ));
    }
    for (a, b) in set.iter().zip(reference) {
        if a.name != b.name || a.shape != b.shape {
            return Err(format!(
                "tensor {} of shape {} where the DPM has {} of shape {}",
                a.name,
                shape_text(&a.shape),
                b.name,
                shape_text(&b.shape)
            ));
        }
    }
    Ok(())
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The first non-finite value of `set`: `(tensor, index, value)`.
pub fn first_non_finite(set: &[NamedTensor]) -> Option<(String, usize, f32)> {
    set.iter().find_map(|t| {
        t.data
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| (t.name.to_string(), i, t.data[i]))
    })
}

/// The L2 norm of `set - reference` over every coordinate.
pub fn update_norm(set: &[NamedTensor], reference: &[NamedTensor]) -> f64 {
    let mut sum = 0f64;
    for (a, b) in set.iter().zip(reference) {
        for (&x, &y) in a.data.iter().zip(b.data.iter()) {
            let d = f64::from(x) - f64::from(y);
            sum += d * d;
        }
    }
    sum.sqrt()
}

/// Replaces `set` by `reference + f(set - reference)` coordinate by coordinate.
fn map_update(set: &mut [NamedTensor], reference: &[NamedTensor], mut f: impl FnMut(f64) -> f64) {
    for (a, b) in set.iter_mut().zip(reference) {
        for (x, &y) in a.data.iter_mut().zip(b.data.iter()) {
            let d = f64::from(*x) - f64::from(y);
            *x = (f64::from(y) + f(d)) as f32;
        }
    }
}

/// Scales the update `set - reference` down to L2 norm `clip` when it is longer; returns its
/// norm before clipping.
pub fn clip_update(set: &mut [NamedTensor], reference: &[NamedTensor], clip: f64) -> f64 {
    let norm = update_norm(set, reference);
    if norm > clip && norm > 0.0 {
        let scale = clip / norm;
        map_update(set, reference, |d| d * scale);
    }
    norm
}

/// One standard normal draw (Box–Muller on two uniform draws).
pub fn standard_normal(rng: &mut SeededRng) -> f64 {
    let u1 = 1.0 - rng.unit();
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Adds independent Gaussian noise of standard deviation `std` to every coordinate of `set`.
pub fn add_noise(set: &mut [NamedTensor], std: f64, rng: &mut SeededRng) {
    if std == 0.0 {
        return;
    }
    for t in set.iter_mut() {
        for x in t.data.iter_mut() {
            *x = (f64::from(*x) + std * standard_normal(rng)) as f32;
        }
    }
}

/// What a misbehaving device does to its upload `set` (the round started from `reference`).
pub fn attack(
    set: &mut [NamedTensor],
    reference: &[NamedTensor],
    kind: AttackKind,
    factor: f64,
    rng: &mut SeededRng,
) {
    match kind {
        AttackKind::Scale => map_update(set, reference, |d| factor * d),
        AttackKind::SignFlip => map_update(set, reference, |d| -factor * d),
        AttackKind::Random => {
            let norm = update_norm(set, reference);
            let count: usize = set.iter().map(|t| t.data.len()).sum();
            // Each coordinate of std s gives a vector of norm about s * sqrt(count).
            let std = factor * norm / (count.max(1) as f64).sqrt();
            map_update(set, reference, |_| std * standard_normal(rng));
        }
        AttackKind::Nan => {
            for t in set.iter_mut() {
                t.data.iter_mut().for_each(|x| *x = f32::NAN);
            }
        }
    }
}

/// Checks that every set is shaped like the first; returns the first.
fn first_of(sets: &[Vec<NamedTensor>]) -> Result<&Vec<NamedTensor>, String> {
    let first = sets.first().ok_or("no uploads to combine")?;
    for (i, set) in sets.iter().enumerate().skip(1) {
        check_like(set, first).map_err(|e| format!("upload {i}: {e}"))?;
    }
    Ok(first)
}

/// Combines the sets coordinate by coordinate with `rule` over the values of all sets.
fn per_coordinate(
    sets: &[Vec<NamedTensor>],
    mut rule: impl FnMut(&mut [f32]) -> f32,
) -> Result<Vec<NamedTensor>, String> {
    let mut out = first_of(sets)?.clone();
    let mut column = vec![0f32; sets.len()];
    for (t, tensor) in out.iter_mut().enumerate() {
        for (k, x) in tensor.data.iter_mut().enumerate() {
            for (c, set) in column.iter_mut().zip(sets) {
                *c = set[t].data[k];
            }
            *x = rule(&mut column);
        }
    }
    Ok(out)
}

/// The unweighted mean of the sets.
pub fn mean(sets: &[Vec<NamedTensor>]) -> Result<Vec<NamedTensor>, String> {
    let n = sets.len() as f64;
    per_coordinate(sets, |c| {
        (c.iter().map(|&v| f64::from(v)).sum::<f64>() / n) as f32
    })
}

/// The coordinate-wise median (the mean of the two middle values for an even count).
pub fn median(sets: &[Vec<NamedTensor>]) -> Result<Vec<NamedTensor>, String> {
    per_coordinate(sets, |c| {
        c.sort_unstable_by(f32::total_cmp);
        let n = c.len();
        if n % 2 == 1 {
            c[n / 2]
        } else {
            ((f64::from(c[n / 2 - 1]) + f64::from(c[n / 2])) / 2.0) as f32
        }
    })
}

/// How many values `trimmed_mean` drops at each end of a coordinate of `n` values.
pub fn trimmed_count(n: usize, trim: f64) -> usize {
    ((n as f64 * trim).floor() as usize).min(n.saturating_sub(1) / 2)
}

/// The coordinate-wise mean after dropping `floor(n * trim)` values at each end (at least one
/// value is always kept).
pub fn trimmed_mean(sets: &[Vec<NamedTensor>], trim: f64) -> Result<Vec<NamedTensor>, String> {
    let cut = trimmed_count(sets.len(), trim);
    per_coordinate(sets, |c| {
        c.sort_unstable_by(f32::total_cmp);
        let kept = &c[cut..c.len() - cut];
        (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
    })
}

/// Krum's choice among the sets, tolerating `byzantine` arbitrary ones: the index of the set
/// whose squared distances to its `n - byzantine - 2` nearest others sum lowest.
pub fn krum(sets: &[Vec<NamedTensor>], byzantine: usize) -> Result<usize, String> {
    first_of(sets)?;
    let n = sets.len();
    if n <= 2 * byzantine + 2 {
        return Err(format!(
            "Krum with byzantine = {byzantine} needs more than {} uploads, got {n}",
            2 * byzantine + 2
        ));
    }
    let neighbours = n - byzantine - 2;
    let distance = |a: &[NamedTensor], b: &[NamedTensor]| update_norm(a, b).powi(2);
    let mut d = vec![vec![0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let v = distance(&sets[i], &sets[j]);
            d[i][j] = v;
            d[j][i] = v;
        }
    }
    let score = |i: usize| {
        let mut others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| d[i][j]).collect();
        others.sort_unstable_by(f64::total_cmp);
        others[..neighbours].iter().sum::<f64>()
    };
    Ok((0..n)
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
        .expect("at least three uploads"))
}

/// What a device's upload of a round must be, as the server knows before it arrives
/// ([`crate::FederatedMethod::expected_uploads`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedUpload {
    /// No message: the method's device step sends none.
    Nothing,
    /// A parameter set with the names and shapes of this reference (the DPM the device's step
    /// started from), every value finite.
    Params(Vec<NamedTensor>),
    /// Top-k answer distributions ([`crate::fedmkt::encode_topk`]), one per example of the
    /// round's public sample as the device encodes it: example `e` covers `answer_lens[e]`
    /// positions with `k` entries each, `1 <= k <= max_k`; every logit finite, every remaining
    /// mass finite or minus infinity.
    Knowledge {
        /// Per example of the sample, its answer's length in the device's tokens.
        answer_lens: Vec<usize>,
        /// `train.top_k`.
        max_k: usize,
    },
    /// The device's training records as a JSON list of question-answer records, at most
    /// `max_records` of them, none blank.
    Records {
        /// The most training records a device holds under the config.
        max_records: usize,
    },
}

impl ExpectedUpload {
    /// The kind in words, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ExpectedUpload::Nothing => "no message",
            ExpectedUpload::Params(_) => "a DPM's parameters",
            ExpectedUpload::Knowledge { .. } => "top-k knowledge",
            ExpectedUpload::Records { .. } => "training records",
        }
    }
}

/// Checks a device's step message (`None`: it sent none) against what the server expects;
/// `max_norm` bounds a parameter set's update (`deploy.max_update_norm`). The error names what
/// is wrong and where.
pub fn check_upload(
    expected: &ExpectedUpload,
    message: Option<&[u8]>,
    max_norm: Option<f64>,
) -> Result<(), String> {
    let Some(bytes) = message else {
        return match expected {
            ExpectedUpload::Nothing => Ok(()),
            ExpectedUpload::Params(_) => {
                Err("the step's upload holds no DPM parameters".to_string())
            }
            other => Err(format!(
                "the step's upload holds no message; the method expects {}",
                other.kind()
            )),
        };
    };
    match expected {
        ExpectedUpload::Nothing => Err(format!(
            "the step's upload holds a message of {} bytes; the method's device step sends none",
            bytes.len()
        )),
        ExpectedUpload::Params(reference) => {
            let set = decode_params(bytes).map_err(|err| err.to_string())?;
            check_like(&set, reference)?;
            if let Some((name, k, v)) = first_non_finite(&set) {
                return Err(format!("non-finite value {v} at {name}[{k}]"));
            }
            if let Some(max) = max_norm {
                let norm = update_norm(&set, reference);
                if norm.is_nan() || norm > max {
                    return Err(format!(
                        "update norm {norm:.4} is above deploy.max_update_norm = {max}"
                    ));
                }
            }
            Ok(())
        }
        ExpectedUpload::Knowledge { answer_lens, max_k } => {
            check_knowledge(bytes, answer_lens, *max_k)
        }
        ExpectedUpload::Records { max_records } => check_records(bytes, *max_records),
    }
}

fn check_knowledge(bytes: &[u8], answer_lens: &[usize], max_k: usize) -> Result<(), String> {
    let entries =
        crate::fedmkt::decode_topk(bytes).map_err(|err| format!("the knowledge upload: {err}"))?;
    if entries.len() != answer_lens.len() {
        return Err(format!(
            "the knowledge upload covers {} examples, the round's public sample has {}",
            entries.len(),
            answer_lens.len()
        ));
    }
    for (e, (entry, &len)) in entries.iter().zip(answer_lens).enumerate() {
        let positions = entry.positions();
        if positions != len {
            return Err(format!(
                "knowledge of example {e} covers {positions} answer positions, the example has \
                 {len}"
            ));
        }
        if positions == 0 {
            continue;
        }
        let k = entry.ids.len() / positions;
        if k == 0 || k > max_k {
            return Err(format!(
                "knowledge of example {e} has k = {k} entries per position, expected 1 to \
                 train.top_k = {max_k}"
            ));
        }
        if let Some(i) = entry.logits.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "knowledge of example {e} has the non-finite logit {} at position {}",
                entry.logits[i],
                i / k
            ));
        }
        if let Some(t) = entry
            .rest
            .iter()
            .position(|v| v.is_nan() || *v == f32::INFINITY)
        {
            return Err(format!(
                "knowledge of example {e} has the remaining mass {} at position {t} (finite or \
                 -inf expected)",
                entry.rest[t]
            ));
        }
    }
    Ok(())
}

fn check_records(bytes: &[u8], max_records: usize) -> Result<(), String> {
    let records: Vec<cotune_data::QaRecord> = serde_json::from_slice(bytes)
        .map_err(|err| format!("the records upload is not a JSON list of records: {err}"))?;
    if records.len() > max_records {
        return Err(format!(
            "the records upload holds {} records, more than the {max_records} a device's \
             training set holds under the config",
            records.len()
        ));
    }
    if let Some(i) = records
        .iter()
        .position(|r| r.question.trim().is_empty() || r.answer.trim().is_empty())
    {
        return Err(format!(
            "record {i} of the records upload has a blank question or answer"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[f32]) -> Vec<NamedTensor> {
        vec![
            NamedTensor::new("w", vec![values.len() as u64 - 1], values[1..].to_vec()),
            NamedTensor::new("b", vec![1], vec![values[0]]),
        ]
    }

    fn values(set: &[NamedTensor]) -> Vec<f32> {
        let mut v = vec![set[1].data[0]];
        v.extend(set[0].data.iter());
        v
    }

    #[test]
    fn clipping_scales_long_updates_to_the_clip_and_keeps_short_ones() {
        let reference = set(&[1.0, 1.0, 1.0]);
        let mut long = set(&[4.0, 5.0, 1.0]); // update (3, 4, 0): norm 5
        let norm = clip_update(&mut long, &reference, 1.0);
        assert!((norm - 5.0).abs() < 1e-9);
        let got = values(&long);
        for (g, want) in got.iter().zip([1.6, 1.8, 1.0]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        assert!((update_norm(&long, &reference) - 1.0).abs() < 1e-6);
        let mut short = set(&[1.3, 1.4, 1.0]);
        clip_update(&mut short, &reference, 1.0);
        assert_eq!(values(&short), vec![1.3, 1.4, 1.0]);
    }

    #[test]
    fn noise_has_the_asked_spread_and_is_seeded() {
        let mut a = vec![NamedTensor::new("w", vec![20_000], vec![0.0; 20_000])];
        let mut b = a.clone();
        add_noise(&mut a, 0.5, &mut SeededRng::for_stream(3, "t"));
        add_noise(&mut b, 0.5, &mut SeededRng::for_stream(3, "t"));
        assert_eq!(a, b);
        let x: Vec<f64> = a[0].data.iter().map(|&v| f64::from(v)).collect();
        let m = x.iter().sum::<f64>() / x.len() as f64;
        let sd = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        assert!(
            m.abs() < 0.02 && (sd - 0.5).abs() < 0.02,
            "mean {m}, sd {sd}"
        );
    }

    #[test]
    fn attacks_change_the_update_as_named() {
        let reference = set(&[0.0, 1.0, 1.0]);
        let upload = set(&[1.0, 2.0, 1.0]); // update (1, 1, 0)
        let mut rng = SeededRng::for_stream(1, "t");
        let run = |kind, rng: &mut SeededRng| {
            let mut s = upload.clone();
            attack(&mut s, &reference, kind, 3.0, rng);
            values(&s)
        };
        assert_eq!(run(AttackKind::Scale, &mut rng), vec![3.0, 4.0, 1.0]);
        assert_eq!(run(AttackKind::SignFlip, &mut rng), vec![-3.0, -2.0, 1.0]);
        assert!(run(AttackKind::Nan, &mut rng).iter().all(|v| v.is_nan()));
        let random = run(AttackKind::Random, &mut rng);
        assert_ne!(random, values(&upload));
        assert!(random.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn robust_rules_resist_one_outlier_where_the_mean_does_not() {
        let honest = [
            [1.0, 2.0, 3.0],
            [1.2, 2.2, 2.8],
            [0.8, 1.8, 3.2],
            [1.1, 2.1, 3.1],
        ];
        let mut sets: Vec<Vec<NamedTensor>> = honest.iter().map(|v| set(v)).collect();
        sets.push(set(&[1000.0, -1000.0, 1e6]));
        let close = |got: Vec<f32>, want: [f32; 3], tol: f32| {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() <= tol),
                "{got:?} vs {want:?}"
            );
        };
        close(values(&median(&sets).unwrap()), [1.1, 2.0, 3.1], 1e-6);
        // 5 values, trim 0.2: one dropped at each end.
        close(
            values(&trimmed_mean(&sets, 0.2).unwrap()),
            [1.1, 1.9666667, 3.1],
            1e-5,
        );
        let chosen = krum(&sets, 1).unwrap();
        assert!(chosen < 4, "Krum chose the outlier");
        assert!(values(&mean(&sets).unwrap())[0] > 100.0);
        // Even counts: the two middle values.
        close(
            values(&median(&sets[..4]).unwrap()),
            [1.05, 2.05, 3.05],
            1e-6,
        );
    }

    #[test]
    fn rules_refuse_what_they_cannot_combine() {
        let sets = vec![set(&[1.0, 2.0]), set(&[1.0, 2.0, 3.0])];
        let err = median(&sets).unwrap_err();
        assert!(err.contains("upload 1") && err.contains("w"), "{err}");
        let three: Vec<_> = (0..3).map(|i| set(&[i as f32, 0.0])).collect();
        let err = krum(&three, 1).unwrap_err();
        assert!(
            err.contains("byzantine = 1") && err.contains("more than 4"),
            "{err}"
        );
        assert!(mean(&[]).is_err());
        assert_eq!(trimmed_count(5, 0.2), 1);
        assert_eq!(trimmed_count(2, 0.49), 0);
        assert_eq!(
            first_non_finite(&set(&[1.0, f32::INFINITY])),
            Some(("w".to_string(), 0, f32::INFINITY))
        );
    }

    #[test]
    fn every_kind_of_upload_is_checked_and_what_is_wrong_is_named() {
        use crate::fedmkt::{encode_topk, ExampleTopK};
        let check = |e: &ExpectedUpload, m: Option<&[u8]>| check_upload(e, m, Some(1.0));
        let err = |e: &ExpectedUpload, m: Option<&[u8]>| check(e, m).unwrap_err();

        // Nothing.
        let nothing = ExpectedUpload::Nothing;
        assert_eq!(check(&nothing, None), Ok(()));
        assert!(err(&nothing, Some(b"x")).contains("1 bytes; the method's device step sends none"));

        // Parameters.
        let reference = vec![NamedTensor::new("w", vec![2], vec![0.0, 0.0])];
        let params = ExpectedUpload::Params(reference);
        let good = encode_params(&[NamedTensor::new("w", vec![2], vec![0.5, 0.5])]);
        assert_eq!(check(&params, Some(&good)), Ok(()));
        assert!(err(&params, None).contains("holds no DPM parameters"));
        let nan = encode_params(&[NamedTensor::new("w", vec![2], vec![f32::NAN, 0.0])]);
        assert!(err(&params, Some(&nan)).contains("non-finite value NaN at w[0]"));
        let big = encode_params(&[NamedTensor::new("w", vec![2], vec![3.0, 4.0])]);
        assert!(err(&params, Some(&big)).contains("update norm 5.0000 is above"));
        assert!(err(&params, Some(b"not-params-at-all")).contains("magic"));

        // Knowledge: two examples of 2 and 1 answer positions, k at most 2.
        let knowledge = ExpectedUpload::Knowledge {
            answer_lens: vec![2, 1],
            max_k: 2,
        };
        let entry = |positions: usize, k: usize, logit: f32, rest: f32| ExampleTopK {
            ids: (0..(positions * k) as u32).collect(),
            logits: vec![logit; positions * k],
            rest: vec![rest; positions],
        };
        let good = encode_topk(&[entry(2, 2, 1.0, -1.0), entry(1, 2, 1.0, f32::NEG_INFINITY)]);
        assert_eq!(check(&knowledge, Some(&good)), Ok(()));
        for (entries, expect) in [
            (
                vec![entry(2, 2, 1.0, 0.0)],
                "covers 1 examples, the round's public sample has 2",
            ),
            (
                vec![entry(2, 2, 1.0, 0.0), entry(3, 2, 1.0, 0.0)],
                "knowledge of example 1 covers 3 answer positions, the example has 1",
            ),
            (
                vec![entry(2, 3, 1.0, 0.0), entry(1, 2, 1.0, 0.0)],
                "example 0 has k = 3 entries per position, expected 1 to train.top_k = 2",
            ),
            (
                vec![entry(2, 0, 1.0, 0.0), entry(1, 2, 1.0, 0.0)],
                "example 0 has k = 0 entries",
            ),
            (
                vec![entry(2, 2, 1.0, 0.0), entry(1, 2, f32::NAN, 0.0)],
                "example 1 has the non-finite logit NaN at position 0",
            ),
            (
                vec![entry(2, 2, 1.0, f32::INFINITY), entry(1, 2, 1.0, 0.0)],
                "example 0 has the remaining mass inf at position 0",
            ),
        ] {
            let e = err(&knowledge, Some(&encode_topk(&entries)));
            assert!(e.contains(expect), "{expect}: {e}");
        }
        assert!(err(&knowledge, Some(&good[..good.len() - 1])).starts_with("the knowledge upload:"));
        assert!(err(&knowledge, None).contains("the method expects top-k knowledge"));

        // Records.
        let records = ExpectedUpload::Records { max_records: 2 };
        let one = br#"[{"domain":"d","question":"q?","answer":"a"}]"#;
        assert_eq!(check(&records, Some(one)), Ok(()));
        let three = br#"[{"domain":"d","question":"q","answer":"a"},{"domain":"d","question":"q","answer":"a"},{"domain":"d","question":"q","answer":"a"}]"#;
        assert!(err(&records, Some(three)).contains("holds 3 records, more than the 2"));
        let blank = br#"[{"domain":"d","question":" ","answer":"a"}]"#;
        assert!(err(&records, Some(blank)).contains("record 0 of the records upload has a blank"));
        assert!(err(&records, Some(b"{}")).contains("not a JSON list of records"));
    }
}
