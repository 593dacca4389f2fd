//! Single-precision GEMM, Goto/BLIS style, std only.
//!
//! Structure: for every `NC` block of columns and every `KC` block of `k`, B is
//! packed into `KC x NR` micro-panels (zero padded); then each `MR`-row panel of A
//! is packed k-major (the kernel broadcasts from it, so it stays in L1) and a
//! register-blocked broadcast-FMA microkernel sweeps all B micro-panels of the
//! block (streamed from L2).  For small m all A panels are packed first and the
//! loop order is swapped so each B micro-panel is loaded into L1 once.  Operands
//! already in kernel layout and barely reused are read in place (no packing).
//! Tiny m with B stored transposed uses a dot-product kernel instead (no packing).
//!
//! Runtime dispatch: AVX-512F (MR = 12, NR = 32, KC <= 384, NC = 512),
//! AVX2 + FMA (MR = 6, NR = 16, KC <= 256), portable scalar (MR = 4, NR = 16).
//!
//! Threads: C is split into MR-aligned row blocks or NR-aligned column blocks (by a
//! small cost model); each thread packs what it needs.  Work runs on the kernels' worker team
//! (`crate::cpu::pool`).
//!
//! Determinism: the k-blocking depends only on `k`, and the algorithm choice only on
//! the whole problem (shape and layouts), never on the thread count.  Every C element
//! is computed by one thread, as one FMA chain over `p` per k block, and the k blocks
//! are added to C in order (dot path: 16 lane-wise FMA chains over all of k, then a
//! fixed reduction tree).  Hence results are bit-identical for any `threads`.

use std::cell::RefCell;

/// Read-only strided matrix view: element (i, j) at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

// SAFETY: a View only points into a `&[f32]` that outlives the thread scope and is only read.
unsafe impl Send for View {}
// SAFETY: as above, shared read-only access.
unsafe impl Sync for View {}

impl View {
    /// Pointer to element (i, j); computed with wrapping arithmetic (no deref here).
    #[inline(always)]
    fn at(self, i: usize, j: usize) -> *const f32 {
        self.ptr.wrapping_add(i * self.rs + j * self.cs)
    }
}

/// Output pointer shared by worker threads that write disjoint tiles of C.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: each thread writes a disjoint (row block or column block) region of C.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The raw pointer (method call so closures capture the Send wrapper, not the field).
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One instruction-set-specific implementation (kernel + packing + blocking).
trait Arch {
    /// Rows per microkernel tile (A micro-panel height).
    const MR: usize;
    /// Columns per microkernel tile (B micro-panel width).
    const NR: usize;
    /// Maximum k block.
    const KC: usize;
    /// Maximum column block (packed B block is KC x NC).
    const NC: usize;

    /// Pack `mr x kc` of A (element (i,p) at `src + i*rs + p*cs`) into `dst[p*mr + i]`.
    ///
    /// # Safety
    /// All source elements readable, `dst` writable for `mr*kc` floats.
    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32);

    /// Pack `kc x nr` of B (element (p,j) at `src + p*rs + j*cs`) into `dst[p*NR + j]`,
    /// zero padding columns `nr..NR`.
    ///
    /// # Safety
    /// All source elements readable, `dst` writable for `NR*kc` floats.
    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32);

    /// `C[i][j] (= or +=) sum_p a[p*lda + i] * b[p*ldb + j]` for `i < mr`, `j < nr`.
    ///
    /// # Safety
    /// `a` readable at `p*lda + i` (i < mr), `b` readable at `p*ldb + j` for all
    /// `j < NR` (p < kc), C tile `mr x nr` with row stride `ldc` writable; the
    /// required CPU features are present.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        mr: usize,
        nr: usize,
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    );

    /// How many adjacent full B micro-panels one [`Arch::tile_group`] call may cover
    /// for an `mr`-row tile (more independent accumulators for short tiles).
    fn group(_mr: usize) -> usize {
        1
    }

    /// [`Arch::tile`] over `g` adjacent full panels (`g * NR` columns of C); element
    /// (p, j) of panel q is at `b + q*boff + p*ldb + j`.  Same arithmetic per element.
    ///
    /// # Safety
    /// As for [`Arch::tile`], for every one of the `g` panels; `g <= group(mr)`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_group(
        _mr: usize,
        _g: usize,
        _kc: usize,
        _a: *const f32,
        _lda: usize,
        _b: *const f32,
        _ldb: usize,
        _boff: usize,
        _c: *mut f32,
        _ldc: usize,
        _add: bool,
    ) {
        unreachable!("tile_group called on an architecture without grouping")
    }

    /// Column granularity of the dot-product path.
    const DOT_NU: usize = 1;

    /// Whether to use the packing-free dot-product path instead of the Goto loops
    /// (decided from the whole problem, before any thread split).
    fn use_dot(_m: usize, _n: usize, _k: usize, _a: View, _b: View) -> bool {
        false
    }

    /// Dot-product path: `C (= or +=) A · B` for an `m x n` block, with A rows and
    /// B columns contiguous along k (`a.cs == 1`, `b.rs == 1`).
    ///
    /// # Safety
    /// As for `gemm_serial`; only called when `use_dot` returned true.
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot(
        _m: usize,
        _n: usize,
        _k: usize,
        _a: View,
        _b: View,
        _c: *mut f32,
        _ldc: usize,
        _add: bool,
    ) {
        unreachable!("dot path not available on this architecture")
    }
}

