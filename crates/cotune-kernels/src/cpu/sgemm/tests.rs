use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// Operand storage: (rows, cols) matrix stored row-major or transposed.
fn strides(rows: usize, cols: usize, transposed: bool) -> (usize, usize) {
    if transposed {
        (1, rows)
    } else {
        (cols, 1)
    }
}

#[allow(clippy::too_many_arguments)]
fn check_one(
    path: Path,
    rng: &mut Rng,
    m: usize,
    n: usize,
    k: usize,
    at: bool,
    bt: bool,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let (a_rs, a_cs) = strides(m, k, at);
    let (b_rs, b_cs) = strides(k, n, bt);
    let c0: Vec<f32> = rng.vec(m * ldc);
    let mut c = c0.clone();
    sgemm_path(
        path, m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs, &mut c, ldc, accumulate, threads,
    );
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(got.to_bits(), c0[i * ldc + j].to_bits(), "padding touched");
                continue;
            }
            let mut r = if accumulate {
                c0[i * ldc + j] as f64
            } else {
                0.0
            };
            for p in 0..k {
                r += a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + j * b_cs] as f64;
            }
            let tol = 1e-4 * (1.0 + r.abs());
            assert!(
                (got as f64 - r).abs() <= tol,
                "{path:?} m={m} n={n} k={k} at={at} bt={bt} ldc={ldc} acc={accumulate} ({i},{j}): {got} vs {r}"
            );
        }
    }
}

/// Asserts that `path` runs here: its tests are ignored where the build machine lacks it (see
/// `build.rs`), so an unsupported path here means the tests were built on another CPU, and
/// `sgemm_path` would silently test the scalar fallback instead.
fn require(path: Path) {
    assert!(
        path.supported(),
        "{path:?} is not supported on this CPU, but the tests were built on one that has it: \
         rebuild them here (touch crates/cotune-kernels/build.rs)"
    );
}

fn check_path(path: Path) -> usize {
    require(path);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut count = 0;
    let mut idx = 0usize;
    for &m in &[1, 2, 5, 13, 16, 17, 33, 64, 100] {
        for &n in &[1, 3, 16, 31, 32, 33, 65, 100, 384] {
            for &k in &[0, 1, 7, 32, 64, 129, 300] {
                for layout in 0..4 {
                    idx += 1;
                    let ldc = n + idx % 3;
                    let accumulate = idx.is_multiple_of(2);
                    let threads = 1 + idx % 3;
                    check_one(
                        path,
                        &mut rng,
                        m,
                        n,
                        k,
                        layout & 1 != 0,
                        layout & 2 != 0,
                        ldc,
                        accumulate,
                        threads,
                    );
                    count += 1;
                }
            }
        }
    }
    // Multiple k blocks, larger shapes, both thread splits.
    for &(m, n, k) in &[
        (37, 70, 1000),
        (200, 45, 777),
        (25, 600, 520),
        (130, 530, 40),
    ] {
        for layout in 0..4 {
            check_one(
                path,
                &mut rng,
                m,
                n,
                k,
                layout & 1 != 0,
                layout & 2 != 0,
                n + 1,
                layout == 3,
                2,
            );
            count += 1;
        }
    }
    count
}

#[test]
#[cfg_attr(not(host_avx512), ignore = "this CPU has no AVX-512F")]
fn correctness_avx512() {
    eprintln!("avx512 cases: {}", check_path(Path::Avx512));
}

#[test]
#[cfg_attr(not(host_avx2), ignore = "this CPU has no AVX2 + FMA")]
fn correctness_avx2() {
    eprintln!("avx2 cases: {}", check_path(Path::Avx2));
}

#[test]
fn correctness_scalar() {
    eprintln!("scalar cases: {}", check_path(Path::Scalar));
}

#[test]
fn correctness_default_dispatch_and_general_strides() {
    let mut rng = Rng(42);
    let (m, n, k) = (23, 41, 57);
    // A with row stride 3k and column stride 2; B with row stride 1, column stride k+5.
    let (a_rs, a_cs) = (3 * k, 2);
    let (b_rs, b_cs) = (1, k + 5);
    let a = rng.vec((m - 1) * a_rs + (k - 1) * a_cs + 1);
    let b = rng.vec((k - 1) * b_rs + (n - 1) * b_cs + 1);
    let mut c = vec![0.0f32; m * n];
    sgemm(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs, &mut c, n, false, 2);
    for i in 0..m {
        for j in 0..n {
            let r: f64 = (0..k)
                .map(|p| a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + j * b_cs] as f64)
                .sum();
            assert!((c[i * n + j] as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()));
        }
    }
}

