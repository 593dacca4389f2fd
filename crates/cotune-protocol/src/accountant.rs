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
mod tests {
    use super::*;

    /// `|actual - expected| <= tolerance`, with a message.
    fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{what}: got {actual}, expected {expected} (tolerance {tolerance}, off by {})",
            (actual - expected).abs()
        );
    }

    fn accountant(orders: &[f64]) -> RdpAccountant {
        RdpAccountant::with_orders(orders.to_vec()).unwrap()
    }

    /// The orders of TensorFlow Privacy's `compute_dp_sgd_privacy`
    /// (`tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_lib.py`, 2020-2022).
    fn tf_cli_orders() -> Vec<f64> {
        let mut orders = vec![1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5];
        orders.extend((5..64).map(f64::from));
        orders.extend([128.0, 256.0, 512.0]);
        orders
    }

    // ---------------------------------------------------------------------------------------
    // RDP of one step against published values.
    // ---------------------------------------------------------------------------------------

    /// tensorflow/privacy, `tensorflow_privacy/privacy/analysis/rdp_accountant_test.py`
    /// (commit 385fefc, 2021), `test_compute_rdp_no_data` / `test_compute_rdp_no_sampling`:
    /// `compute_rdp(0, 10, 1, 20) == 0` and `compute_rdp(1, 10, 1, 20) == 0.1`, exact.
    #[test]
    fn rdp_no_data_and_no_sampling_tf_privacy() {
        assert_eq!(rdp_sampled_gaussian(0.0, 10.0, 20.0), 0.0);
        assert_eq!(rdp_sampled_gaussian(1.0, 10.0, 20.0), 0.1);
    }

    /// Same file, `test_compute_rdp_scalar`: `compute_rdp(q=0.1, sigma=2, steps=10, order=5)`
    /// is 0.07737 to 5 places (`assertAlmostEqual(places=5)`: off by under 5e-6).
    #[test]
    fn rdp_scalar_tf_privacy() {
        let rdp = 10.0 * rdp_sampled_gaussian(0.1, 2.0, 5.0);
        assert_close(rdp, 0.07737, 5e-6, "compute_rdp(0.1, 2, 10, 5)");
    }

    /// Same file, `test_compute_rdp_sequence`: `compute_rdp(q=0.01, sigma=2.5, steps=50,
    /// orders=[1.5, 2.5, 5, 50, 100, inf])` equals
    /// `[6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02, inf]` within relative
    /// 1e-4 (`assertAllClose(rtol=1e-4)`, at the last commit before the file was removed,
    /// 4cb0a11^); the earlier version (commit 09270af) states the order-100 value as
    /// 167.416307 within 1e-5 absolute. Fractional orders 1.5 and 2.5 exercise the series.
    #[test]
    fn rdp_sequence_tf_privacy() {
        let orders = [1.5, 2.5, 5.0, 50.0, 100.0];
        let expected = [6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02];
        for (&order, &want) in orders.iter().zip(&expected) {
            let got = 50.0 * rdp_sampled_gaussian(0.01, 2.5, order);
            assert_close(got, want, 1e-4 * want, &format!("order {order}"));
        }
        let got = 50.0 * rdp_sampled_gaussian(0.01, 2.5, 100.0);
        assert_close(got, 167.416307, 1e-5, "order 100, absolute");
        assert_eq!(
            rdp_sampled_gaussian(0.01, 2.5, f64::INFINITY),
            f64::INFINITY
        );
    }

    /// Same file, `test_compute_heterogeneous_rdp_different_sampling_probabilities`: steps with
    /// q = 0 and q = 1 at sigma 10 compose to 0.1 at order 20, exact.
    #[test]
    fn heterogeneous_composition_tf_privacy() {
        let mut acc = accountant(&[20.0]);
        acc.step(0.0, 10.0, 1);
        acc.step(1.0, 10.0, 1);
        assert_eq!(acc.rdp(), &[0.1]);
        assert_eq!(acc.steps(), 2);
    }

    // ---------------------------------------------------------------------------------------
    // Epsilon with the improved conversion against published values.
    // ---------------------------------------------------------------------------------------

    /// pytorch/opacus, `opacus/tests/accountants_test.py`, `test_rdp_accountant` (since commit
    /// 2d5646b, 2021-10, after Opacus moved to the improved conversion in 026ee9e, 2021-04):
    /// sigma 1.5, q 0.04, int(90 / 0.04) = 2250 steps, delta 1e-5, default orders:
    /// epsilon 7.32911117143, `assertAlmostEqual` to 7 places (off by under 5e-8).
    #[test]
    fn epsilon_opacus_accountant_test() {
        let mut acc = RdpAccountant::new();
        acc.step(0.04, 1.5, 2250);
        let (eps, _) = acc.epsilon(1e-5);
        assert_close(eps, 7.32911117143, 5e-8, "Opacus test_rdp_accountant");
        assert_close(
            epsilon_after(0.04, 1.5, 2250, 1e-5),
            7.32911117143,
            5e-8,
            "epsilon_after",
        );
    }

    /// pytorch/opacus, `opacus/accountants/analysis/rdp.py`, module doctest: steps
    /// (q 1e-5, sigma 1, 10 steps) and (q 1e-4, sigma 3, 4 steps) at orders 2..=32, delta 1e-5:
    /// `(0.336, 23)` under `+NUMBER` (the printed digits: epsilon within 5e-4; the order exact).
    #[test]
    fn epsilon_opacus_doctest() {
        let orders: Vec<f64> = (2..=32).map(f64::from).collect();
        let mut acc = accountant(&orders);
        acc.step(1e-5, 1.0, 10);
        acc.step(1e-4, 3.0, 4);
        let (eps, order) = acc.epsilon(1e-5);
        assert_close(eps, 0.336, 5e-4, "Opacus rdp.py doctest");
        assert_eq!(order, 23.0);
    }

    /// tensorflow/privacy, `rdp_accountant_test.py` (commit be8175b, 2020-12, where TF Privacy
    /// took the improved conversion), `test_get_privacy_spent_check_target_delta`: a constant
    /// RDP of 1.1 at orders 2..=32 and delta 1e-5 give epsilon 1.32783806176 at order 32
    /// (`assertAlmostEqual`, 7 places: off by under 5e-8).
    #[test]
    fn epsilon_constant_rdp_tf_privacy() {
        let orders: Vec<f64> = (2..=32).map(f64::from).collect();
        let rdp = vec![1.1; orders.len()];
        let (eps, order) = epsilon_from_rdp(&orders, &rdp, 1e-5);
        assert_close(eps, 1.32783806176, 5e-8, "constant RDP 1.1");
        assert_eq!(order, 32.0);
    }

    /// Same test, second part: the Gaussian mechanism (q = 1) with sigma 4.530877117 is exactly
    /// (1, 1e-6)-DP, and the RDP bound over the fine orders 0.001 i, i = 1000..100000, gives
    /// epsilon 1 to 7 places (off by under 5e-8). TF's list starts at order 1.0, whose epsilon
    /// is infinite there; it is left out here as orders must exceed 1.
    #[test]
    fn epsilon_gaussian_fine_orders_tf_privacy() {
        let orders: Vec<f64> = (1001..100_000).map(|i| 0.001 * f64::from(i)).collect();
        let mut acc = accountant(&orders);
        acc.step(1.0, 4.530877117, 1);
        let (eps, _) = acc.epsilon(1e-6);
        assert_close(eps, 1.0, 5e-8, "Gaussian sigma 4.530877117 at delta 1e-6");
    }

    /// (n, batch size, noise multiplier, epochs, delta, epsilon, order) of
    /// tensorflow/privacy `compute_dp_sgd_privacy_test.py`.
    type DpSgdCase = (f64, f64, f64, f64, f64, f64, f64);

    /// `compute_dp_sgd_privacy(n, batch_size, noise_multiplier, epochs, delta)` as TF Privacy
    /// defines it: q = batch / n, steps = ceil(epochs n / batch), [`tf_cli_orders`].
    fn dp_sgd_accountant(n: f64, batch: f64, sigma: f64, epochs: f64) -> RdpAccountant {
        let mut acc = accountant(&tf_cli_orders());
        acc.step(batch / n, sigma, (epochs * n / batch).ceil() as u64);
        acc
    }

    /// tensorflow/privacy, `tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py`
    /// (commit be8175b to 4cb0a11^, improved conversion), `test_compute_dp_sgd_privacy`.
    /// TF asserts 7 places; we use 5e-8 for the first two and relative 1e-12 for the third
    /// (5.9e6 at order 1.25, where 7 places would be a relative 1e-14, closer than two
    /// implementations of the fractional series can be expected to agree; this one is off by
    /// about 4e-8). The optimal orders are exact.
    #[test]
    fn epsilon_compute_dp_sgd_privacy_tf_privacy() {
        let cases: [DpSgdCase; 3] = [
            (60000.0, 150.0, 1.3, 15.0, 1e-5, 0.7242234026109595, 19.0),
            (100000.0, 100.0, 1.0, 30.0, 1e-7, 1.4154988495444845, 13.0),
            (1e8, 1024.0, 0.1, 10.0, 1e-7, 5907982.31138195, 1.25),
        ];
        for (n, batch, sigma, epochs, delta, want_eps, want_order) in cases {
            let (eps, order) = dp_sgd_accountant(n, batch, sigma, epochs).epsilon(delta);
            let tolerance = if want_eps > 1e3 {
                1e-12 * want_eps
            } else {
                5e-8
            };
            assert_close(eps, want_eps, tolerance, &format!("n={n} batch={batch}"));
            assert_eq!(order, want_order);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Epsilon with the classic conversion against values published before 2021.
    // ---------------------------------------------------------------------------------------

    /// tensorflow/privacy, `compute_dp_sgd_privacy_test.py` before commit be8175b (classic
    /// conversion): the same three cases gave 0.941870567 (order 19), 1.70928734 (order 13)
    /// and 5907984.81339406 (order 1.25), `assertAlmostEqual` to 7 places; tolerances as in
    /// [`epsilon_compute_dp_sgd_privacy_tf_privacy`] (the references carry 9 digits, so 5e-8
    /// holds for them too).
    #[test]
    fn epsilon_classic_compute_dp_sgd_privacy_tf_privacy() {
        let cases: [DpSgdCase; 3] = [
            (60000.0, 150.0, 1.3, 15.0, 1e-5, 0.941870567, 19.0),
            (100000.0, 100.0, 1.0, 30.0, 1e-7, 1.70928734, 13.0),
            (1e8, 1024.0, 0.1, 10.0, 1e-7, 5907984.81339406, 1.25),
        ];
        for (n, batch, sigma, epochs, delta, want_eps, want_order) in cases {
            let (eps, order) = dp_sgd_accountant(n, batch, sigma, epochs).epsilon_classic(delta);
            let tolerance = if want_eps > 1e3 {
                1e-12 * want_eps
            } else {
                5e-8
            };
            assert_close(eps, want_eps, tolerance, &format!("n={n} batch={batch}"));
            assert_eq!(order, want_order);
        }
    }

    /// tensorflow/privacy, `rdp_accountant_test.py` before commit be8175b (classic conversion),
    /// `test_get_privacy_spent_check_target_delta`: `compute_rdp(0.01, 4, 10000, orders
    /// 2..=32)` at delta 1e-5 gives epsilon 1.258575 to 5 places (off by under 5e-6), order 20.
    #[test]
    fn epsilon_classic_get_privacy_spent_tf_privacy() {
        let orders: Vec<f64> = (2..=32).map(f64::from).collect();
        let mut acc = accountant(&orders);
        acc.step(0.01, 4.0, 10000);
        let (eps, order) = acc.epsilon_classic(1e-5);
        assert_close(eps, 1.258575, 5e-6, "classic, q 0.01 sigma 4");
        assert_eq!(order, 20.0);
    }

    /// tensorflow/privacy, `rdp_accountant_test.py`, `test_check_composition`: 40000 steps of
    /// (q 1e-4, sigma 0.4) then 100 of (q 0.1, sigma 2) at the listed orders, delta 1e-5. Before
    /// be8175b (classic): epsilon 8.509656 to 5 places (off by under 5e-6) at order 2.5; from
    /// be8175b on (improved) it is asserted to be at most 8.509656.
    #[test]
    fn epsilon_composition_tf_privacy() {
        let orders = [
            1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28.,
            32., 64., 256.,
        ];
        let mut acc = accountant(&orders);
        acc.step(1e-4, 0.4, 40000);
        acc.step(0.1, 2.0, 100);
        let (eps, order) = acc.epsilon_classic(1e-5);
        assert_close(eps, 8.509656, 5e-6, "classic composition");
        assert_eq!(order, 2.5);
        let (improved, _) = acc.epsilon(1e-5);
        assert!(improved <= 8.509656, "improved {improved}");
    }

    /// tensorflow/privacy, `tutorials/README.md` (commit d435fcb, 2019, classic conversion):
    /// `mnist_dpsgd_tutorial.py` (q = 256/60000, sigma 1.1, 60000 // 256 = 234 steps an epoch,
    /// delta 1e-5, the default orders, printed with `%.2f`) prints epsilon 1.03 after 1 epoch,
    /// 1.11 after 2 and 3.01 after 60; the README says the same CLI run
    /// (`compute_dp_sgd_privacy.py --N=60000 --batch_size=256 --noise_multiplier=1.1
    /// --epochs=60 --delta=1e-5`: ceil(60 * 60000 / 256) = 14063 steps, its own orders, printed
    /// with `{:.3g}`) gives 3.01. Tolerance: half the last printed digit, 0.005.
    #[test]
    fn epsilon_classic_mnist_tutorial_tf_privacy() {
        let q = 256.0 / 60000.0;
        for (epochs, printed) in [(1u64, 1.03), (2, 1.11), (60, 3.01)] {
            let mut acc = RdpAccountant::new();
            acc.step(q, 1.1, epochs * 234);
            let (eps, _) = acc.epsilon_classic(1e-5);
            assert_close(eps, printed, 0.005, &format!("tutorial, {epochs} epochs"));
        }
        let mut acc = accountant(&tf_cli_orders());
        acc.step(q, 1.1, 14063);
        let (eps, _) = acc.epsilon_classic(1e-5);
        assert_close(eps, 3.01, 0.005, "CLI, 60 epochs");
        // The improved conversion only tightens it.
        assert!(acc.epsilon(1e-5).0 < eps);
    }

    // ---------------------------------------------------------------------------------------
    // Properties.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn full_sampling_is_the_gaussian_mechanism() {
        for sigma in [0.3, 1.0, 2.5, 40.0] {
            for order in [1.1, 1.5, 2.0, 7.3, 32.0, 63.0] {
                assert_eq!(
                    rdp_sampled_gaussian(1.0, sigma, order),
                    order / (2.0 * sigma * sigma)
                );
            }
        }
        // And q just below 1 is close to it (integer and fractional orders).
        for order in [2.0, 2.5, 10.0, 10.5] {
            let exact = order / 2.0;
            let near = rdp_sampled_gaussian(1.0 - 1e-9, 1.0, order);
            assert!(
                near <= exact * (1.0 + 1e-9) && near > exact * 0.999,
                "{order}: {near}"
            );
        }
    }

    /// The integer-order expansion and the fractional-order series meet continuously: RDP is
    /// non-decreasing in the order, and the values just below and above an integer are close
    /// to the value at it.
    #[test]
    fn integer_and_fractional_orders_agree() {
        for (q, sigma) in [
            (0.01, 1.0),
            (0.04, 1.5),
            (0.1, 0.8),
            (0.5, 2.0),
            (0.001, 0.5),
        ] {
            for integer in [2.0, 5.0, 20.0] {
                let below = rdp_sampled_gaussian(q, sigma, integer - 1e-3);
                let at = rdp_sampled_gaussian(q, sigma, integer);
                let above = rdp_sampled_gaussian(q, sigma, integer + 1e-3);
                let what = format!("q {q} sigma {sigma} order {integer}: {below} {at} {above}");
                assert!(
                    below <= at * (1.0 + 1e-9) && at <= above * (1.0 + 1e-9),
                    "{what}"
                );
                assert!((above - below).abs() <= 1e-2 * at, "{what}");
            }
        }
    }

    #[test]
    fn epsilon_grows_with_steps_and_falls_with_noise() {
        let mut last = 0.0;
        for steps in [1, 10, 100, 1000, 10000] {
            let eps = epsilon_after(0.01, 1.1, steps, 1e-5);
            assert!(eps > last, "{steps} steps: {eps} after {last}");
            last = eps;
        }
        let mut last = f64::INFINITY;
        for sigma in [0.5, 0.8, 1.0, 1.5, 3.0, 10.0] {
            let eps = epsilon_after(0.05, sigma, 500, 1e-5);
            assert!(eps < last, "sigma {sigma}: {eps} after {last}");
            last = eps;
        }
        // Local DP (q = 1) costs more than central DP with sampling.
        assert!(epsilon_after(1.0, 1.0, 10, 1e-5) > epsilon_after(0.1, 1.0, 10, 1e-5));
    }

    #[test]
    fn no_noise_gives_infinite_epsilon() {
        assert_eq!(rdp_sampled_gaussian(0.3, 0.0, 2.0), f64::INFINITY);
        assert_eq!(epsilon_after(0.3, 0.0, 5, 1e-5), f64::INFINITY);
        assert_eq!(epsilon_after(1.0, 0.0, 1, 1e-5), f64::INFINITY);
        let mut acc = RdpAccountant::new();
        acc.step(0.01, 1.0, 100);
        acc.step(0.01, 0.0, 1);
        let (eps, order) = acc.epsilon(1e-5);
        assert_eq!(eps, f64::INFINITY);
        assert!(order.is_nan());
        assert_eq!(acc.epsilon_classic(1e-5).0, f64::INFINITY);
    }

    #[test]
    fn nothing_spent_gives_zero() {
        assert_eq!(RdpAccountant::new().epsilon(1e-5).0, 0.0);
        assert_eq!(epsilon_after(0.1, 1.0, 0, 1e-5), 0.0);
        assert_eq!(epsilon_after(0.0, 1.0, 100, 1e-5), 0.0);
    }

    #[test]
    fn k_single_steps_equal_one_call() {
        for (q, sigma) in [(0.02, 1.1), (1.0, 3.0), (0.3, 0.7)] {
            let mut single = RdpAccountant::new();
            for _ in 0..7 {
                single.step(q, sigma, 1);
            }
            let mut batched = RdpAccountant::new();
            batched.step(q, sigma, 7);
            assert_eq!(single.steps(), batched.steps());
            for (a, b) in single.rdp().iter().zip(batched.rdp()) {
                assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
            }
            let (a, order_a) = single.epsilon(1e-5);
            let (b, order_b) = batched.epsilon(1e-5);
            assert!((a - b).abs() <= 1e-12 * b, "{a} vs {b}");
            assert_eq!(order_a, order_b);
        }
    }

    #[test]
    fn default_orders_are_opacus_list() {
        let orders = default_orders();
        assert_eq!(orders.len(), 151);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[9], 2.0);
        assert_eq!(orders[98], 1.0 + 99.0 / 10.0);
        assert_eq!(orders[99], 12.0);
        assert_eq!(orders[150], 63.0);
        assert_eq!(RdpAccountant::new().orders(), orders.as_slice());
    }

    #[test]
    fn arguments_are_checked_by_name_and_value() {
        assert_eq!(check_arguments(0.1, 1.0, 1e-5), Ok(()));
        assert_eq!(check_arguments(0.0, 0.0, 0.5), Ok(()));
        assert_eq!(check_arguments(1.0, 1.0, 1e-9), Ok(()));
        let err = check_arguments(1.5, 1.0, 1e-5).unwrap_err();
        assert!(err.contains("q") && err.contains("1.5"), "{err}");
        assert!(check_arguments(-0.1, 1.0, 1e-5)
            .unwrap_err()
            .contains("-0.1"));
        assert!(check_arguments(f64::NAN, 1.0, 1e-5)
            .unwrap_err()
            .contains("NaN"));
        let err = check_arguments(0.1, -2.0, 1e-5).unwrap_err();
        assert!(
            err.contains("noise_multiplier") && err.contains("-2"),
            "{err}"
        );
        assert!(check_arguments(0.1, f64::INFINITY, 1e-5)
            .unwrap_err()
            .contains("inf"));
        assert!(check_arguments(0.1, f64::NAN, 1e-5)
            .unwrap_err()
            .contains("noise_multiplier"));
        for delta in [0.0, 1.0, -1e-5, 2.0, f64::NAN] {
            let err = check_arguments(0.1, 1.0, delta).unwrap_err();
            assert!(
                err.contains("delta") && err.contains(&format!("{delta}")),
                "{err}"
            );
        }
        assert_eq!(check_order(1.5), Ok(()));
        for order in [1.0, 0.5, f64::NAN, f64::INFINITY, 2e4] {
            let err = check_order(order).unwrap_err();
            assert!(
                err.contains("order") && err.contains(&format!("{order}")),
                "{err}"
            );
        }
        assert!(RdpAccountant::with_orders(vec![2.0, 1.0]).is_err());
        assert!(RdpAccountant::with_orders(Vec::new()).is_err());
    }

    #[test]
    fn bad_inputs_do_not_panic() {
        for (q, sigma, order) in [
            (1.5, 1.0, 2.0),
            (-0.1, 1.0, 2.0),
            (f64::NAN, 1.0, 2.0),
            (0.1, -1.0, 2.0),
            (0.1, f64::NAN, 2.0),
            (0.1, 1.0, 1.0),
            (0.1, 1.0, 0.5),
            (0.1, 1.0, f64::NAN),
        ] {
            assert!(
                rdp_sampled_gaussian(q, sigma, order).is_nan(),
                "{q} {sigma} {order}"
            );
        }
        let mut acc = RdpAccountant::new();
        acc.step(1.5, 1.0, 3);
        assert_eq!(acc.epsilon(1e-5).0, f64::INFINITY);
        let acc = RdpAccountant::new();
        for delta in [0.0, 1.0, f64::NAN, -1.0] {
            let (eps, order) = acc.epsilon(delta);
            assert!(eps.is_nan() && order.is_nan());
            assert!(acc.epsilon_classic(delta).0.is_nan());
        }
        assert!(epsilon_from_rdp(&[], &[], 1e-5).0.is_infinite());
        // Mismatched lengths are paired up to the shorter.
        assert_eq!(epsilon_from_rdp(&[32.0, 2.0], &[1.1], 1e-5).1, 32.0);
    }

    /// Extreme but valid inputs end, give no NaN and no negative RDP.
    #[test]
    fn extreme_inputs_terminate() {
        let qs = [1e-300, 1e-12, 1e-3, 0.5, 1.0 - 1e-12];
        let sigmas = [1e-200, 1e-3, 0.1, 1.0, 30.0, 1e6];
        let orders = [1.000001, 1.01, 1.5, 2.0, 3.7, 63.0, 255.5, 1000.0];
        for &q in &qs {
            for &sigma in &sigmas {
                for &order in &orders {
                    let rdp = rdp_sampled_gaussian(q, sigma, order);
                    assert!(rdp >= 0.0, "q {q} sigma {sigma} order {order}: {rdp}");
                }
            }
        }
        assert_eq!(
            rdp_sampled_gaussian(0.1, 1.0, 2.0 * MAX_ORDER),
            f64::INFINITY
        );
    }

    #[test]
    fn serde_round_trip_keeps_infinity() {
        let mut acc = RdpAccountant::new();
        acc.step(0.05, 1.2, 40);
        acc.step(0.2, 0.9, 3);
        let text = serde_json::to_string(&acc).unwrap();
        let back: RdpAccountant = serde_json::from_str(&text).unwrap();
        assert_eq!(back, acc);
        assert_eq!(back.epsilon(1e-5), acc.epsilon(1e-5));

        acc.step(0.2, 0.0, 1);
        let text = serde_json::to_string(&acc).unwrap();
        let back: RdpAccountant = serde_json::from_str(&text).unwrap();
        assert_eq!(back, acc);
        assert_eq!(back.epsilon(1e-5).0, f64::INFINITY);
    }
}
