//! Privacy accounting: Rényi differential privacy (RDP) of the sampled Gaussian mechanism,
//! composed over rounds and converted to an (epsilon, delta) guarantee.
//!
//! This is the analysis of Mironov, Talwar and Zhang, "Rényi Differential Privacy of the
//! Sampled Gaussian Mechanism" (2019, arXiv:1908.10530), as the RDP accountants of Opacus
//! (`opacus/accountants/analysis/rdp.py`) and TensorFlow Privacy
//! (`tensorflow_privacy/privacy/analysis/rdp_accountant.py`) compute it, written afresh.
//!
//! # The mechanism
//!
//! One step releases `f(S) + N(0, sigma^2 * clip^2 * I)`, where `S` is a random subset of the
//! data that holds each record independently with probability `q` (Poisson sampling), `f` sums
//! records' contributions each clipped to L2 norm `clip` (so its sensitivity to adding or
//! removing one record is `clip`), and `sigma` is the noise multiplier. Scaled by `clip`, the
//! two neighbouring output distributions are `mu0 = N(0, sigma^2)` and the mixture
//! `mu = (1 - q) mu0 + q mu1` with `mu1 = N(1, sigma^2)`.
//!
//! # RDP of one step
//!
//! The RDP at order `alpha > 1` is `ln(A_alpha) / (alpha - 1)` with
//! `A_alpha = E_{z ~ mu0}[(mu(z) / mu0(z))^alpha]` ([`rdp_sampled_gaussian`]):
//!
//! - `q = 0`: nothing is released about anyone, RDP 0.
//! - `sigma = 0`: no noise, RDP infinite (no privacy).
//! - `q = 1`: the plain Gaussian mechanism, RDP `alpha / (2 sigma^2)`.
//! - integer `alpha`: the binomial expansion
//!   `A_alpha = sum_{k=0..alpha} C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2))`.
//!   As the binomial weights sum to 1 and the exponential is 1 for `k = 0, 1`, it is computed
//!   as `A_alpha = 1 + sum_{k=2..alpha} C(alpha, k) (1-q)^(alpha-k) q^k
//!   expm1((k^2 - k) / (2 sigma^2))`, every term positive, summed in log space (log-sum-exp),
//!   which keeps `ln(A_alpha)` accurate both when it is tiny (small `q`) and when the terms
//!   overflow a float (small `sigma`, large `alpha`).
//! - fractional `alpha`: with `z0 = sigma^2 ln(1/q - 1) + 1/2` (where `mu` and `mu0` cross),
//!   `A_alpha = A0 + A1`,
//!   `A0 = sum_{k>=0} C(alpha, k) q^k (1-q)^(alpha-k) exp((k^2 - k) / (2 sigma^2))
//!   erfc((k - z0) / (sqrt(2) sigma)) / 2` and
//!   `A1 = sum_{k>=0} C(alpha, k) q^(alpha-k) (1-q)^k exp((j^2 - j) / (2 sigma^2))
//!   erfc((z0 - j) / (sqrt(2) sigma)) / 2` with `j = alpha - k`
//!   (section 3.3 of the paper). The generalised binomial coefficients change sign
//!   alternately once `k > alpha`; positive and negative terms are summed separately in log
//!   space. The series stops once `k > alpha`, the terms are decreasing and the latest one is
//!   below `e^-36` of the running total; it is bounded to 100 000 terms, after which the
//!   alternating-series bound (running total plus the last term) is returned, or infinity
//!   when the terms were not yet decreasing (the order then drops out of the minimum).
//!
//! # Composition and the orders
//!
//! RDP composes by addition at each order: [`RdpAccountant::step`] adds `steps` times the
//! one-step RDP of `(q, sigma)` at every order, so steps with different `q` and `sigma` mix
//! freely. The orders are Opacus's default list ([`default_orders`]): `1 + x/10` for
//! `x = 1..=99` (1.1, 1.2, ..., 10.9; note that 2.0, 3.0, ..., 10.0 are among them) followed by
//! the integers 12..=63, 151 orders in all.
//!
//! # From RDP to (epsilon, delta)
//!
//! [`RdpAccountant::epsilon`] uses the conversion of Balle et al., "Hypothesis Testing
//! Interpretations and Rényi Differential Privacy" (AISTATS 2020, Theorem 21 of
//! arXiv:1905.09982), as Opacus does:
//! `eps = min over alpha of rdp(alpha) + ln(1 - 1/alpha) - (ln(delta) + ln(alpha)) / (alpha - 1)`,
//! clamped at 0, together with the best order. As TensorFlow Privacy and Google's
//! `dp_accounting` do, an order whose RDP `r` satisfies `delta^2 + expm1(-r) > 0` gives
//! `eps = 0` directly (the total variation distance is at most `sqrt(1 - exp(-r))` by the
//! Bretagnolle–Huber inequality, since the KL divergence is at most the RDP at any order `> 1`);
//! this only matters when `r` is of the order of `delta^2`, e.g. before any step, where it
//! gives 0. The older conversion of Mironov (2017), `eps = min rdp(alpha) - ln(delta) /
//! (alpha - 1)`, is larger; it is kept as [`RdpAccountant::epsilon_classic`] to compare with
//! numbers published before 2021.
//!
//! # What it means in cotune
//!
//! A `[privacy]` run releases one noisy aggregate per round, so one round is one step of the
//! mechanism. Each device clips its update to L2 norm `clip`, so one device changes the sum by
//! at most `clip` (sensitivity = clip), and Gaussian noise of standard deviation
//! `noise_multiplier * clip` is added: `sigma = noise_multiplier`. Neighbouring datasets
//! differ by one device's whole data, so the guarantee is device-level DP.
//!
//! - Central DP: the server adds the noise to the sum of the sampled devices' clipped updates;
//!   `q` is the fraction of devices sampled per round, and the sampling amplifies privacy.
//!   The analysis assumes each device takes part independently with probability `q` (Poisson
//!   sampling); like Opacus and TensorFlow Privacy for fixed-size batches, using it for a
//!   fixed number of devices drawn per round is the customary approximation, not a proof.
//! - Local DP: each device adds its own noise before its update leaves, and the server sees
//!   who took part, so there is no amplification: `q = 1`, RDP `alpha / (2 sigma^2)` a round.
//!
//! `noise_multiplier = 0` (clipping alone) gives infinite epsilon.
//!
//! # Inputs
//!
//! [`check_arguments`] (and [`check_order`] for custom orders) say in a `Result` which input
//! is out of range; callers run them first. The math functions never panic and never loop
//! without bound: out-of-range inputs give NaN from [`rdp_sampled_gaussian`], count as "no
//! guarantee" (infinite RDP) in [`RdpAccountant::step`], and give `(NaN, NaN)` from the
//! conversions when `delta` is out of range.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::f64::consts::{FRAC_2_SQRT_PI, LN_2, PI, SQRT_2};