/// Which implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Path {
    /// Portable (auto-vectorised) code.
    Scalar,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl Path {
    /// Best path supported by the running CPU.
    pub(crate) fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Path::Avx2;
            }
        }
        Path::Scalar
    }

    /// Whether this path can run on the current CPU.
    pub(crate) fn supported(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// C = A · B (or C += A · B when `accumulate`), single precision.
/// A is m×k: element (i, p) is at a[i * a_rs + p * a_cs].
/// B is k×n: element (p, j) is at b[p * b_rs + j * b_cs].
/// C is m×n row-major: element (i, j) is at c[i * ldc + j], ldc >= n.
/// Either operand may be row-major, column-major (transposed) or any strided view.
/// `threads` >= 1: how many OS threads may split the work (small problems use fewer).
/// Panics with a clear message if a slice is too short for the given shape/strides.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    // More threads than cores only adds contention (idle workers spin briefly).
    let threads = threads.clamp(1, max_threads());
    sgemm_path(
        Path::detect(),
        m,
        n,
        k,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        c,
        ldc,
        accumulate,
        threads,
    );
}

/// Threads of the pool the work runs on.
fn max_threads() -> usize {
    crate::cpu::pool::threads()
}

/// Minimum slice length for a `rows x cols` strided view (None on overflow).
fn required_len(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// [`sgemm`] on an explicitly chosen path (falls back to scalar if unsupported).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_path(
    path: Path,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(ldc >= n, "sgemm: ldc ({ldc}) must be >= n ({n})");
    let need_c = required_len(m, n, ldc, 1).expect("sgemm: C index overflows usize");
    assert!(
        c.len() >= need_c,
        "sgemm: C slice too short: len {} < {need_c} required for {m}x{n} with ldc {ldc}",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let need_a = required_len(m, k, a_rs, a_cs).expect("sgemm: A index overflows usize");
    assert!(
        a.len() >= need_a,
        "sgemm: A slice too short: len {} < {need_a} required for {m}x{k} with strides ({a_rs}, {a_cs})",
        a.len()
    );
    let need_b = required_len(k, n, b_rs, b_cs).expect("sgemm: B index overflows usize");
    assert!(
        b.len() >= need_b,
        "sgemm: B slice too short: len {} < {need_b} required for {k}x{n} with strides ({b_rs}, {b_cs})",
        b.len()
    );
    let av = View {
        ptr: a.as_ptr(),
        rs: a_rs,
        cs: a_cs,
    };
    let bv = View {
        ptr: b.as_ptr(),
        rs: b_rs,
        cs: b_cs,
    };
    let path = if path.supported() { path } else { Path::Scalar };
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => run::<avx512::Avx512>(m, n, k, av, bv, c, ldc, accumulate, threads),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => run::<avx2::Avx2>(m, n, k, av, bv, c, ldc, accumulate, threads),
        _ => run::<scalar::Scalar>(m, n, k, av, bv, c, ldc, accumulate, threads),
    }
}

