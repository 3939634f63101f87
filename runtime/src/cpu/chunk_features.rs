//! The feature map and its adjoint over the tokens of one backward chunk at once, feature-major:
//! row `j` holds feature `j` of every token of the chunk ([`CHUNK`] words, tokens past the
//! chunk's end zero). Every step of the prefix recurrence and of its adjoint is then one
//! elementwise multiply-add across the chunk's tokens, whole vectors with no horizontal sums;
//! one token at a time, the adjoint's per-run dot products cost a horizontal sum per run and
//! ran at a fifth of the map's speed (`benches/results/backward-2026-12-01.md`).
//!
//! The runs are `(parent, first coordinate, first destination, length, multiplicity)`: the map
//! walks a kernel's `FeatureProgram::RUNS` (by destination), in whole or in [`segments`], and
//! the adjoint its `ADJOINT_RUNS` (orders top down).

use std::ops::Range;

use super::features::FirstScales;
use super::simd::Isa;

/// Tokens per chunk of the chunked forward and backward (`benches/results/backward-2026-12-01.md`,
/// `benches/results/prefill-2026-12-06.md`).
pub const CHUNK: usize = 64;

/// One run of the feature program.
pub type Run = (u32, u32, u32, u32, u8);

/// A plan's feature runs as [`Run`]s: in map order (as generated kernels' `RUNS`) or, with
/// `adjoint`, in the adjoint's order (`ADJOINT_RUNS`).
pub(crate) fn plan_runs(plan: &sata_codegen::KernelPlan, adjoint: bool) -> Vec<Run> {
    let as_run = |r: &sata_codegen::FeatureRun| -> Run {
        let word = |x: usize| u32::try_from(x).expect("feature indices fit in u32");
        let mult = u8::try_from(r.mult).expect("multiplicities are below MAX_TERMS");
        (
            word(r.parent),
            word(r.first),
            word(r.dest),
            word(r.len),
            mult,
        )
    };
    match adjoint {
        false => plan
            .orders
            .iter()
            .flat_map(|o| &o.runs)
            .map(as_run)
            .collect(),
        true => plan.adjoint_runs().into_iter().map(as_run).collect(),
    }
}

/// One feature (or coordinate) of every token of a chunk.
pub type Lanes = [f32; CHUNK];

/// `x` (`f32` words) as rows of [`CHUNK`] words.
pub fn lanes(x: &mut [f32]) -> &mut [Lanes] {
    x.as_chunks_mut::<CHUNK>().0
}

/// The coordinates of tokens `t0..t0 + n` of `x` (`tokens x d_k`), times `scale`,
/// feature-major into `xt` (`d_k` rows), zero past the `n` tokens.
pub fn coordinates(x: &[f32], d_k: usize, (t0, n): (usize, usize), scale: f32, xt: &mut [Lanes]) {
    for (i, row) in xt.iter_mut().enumerate() {
        for (t, w) in row.iter_mut().enumerate() {
            *w = if t < n {
                x[(t0 + t) * d_k + i] * scale
            } else {
                0.0
            };
        }
    }
}

/// Checks once per call what the bodies index by: every run's parent before its children,
/// its coordinates inside `d_k` and its features inside `m`. A failure is a bug in the
/// generator or this crate.
fn check(runs: &[Run], d_k: usize, m: usize) {
    for &(parent, first, dest, len, _) in runs {
        let (parent, first, dest, len) =
            (parent as usize, first as usize, dest as usize, len as usize);
        assert!(
            parent < dest && first + len <= d_k && dest + len <= m,
            "a run outside the feature program"
        );
    }
}

/// One segment of a feature program's runs in map order: the runs, the features they write,
/// and whether those are leaves (features no run reads: the top order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub runs: Range<usize>,
    pub features: Range<usize>,
    pub leaves: bool,
}

/// The first feature of the leaves: every feature from it on is no run's parent (the top
/// order), and every feature before it is one (1 when there are no runs).
pub fn first_leaf(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.0 as usize + 1).max().unwrap_or(1)
}

