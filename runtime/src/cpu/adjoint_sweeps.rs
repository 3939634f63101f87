//! The state sweeps and the feature adjoint of specialized kernels' backward, in AVX2 + FMA
//! intrinsics (`compiled`) or portable Rust ([`sweep_body`], [`adjoint_runs_portable`]),
//! chosen at run time like the forward's (`super::simd`); the safe wrappers ([`pass_a`],
//! [`pass_b`], [`feature_adjoint`]) check what the intrinsics rely on. Rows have a
//! compile-time length, `ROW = d_v + 1`.
//!
//! The passes keep their two states blocked: per block of 8 features, the `ROW` vectors of
//! its columns (`S`'s `d_v`, then `Z`) one after the other (`m` rounded up to whole blocks,
//! `m8`). A vector then holds one column of 8 features, so the per-feature products
//! `S[j] · d` of pass A and `H[j] · [v, 1]` of pass B are vector multiply-adds over the
//! columns with no horizontal sums (the forward's row-major lane, summed per row, spent most
//! of its time in them and in store-forwarding stalls), and a pass walks its state as one
//! sequential stream. States come in and go out in the
//! forward's planar layout ([`to_blocked`], [`from_blocked`]). `d` is one query's augmented
//! cotangent `dO' = [dy / D, -(y · dy) / D]` (`ROW` words).

use super::features::{FeatureProgram, FirstScales, LANES, lane_sum};
use super::simd::Isa;

/// `a b + c` as a multiply and an add (`mul_add` is a library call without FMA).
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// Features per f32 partial sum of pass B's read before it is added into f64: the read sums
/// `m` products of both signs, like the forward's (`super::simd::BLOCK`), over longer blocks
/// since each flush costs a horizontal sum per column.
const FLUSH: usize = 128;

/// Vector `c` of a blocked state or a feature buffer.
#[inline(always)]
fn vector(x: &[f32], c: usize) -> [f32; LANES] {
    x[c * LANES..(c + 1) * LANES]
        .try_into()
        .expect("a whole vector")
}

#[inline(always)]
fn vector_mut(x: &mut [f32], c: usize) -> &mut [f32; LANES] {
    (&mut x[c * LANES..(c + 1) * LANES])
        .try_into()
        .expect("a whole vector")
}

/// `[v, 1]`, or ones where `v` is not read.
#[inline(always)]
fn augmented<const ROW: usize>(v: &[f32]) -> [f32; ROW] {
    let mut vp = [1.0f32; ROW];
    for (p, &x) in vp.iter_mut().zip(v) {
        *p = x;
    }
    vp
}

/// What one sweep over a blocked lane (word `(j, c)` at [`blocked`]: column `c < d_v` of the
/// state's `S`, then `Z`; `m8` features, a whole number of vectors, the padding features zero)
/// does to each feature `j`, each part present when its flag is set:
/// - `UPDATE`: `x[j][c] += a[j] coef[c]`;
/// - `READ`: `r[j] = x[j] · weights`;
/// - `COLUMNS`: `acc[c] += sum_j b[j] x[j][c]` (f32 partial sums of [`FLUSH`] features, each
///   added in f64).
///
/// Pass A is an update by `(phi_k, [v, 1])` and a read by `dO'`; pass B an update by
/// `(W ∘ Phi(q), dO')`, a read by `[v, 1]` and the column sums by `Phi(k)`.
struct Sweep<'a, const ROW: usize> {
    a: &'a [f32],
    coef: [f32; ROW],
    weights: [f32; ROW],
    r: &'a mut [f32],
    b: &'a [f32],
    acc: &'a mut [f64; ROW],
}

