//! The drivers generated kernels call: the token loop and the state sweep of each entry,
//! monomorphised for a kernel's constants. Generated code reaches them as
//! `sata::kernel::driver` (from user crates) or `crate::kernel::driver` (the runtime's own
//! registry); they are not an API of their own.

use super::chunk_features::{self, CHUNK, Lanes, lanes};
use super::chunked_backward::Intra;
use super::chunked_forward::{self, ChunkProgram, ChunkShape};
use super::execution::Execution;
use super::features::{KEY_FIRST, QUERY_FIRST};
use super::gemm::{View, gemm};
use super::generic::{split_lane, update_compensated};
use super::simd::{self, Isa};
use crate::stats::answer;

/// The longest chunk of the chunked forward entries.
pub const MAX_CHUNK: usize = CHUNK;

/// Calls of fewer tokens than this run token by token whatever the chunk (a decode step
/// never pays for a chunk's buffers): chunks of 16 tokens measured no faster than the token
/// loop at d16 P4 (`benches/results/prefill-2026-12-06.md`).
pub const MIN_CHUNKED_TOKENS: usize = 32;

/// Words of scratch the chunked forward entries need (more than [`scratch_words`]).
pub const fn chunked_scratch_words(features: usize, d_k: usize, d_v: usize) -> usize {
    chunked_forward::scratch_words(features, d_k, d_v)
}

/// The chunked form of kernel `F`, if `run` asks for it, the call is long enough and
/// `scratch` large enough.
fn chunked<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    run: Execution,
    tokens: usize,
    scratch: usize,
) -> Option<ChunkProgram<'static>>
where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let wanted = run.chunk > 1 && tokens >= MIN_CHUNKED_TOKENS;
    let shape = ChunkShape {
        d_k: DK,
        d_v: ROW - 1,
        features: m,
        terms: F::TERMS,
        inv_scale: F::INV_SCALE,
    };
    (wanted && scratch >= chunked_scratch_words(m, DK, ROW - 1))
        .then(|| ChunkProgram::new(shape, F::RUNS))
}

pub use super::features::{
    FeatureProgram, FirstScales, LANES, PAD, map_pieces, run, run_from_table,
};

/// Called once per answered query with its index in the lane, denominator and whether the
/// output is usable (positive, finite denominator and finite output).
pub type Answered<'a> = &'a mut dyn FnMut(usize, f64, bool);

fn split_scratch<const MP: usize>(scratch: &mut [f32]) -> (&mut [f32; MP], &mut [f32; MP]) {
    let (a, b) = scratch[..2 * MP].split_at_mut(MP);
    (
        a.try_into().expect("MP words"),
        b.try_into().expect("MP words"),
    )
}

fn token<const N: usize>(x: &[f32], t: usize) -> &[f32; N] {
    x[t * N..(t + 1) * N].try_into().expect("N words")
}

fn value<const ROW: usize>(v: &[f32], t: usize) -> &[f32] {
    &v[t * (ROW - 1)..(t + 1) * (ROW - 1)]
}

/// `Phi(k)` of token `t` into `f` (its first `m` words).
#[inline(always)]
fn key_features<const DK: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    k: &[f32],
    t: usize,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    simd::feature_map::<DK, XP, MP, F>(isa, token::<DK>(k, t), 1.0, &KEY_FIRST, f);
}

/// `w ∘ Phi(q)` of token `t` into `f` (its first `m` words).
#[inline(always)]
fn query_features<const DK: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    q: &[f32],
    t: usize,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    simd::feature_map::<DK, XP, MP, F>(isa, token::<DK>(q, t), F::INV_SCALE, &QUERY_FIRST, f);
}

/// Driver of `SpecializedKernel::prefill` for generated code.
#[inline]
pub fn prefill<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    run: Execution,
    scratch: &mut [f32],
    state: &mut [f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let (m, isa) = (MP - PAD, run.isa);
    let (state, mut comp) = split_lane(state, m * ROW);
    if comp.is_none()
        && let Some(p) = chunked::<DK, ROW, XP, MP, F>(run, q.len() / DK, scratch.len())
    {
        p.prefill(run, scratch, state, (q, k, v), out, answered);
        return;
    }
    let (phi_k, phi_q) = split_scratch::<MP>(scratch);
    for t in 0..q.len() / DK {
        key_features::<DK, XP, MP, F>(isa, k, t, phi_k);
        query_features::<DK, XP, MP, F>(isa, q, t, phi_q);
        let (phi_k, phi_q) = (&phi_k[..m], &phi_q[..m]);
        let mut acc = [0.0f64; ROW];
        match comp.as_deref_mut() {
            // A compensated state: the Kahan update, then the vector read of the sums.
            Some(comp) => {
                update_compensated(state, comp, phi_k, value::<ROW>(v, t));
                simd::read::<ROW>(isa, state, phi_q, &mut acc);
            }
            None => {
                simd::update_read::<ROW>(isa, state, phi_k, phi_q, value::<ROW>(v, t), &mut acc)
            }
        }
        let a = answer(&acc, &mut out[t * (ROW - 1)..(t + 1) * (ROW - 1)]);
        answered(t, a.denominator, a.ok);
    }
}