/// The largest order [`check_order`] accepts; [`rdp_sampled_gaussian`] returns infinity above
/// it (the cost of the series grows with the order).
pub const MAX_ORDER: f64 = 10_000.0;

/// The most terms the fractional-order series sums.
const MAX_SERIES_TERMS: u32 = 100_000;

/// A series term below the running total by this much in log space (`e^-36`, about 2.3e-16)
/// is negligible.
const NEGLIGIBLE_LOG: f64 = 36.0;

/// Below this argument `erfc` comes from the series of `erf`, from this one on from the
/// continued fraction.
const ERFC_CONTINUED_FRACTION_FROM: f64 = 1.5;

/// Opacus's default orders: `1 + x/10` for `x = 1..=99`, then the integers `12..=63`
/// (151 orders; 2.0, ..., 10.0 come from the first part).
pub fn default_orders() -> Vec<f64> {
    (1..100u32)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64u32).map(f64::from))
        .collect()
}

/// Checks the inputs of the accountant: the sampling rate `q` in `[0, 1]`, the noise
/// multiplier finite and non-negative, `delta` in `(0, 1)`. The error names the argument and
/// its value.
pub fn check_arguments(q: f64, noise_multiplier: f64, delta: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&q) {
        return Err(format!("q (the sampling rate) must be in [0, 1], got {q}"));
    }
    if !noise_multiplier.is_finite() || noise_multiplier < 0.0 {
        return Err(format!(
            "noise_multiplier must be finite and non-negative, got {noise_multiplier}"
        ));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(format!("delta must be in (0, 1), got {delta}"));
    }
    Ok(())
}