/// The portable sweep.
#[inline(always)]
fn sweep_body<const ROW: usize, const UPDATE: bool, const READ: bool, const COLUMNS: bool>(
    cols: &mut [f32],
    s: Sweep<'_, ROW>,
) {
    let m8 = cols.len() / ROW;
    let mut part = [[0.0f32; LANES]; ROW];
    for jb in 0..m8 / LANES {
        let a = if UPDATE {
            vector(s.a, jb)
        } else {
            [0.0; LANES]
        };
        let b = if COLUMNS {
            vector(s.b, jb)
        } else {
            [0.0; LANES]
        };
        let mut o = [0.0f32; LANES];
        for (c, part) in part.iter_mut().enumerate() {
            let x = vector_mut(cols, jb * ROW + c);
            for i in 0..LANES {
                if UPDATE {
                    x[i] = madd(a[i], s.coef[c], x[i]);
                }
                if READ {
                    o[i] = madd(x[i], s.weights[c], o[i]);
                }
                if COLUMNS {
                    part[i] = madd(b[i], x[i], part[i]);
                }
            }
        }
        if READ {
            *vector_mut(s.r, jb) = o;
        }
        if COLUMNS && ((jb + 1) * LANES).is_multiple_of(FLUSH) {
            for (a, p) in s.acc.iter_mut().zip(part.iter_mut()) {
                *a += f64::from(lane_sum(*p));
                *p = [0.0; LANES];
            }
        }
    }
    if COLUMNS {
        for (a, p) in s.acc.iter_mut().zip(part) {
            *a += f64::from(lane_sum(p));
        }
    }
}

/// Word `(j, c)` of a blocked lane (feature `j`, column `c`, `Z` being column `d_v`).
#[inline(always)]
fn blocked<const ROW: usize>(j: usize, c: usize) -> usize {
    ((j / LANES) * ROW + c) * LANES + j % LANES
}

/// Features of a blocked lane: `m` rounded up to whole vectors.
pub const fn padded_features(m: usize) -> usize {
    m.next_multiple_of(LANES)
}

/// A planar lane (`S`, `m x d_v`, then `Z`) into blocked `cols` (`ROW x m8` words), the
/// padding features zero.
pub fn to_blocked<const ROW: usize>(planar: &[f32], cols: &mut [f32]) {
    let dv = ROW - 1;
    let m = planar.len() / ROW;
    let (s, z) = planar.split_at(m * dv);
    cols.fill(0.0);
    for (j, row) in s.chunks_exact(dv).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            cols[blocked::<ROW>(j, c)] = x;
        }
    }
    for (j, &z) in z.iter().enumerate() {
        cols[blocked::<ROW>(j, dv)] = z;
    }
}

/// The inverse of [`to_blocked`].
pub fn from_blocked<const ROW: usize>(cols: &[f32], planar: &mut [f32]) {
    let dv = ROW - 1;
    let m = planar.len() / ROW;
    let (s, z) = planar.split_at_mut(m * dv);
    for (j, row) in s.chunks_exact_mut(dv).enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = cols[blocked::<ROW>(j, c)];
        }
    }
    for (j, z) in z.iter_mut().enumerate() {
        *z = cols[blocked::<ROW>(j, dv)];
    }
}

/// One run of a feature program: `(parent, first coordinate, first destination, length,
/// multiplicity)` (`FeatureProgram::RUNS`).
type Run = (u32, u32, u32, u32, u8);

/// The adjoint of the runs, portably: for each run in the adjoint's order, with `g_i = u[dest + i]` (the
/// first times `first[mult]`), `u[parent] += sum_i g_i x[first + i]` and
/// `dx[first + i] += g_i f[parent]`.
fn adjoint_runs_portable(
    runs: &[Run],
    x: &[f32],
    first: &FirstScales,
    f: &[f32],
    u: &mut [f32],
    dx: &mut [f32],
) {
    for &(parent, c0, dest, len, mult) in runs {
        let (parent, c0, dest, len) = (parent as usize, c0 as usize, dest as usize, len as usize);
        let base = f[parent];
        let mut part = [0.0f32; LANES];
        for i in 0..len {
            let g = if i == 0 {
                u[dest] * first[mult as usize]
            } else {
                u[dest + i]
            };
            part[i % LANES] += g * x[c0 + i];
            dx[c0 + i] += g * base;
        }
        u[parent] += lane_sum(part);
    }
}

/// The portable and the AVX2 compilations of the bodies above, kept out of line so that each
/// kernel compiles each body twice and no more (as `super::simd::feature_map` does).
mod compiled {
    use super::*;

    #[inline(never)]
    pub(super) fn sweep_portable<
        const ROW: usize,
        const UPDATE: bool,
        const READ: bool,
        const COLUMNS: bool,
    >(
        cols: &mut [f32],
        s: Sweep<'_, ROW>,
    ) {
        sweep_body::<ROW, UPDATE, READ, COLUMNS>(cols, s);
    }

