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
//! small cost model); each thread packs what it needs.  Work runs on the SDK's worker team
//! (`crate::pool`).
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
    crate::pool::threads()
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

    with_workspace(per * nt, |ws| crate::pool::for_chunks(ws, per, &job));
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
mod x86util {
    use std::arch::x86_64::*;

    /// Transpose an 8x8 block held as 8 row vectors.
    #[inline]
    #[target_feature(enable = "avx")]
    pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// Pack a column-major (`rs == 1`) `kc x W` block of B (W = 8*blocks) into rows of
    /// `ld` floats using 8x8 transposes.
    ///
    /// # Safety
    /// Source columns `j*cs + p` readable for j < 8*blocks, p < kc; dst writable kc*ld.
    #[inline]
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn pack_b_colmajor(
        blocks: usize,
        kc: usize,
        src: *const f32,
        cs: usize,
        dst: *mut f32,
        ld: usize,
    ) {
        // SAFETY: all loads are inside the kc x 8*blocks source block, stores inside dst.
        unsafe {
            let mut p = 0;
            while p + 8 <= kc {
                for jb in 0..blocks {
                    let s = src.add(jb * 8 * cs + p);
                    let r = [
                        _mm256_loadu_ps(s),
                        _mm256_loadu_ps(s.add(cs)),
                        _mm256_loadu_ps(s.add(2 * cs)),
                        _mm256_loadu_ps(s.add(3 * cs)),
                        _mm256_loadu_ps(s.add(4 * cs)),
                        _mm256_loadu_ps(s.add(5 * cs)),
                        _mm256_loadu_ps(s.add(6 * cs)),
                        _mm256_loadu_ps(s.add(7 * cs)),
                    ];
                    let t = transpose8(r);
                    for (q, v) in t.iter().enumerate() {
                        _mm256_storeu_ps(dst.add((p + q) * ld + jb * 8), *v);
                    }
                }
                p += 8;
            }
            while p < kc {
                for j in 0..8 * blocks {
                    *dst.add(p * ld + j) = *src.add(j * cs + p);
                }
                p += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::x86util::{pack_b_colmajor, transpose8};
    use super::{pack_a_generic, pack_b_generic, Arch, View};
    use std::arch::x86_64::*;

    pub(super) struct Avx512;

    const MR: usize = 12;
    const NR: usize = 32;

    impl Arch for Avx512 {
        const MR: usize = MR;
        const NR: usize = NR;
        const KC: usize = 384;
        const NC: usize = 512;

        unsafe fn pack_a(
            mr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
            unsafe { pack_a(mr, kc, src, rs, cs, dst) }
        }

        unsafe fn pack_b(
            nr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
            unsafe { pack_b(nr, kc, src, rs, cs, dst) }
        }

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
        ) {
            // SAFETY: Avx512 is only used after avx512f detection; pointer contract forwarded.
            unsafe { tile(mr, nr, kc, a, lda, b, ldb, c, ldc, add) }
        }

        fn group(mr: usize) -> usize {
            match mr {
                1 | 2 => 4,
                3..=6 => 2,
                _ => 1,
            }
        }

        unsafe fn tile_group(
            mr: usize,
            g: usize,
            kc: usize,
            a: *const f32,
            lda: usize,
            b: *const f32,
            ldb: usize,
            boff: usize,
            c: *mut f32,
            ldc: usize,
            add: bool,
        ) {
            let nr = g * NR;
            // SAFETY: avx512f detected; g full panels readable (Arch::tile_group contract), R = mr.
            unsafe {
                match (g, mr) {
                    (4, 1) => kern::<1, 8>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (4, 2) => kern::<2, 8>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 1) => kern::<1, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 2) => kern::<2, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 3) => kern::<3, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 4) => kern::<4, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 5) => kern::<5, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    (2, 6) => kern::<6, 4>(kc, a, lda, b, ldb, boff, c, ldc, nr, add),
                    _ => unreachable!("unsupported tile group"),
                }
            }
        }

        const DOT_NU: usize = DOT_J;

        fn use_dot(m: usize, _n: usize, k: usize, a: View, b: View) -> bool {
            // Transposing B (packing) costs about as much as ~8 rows of FMAs; for fewer
            // rows, and k long enough to amortise the horizontal sums, skip packing.
            a.cs == 1
                && b.rs == 1
                && (m <= 2 || (m <= 4 && k >= 64) || (m <= DOT_MAX_M && k >= 256))
        }

        unsafe fn dot(
            m: usize,
            n: usize,
            k: usize,
            a: View,
            b: View,
            c: *mut f32,
            ldc: usize,
            add: bool,
        ) {
            // SAFETY: avx512f detected; A rows / B columns contiguous and inside the slices.
            unsafe { dot_block(m, n, k, a, b, c, ldc, add) }
        }
    }

    /// Prefetch the C tile at the start of each microkernel call.
    const PREFETCH_C: bool = true;

    /// Largest m for which the dot-product path is used (B stored transposed).
    const DOT_MAX_M: usize = 8;
    /// Rows / columns of C per dot-product tile.
    const DOT_R: usize = 4;
    const DOT_J: usize = 6;

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot_block(
        m: usize,
        n: usize,
        k: usize,
        a: View,
        b: View,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        macro_rules! go {
            ($rn:expr, $jn:expr, $args:tt; $($r:literal)*; $js:tt) => {
                match $rn {
                    $($r => go!(@j $r, $jn, $args; $js),)*
                    _ => unreachable!("dot rows out of range"),
                }
            };
            (@j $r:literal, $jn:expr, $args:tt; [$($j:literal)*]) => {
                match $jn {
                    $($j => dot_kern::<$r, $j> $args,)*
                    _ => unreachable!("dot cols out of range"),
                }
            };
        }
        let mut j = 0;
        while j < n {
            let jn = DOT_J.min(n - j);
            let mut i = 0;
            while i < m {
                let rn = DOT_R.min(m - i);
                let (ap, bp, cp) = (a.at(i, 0), b.at(0, j), c.wrapping_add(i * ldc + j));
                // SAFETY: rows i..i+rn of A, columns j..j+jn of B and that C tile are in bounds.
                unsafe {
                    go!(rn, jn, (k, ap, a.rs, bp, b.cs, cp, ldc, add); 1 2 3 4; [1 2 3 4 5 6])
                };
                i += rn;
            }
            j += jn;
        }
    }

    /// Horizontal sums of four vectors `[sum(a), sum(b), sum(c), sum(d)]`, with a fixed
    /// order that never mixes lanes of different inputs; 512-bit ops only.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn hsum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        let ab = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        );
        let cd = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(c, d),
            _mm512_shuffle_f32x4::<0xEE>(c, d),
        );
        // 128-bit block q now holds a 4-float partial sum of input q.
        let w = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(ab, cd),
            _mm512_shuffle_f32x4::<0xDD>(ab, cd),
        );
        let x = _mm512_add_ps(w, _mm512_permute_ps::<0b10_11_00_01>(w));
        let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
        _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, y))
    }

    /// R x J dot-product tile: 16-lane partial sums along k, then a fixed horizontal reduction.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline(never)]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn dot_kern<const R: usize, const J: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); J]; R];
        // SAFETY: a + r*lda + p (r<R, p<k), b + j*ldb + p (j<J, p<k) readable; C tile R x J writable.
        unsafe {
            let mut p = 0;
            while p < k {
                // Full chunks use an all-ones mask; the last partial chunk reads zeros.
                let mk = if p + 16 <= k {
                    0xFFFF
                } else {
                    ((1u32 << (k - p)) - 1) as __mmask16
                };
                let mut av = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    av[r] = _mm512_maskz_loadu_ps(mk, a.add(r * lda + p));
                }
                for j in 0..J {
                    let bv = _mm512_maskz_loadu_ps(mk, b.add(j * ldb + p));
                    for r in 0..R {
                        acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
                    }
                }
                p += 16;
            }
            let z = _mm512_setzero_ps();
            for r in 0..R {
                let mut j0 = 0;
                while j0 < J {
                    let g = |q: usize| if j0 + q < J { acc[r][j0 + q] } else { z };
                    let mut t = [0.0f32; 4];
                    _mm_storeu_ps(t.as_mut_ptr(), hsum4(g(0), g(1), g(2), g(3)));
                    for (q, s) in t.iter().enumerate().take(J - j0) {
                        let cp = c.add(r * ldc + j0 + q);
                        *cp = if add { *cp + *s } else { *s };
                    }
                    j0 += 4;
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        if cs == 1 && mr == MR {
            // SAFETY: full 12-row panel of a row-major A; contract forwarded.
            unsafe { pack_a_rowmajor12(kc, src, rs, dst) }
        } else if rs == 1 && mr == MR {
            // Column-major A: each packed row is 12 contiguous source floats.
            const M12: __mmask16 = (1 << MR) - 1;
            for p in 0..kc {
                // SAFETY: 12 floats at src + p*cs are inside A; dst holds 12*kc floats.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(M12, src.add(p * cs));
                    _mm512_mask_storeu_ps(dst.add(p * MR), M12, v);
                }
            }
        } else {
            // SAFETY: contract forwarded.
            unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
        }
    }

    /// Pack 12 rows of a row-major A: 8x8 transposes for rows 0..8, 4x8 for rows 8..12.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn pack_a_rowmajor12(kc: usize, src: *const f32, rs: usize, dst: *mut f32) {
        // SAFETY: loads stay inside the 12 x kc source block, stores inside the 12*kc panel.
        unsafe {
            let mut p = 0;
            while p + 8 <= kc {
                let s = src.add(p);
                let r = [
                    _mm256_loadu_ps(s),
                    _mm256_loadu_ps(s.add(rs)),
                    _mm256_loadu_ps(s.add(2 * rs)),
                    _mm256_loadu_ps(s.add(3 * rs)),
                    _mm256_loadu_ps(s.add(4 * rs)),
                    _mm256_loadu_ps(s.add(5 * rs)),
                    _mm256_loadu_ps(s.add(6 * rs)),
                    _mm256_loadu_ps(s.add(7 * rs)),
                ];
                let t = transpose8(r);
                let d = dst.add(p * MR);
                for (q, v) in t.iter().enumerate() {
                    _mm256_storeu_ps(d.add(q * MR), *v);
                }
                let r8 = _mm256_loadu_ps(s.add(8 * rs));
                let r9 = _mm256_loadu_ps(s.add(9 * rs));
                let r10 = _mm256_loadu_ps(s.add(10 * rs));
                let r11 = _mm256_loadu_ps(s.add(11 * rs));
                let t0 = _mm256_unpacklo_ps(r8, r9);
                let t1 = _mm256_unpackhi_ps(r8, r9);
                let t2 = _mm256_unpacklo_ps(r10, r11);
                let t3 = _mm256_unpackhi_ps(r10, r11);
                // Each u holds column q in the low half and column q+4 in the high half.
                let u = [
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                ];
                for (q, v) in u.iter().enumerate() {
                    _mm_storeu_ps(d.add(q * MR + 8), _mm256_castps256_ps128(*v));
                    _mm_storeu_ps(d.add((q + 4) * MR + 8), _mm256_extractf128_ps::<1>(*v));
                }
                p += 8;
            }
            while p < kc {
                for i in 0..MR {
                    *dst.add(p * MR + i) = *src.add(i * rs + p);
                }
                p += 1;
            }
        }
    }

    /// Transpose a 16x16 block held as 16 row vectors (64 shuffles).
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + q], 128-bit block L: column 4L + q of rows 4g..4g+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            u[4 * g] = _mm512_shuffle_ps::<0x44>(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * g + 1], t[4 * g + 3]);
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let v0 = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
            let w0 = _mm512_shuffle_f32x4::<0xDD>(u[q], u[4 + q]);
            let v1 = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
            let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + q], u[12 + q]);
            out[q] = _mm512_shuffle_f32x4::<0x88>(v0, v1);
            out[8 + q] = _mm512_shuffle_f32x4::<0xDD>(v0, v1);
            out[4 + q] = _mm512_shuffle_f32x4::<0x88>(w0, w1);
            out[12 + q] = _mm512_shuffle_f32x4::<0xDD>(w0, w1);
        }
        out
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: loads inside the kc x nr source block, stores inside the kc*NR panel.
        unsafe {
            if nr == NR && cs == 1 {
                for p in 0..kc {
                    let s = src.add(p * rs);
                    let d = dst.add(p * NR);
                    _mm512_storeu_ps(d, _mm512_loadu_ps(s));
                    _mm512_storeu_ps(d.add(16), _mm512_loadu_ps(s.add(16)));
                }
            } else if nr == NR && rs == 1 {
                // 16x16 transposes for whole 16-row steps, 8x8 ones for the rest.
                let k16 = kc / 16 * 16;
                for p in (0..k16).step_by(16) {
                    for jb in 0..NR / 16 {
                        let s = src.add(jb * 16 * cs + p);
                        let mut r = [_mm512_setzero_ps(); 16];
                        for (q, v) in r.iter_mut().enumerate() {
                            *v = _mm512_loadu_ps(s.add(q * cs));
                        }
                        for (q, v) in transpose16(r).iter().enumerate() {
                            _mm512_storeu_ps(dst.add((p + q) * NR + jb * 16), *v);
                        }
                    }
                }
                pack_b_colmajor(NR / 8, kc - k16, src.add(k16), cs, dst.add(k16 * NR), NR);
            } else {
                pack_b_generic::<NR>(nr, kc, src, rs, cs, dst);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
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
    ) {
        macro_rules! go {
            ($v:literal; $($r:literal)*) => {
                match mr {
                    // SAFETY: contract of Arch::tile forwarded; R = mr, 16*V <= NR.
                    $($r => unsafe { kern::<$r, $v>(kc, a, lda, b, ldb, 0, c, ldc, nr, add) },)*
                    _ => unreachable!("mr out of range"),
                }
            };
        }
        if nr > 16 {
            go!(2; 1 2 3 4 5 6 7 8 9 10 11 12)
        } else {
            go!(1; 1 2 3 4 5 6 7 8 9 10 11 12)
        }
    }

    /// Lane mask for vector `v` of a tile row with `nr` valid columns.
    #[inline(always)]
    fn lane_mask(nr: usize, v: usize) -> __mmask16 {
        let lanes = nr.saturating_sub(16 * v).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    }

    /// R x (16*V) register-blocked microkernel; vector v of B row p is at
    /// `b + p*ldb + (v/2)*boff + (v%2)*16` (boff: distance between NR-wide panels).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn kern<const R: usize, const V: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        boff: usize,
        c: *mut f32,
        ldc: usize,
        nr: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // SAFETY: a readable at p*lda+i (i<R), b at the documented vector offsets, C tile R x nr writable.
        unsafe {
            if PREFETCH_C {
                // Pull the C tile towards L1 while the FMAs run (prefetchw is not stable).
                for i in 0..R {
                    for v in 0..V {
                        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + 16 * v) as *const i8);
                    }
                }
            }
            let mut ap = a;
            let mut bp = b;
            for _ in 0..kc {
                let mut bv = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    bv[v] = _mm512_loadu_ps(bp.wrapping_add((v / 2) * boff + (v % 2) * 16));
                }
                if R <= 2 {
                    // Short tiles are bandwidth bound: fetch B rows a few iterations ahead.
                    for v in 0..V {
                        let pf = bp.wrapping_add(8 * ldb + (v / 2) * boff + (v % 2) * 16);
                        _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                    }
                }
                for i in 0..R {
                    let av = _mm512_set1_ps(*ap.add(i));
                    for v in 0..V {
                        acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                    }
                }
                ap = ap.wrapping_add(lda);
                bp = bp.wrapping_add(ldb);
            }
            if nr >= 16 * V {
                for i in 0..R {
                    let cr = c.add(i * ldc);
                    for v in 0..V {
                        let cp = cr.add(16 * v);
                        let r = if add {
                            _mm512_add_ps(_mm512_loadu_ps(cp), acc[i][v])
                        } else {
                            acc[i][v]
                        };
                        _mm512_storeu_ps(cp, r);
                    }
                }
            } else {
                for i in 0..R {
                    let cr = c.add(i * ldc);
                    for v in 0..V {
                        let mk = lane_mask(nr, v);
                        let cp = cr.wrapping_add(16 * v);
                        let r = if add {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mk, cp), acc[i][v])
                        } else {
                            acc[i][v]
                        };
                        _mm512_mask_storeu_ps(cp, mk, r);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::x86util::pack_b_colmajor;
    use super::{pack_a_generic, pack_b_generic, Arch};
    use std::arch::x86_64::*;

    pub(super) struct Avx2;

    const MR: usize = 6;
    const NR: usize = 16;

    impl Arch for Avx2 {
        const MR: usize = MR;
        const NR: usize = NR;
        const KC: usize = 256;
        const NC: usize = 512;

        unsafe fn pack_a(
            mr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
            unsafe { pack_a(mr, kc, src, rs, cs, dst) }
        }

        unsafe fn pack_b(
            nr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
            unsafe { pack_b(nr, kc, src, rs, cs, dst) }
        }

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
        ) {
            // SAFETY: Avx2 is only used after avx2+fma detection; pointer contract forwarded.
            unsafe { tile(mr, nr, kc, a, lda, b, ldb, c, ldc, add) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_a(mr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: contract forwarded.
        unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_b(nr: usize, kc: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
        // SAFETY: contract forwarded (column-major fast path reads the same block).
        unsafe {
            if nr == NR && rs == 1 && cs != 1 {
                pack_b_colmajor(NR / 8, kc, src, cs, dst, NR);
            } else {
                pack_b_generic::<NR>(nr, kc, src, rs, cs, dst);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
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
    ) {
        macro_rules! go {
            ($v:literal; $($r:literal)*) => {
                match mr {
                    // SAFETY: contract of Arch::tile forwarded; R = mr, 8*V <= NR.
                    $($r => unsafe { kern::<$r, $v>(kc, a, lda, b, ldb, c, ldc, nr, add) },)*
                    _ => unreachable!("mr out of range"),
                }
            };
        }
        if nr > 8 {
            go!(2; 1 2 3 4 5 6)
        } else {
            go!(1; 1 2 3 4 5 6)
        }
    }

    /// R x (8*V) register-blocked microkernel.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn kern<const R: usize, const V: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        nr: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        // SAFETY: a readable at p*lda+i (i<R), b at p*ldb+j (j<8V), C tile R x nr writable.
        unsafe {
            let mut ap = a;
            let mut bp = b;
            for _ in 0..kc {
                let mut bv = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    bv[v] = _mm256_loadu_ps(bp.add(8 * v));
                }
                for i in 0..R {
                    let av = _mm256_set1_ps(*ap.add(i));
                    for v in 0..V {
                        acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
                    }
                }
                ap = ap.wrapping_add(lda);
                bp = bp.wrapping_add(ldb);
            }
            for i in 0..R {
                let cr = c.add(i * ldc);
                if nr >= 8 * V {
                    for v in 0..V {
                        let cp = cr.add(8 * v);
                        let r = if add {
                            _mm256_add_ps(_mm256_loadu_ps(cp), acc[i][v])
                        } else {
                            acc[i][v]
                        };
                        _mm256_storeu_ps(cp, r);
                    }
                } else {
                    // Edge tile: same single add per element, done through a temporary.
                    let mut tmp = [0.0f32; 16];
                    for v in 0..V {
                        _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * v), acc[i][v]);
                    }
                    for (j, t) in tmp.iter().enumerate().take(nr) {
                        let cp = cr.add(j);
                        *cp = if add { *cp + *t } else { *t };
                    }
                }
            }
        }
    }
}

mod scalar {
    use super::{pack_a_generic, pack_b_generic, Arch};

    pub(super) struct Scalar;

    const NR: usize = 16;

    impl Arch for Scalar {
        const MR: usize = 4;
        const NR: usize = NR;
        const KC: usize = 256;
        const NC: usize = 512;

        unsafe fn pack_a(
            mr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: contract forwarded.
            unsafe { pack_a_generic(mr, kc, src, rs, cs, dst) }
        }

        unsafe fn pack_b(
            nr: usize,
            kc: usize,
            src: *const f32,
            rs: usize,
            cs: usize,
            dst: *mut f32,
        ) {
            // SAFETY: contract forwarded.
            unsafe { pack_b_generic::<NR>(nr, kc, src, rs, cs, dst) }
        }

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
        ) {
            // SAFETY: contract of Arch::tile forwarded with R = mr.
            unsafe {
                match mr {
                    1 => kern::<1>(kc, a, lda, b, ldb, c, ldc, nr, add),
                    2 => kern::<2>(kc, a, lda, b, ldb, c, ldc, nr, add),
                    3 => kern::<3>(kc, a, lda, b, ldb, c, ldc, nr, add),
                    4 => kern::<4>(kc, a, lda, b, ldb, c, ldc, nr, add),
                    _ => unreachable!("mr out of range"),
                }
            }
        }
    }

    /// R x 16 microkernel in plain Rust (mul then add, left to the auto-vectoriser).
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn kern<const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        nr: usize,
        add: bool,
    ) {
        let mut acc = [[0.0f32; NR]; R];
        // SAFETY: a readable at p*lda+i (i<R), b at p*ldb+j (j<NR), C tile R x nr writable.
        unsafe {
            for p in 0..kc {
                let ap = a.wrapping_add(p * lda);
                let brow = &*(b.wrapping_add(p * ldb) as *const [f32; NR]);
                for i in 0..R {
                    let ai = *ap.add(i);
                    for j in 0..NR {
                        acc[i][j] += ai * brow[j];
                    }
                }
            }
            for i in 0..R {
                let cr = c.add(i * ldc);
                for j in 0..nr {
                    let cp = cr.add(j);
                    *cp = if add { *cp + acc[i][j] } else { acc[i][j] };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn check_path(path: Path) -> usize {
        if !path.supported() {
            eprintln!("skipping {path:?}: not supported on this CPU");
            return 0;
        }
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
    fn correctness_avx512() {
        eprintln!("avx512 cases: {}", check_path(Path::Avx512));
    }

    #[test]
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

    #[test]
    fn deterministic_across_threads() {
        let mut rng = Rng(7);
        for path in [Path::Avx512, Path::Avx2, Path::Scalar] {
            if !path.supported() {
                continue;
            }
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
}