/// The runs of a feature program in map order, cut into consecutive segments of about
/// `rows` features each (whole runs, at most `rows + d_k - 1` features), with a cut at
/// [`first_leaf`]: the first segment's features start at 0 (the constant feature, which no
/// run writes).
pub fn segments(runs: &[Run], rows: usize) -> Vec<Segment> {
    let leaf = first_leaf(runs);
    let mut out = Vec::new();
    let (mut first_run, mut first_feature) = (0, 0);
    for (i, &(_, _, dest, len, _)) in runs.iter().enumerate() {
        let (dest, end) = (dest as usize, (dest + len) as usize);
        if dest == leaf && first_feature < leaf {
            out.push(Segment {
                runs: first_run..i,
                features: first_feature..dest,
                leaves: false,
            });
            (first_run, first_feature) = (i, dest);
        }
        if end - first_feature >= rows || i + 1 == runs.len() {
            out.push(Segment {
                runs: first_run..i + 1,
                features: first_feature..end,
                leaves: first_feature >= leaf,
            });
            (first_run, first_feature) = (i + 1, end);
        }
    }
    if runs.is_empty() {
        out.push(Segment {
            runs: 0..0,
            features: 0..1,
            leaves: false,
        });
    }
    out
}

/// Row 0 of a chunk's features, the constant feature: one for the chunk's `valid` tokens,
/// zero past them.
pub fn constant(valid: usize, f: &mut [Lanes]) {
    f[0] = [0.0; CHUNK];
    f[0][..valid].fill(1.0);
}

/// `f = Phi(x)` for every token of a chunk, or the features of one segment of `runs`: `x`
/// is `d_k` rows (zero past the chunk's valid tokens, which then get zero features), `f` is
/// `m` rows with every parent the runs read already written, each run's first child scaled by
/// `first[mult]`.
#[inline(always)]
fn map_body(runs: &[Run], x: &[Lanes], first: &FirstScales, f: &mut [Lanes]) {
    for &(parent, c0, dest, len, mult) in runs {
        let (lo, hi) = f.split_at_mut(dest as usize);
        let p = &lo[parent as usize];
        for (i, out) in hi[..len as usize].iter_mut().enumerate() {
            let s = if i == 0 { first[mult as usize] } else { 1.0 };
            let xi = &x[c0 as usize + i];
            for t in 0..CHUNK {
                out[t] = p[t] * xi[t] * s;
            }
        }
    }
}

/// The leaves `runs` write, into `out` from feature `offset` on (`out[j - offset]` holds
/// feature `j`), their parents read from `parents`: like [`map_body`] with the children
/// kept apart from the parents, so a segment of leaves needs only a segment's rows.
#[inline(always)]
fn leaves_body(
    runs: &[Run],
    (x, first): (&[Lanes], &FirstScales),
    parents: &[Lanes],
    out: &mut [Lanes],
    offset: usize,
) {
    for &(parent, c0, dest, len, mult) in runs {
        // The parent's row by value, so it stays in registers across the run; products in
        // `map_body`'s order, so both give the same bits.
        let p: Lanes = parents[parent as usize];
        let scale = first[mult as usize];
        let rows = &mut out[dest as usize - offset..][..len as usize];
        let xs = &x[c0 as usize..][..len as usize];
        if let Some((row, x0)) = rows.first_mut().zip(xs.first()) {
            for t in 0..CHUNK {
                row[t] = p[t] * x0[t] * scale;
            }
        }
        for (row, xi) in rows.iter_mut().zip(xs).skip(1) {
            for t in 0..CHUNK {
                row[t] = p[t] * xi[t];
            }
        }
    }
}

/// `dx = J_Phi(x)^T u` for every token of a chunk, `f = Phi(x)` from [`map_body`] with the
/// same `x` and `first`; `u` (`m` rows) is consumed: parents accumulate their children's.
#[inline(always)]
fn adjoint_body(
    runs: &[Run],
    (x, first): (&[Lanes], &FirstScales),
    f: &[Lanes],
    u: &mut [Lanes],
    dx: &mut [Lanes],
) {
    dx.fill([0.0; CHUNK]);
    for &(parent, c0, dest, len, mult) in runs {
        let (lo, hi) = u.split_at_mut(dest as usize);
        let up = &mut lo[parent as usize];
        let fp = &f[parent as usize];
        for (i, g) in hi[..len as usize].iter().enumerate() {
            let s = if i == 0 { first[mult as usize] } else { 1.0 };
            let c = c0 as usize + i;
            let xi = &x[c];
            let d = &mut dx[c];
            for t in 0..CHUNK {
                let gi = g[t] * s;
                up[t] += gi * xi[t];
                d[t] += gi * fp[t];
            }
        }
    }
}