    /// The sum of a vector's words: two halves, then pairs.
    ///
    /// # Safety
    /// The CPU must support avx2.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(x: std::arch::x86_64::__m256) -> f32 {
        use std::arch::x86_64::*;
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// The sweep in AVX2 intrinsics, two feature vectors at a time: the features' vectors
    /// and the read stay in registers while the columns go by, the read in two sums per vector
    /// by column parity (one sum was a chain of `ROW` dependent FMAs), each column's sum in a
    /// vector on the stack. Auto-vectorised, the same loops spilled pointers and shuffled
    /// (`docs/backends/cpu.md`).
    ///
    /// # Safety
    /// The CPU must support avx2 and fma; `cols.len() == ROW * m8`, `m8` a multiple of 8, and
    /// `s.a` (with `UPDATE`), `s.r` (with `READ`) and `s.b` (with `COLUMNS`) `m8` words
    /// (checked by `sweep`).
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sweep_avx2<
        const ROW: usize,
        const UPDATE: bool,
        const READ: bool,
        const COLUMNS: bool,
    >(
        cols: &mut [f32],
        s: Sweep<'_, ROW>,
    ) {
        use std::arch::x86_64::*;
        let vectors = cols.len() / ROW / LANES;
        // SAFETY: vector `jb` of column `c` is words `(jb ROW + c) 8..+8` of `cols`, inside it
        // for `c < ROW`, `jb < m8 / 8`; `s.a`, `s.b` and `s.r` are accessed at `8 jb..+8`,
        // inside their `m8` words; `coef`, `weights`, `part` and `acc` are indexed below `ROW`.
        unsafe {
            let base = cols.as_mut_ptr();
            let zero = _mm256_setzero_ps();
            let mut part = [zero; ROW];
            let mut since_flush = 0usize;
            // `$n` feature vectors from `$jb`.
            macro_rules! step {
                ($jb:expr, $n:literal) => {{
                    let (mut a, mut b) = ([zero; $n], [zero; $n]);
                    for i in 0..$n {
                        let o = ($jb + i) * LANES;
                        if UPDATE {
                            a[i] = _mm256_loadu_ps(s.a.as_ptr().add(o));
                        }
                        if COLUMNS {
                            b[i] = _mm256_loadu_ps(s.b.as_ptr().add(o));
                        }
                    }
                    let mut read = [[zero; 2]; $n];
                    let mut p = base.add($jb * ROW * LANES);
                    for c in 0..ROW {
                        let (uc, wc) = (_mm256_set1_ps(s.coef[c]), _mm256_set1_ps(s.weights[c]));
                        let mut pc = part[c];
                        for i in 0..$n {
                            let q = p.add(i * ROW * LANES);
                            let mut x = _mm256_loadu_ps(q);
                            if UPDATE {
                                x = _mm256_fmadd_ps(a[i], uc, x);
                                _mm256_storeu_ps(q, x);
                            }
                            if READ {
                                read[i][c % 2] = _mm256_fmadd_ps(x, wc, read[i][c % 2]);
                            }
                            if COLUMNS {
                                pc = _mm256_fmadd_ps(b[i], x, pc);
                            }
                        }
                        part[c] = pc;
                        p = p.add(LANES);
                    }
                    if READ {
                        for (i, [even, odd]) in read.into_iter().enumerate() {
                            let o = s.r.as_mut_ptr().add(($jb + i) * LANES);
                            _mm256_storeu_ps(o, _mm256_add_ps(even, odd));
                        }
                    }
                    if COLUMNS {
                        since_flush += $n * LANES;
                        if since_flush >= FLUSH {
                            for (a, p) in s.acc.iter_mut().zip(part.iter_mut()) {
                                *a += f64::from(hsum(*p));
                                *p = zero;
                            }
                            #[allow(unused_assignments)]
                            {
                                since_flush = 0;
                            }
                        }
                    }
                }};
            }
            let mut jb = 0;
            while jb + 2 <= vectors {
                step!(jb, 2);
                jb += 2;
            }
            if jb < vectors {
                step!(jb, 1);
            }
            if COLUMNS {
                for (a, p) in s.acc.iter_mut().zip(part) {
                    *a += f64::from(hsum(p));
                }
            }
        }
    }