/// Checks an RDP order: finite, above 1 and at most [`MAX_ORDER`].
pub fn check_order(order: f64) -> Result<(), String> {
    if !(order > 1.0 && order <= MAX_ORDER) {
        return Err(format!("order must be in (1, {MAX_ORDER}], got {order}"));
    }
    Ok(())
}

/// The RDP at `order` of one step of the sampled Gaussian mechanism with sampling rate `q`
/// and noise multiplier `noise_multiplier` (see the module documentation for the formulas).
///
/// `q == 0` gives 0, `noise_multiplier == 0` infinity, `q == 1` `order / (2 sigma^2)`, an
/// infinite order infinity. Inputs that [`check_arguments`] / [`check_order`] reject give NaN
/// (an order above [`MAX_ORDER`] gives infinity); a numerical failure gives infinity, which is
/// conservative. Never NaN for valid input, never negative.
pub fn rdp_sampled_gaussian(q: f64, noise_multiplier: f64, order: f64) -> f64 {
    let sigma = noise_multiplier;
    if !(0.0..=1.0).contains(&q) || sigma.is_nan() || sigma < 0.0 || order.is_nan() || order <= 1.0
    {
        return f64::NAN;
    }
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 || order > MAX_ORDER {
        return f64::INFINITY;
    }
    if sigma == f64::INFINITY {
        return 0.0;
    }
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    if !(1.0 / (2.0 * sigma * sigma)).is_finite() {
        // sigma^2 underflows: the noise is negligible.
        return f64::INFINITY;
    }
    let log_a = if order.fract() == 0.0 {
        // An integer at most MAX_ORDER: exact as u64.
        log_a_integer(q, sigma, order as u64)
    } else {
        log_a_fractional(q, sigma, order)
    };
    let rdp = log_a / (order - 1.0);
    if rdp.is_nan() {
        f64::INFINITY
    } else {
        rdp.max(0.0)
    }
}

/// `ln(A_alpha)` for an integer `alpha >= 2`, `0 < q < 1`:
/// `ln(1 + sum_{k=2..alpha} C(alpha, k) (1-q)^(alpha-k) q^k expm1((k^2 - k) / (2 sigma^2)))`.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let mut log_binom = 0.0; // ln C(alpha, 0)
    let mut log_excess = f64::NEG_INFINITY; // ln(A_alpha - 1)
    for i in 1..=alpha {
        let k = i as f64;
        log_binom += (a - k + 1.0).ln() - k.ln();
        if i >= 2 {
            let term = log_binom + k * ln_q + (a - k) * ln_1mq + ln_expm1((k * k - k) / two_var);
            log_excess = log_add(log_excess, term);
        }
    }
    log_add(0.0, log_excess)
}

/// `ln(A_alpha)` for a fractional `alpha > 1`, `0 < q < 1`, by the series `A0 + A1`.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let var = sigma * sigma;
    let two_var = 2.0 * var;
    let z0 = var * (ln_1mq - ln_q) + 0.5;
    let scale = SQRT_2 * sigma;

    // Terms with a positive and with a negative coefficient, in log space.
    let mut log_pos = f64::NEG_INFINITY;
    let mut log_neg = f64::NEG_INFINITY;
    // ln |C(alpha, k)| and its sign.
    let mut log_binom = 0.0;
    let mut binom_positive = true;
    let mut previous = (f64::INFINITY, f64::INFINITY);
    let mut last_term = f64::INFINITY;
    let mut decreasing = false;
    for i in 0..MAX_SERIES_TERMS {
        let k = f64::from(i);
        if i > 0 {
            // C(alpha, k) = C(alpha, k-1) (alpha - k + 1) / k; alpha - k + 1 is never 0.
            let factor = alpha - k + 1.0;
            log_binom += factor.abs().ln() - k.ln();
            if factor < 0.0 {
                binom_positive = !binom_positive;
            }
        }
        let j = alpha - k;
        let s0 =
            log_binom + k * ln_q + j * ln_1mq + (k * k - k) / two_var + log_erfc((k - z0) / scale)
                - LN_2;
        let s1 =
            log_binom + j * ln_q + k * ln_1mq + (j * j - j) / two_var + log_erfc((z0 - j) / scale)
                - LN_2;
        let term = log_add(s0, s1);
        if binom_positive {
            log_pos = log_add(log_pos, term);
        } else {
            log_neg = log_add(log_neg, term);
        }
        decreasing = s0 <= previous.0 && s1 <= previous.1;
        if k > alpha && decreasing {
            let total = log_sub(log_pos, log_neg);
            if term < total - NEGLIGIBLE_LOG {
                return total;
            }
        }
        previous = (s0, s1);
        last_term = term;
    }
    if decreasing {
        // Past alpha the terms alternate in sign; while they decrease, the rest of the series
        // is at most the last term in absolute value.
        log_add(log_sub(log_pos, log_neg), last_term)
    } else {
        f64::INFINITY
    }
}

