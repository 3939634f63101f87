//! The drivers generated kernels call: the token loop and the state sweep of each entry,
//! monomorphised for a kernel's constants. Generated code reaches them as
//! `sata::kernel::driver` (from user crates) or `crate::kernel::driver` (the runtime's own
//! registry); they are not an API of their own.

use super::adjoint_sweeps::{
    AdjointRuns, feature_adjoint, from_blocked, padded_features, pass_a, pass_b, to_blocked,
};
use super::features::{KEY_FIRST, QUERY_FIRST};
use super::generic::{split_lane, update_compensated};
use super::simd::{self, Isa};
use crate::stats::answer;

pub use super::features::{FeatureProgram, FirstScales, LANES, PAD, run, run_from_table};

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
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_k, phi_q) = split_scratch::<MP>(scratch);
    let (state, mut comp) = split_lane(state, m * ROW);
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
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    k: &[f32],
    v: &[f32],
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_k, _) = split_scratch::<MP>(scratch);
    let (state, mut comp) = split_lane(state, m * ROW);
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
    isa: Isa,
    scratch: &mut [f32],
    state: &[f32],
    q: &[f32],
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_q, _) = split_scratch::<MP>(scratch);
    // A compensated lane's sums come first; reading them alone is accurate to an ulp.
    let state = &state[..m * ROW];
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

/// Words of scratch a specialized kernel's backward needs: two feature buffers, one for their
/// gradients, and the two blocked states of the passes.
pub const fn backward_scratch_words(features: usize, row: usize) -> usize {
    3 * (features + PAD) + 2 * row * padded_features(features)
}

/// Driver of `SpecializedKernel::backward` for generated code: pass A forward in time (the
/// state each query read, then `dq`), pass B backward in time (`H`, the weighted queries
/// that saw each key, then `dv` and `dk`), `docs/design.md` ("Gradients"). Causal needs as
/// many queries as keys.
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
    let (dv, m8) = (ROW - 1, padded_features(m));
    let (buffers, states) = scratch.split_at_mut(3 * MP);
    let (phi_k, phi_q, u) = split_scratch3::<MP>(buffers);
    let (s_blocked, h_blocked) = states[..2 * ROW * m8].split_at_mut(ROW * m8);
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
    let cotangent = |t: usize| -> &[f32; ROW] { token::<ROW>(dout, t) };
    // The maps leave words past `m` undefined; the passes read whole vectors of features.
    let keys = |s: usize, f: &mut [f32; MP]| {
        key_features::<DK, XP, MP, F>(isa, k, s, f);
        f[m..m8].fill(0.0);
    };
    let queries = |t: usize, f: &mut [f32; MP]| {
        query_features::<DK, XP, MP, F>(isa, q, t, f);
        f[m..m8].fill(0.0);
    };
    let no_cotangent = [0.0; ROW];
    let runs = AdjointRuns::<DK, XP, MP>::of::<F>();
    // The adjoint reads whole vectors of `u`, past `m` for the last runs: keep them finite.
    u[m..].fill(0.0);
    // Pass A.
    to_blocked::<ROW>(&state[..m * ROW], s_blocked);
    if !causal {
        for s in 0..nk {
            keys(s, phi_k);
            let vs = value::<ROW>(v, s);
            pass_a::<ROW, true, false>(isa, s_blocked, (&phi_k[..m8], vs), &no_cotangent, &mut []);
        }
    }
    for t in 0..nq {
        let r = &mut u[..m8];
        if causal {
            keys(t, phi_k);
            let vt = value::<ROW>(v, t);
            pass_a::<ROW, true, true>(isa, s_blocked, (&phi_k[..m8], vt), cotangent(t), r);
        } else {
            pass_a::<ROW, false, true>(isa, s_blocked, (&[], &[]), cotangent(t), r);
        }
        queries(t, phi_q);
        let dq = &mut dq[t * DK..(t + 1) * DK];
        dq.fill(0.0);
        let qt = token::<DK>(q, t);
        let x = (qt, F::INV_SCALE, &QUERY_FIRST);
        feature_adjoint(isa, &runs, x, (phi_q, u), dq);
    }
    // Pass B.
    to_blocked::<ROW>(&grad_state[..m * ROW], h_blocked);
    let mut unused = [0.0f64; ROW];
    if !causal {
        for t in 0..nq {
            queries(t, phi_q);
            let (fq, d) = (&phi_q[..m8], cotangent(t));
            pass_b::<ROW, true, false>(isa, h_blocked, (fq, d), (&[], &[]), &mut unused, &mut []);
        }
    }
    for s in (0..nk).rev() {
        keys(s, phi_k);
        let mut acc = [0.0f64; ROW];
        let (vs, pk, r) = (value::<ROW>(v, s), &phi_k[..m8], &mut u[..m8]);
        if causal {
            queries(s, phi_q);
            let (fq, d) = (&phi_q[..m8], cotangent(s));
            pass_b::<ROW, true, true>(isa, h_blocked, (fq, d), (pk, vs), &mut acc, r);
        } else {
            pass_b::<ROW, false, true>(isa, h_blocked, (&[], &no_cotangent), (pk, vs), &mut acc, r);
        }
        for (o, a) in dval[s * dv..(s + 1) * dv].iter_mut().zip(acc) {
            *o = a as f32;
        }
        let dk = &mut dk[s * DK..(s + 1) * DK];
        dk.fill(0.0);
        let ks = token::<DK>(k, s);
        feature_adjoint(isa, &runs, (ks, 1.0, &KEY_FIRST), (phi_k, u), dk);
    }
    from_blocked::<ROW>(h_blocked, &mut grad_state[..m * ROW]);
}

fn split_scratch3<const MP: usize>(
    scratch: &mut [f32],
) -> (&mut [f32; MP], &mut [f32; MP], &mut [f32; MP]) {
    let (a, rest) = scratch[..3 * MP].split_at_mut(MP);
    let (b, c) = rest.split_at_mut(MP);
    (words(a), words(b), words(c))
}

fn words<const MP: usize>(x: &mut [f32]) -> &mut [f32; MP] {
    x.try_into().expect("MP words")
}