    /// The adjoint of the runs in AVX2, a run in whole vectors: every run ends at the last
    /// coordinate (`first + len = d_k`, checked by `AdjointRuns::of`), so the words past its
    /// end meet the zero padding of `x` (adding nothing to the parent) and write only the
    /// padding of `dx`; the `u` words read there are other features' gradients or the
    /// driver's zeroed slack, finite either way.
    ///
    /// # Safety
    /// The CPU must support avx2 and fma; for every run, `parent < f.len()`,
    /// `first + len` rounded up to whole vectors `<= x.len()` and `<= dx.len()`, and `dest +
    /// len` rounded up `<= u.len()` (checked by `AdjointRuns::of`).
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn adjoint_runs_avx2(
        runs: &[Run],
        x: &[f32],
        first: &FirstScales,
        f: &[f32],
        u: &mut [f32],
        dx: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: every access is inside the bounds the caller checked (see above); `acc` is
        // indexed below `vectors <= MAX_GROUP_VECTORS` (the caller checked `d_k`).
        unsafe {
            let (ones, zero) = (_mm256_set1_ps(1.0), _mm256_setzero_ps());
            // The runs of a group share their first coordinate: their products into `dx`
            // are summed here and added once per group (adding each into `dx` stalled on
            // store forwarding between the overlapping vectors of consecutive runs).
            let mut acc = [zero; MAX_GROUP_VECTORS];
            let (mut group, mut vectors) = (usize::MAX, 0);
            let flush = |acc: &mut [__m256], group: usize, dx: &mut [f32]| {
                for (c, a) in acc.iter_mut().enumerate() {
                    let d = dx.as_mut_ptr().add(group + c * LANES);
                    _mm256_storeu_ps(d, _mm256_add_ps(*a, _mm256_loadu_ps(d)));
                    *a = _mm256_setzero_ps();
                }
            };
            for &(parent, c0, dest, len, mult) in runs {
                let (parent, c0, dest) = (parent as usize, c0 as usize, dest as usize);
                if c0 != group {
                    if vectors > 0 {
                        flush(&mut acc[..vectors], group, dx);
                    }
                    (group, vectors) = (c0, (len as usize).div_ceil(LANES));
                }
                let base = _mm256_set1_ps(*f.get_unchecked(parent));
                // The first child's scale in word 0, ones elsewhere.
                let mut scale = _mm256_blend_ps::<1>(ones, _mm256_set1_ps(first[mult as usize]));
                let mut part = zero;
                for (c, a) in acc[..vectors].iter_mut().enumerate() {
                    let (xo, uo) = (c0 + c * LANES, dest + c * LANES);
                    let g = _mm256_mul_ps(_mm256_loadu_ps(u.as_ptr().add(uo)), scale);
                    part = _mm256_fmadd_ps(g, _mm256_loadu_ps(x.as_ptr().add(xo)), part);
                    *a = _mm256_fmadd_ps(g, base, *a);
                    scale = ones;
                }
                *u.get_unchecked_mut(parent) += hsum(part);
            }
            if vectors > 0 {
                flush(&mut acc[..vectors], group, dx);
            }
        }
    }
}

/// Vectors of `dx` the AVX2 adjoint sums a group of runs in: `d_k` up to 128 (larger `d_k`
/// runs the portable adjoint).
const MAX_GROUP_VECTORS: usize = 16;

/// Whether `isa` is AVX2 and this CPU runs it.
fn avx2(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa == Isa::Avx2 && isa.is_supported()
}

/// Runs `s` over `cols` on `isa`, after checking the lengths the vector form relies on: the
/// lane `ROW x m8` with `m8` a whole number of vectors, every feature buffer it reads `m8`
/// words.
fn sweep<const ROW: usize, const UPDATE: bool, const READ: bool, const COLUMNS: bool>(
    isa: Isa,
    cols: &mut [f32],
    s: Sweep<'_, ROW>,
) {
    // The callers are the kernel drivers, which size everything from the kernel's constants;
    // a mismatch is a bug in this crate.
    let m8 = cols.len() / ROW;
    assert!(
        cols.len() == m8 * ROW && m8.is_multiple_of(LANES),
        "a lane of whole vectors"
    );
    assert!(!UPDATE || s.a.len() == m8, "update features of m8 words");
    assert!(!READ || s.r.len() == m8, "a read of m8 words");
    assert!(!COLUMNS || s.b.len() == m8, "column features of m8 words");
    #[cfg(target_arch = "x86_64")]
    if avx2(isa) {
        // SAFETY: avx2 and fma were detected by `avx2`; the lengths were checked above.
        unsafe { compiled::sweep_avx2::<ROW, UPDATE, READ, COLUMNS>(cols, s) };
        return;
    }
    let _ = isa;
    compiled::sweep_portable::<ROW, UPDATE, READ, COLUMNS>(cols, s);
}