/// The portable and AVX2 compilations of the bodies, out of line so each is compiled twice
/// and no more. The AVX2 ones are the same loops with 8-wide vectors and FMA.
mod compiled {
    use super::*;

    compiled_twice! {
        fn map_portable, map_avx2(runs: &[Run], x: &[Lanes], first: &FirstScales, f: &mut [Lanes])
            => map_body;
        fn adjoint_portable, adjoint_avx2(
            runs: &[Run],
            xf: (&[Lanes], &FirstScales),
            f: &[Lanes],
            u: &mut [Lanes],
            dx: &mut [Lanes],
        ) => adjoint_body;
        fn leaves_portable, leaves_avx2(
            runs: &[Run],
            xf: (&[Lanes], &FirstScales),
            parents: &[Lanes],
            out: &mut [Lanes],
            offset: usize,
        ) => leaves_body;
    }
}

/// `f = Phi(x)` for every token of a chunk on `isa` (`runs` in map order, all of them):
/// [`constant`], then [`map_segment`] over every run.
pub fn map(
    isa: Isa,
    runs: &[Run],
    x: &[Lanes],
    first: &FirstScales,
    valid: usize,
    f: &mut [Lanes],
) {
    constant(valid, f);
    map_segment(isa, runs, x, first, f);
}

/// The features `runs` (consecutive runs in map order) write, on `isa`, their parents already
/// in `f`; after checking the runs against `x` and `f`.
pub fn map_segment(isa: Isa, runs: &[Run], x: &[Lanes], first: &FirstScales, f: &mut [Lanes]) {
    check(runs, x.len(), f.len());
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected (`Isa::runs_avx2`); the bodies index only what `check`
        // kept in range (and slices check the rest).
        unsafe { compiled::map_avx2(runs, x, first, f) };
        return;
    }
    let _ = isa;
    compiled::map_portable(runs, x, first, f);
}