/// `ln(exp(a) + exp(b))`.
fn log_add(a: f64, b: f64) -> f64 {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    if low == f64::NEG_INFINITY || high == f64::INFINITY {
        return high;
    }
    high + (low - high).exp().ln_1p()
}

/// `ln(exp(a) - exp(b))` for `a >= b`; NaN when `a < b`.
fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a < b {
        return f64::NAN;
    }
    if a == b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// `ln(exp(x) - 1)` for `x >= 0`, without overflow for large `x`.
fn ln_expm1(x: f64) -> f64 {
    if x > 36.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// `ln(erfc(x))`, accurate (relative error of `erfc` near 1e-15) for every `x`, including
/// large `x` where `erfc` underflows.
fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    if x == f64::NEG_INFINITY {
        return LN_2;
    }
    if x >= ERFC_CONTINUED_FRACTION_FROM {
        log_erfc_continued_fraction(x)
    } else if x >= 0.0 {
        (-erf_series(x)).ln_1p()
    } else if -x < ERFC_CONTINUED_FRACTION_FROM {
        // erfc(x) = 1 + erf(-x).
        erf_series(-x).ln_1p()
    } else {
        // erfc(x) = 2 - erfc(-x).
        (2.0 - log_erfc_continued_fraction(-x).exp()).ln()
    }
}

/// `erf(x)` for `0 <= x < 1.5` by the series of positive terms
/// `erf(x) = 2/sqrt(pi) exp(-x^2) sum_{n>=0} 2^n x^(2n+1) / (1 * 3 * ... * (2n+1))`.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..200u32 {
        term *= 2.0 * x2 / f64::from(2 * n + 1);
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// `ln(erfc(x))` for `x >= 1.5` from the continued fraction
/// `erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))`,
/// evaluated by the modified Lentz method (under 100 steps from 1.5 on).
fn log_erfc_continued_fraction(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..1000u32 {
        let a = f64::from(n) * 0.5;
        d = x + a * d;
        if d == 0.0 {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        let change = c * d;
        f *= change;
        if (change - 1.0).abs() < 1e-16 {
            break;
        }
    }
    -x * x - 0.5 * PI.ln() - f.ln()
}

/// Epsilon at one order by the improved conversion; NaN to skip the order.
fn epsilon_improved(order: f64, rdp: f64, delta: f64) -> f64 {
    if rdp.is_nan() || order.is_nan() || order <= 1.0 {
        return f64::NAN;
    }
    if rdp == f64::INFINITY {
        return f64::INFINITY;
    }
    if rdp <= 0.0 || delta * delta + (-rdp).exp_m1() > 0.0 {
        // Total variation at most sqrt(1 - exp(-rdp)) <= delta: (0, delta)-DP.
        return 0.0;
    }
    let eps = rdp + (-1.0 / order).ln_1p() - (delta.ln() + order.ln()) / (order - 1.0);
    eps.max(0.0)
}

/// Epsilon at one order by the classic conversion; NaN to skip the order.
fn epsilon_classic_at(order: f64, rdp: f64, delta: f64) -> f64 {
    if rdp.is_nan() || order.is_nan() || order <= 1.0 {
        return f64::NAN;
    }
    (rdp - delta.ln() / (order - 1.0)).max(0.0)
}

/// The smallest epsilon over the orders and its order (the first on ties); `(inf, NaN)` when no
/// order gives a finite one, `(NaN, NaN)` when `delta` is not in `(0, 1)`.
fn minimise(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    at: impl Fn(f64, f64, f64) -> f64,
) -> (f64, f64) {
    if !(delta > 0.0 && delta < 1.0) {
        return (f64::NAN, f64::NAN);
    }
    let mut best = (f64::INFINITY, f64::NAN);
    for (&order, &r) in orders.iter().zip(rdp) {
        let eps = at(order, r, delta);
        if eps < best.0 {
            best = (eps, order);
        }
    }
    best
}

/// (epsilon, best order) from RDP values `rdp[i]` at `orders[i]` (extra entries of the longer
/// slice are ignored) by the improved conversion of Balle et al. 2020, as Opacus does (see the
/// module documentation); clamped at 0. `(inf, NaN)` when no order gives a finite epsilon,
/// `(NaN, NaN)` when `delta` is not in `(0, 1)`.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    minimise(orders, rdp, delta, epsilon_improved)
}

