//! The accountant against published values and its own properties.

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

/// Asserts every case of [`DpSgdCase`] under `conversion` (the accountant and delta to epsilon
/// and order): epsilon within 5e-8, or a relative 1e-12 above 1000; the order exactly.
fn assert_dp_sgd_cases(cases: &[DpSgdCase], conversion: fn(&RdpAccountant, f64) -> (f64, f64)) {
    for &(n, batch, sigma, epochs, delta, want_eps, want_order) in cases {
        let (eps, order) = conversion(&dp_sgd_accountant(n, batch, sigma, epochs), delta);
        let tolerance = if want_eps > 1e3 {
            1e-12 * want_eps
        } else {
            5e-8
        };
        assert_close(eps, want_eps, tolerance, &format!("n={n} batch={batch}"));
        assert_eq!(order, want_order);
    }
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
    assert_dp_sgd_cases(&cases, RdpAccountant::epsilon);
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
    assert_dp_sgd_cases(&cases, RdpAccountant::epsilon_classic);
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
        1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28., 32.,
        64., 256.,
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
