//! The drivers generated kernels call: the token loop and the state sweep of each entry,
//! monomorphised for a kernel's constants. Generated code reaches them as
//! `sata::kernel::driver` (from user crates) or `crate::kernel::driver` (the runtime's own
//! registry); they are not an API of their own.

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