/// Like [`epsilon_from_rdp`] with the classic conversion
/// `eps = min rdp(alpha) - ln(delta) / (alpha - 1)` (Mironov 2017, Proposition 3), which
/// TensorFlow Privacy used before 2021 and Opacus before April 2021; larger than the improved
/// one.
pub fn epsilon_classic_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    minimise(orders, rdp, delta, epsilon_classic_at)
}

/// Composes steps of the sampled Gaussian mechanism (each with its own sampling rate and noise
/// multiplier) in RDP at a fixed list of orders, and converts to (epsilon, delta).
///
/// Serialisable (to save it in run checkpoints); infinite RDP values (no noise) are written as
/// `null`, since JSON has no infinity, and read back as infinity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    /// The orders, [`default_orders`] unless built by [`RdpAccountant::with_orders`].
    orders: Vec<f64>,
    /// The composed RDP at each order.
    #[serde(with = "infinity_as_null")]
    rdp: Vec<f64>,
    /// Steps composed so far.
    steps: u64,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant with no steps, at [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self {
            orders,
            rdp,
            steps: 0,
        }
    }

    /// An accountant with no steps at the given orders; an error (from [`check_order`]) when
    /// one is out of range or the list is empty.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, String> {
        if orders.is_empty() {
            return Err("orders must not be empty".to_string());
        }
        for &order in &orders {
            check_order(order)?;
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self {
            orders,
            rdp,
            steps: 0,
        })
    }

    /// Composes `steps` steps with sampling rate `q` and noise multiplier `noise_multiplier`.
    /// Check the inputs with [`check_arguments`] first: out-of-range ones count as no guarantee
    /// (the RDP becomes infinite) rather than panicking. `steps == 0` changes nothing.
    pub fn step(&mut self, q: f64, noise_multiplier: f64, steps: u64) {
        if steps == 0 {
            return;
        }
        let count = steps as f64;
        for (&order, total) in self.orders.iter().zip(self.rdp.iter_mut()) {
            let one = rdp_sampled_gaussian(q, noise_multiplier, order);
            *total += if one.is_nan() {
                f64::INFINITY
            } else {
                one * count
            };
        }
        self.steps = self.steps.saturating_add(steps);
    }

    /// (epsilon, best order) at `delta` by the improved conversion ([`epsilon_from_rdp`]):
    /// 0 before any step, `(inf, NaN)` when a step had no noise, `(NaN, NaN)` when `delta` is
    /// not in `(0, 1)`.
    pub fn epsilon(&self, delta: f64) -> (f64, f64) {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }

    /// (epsilon, best order) at `delta` by the classic conversion
    /// ([`epsilon_classic_from_rdp`]), to compare with older published numbers.
    pub fn epsilon_classic(&self, delta: f64) -> (f64, f64) {
        epsilon_classic_from_rdp(&self.orders, &self.rdp, delta)
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The number of steps composed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Epsilon at `delta` after `steps` steps with sampling rate `q` and noise multiplier
/// `noise_multiplier`, at the default orders with the improved conversion: infinity when
/// `noise_multiplier == 0` (and `q > 0`), 0 when `steps == 0`. Check the inputs with
/// [`check_arguments`] first.
pub fn epsilon_after(q: f64, noise_multiplier: f64, steps: u64, delta: f64) -> f64 {
    let mut accountant = RdpAccountant::new();
    accountant.step(q, noise_multiplier, steps);
    accountant.epsilon(delta).0
}

/// Serde for a vector of RDP values with infinity written as `null`.
mod infinity_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        let values: Vec<Option<f64>> = values
            .iter()
            .map(|&x| if x.is_finite() { Some(x) } else { None })
            .collect();
        values.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        let values = Vec::<Option<f64>>::deserialize(deserializer)?;
        Ok(values
            .into_iter()
            .map(|x| x.unwrap_or(f64::INFINITY))
            .collect())
    }
}

#[cfg(test)]
mod tests;