/// k block size: depends only on `k` (never on threads) so summation order is fixed.
fn k_block(k: usize, kc_max: usize) -> usize {
    if k <= kc_max {
        return k.max(1);
    }
    let nb = k.div_ceil(kc_max);
    k.div_ceil(nb).next_multiple_of(8).min(kc_max)
}

/// Number of threads and split direction (true: split rows, false: split columns).
fn plan(m: usize, n: usize, k: usize, mr: usize, nr: usize, threads: usize) -> (usize, bool) {
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    if threads <= 1 || flops < 2.0e6 {
        return (1, true);
    }
    let mu = m.div_ceil(mr);
    let nu = n.div_ceil(nr);
    let nt = threads.min((flops / 1.0e6) as usize).min(mu.max(nu)).max(1);
    if nt == 1 {
        return (1, true);
    }
    // Estimated cycles of the busiest thread: FMAs (32 per cycle) plus packing (~0.35
    // cycle per element); a row split re-packs all of B in every thread, a column split A.
    let kf = k as f64;
    let share =
        |units: usize, unit: usize, total: usize| (units.div_ceil(nt) * unit).min(total) as f64;
    let cost = |rows: f64, cols: f64| rows * cols * kf / 32.0 + 0.35 * kf * (rows + cols);
    let by_rows = if mu >= nt {
        cost(share(mu, mr, m), n as f64)
    } else {
        f64::INFINITY
    };
    let by_cols = if nu >= nt {
        cost(m as f64, share(nu, nr, n))
    } else {
        f64::INFINITY
    };
    let split_m = by_rows <= by_cols;
    (nt, split_m)
}