/// Driver of `SpecializedKernel::absorb` for generated code.
#[inline]
pub fn absorb<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    run: Execution,
    scratch: &mut [f32],
    state: &mut [f32],
    k: &[f32],
    v: &[f32],
) where
    F: FeatureProgram<XP, MP>,
{
    let (m, isa) = (MP - PAD, run.isa);
    let (state, mut comp) = split_lane(state, m * ROW);
    if comp.is_none()
        && let Some(p) = chunked::<DK, ROW, XP, MP, F>(run, k.len() / DK, scratch.len())
    {
        p.absorb(run, scratch, state, k, v);
        return;
    }
    let (phi_k, _) = split_scratch::<MP>(scratch);
    for t in 0..k.len() / DK {
        key_features::<DK, XP, MP, F>(isa, k, t, phi_k);
        let phi_k = &phi_k[..m];
        match comp.as_deref_mut() {
            Some(comp) => update_compensated(state, comp, phi_k, value::<ROW>(v, t)),
            None => simd::update::<ROW>(isa, state, phi_k, value::<ROW>(v, t)),
        }
    }
}

/// Driver of `SpecializedKernel::query` for generated code.
#[inline]
pub fn query<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    run: Execution,
    scratch: &mut [f32],
    state: &[f32],
    q: &[f32],
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let (m, isa) = (MP - PAD, run.isa);
    // A compensated lane's sums come first; reading them alone is accurate to an ulp.
    let state = &state[..m * ROW];
    if let Some(p) = chunked::<DK, ROW, XP, MP, F>(run, q.len() / DK, scratch.len()) {
        p.query(run, scratch, state, q, out, answered);
        return;
    }
    let (phi_q, _) = split_scratch::<MP>(scratch);
    for t in 0..q.len() / DK {
        query_features::<DK, XP, MP, F>(isa, q, t, phi_q);
        let mut acc = [0.0f64; ROW];
        simd::read::<ROW>(isa, state, &phi_q[..m], &mut acc);
        let a = answer(&acc, &mut out[t * (ROW - 1)..(t + 1) * (ROW - 1)]);
        answered(t, a.denominator, a.ok);
    }
}

/// One lane of a backward (`SpecializedKernel::backward`): the forward's inputs, each query's
/// augmented cotangent, the starting state and the gradients to write.
pub struct BackwardLane<'a> {
    /// `queries x d_k`, `keys x d_k`, `keys x d_v`.
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// `dO'_t = [dy_t / D_t, -(y_t · dy_t) / D_t]` per query (`queries x (d_v + 1)`), zeros
    /// for a query the forward answered with zeros.
    pub dout: &'a [f32],
    /// The lane's sums before the forward (`S` then `Z`, `m (d_v + 1)` words).
    pub state: &'a [f32],
    /// In: the gradient of the lane's state after the forward (zeros if none). Out: the
    /// gradient of the state before it. Same layout as `state`.
    pub grad_state: &'a mut [f32],
    /// Written (not accumulated): `queries x d_k`, `keys x d_k`, `keys x d_v`.
    pub dq: &'a mut [f32],
    pub dk: &'a mut [f32],
    pub dv: &'a mut [f32],
}

/// Words of scratch a specialized kernel's backward needs: the chunk's key features,
/// weighted query features and feature gradients (feature-major, `m x CHUNK` each), the
/// state (`S` or `H`) as `m` rows of `[S | Z]`, the chunk's augmented values, its two
/// `CHUNK x CHUNK` weight matrices, its `d_k` and `d_v` gradient rows, and its coordinates
/// and their gradients (feature-major, `d_k x CHUNK` each).
pub const fn backward_scratch_words(features: usize, d_k: usize, row: usize) -> usize {
    3 * features * CHUNK
        + features * row
        + CHUNK * row
        + 2 * CHUNK * CHUNK
        + CHUNK * (d_k + row)
        + 2 * d_k * CHUNK
}