/// [`leaves_body`] on `isa`: the leaves of `runs` (a segment whose features start at
/// `offset`) into `out`, their parents from `parents`.
pub fn map_leaves(
    isa: Isa,
    runs: &[Run],
    (x, first): (&[Lanes], &FirstScales),
    parents: &[Lanes],
    out: &mut [Lanes],
    offset: usize,
) {
    for &(parent, c0, dest, len, _) in runs {
        let (parent, c0, dest, len) = (parent as usize, c0 as usize, dest as usize, len as usize);
        assert!(
            parent < parents.len()
                && c0 + len <= x.len()
                && dest >= offset
                && dest + len - offset <= out.len(),
            "a leaf run outside its segment"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected (`Isa::runs_avx2`); the body indexes slices only, in the
        // ranges checked just above.
        unsafe { compiled::leaves_avx2(runs, (x, first), parents, out, offset) };
        return;
    }
    let _ = isa;
    compiled::leaves_portable(runs, (x, first), parents, out, offset);
}

/// [`adjoint_body`] on `isa`, after checking the runs against `x` and `f`.
pub fn adjoint(
    isa: Isa,
    runs: &[Run],
    (x, first): (&[Lanes], &FirstScales),
    f: &[Lanes],
    u: &mut [Lanes],
    dx: &mut [Lanes],
) {
    check(runs, x.len(), f.len().min(u.len()));
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: as for `map`.
        unsafe { compiled::adjoint_avx2(runs, (x, first), f, u, dx) };
        return;
    }
    let _ = isa;
    compiled::adjoint_portable(runs, (x, first), f, u, dx);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::features::{KEY_FIRST, QUERY_FIRST};
    use sata_codegen::{Basis, KernelConfig, KernelPlan};

    /// The map gives the basis' monomials (weighted by the query scales: `alpha_p C_p`), and
    /// the adjoint matches central differences of `sum_j u_j f_j`, in f64 loops here.
    #[test]
    fn map_and_adjoint_against_monomials_and_differences() {
        let config = KernelConfig::new(3, 2, 4).unwrap();
        let plan = KernelPlan::new(&config);
        let basis = Basis::new(&config);
        let (map_runs, runs) = (plan_runs(&plan, false), plan_runs(&plan, true));
        let (m, dk, valid) = (plan.features, 3, 5);
        let coord = |i: usize, t: usize| {
            if t < valid {
                0.3 + 0.1 * i as f32 - 0.07 * t as f32
            } else {
                0.0
            }
        };
        let x: Vec<Lanes> = (0..dk)
            .map(|i| std::array::from_fn(|t| coord(i, t)))
            .collect();
        let u0: Vec<Lanes> = (0..m)
            .map(|j| std::array::from_fn(|t| ((j * 7 + t) % 5) as f32 - 2.0))
            .collect();
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            for (first, weighted) in [(&KEY_FIRST, false), (&QUERY_FIRST, true)] {
                let mut f = vec![[0.0; CHUNK]; m];
                map(isa, &map_runs, &x, first, valid, &mut f);
                // In segments, the same features.
                for rows in [1, 4, 7, m] {
                    let mut g = vec![[f32::NAN; CHUNK]; m];
                    constant(valid, &mut g);
                    let cut = segments(&map_runs, rows);
                    assert_eq!(cut.first().unwrap().features.start, 0);
                    assert_eq!(cut.last().unwrap().features.end, m);
                    let leaf = first_leaf(&map_runs);
                    for w in cut.windows(2) {
                        assert_eq!(w[0].features.end, w[1].features.start);
                        assert_eq!(w[0].runs.end, w[1].runs.start);
                    }
                    for Segment {
                        runs: r,
                        features,
                        leaves,
                    } in cut
                    {
                        assert_eq!(leaves, features.start >= leaf);
                        assert!(features.end <= leaf || features.start >= leaf);
                        let runs = &map_runs[r];
                        let rows_of = |g: &[Lanes]| -> Vec<[u32; CHUNK]> {
                            g.iter().map(|r| r.map(f32::to_bits)).collect()
                        };
                        let want = rows_of(&f[features.clone()]);
                        if leaves {
                            let mut out = vec![[f32::NAN; CHUNK]; features.len()];
                            map_leaves(
                                isa,
                                runs,
                                (&x, first),
                                &g[..leaf],
                                &mut out,
                                features.start,
                            );
                            assert_eq!(rows_of(&out), want);
                        } else {
                            map_segment(isa, runs, &x, first, &mut g);
                            assert_eq!(rows_of(&g[features]), want);
                        }
                    }
                }
                for (j, row) in f.iter().enumerate().take(m) {
                    for (t, &got) in row.iter().enumerate() {
                        let xs: Vec<f64> = (0..dk).map(|i| f64::from(coord(i, t))).collect();
                        let mono: f64 = basis.monomial(j).iter().map(|&i| xs[i]).product();
                        let w = if weighted {
                            basis.weights()[j] * plan.scale.powi(basis.monomial(j).len() as i32)
                        } else {
                            1.0
                        };
                        let want = if t < valid { mono * w } else { 0.0 };
                        assert!((f64::from(got) - want).abs() < 1e-6, "{isa} t{t} j{j}");
                    }
                }
                let mut u = u0.clone();
                let mut dx = vec![[0.0; CHUNK]; dk];
                adjoint(isa, &runs, (&x, first), &f, &mut u, &mut dx);
                for t in 0..valid {
                    for (i, dxi) in dx.iter().enumerate() {
                        let loss = |h: f64| {
                            let xs: Vec<f64> = (0..dk)
                                .map(|c| f64::from(coord(c, t)) + if c == i { h } else { 0.0 })
                                .collect();
                            (0..m)
                                .map(|j| {
                                    let mono: f64 =
                                        basis.monomial(j).iter().map(|&c| xs[c]).product();
                                    let w = if weighted {
                                        basis.weights()[j]
                                            * plan.scale.powi(basis.monomial(j).len() as i32)
                                    } else {
                                        1.0
                                    };
                                    f64::from(u0[j][t]) * mono * w
                                })
                                .sum::<f64>()
                        };
                        let want = (loss(1e-5) - loss(-1e-5)) / 2e-5;
                        let got = f64::from(dxi[t]);
                        assert!(
                            (got - want).abs() < 1e-4 * want.abs().max(1.0),
                            "{isa} t{t} i{i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