/// Pass A of one token over a blocked lane: with `UPDATE` (causal, or absorbing a key),
/// `S[j] += phi_k[j] [v, 1]`; with `READ`, `r[j] = [S[j], Z[j]] · d`. `phi_k` and `v` are read
/// only with `UPDATE`, `d` and `r` only with `READ`.
pub fn pass_a<const ROW: usize, const UPDATE: bool, const READ: bool>(
    isa: Isa,
    cols: &mut [f32],
    (phi_k, v): (&[f32], &[f32]),
    d: &[f32; ROW],
    r: &mut [f32],
) {
    let s = Sweep {
        a: phi_k,
        coef: augmented::<ROW>(if UPDATE { v } else { &[] }),
        weights: *d,
        r,
        b: &[],
        acc: &mut [0.0; ROW],
    };
    sweep::<ROW, UPDATE, READ, false>(isa, cols, s);
}

/// Pass B of one token over a blocked lane: with `UPDATE`, `H[j] += fq[j] d` (the weighted
/// query's features); with `READ`, `acc[..d_v] += sum_j phi_k[j] H_S[j]` and
/// `r[j] = [H_S[j], H_Z[j]] · [v, 1]`. `fq` and `d` are read only with `UPDATE`, `phi_k`, `v`,
/// `acc` and `r` only with `READ`.
pub fn pass_b<const ROW: usize, const UPDATE: bool, const READ: bool>(
    isa: Isa,
    cols: &mut [f32],
    (fq, d): (&[f32], &[f32; ROW]),
    (phi_k, v): (&[f32], &[f32]),
    acc: &mut [f64; ROW],
    r: &mut [f32],
) {
    let s = Sweep {
        a: fq,
        coef: *d,
        weights: augmented::<ROW>(if READ { v } else { &[] }),
        r,
        b: phi_k,
        acc,
    };
    sweep::<ROW, UPDATE, READ, READ>(isa, cols, s);
}