/// Driver of `SpecializedKernel::backward` for generated code: the two passes of
/// `docs/design.md` ("Gradients") in chunked form (`super::chunked_backward`), pass A forward
/// in time (the state each query read, then `dq`), pass B backward in time (`H`, the weighted
/// queries that saw each key, then `dv` and `dk`), the feature maps and their adjoints over
/// a whole chunk at once (`super::chunk_features`). Causal needs as many queries as keys.
#[inline]
pub fn backward<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    scratch: &mut [f32],
    causal: bool,
    lane: BackwardLane<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let dv = ROW - 1;
    let (fk, rest) = scratch.split_at_mut(m * CHUNK);
    let (fq, rest) = rest.split_at_mut(m * CHUNK);
    let (u, rest) = rest.split_at_mut(m * CHUNK);
    let (rows, rest) = rest.split_at_mut(m * ROW);
    let (values, rest) = rest.split_at_mut(CHUNK * ROW);
    let (kappa, rest) = rest.split_at_mut(CHUNK * CHUNK);
    let (weighted, rest) = rest.split_at_mut(CHUNK * CHUNK);
    let (grad_k, rest) = rest.split_at_mut(CHUNK * DK);
    let (grad_v, rest) = rest.split_at_mut(CHUNK * ROW);
    let (xt, rest) = rest.split_at_mut(DK * CHUNK);
    let dxt = lanes(&mut rest[..DK * CHUNK]);
    let BackwardLane {
        q,
        k,
        v,
        dout,
        state,
        grad_state,
        dq,
        dk,
        dv: dval,
    } = lane;
    let (nq, nk) = (q.len() / DK, k.len() / DK);
    let intra = Intra {
        d_k: DK,
        row: ROW,
        terms: F::TERMS,
        inv_scale: F::INV_SCALE,
    };
    let runs = F::ADJOINT_RUNS;
    // The key features (`query`: the weighted query features) of tokens `t0..t0 + n`.
    let features = |f: &mut [f32], xt: &mut [f32], t0: usize, n: usize, query: bool| {
        let (x, scale, first) = match query {
            true => (q, F::INV_SCALE, &QUERY_FIRST),
            false => (k, 1.0, &KEY_FIRST),
        };
        let xt = lanes(xt);
        chunk_features::coordinates(x, DK, (t0, n), scale, xt);
        chunk_features::map(isa, F::RUNS, xt, first, n, lanes(f));
    };
    // `dx_t = J^T u_t` of the chunk's tokens into `out` (`n x d_k`), `u` consumed; `f` and
    // `xt` as `features` left them.
    let adjoint = |u: &mut [f32],
                   f: &[f32],
                   xt: &[f32],
                   dxt: &mut [Lanes],
                   out: &mut [f32],
                   n: usize,
                   query: bool| {
        let (first, scale) = match query {
            true => (&QUERY_FIRST, F::INV_SCALE),
            false => (&KEY_FIRST, 1.0),
        };
        let x = xt.as_chunks::<CHUNK>().0;
        chunk_features::adjoint(
            isa,
            runs,
            (x, first),
            f.as_chunks::<CHUNK>().0,
            lanes(u),
            dxt,
        );
        for (t, o) in out.chunks_exact_mut(DK).take(n).enumerate() {
            for (i, o) in o.iter_mut().enumerate() {
                *o = dxt[i][t] * scale;
            }
        }
    };
    // `[v_s, 1]` of keys `t0..t0 + n`.
    let augment = |values: &mut [f32], t0: usize, n: usize| {
        for (i, row) in values.chunks_exact_mut(ROW).take(n).enumerate() {
            row[..dv].copy_from_slice(value::<ROW>(v, t0 + i));
            row[dv] = 1.0;
        }
    };
    let chunks = |n: usize| (0..n).step_by(CHUNK).map(move |t0| (t0, CHUNK.min(n - t0)));
    // `u[j][t] = rows[j] · side[t]` for the chunk's `n` tokens (`side`: `n x ROW`), feature
    // major; columns past `n` are unused but stay finite.
    let read_rows = |rows: &[f32], side: &[f32], n: usize, u: &mut [f32]| {
        if n < CHUNK {
            u.fill(0.0);
        }
        let (a, b) = (View::rows(rows, ROW), View::transposed(side, ROW));
        gemm((m, ROW, n), a, b, 0.0, u, CHUNK);
    };
    // Pass A.
    planar_to_rows(&state[..m * ROW], rows, dv);
    let add_keys = |rows: &mut [f32], fk: &mut [f32], xt: &mut [f32], values: &mut [f32], t0, n| {
        features(fk, xt, t0, n, false);
        augment(values, t0, n);
        gemm(
            (m, n, ROW),
            View::rows(fk, CHUNK),
            View::rows(values, ROW),
            1.0,
            rows,
            ROW,
        );
    };
    // While the state is all zeros (a fresh state, before its first keys) a read gives
    // exactly zeros: the reads, the query features and their adjoints are skipped.
    let mut rows_zero = rows.iter().all(|&x| x == 0.0);
    if !causal {
        for (t0, n) in chunks(nk) {
            add_keys(rows, fk, xt, values, t0, n);
            rows_zero = false;
        }
    }
    for (t0, n) in chunks(nq) {
        let d = &dout[t0 * ROW..(t0 + n) * ROW];
        let dq = &mut dq[t0 * DK..(t0 + n) * DK];
        if rows_zero {
            dq.fill(0.0);
        } else {
            // The feature gradients from the state before the chunk.
            read_rows(rows, d, n, u);
            features(fq, xt, t0, n, true);
            adjoint(u, fq, xt, dxt, dq, n, true);
        }
        if causal {
            augment(values, t0, n);
            let qk = (&q[t0 * DK..(t0 + n) * DK], &k[t0 * DK..(t0 + n) * DK]);
            intra.weights(n, qk, (d, values), kappa, weighted);
            gemm(
                (n, n, DK),
                View::rows(weighted, n),
                View::rows(qk.1, DK),
                1.0,
                dq,
                DK,
            );
            // No query reads the state after the last chunk.
            if t0 + n < nq {
                add_keys(rows, fk, xt, values, t0, n);
                rows_zero = false;
            }
        }
    }
    // Pass B, chunks last to first.
    planar_to_rows(&grad_state[..m * ROW], rows, dv);
    let add_queries = |rows: &mut [f32], fq: &mut [f32], xt: &mut [f32], t0: usize, n: usize| {
        features(fq, xt, t0, n, true);
        let d = &dout[t0 * ROW..(t0 + n) * ROW];
        gemm(
            (m, n, ROW),
            View::rows(fq, CHUNK),
            View::rows(d, ROW),
            1.0,
            rows,
            ROW,
        );
    };
    // As in pass A: while `H` is all zeros (no final-state gradient, no query after the
    // chunk), the keys read nothing from it.
    let mut rows_zero = rows.iter().all(|&x| x == 0.0);
    if !causal {
        for (t0, n) in chunks(nq) {
            add_queries(rows, fq, xt, t0, n);
            rows_zero = false;
        }
    }
    let key_chunks: Vec<_> = chunks(nk).collect();
    for &(t0, n) in key_chunks.iter().rev() {
        augment(values, t0, n);
        if rows_zero {
            grad_v[..n * ROW].fill(0.0);
            grad_k[..n * DK].fill(0.0);
        } else {
            features(fk, xt, t0, n, false);
            // dv over the state after the chunk, into `grad_v` (rows of ROW words, the last
            // unused).
            let fk_t = View::transposed(fk, CHUNK);
            gemm((n, m, dv), fk_t, View::rows(rows, ROW), 0.0, grad_v, ROW);
            read_rows(rows, values, n, u);
            adjoint(u, fk, xt, dxt, grad_k, n, false);
        }
        if causal {
            let d = &dout[t0 * ROW..(t0 + n) * ROW];
            let qk = (&q[t0 * DK..(t0 + n) * DK], &k[t0 * DK..(t0 + n) * DK]);
            intra.weights(n, qk, (d, values), kappa, weighted);
            let (a1, a0) = (View::transposed(weighted, n), View::transposed(kappa, n));
            gemm((n, n, DK), a1, View::rows(qk.0, DK), 1.0, grad_k, DK);
            gemm((n, n, dv), a0, View::rows(d, ROW), 1.0, grad_v, ROW);
            add_queries(rows, fq, xt, t0, n);
            rows_zero = false;
        }
        dk[t0 * DK..(t0 + n) * DK].copy_from_slice(&grad_k[..n * DK]);
        for (s, out) in dval[t0 * dv..(t0 + n) * dv]
            .chunks_exact_mut(dv)
            .enumerate()
        {
            out.copy_from_slice(&grad_v[s * ROW..s * ROW + dv]);
        }
    }
    rows_to_planar(rows, &mut grad_state[..m * ROW], dv);
}

/// A planar lane (`S`, `m x d_v`, then `Z`) as `m` rows of `[S | Z]`.
fn planar_to_rows(planar: &[f32], rows: &mut [f32], dv: usize) {
    let m = planar.len() / (dv + 1);
    let (s, z) = planar.split_at(m * dv);
    for ((row, s), &z) in rows.chunks_exact_mut(dv + 1).zip(s.chunks_exact(dv)).zip(z) {
        row[..dv].copy_from_slice(s);
        row[dv] = z;
    }
}

/// The inverse of [`planar_to_rows`].
fn rows_to_planar(rows: &[f32], planar: &mut [f32], dv: usize) {
    let m = planar.len() / (dv + 1);
    let (s, z) = planar.split_at_mut(m * dv);
    for ((row, s), z) in rows.chunks_exact(dv + 1).zip(s.chunks_exact_mut(dv)).zip(z) {
        s.copy_from_slice(&row[..dv]);
        *z = row[dv];
    }
}