#[test]
fn k_zero() {
    let mut c = vec![5.0f32; 6];
    sgemm(2, 3, 0, &[], 0, 0, &[], 0, 0, &mut c, 3, true, 1);
    assert!(c.iter().all(|&x| x == 5.0));
    sgemm(2, 3, 0, &[], 0, 0, &[], 0, 0, &mut c, 3, false, 1);
    assert!(c.iter().all(|&x| x == 0.0));
}

/// Bit-identical results for 1 to 4 threads (and on repeated runs) on `path`.
fn deterministic_across_threads(path: Path) {
    require(path);
    let mut rng = Rng(7);
    for &(m, k, n) in &[
        (1008, 128, 384),
        (128, 1008, 384),
        (63, 32, 63),
        (100, 700, 1000),
        (512, 1008, 128),
        (4, 1000, 2000),
        (7, 300, 777),
    ] {
        for layout in 0..3 {
            let (at, bt) = (layout == 1, layout == 2);
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let (a_rs, a_cs) = strides(m, k, at);
            let (b_rs, b_cs) = strides(k, n, bt);
            let c0 = rng.vec(m * n);
            let mut first: Option<Vec<f32>> = None;
            for threads in 1..=4 {
                for _rep in 0..2 {
                    let mut c = c0.clone();
                    sgemm_path(
                        path,
                        m,
                        n,
                        k,
                        &a,
                        a_rs,
                        a_cs,
                        &b,
                        b_rs,
                        b_cs,
                        &mut c,
                        n,
                        layout == 0,
                        threads,
                    );
                    match &first {
                        None => first = Some(c),
                        Some(f) => assert!(
                            f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{path:?} {m}x{k}x{n} layout {layout}: threads={threads} differs"
                        ),
                    }
                }
            }
        }
    }
}

#[test]
#[cfg_attr(not(host_avx512), ignore = "this CPU has no AVX-512F")]
fn deterministic_across_threads_avx512() {
    deterministic_across_threads(Path::Avx512);
}

#[test]
#[cfg_attr(not(host_avx2), ignore = "this CPU has no AVX2 + FMA")]
fn deterministic_across_threads_avx2() {
    deterministic_across_threads(Path::Avx2);
}

#[test]
fn deterministic_across_threads_scalar() {
    deterministic_across_threads(Path::Scalar);
}

#[test]
fn concurrent_callers_share_the_pool() {
    let (m, k, n) = (200, 150, 300);
    let mut rng = Rng(99);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let mut want = vec![0.0f32; m * n];
    sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut want, n, false, 1);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for threads in [2, 3, 2, 4] {
                    let mut c = vec![0.0f32; m * n];
                    sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut c, n, false, threads);
                    assert!(c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            });
        }
    });
}

#[test]
#[should_panic(expected = "A slice too short")]
fn short_a_panics() {
    let mut c = vec![0.0; 4];
    sgemm(
        2, 2, 3, &[0.0; 5], 3, 1, &[0.0; 6], 2, 1, &mut c, 2, false, 1,
    );
}

#[test]
#[should_panic(expected = "B slice too short")]
fn short_b_panics() {
    let mut c = vec![0.0; 4];
    sgemm(
        2, 2, 3, &[0.0; 6], 3, 1, &[0.0; 5], 1, 3, &mut c, 2, false, 1,
    );
}

#[test]
#[should_panic(expected = "C slice too short")]
fn short_c_panics() {
    let mut c = vec![0.0; 4];
    sgemm(
        2, 2, 3, &[0.0; 6], 3, 1, &[0.0; 6], 2, 1, &mut c, 3, false, 1,
    );
}

#[test]
#[should_panic(expected = "ldc")]
fn small_ldc_panics() {
    let mut c = vec![0.0; 8];
    sgemm(
        2, 3, 1, &[0.0; 2], 1, 1, &[0.0; 3], 3, 1, &mut c, 2, false, 1,
    );
}