/// The adjoint runs of a kernel's feature program, checked once against the buffer sizes the
/// vector form relies on and against the shape of the prefix recurrence (every run ends at the
/// last coordinate).
pub struct AdjointRuns<const DK: usize, const XP: usize, const MP: usize>(&'static [Run]);

impl<const DK: usize, const XP: usize, const MP: usize> AdjointRuns<DK, XP, MP> {
    pub fn of<F: FeatureProgram<XP, MP>>() -> Self {
        for &(parent, c0, dest, len, _) in F::ADJOINT_RUNS {
            let (c0, len) = (c0 as usize, len as usize);
            let vlen = len.next_multiple_of(LANES);
            assert!(
                (parent as usize) < MP && c0 + len == DK && c0 + vlen <= XP,
                "a run of the feature program out of shape"
            );
            assert!(dest as usize + vlen <= MP, "a run past the feature buffer");
        }
        Self(F::ADJOINT_RUNS)
    }
}

/// `dx += scale J^T u`, the adjoint of `super::simd::feature_map` with the same `x`, `scale`
/// and `first` (`f` its result, `u` the gradient of each of its `m` features, consumed:
/// parents accumulate their children's), by walking the map's runs in the adjoint's order.
/// `u` holds `MP = m + PAD` words, finite past `m`.
pub fn feature_adjoint<const DK: usize, const XP: usize, const MP: usize>(
    isa: Isa,
    runs: &AdjointRuns<DK, XP, MP>,
    (x, scale, first): (&[f32; DK], f32, &FirstScales),
    (f, u): (&[f32; MP], &mut [f32; MP]),
    dx: &mut [f32],
) {
    let mut xp = [0.0f32; XP];
    for (p, x) in xp.iter_mut().zip(x) {
        *p = x * scale;
    }
    let mut dxp = [0.0f32; XP];
    #[cfg(target_arch = "x86_64")]
    if avx2(isa) && DK <= MAX_GROUP_VECTORS * LANES {
        // SAFETY: avx2 and fma were detected by `avx2`, `d_k` fits the group sums, and the
        // runs were checked against these buffer sizes by `AdjointRuns::of`.
        unsafe { compiled::adjoint_runs_avx2(runs.0, &xp, first, f, u, &mut dxp) };
    } else {
        adjoint_runs_portable(runs.0, &xp, first, f, u, &mut dxp);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        adjoint_runs_portable(runs.0, &xp, first, f, u, &mut dxp);
    }
    for (d, g) in dx.iter_mut().zip(dxp) {
        *d += g * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both passes on every supported ISA against f64 loops written from the definitions, for
    /// rows with and without vector tails and `m` over several flushes and not a multiple of
    /// a vector; and the layout round trip.
    fn agree<const ROW: usize>() {
        let dv = ROW - 1;
        let m = FLUSH + 3 * LANES + 5;
        let m8 = padded_features(m);
        let fill = |n: usize, a: usize, b: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * a + b) % 29) as f32 / 14.0 - 1.0)
                .collect()
        };
        let padded = |mut x: Vec<f32>| {
            x.resize(m8, 0.0);
            x
        };
        let (s0, v) = (fill(m * ROW, 7, 3), fill(dv, 3, 7));
        let (phi, fq) = (padded(fill(m, 5, 1)), padded(fill(m, 11, 2)));
        let d: [f32; ROW] = fill(ROW, 13, 5).try_into().unwrap();
        let w = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let (s0d, phid, fqd, vd, dd) = (w(&s0), w(&phi), w(&fq), w(&v), w(&d));
        // Word (j, c) of a planar lane: S[j][c] for c < dv, Z[j] for c == dv.
        let at = |j: usize, c: usize| if c < dv { j * dv + c } else { m * dv + j };
        let close = |what: &str, isa: Isa, got: f64, want: f64| {
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{isa} ROW={ROW} {what}: {got} vs {want}"
            );
        };
        let mut cols = vec![0.0; ROW * m8];
        let mut back = vec![0.0; m * ROW];
        to_blocked::<ROW>(&s0, &mut cols);
        from_blocked::<ROW>(&cols, &mut back);
        assert_eq!(back, s0);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            // Pass A, causal.
            to_blocked::<ROW>(&s0, &mut cols);
            let mut r = vec![0.0; m8];
            pass_a::<ROW, true, true>(isa, &mut cols, (&phi, &v), &d, &mut r);
            from_blocked::<ROW>(&cols, &mut back);
            for j in 0..m {
                let mut want = 0.0;
                for c in 0..ROW {
                    let vc = if c < dv { vd[c] } else { 1.0 };
                    let s = s0d[at(j, c)] + phid[j] * vc;
                    close("pass A state", isa, f64::from(back[at(j, c)]), s);
                    want += s * dd[c];
                }
                close("pass A r", isa, f64::from(r[j]), want);
            }
            // Pass B, causal.
            to_blocked::<ROW>(&s0, &mut cols);
            let (mut r, mut acc) = (vec![0.0; m8], [0.5f64; ROW]);
            pass_b::<ROW, true, true>(isa, &mut cols, (&fq, &d), (&phi, &v), &mut acc, &mut r);
            from_blocked::<ROW>(&cols, &mut back);
            let mut want_acc = vec![0.5; dv];
            for j in 0..m {
                let mut want = 0.0;
                for c in 0..ROW {
                    let x = s0d[at(j, c)] + fqd[j] * dd[c];
                    close("pass B state", isa, f64::from(back[at(j, c)]), x);
                    if c < dv {
                        want += x * vd[c];
                        want_acc[c] += phid[j] * x;
                    } else {
                        want += x;
                    }
                }
                close("pass B r", isa, f64::from(r[j]), want);
            }
            for c in 0..dv {
                close("pass B acc", isa, acc[c], want_acc[c]);
            }
        }
    }

    #[test]
    fn backward_sweeps_match_f64() {
        agree::<2>();
        agree::<5>();
        agree::<9>();
        agree::<17>();
        agree::<20>();
    }
}