thread_local! {
    /// Per calling thread packing workspace, reused between calls.
    static WORKSPACE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on a zero-initialised-once workspace of at least `len` floats.
fn with_workspace<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Threaded driver: split C into row or column blocks, one per thread.
#[allow(clippy::too_many_arguments)]
fn run<K: Arch>(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    let dot = K::use_dot(m, n, k, a, b);
    let (nt, split_m) = if dot {
        let (nt, _) = plan(m, n, k, K::MR, K::DOT_NU, threads);
        (nt.min(n.div_ceil(K::DOT_NU)), false)
    } else {
        plan(m, n, k, K::MR, K::NR, threads)
    };
    let kcb = k_block(k, K::KC);
    let (units, unit, total) = if split_m {
        (m.div_ceil(K::MR), K::MR, m)
    } else if dot {
        (n.div_ceil(K::DOT_NU), K::DOT_NU, n)
    } else {
        (n.div_ceil(K::NR), K::NR, n)
    };
    // Range of rows (or columns) owned by thread t.
    let part = move |t: usize| -> (usize, usize) {
        let lo = (t * units / nt * unit).min(total);
        let hi = ((t + 1) * units / nt * unit).min(total);
        (lo, hi)
    };
    let max_n = if split_m {
        n
    } else {
        (0..nt).map(|t| part(t).1 - part(t).0).max().unwrap_or(n)
    };
    let a_len = if dot { 0 } else { a_buf_len::<K>(kcb) };
    let b_len = if dot {
        0
    } else {
        kcb * max_n.min(K::NC).next_multiple_of(K::NR)
    };
    let per = (a_len + b_len + 16).next_multiple_of(16);
    let cptr = OutPtr(c.as_mut_ptr());

    let job = move |t: usize, chunk: &mut [f32]| {
        let off = chunk.as_ptr().align_offset(64).min(16);
        let buf = &mut chunk[off..off + a_len + b_len];
        let (lo, hi) = part(t);
        if lo >= hi {
            return;
        }
        let (mm, nn, at, bt, ct) = if split_m {
            (
                hi - lo,
                n,
                View {
                    ptr: a.at(lo, 0),
                    ..a
                },
                b,
                cptr.get().wrapping_add(lo * ldc),
            )
        } else {
            (
                m,
                hi - lo,
                a,
                View {
                    ptr: b.at(0, lo),
                    ..b
                },
                cptr.get().wrapping_add(lo),
            )
        };
        // SAFETY: shapes were bounds-checked in sgemm_path, the sub-block lies inside A/B/C,
        // threads own disjoint C blocks, and K was selected after CPU feature detection.
        unsafe {
            if dot {
                K::dot(mm, nn, k, at, bt, ct, ldc, accumulate)
            } else {
                gemm_serial::<K>(mm, nn, k, kcb, at, bt, ct, ldc, accumulate, buf)
            }
        };
    };

    with_workspace(per * nt, |ws| crate::cpu::pool::for_chunks(ws, per, &job));
}

/// A micro-panels kept packed at once when m is small (B-panel-outer loop order).
const SMALL_M_PANELS: usize = 4;

/// Floats reserved for packed A (one panel, or all panels of a small-m problem).
fn a_buf_len<K: Arch>(kcb: usize) -> usize {
    (SMALL_M_PANELS * K::MR * kcb).next_multiple_of(16)
}

/// Single-threaded Goto loop nest over an `m x n` block of C.
///
/// Large m: for each packed A micro-panel (kept in L1) sweep all packed B micro-panels
/// of the block (streamed from L2).  Small m (<= SMALL_M_PANELS * MR): pack all of A,
/// then for each pair (or group) of B micro-panels (kept in L1) run all A panels.
///
/// # Safety
/// `a`, `b`, `c` describe valid `m x k`, `k x n`, `m x n` (row stride `ldc`) regions,
/// `buf` holds `a_buf_len(kcb) + kcb * round_up(min(n, NC), NR)` floats,
/// and the CPU supports `K`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_serial<K: Arch>(
    m: usize,
    n: usize,
    k: usize,
    kcb: usize,
    a: View,
    b: View,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    buf: &mut [f32],
) {
    let (mr_max, nr_max) = (K::MR, K::NR);
    let (apack, bpack) = buf.split_at_mut(a_buf_len::<K>(kcb));
    let ap = apack.as_mut_ptr();
    let bp = bpack.as_mut_ptr();
    let small_m = m <= SMALL_M_PANELS * mr_max;
    // Skip packing when the operand is already in kernel layout and barely reused.
    let direct_b = b.cs == 1 && m <= 3 * mr_max;
    let direct_a = a.rs == 1 && n <= 2 * nr_max;

    let mut jc = 0;
    while jc < n {
        let nc = K::NC.min(n - jc);
        let np = nc.div_ceil(nr_max);
        let mut pc = 0;
        while pc < k {
            let kc = kcb.min(k - pc);
            let add = accumulate || pc > 0;
            // Packs B panels [from, to) of this block (full panels read in place if direct_b).
            let pack_b_panels = |from: usize, to: usize| {
                for jp in from..to {
                    let j0 = jc + jp * nr_max;
                    let nr = nr_max.min(jc + nc - j0);
                    if !(direct_b && nr == nr_max) {
                        // SAFETY: source block inside B; destination panel inside bpack.
                        unsafe {
                            K::pack_b(nr, kc, b.at(pc, j0), b.rs, b.cs, bp.add(jp * kc * nr_max))
                        };
                    }
                }
            };
            // Runs the tiles of A rows i0..i0+mr against B panels [from, to) of this block.
            let panels =
                |i0: usize, mr: usize, a_ptr: *const f32, lda: usize, from: usize, to: usize| {
                    let mut q = from;
                    while q < to {
                        let j0 = jc + q * nr_max;
                        let cp = c.wrapping_add(i0 * ldc + j0);
                        let mut g = K::group(mr);
                        while g > 1 && (q + g > to || j0 + g * nr_max > jc + nc) {
                            g /= 2;
                        }
                        if g > 1 {
                            let (b_ptr, ldb, boff) = if direct_b {
                                (b.at(pc, j0), b.rs, nr_max)
                            } else {
                                (
                                    bp.wrapping_add(q * kc * nr_max) as *const f32,
                                    nr_max,
                                    kc * nr_max,
                                )
                            };
                            // SAFETY: g full panels readable as documented on Arch::tile_group,
                            // C tile inside C.
                            unsafe {
                                K::tile_group(mr, g, kc, a_ptr, lda, b_ptr, ldb, boff, cp, ldc, add)
                            };
                            q += g;
                        } else {
                            let nr = nr_max.min(jc + nc - j0);
                            let (b_ptr, ldb) = if direct_b && nr == nr_max {
                                (b.at(pc, j0), b.rs)
                            } else {
                                (bp.wrapping_add(q * kc * nr_max) as *const f32, nr_max)
                            };
                            // SAFETY: A/B panels readable as documented on Arch::tile, C tile inside C.
                            unsafe { K::tile(mr, nr, kc, a_ptr, lda, b_ptr, ldb, cp, ldc, add) };
                            q += 1;
                        }
                    }
                };
            if small_m {
                // Pack every A panel once, then keep each pair of B panels hot in L1.
                let mut i0 = 0;
                while i0 < m && !direct_a {
                    let mr = mr_max.min(m - i0);
                    // SAFETY: rows i0..i0+mr inside A; panel i0/MR fits the SMALL_M_PANELS area.
                    unsafe { K::pack_a(mr, kc, a.at(i0, pc), a.rs, a.cs, ap.add(i0 * kc)) };
                    i0 += mr;
                }
                // B panels per chunk: 2, or more when the (last) row tile is short enough
                // to be grouped across more panels.
                let chunk = K::group(m.min(mr_max)).max(K::group(m % mr_max)).max(2);
                let mut q = 0;
                while q < np {
                    let to = (q + chunk).min(np);
                    // Pack just before use so the panels are still in L1.
                    pack_b_panels(q, to);
                    let mut i0 = 0;
                    while i0 < m {
                        let mr = mr_max.min(m - i0);
                        let (a_ptr, lda) = if direct_a {
                            (a.at(i0, pc), a.cs)
                        } else {
                            (ap.wrapping_add(i0 * kc) as *const f32, mr)
                        };
                        panels(i0, mr, a_ptr, lda, q, to);
                        i0 += mr;
                    }
                    q = to;
                }
            } else {
                pack_b_panels(0, np);
                let mut i0 = 0;
                while i0 < m {
                    let mr = mr_max.min(m - i0);
                    let (a_ptr, lda) = if direct_a {
                        (a.at(i0, pc), a.cs)
                    } else {
                        // SAFETY: rows i0..i0+mr, cols pc..pc+kc inside A; apack holds mr*kc.
                        unsafe { K::pack_a(mr, kc, a.at(i0, pc), a.rs, a.cs, ap) };
                        (ap as *const f32, mr)
                    };
                    panels(i0, mr, a_ptr, lda, 0, np);
                    i0 += mr;
                }
            }
            pc += kc;
        }
        jc += nc;
    }
}

/// Generic A packing: `dst[p*mr + i] = A(i, p)`.
///
/// # Safety
/// See [`Arch::pack_a`].
#[inline(always)]
unsafe fn pack_a_generic(
    mr: usize,
    kc: usize,
    src: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // SAFETY: indices stay inside the mr x kc source block and the mr*kc destination.
    unsafe {
        if rs == 1 {
            for p in 0..kc {
                std::ptr::copy_nonoverlapping(src.add(p * cs), dst.add(p * mr), mr);
            }
        } else {
            for i in 0..mr {
                let s = src.add(i * rs);
                for p in 0..kc {
                    *dst.add(p * mr + i) = *s.add(p * cs);
                }
            }
        }
    }
}

/// Generic B packing: `dst[p*NR + j] = B(p, j)`, zero padded to NR columns.
///
/// # Safety
/// See [`Arch::pack_b`].
#[inline(always)]
unsafe fn pack_b_generic<const NR: usize>(
    nr: usize,
    kc: usize,
    src: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // SAFETY: indices stay inside the kc x nr source block and the kc*NR destination.
    unsafe {
        if cs == 1 {
            for p in 0..kc {
                let d = dst.add(p * NR);
                std::ptr::copy_nonoverlapping(src.add(p * rs), d, nr);
                for j in nr..NR {
                    *d.add(j) = 0.0;
                }
            }
        } else {
            for p in 0..kc {
                for j in nr..NR {
                    *dst.add(p * NR + j) = 0.0;
                }
            }
            for j in 0..nr {
                let s = src.add(j * cs);
                for p in 0..kc {
                    *dst.add(p * NR + j) = *s.add(p * rs);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
