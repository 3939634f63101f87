//! The generic CPU path: one implementation for every configuration, driven by tables from the
//! basis. It is the correctness baseline and the fallback of dispatch; specialized kernels must
//! agree with it.
//!
//! Everything here works on one (batch, head) lane: `state` is that lane's `S` (`m x d_v`) then `Z` (`m`) block,
//! `q`, `k`, `v` its `tokens x dim` blocks, `out` its `tokens x d_v` block.

use sata_codegen::{FeatureSuffix, KernelConfig, KernelPlan};

use crate::element::Element;
use crate::stats::{Answer, answer};

/// The tables the generic path walks, converted once to the element type.
#[derive(Debug)]
pub(crate) struct GenericProgram<T> {
    d_k: usize,
    d_v: usize,
    /// The feature map in suffix form (`KernelPlan::suffixes`): unweighted features need no
    /// split by multiplicity; the query weights are applied after.
    suffixes: Vec<FeatureSuffix>,
    /// Query-side weights `alpha_p C_p[j]`.
    weights: Vec<T>,
}

/// Per-call buffers, allocated once per call and reused across lanes and tokens.
pub(crate) struct Scratch<T> {
    phi_k: Vec<T>,
    phi_q: Vec<T>,
    /// Numerator and denominator of one query, accumulated in f64 whatever `T` is (see
    /// `super::simd` for why f32 accumulators are not accurate enough).
    acc: Vec<f64>,
}

/// `sum += term` with Kahan's compensation: `comp` keeps (the negative of) what the last
/// additions to `sum` lost, and the next addition puts it back. Rust never reassociates float
/// arithmetic, so the compensation is not optimised away.
#[inline(always)]
fn kahan_add<T: Element>(sum: &mut T, comp: &mut T, term: T) {
    let y = term - *comp;
    let t = *sum + y;
    *comp = (t - *sum) - y;
    *sum = t;
}

/// A lane's sums (`S` then `Z`, `words` long) and, for a compensated state
/// (`Accumulation::Compensated`), the compensation block that follows them.
pub(crate) fn split_lane<T>(lane: &mut [T], words: usize) -> (&mut [T], Option<&mut [T]>) {
    if lane.len() == 2 * words {
        let (sums, comp) = lane.split_at_mut(words);
        (sums, Some(comp))
    } else {
        (lane, None)
    }
}

/// `S[j] += phi_k[j] v` and `Z[j] += phi_k[j]` for every feature, Kahan-compensated: the
/// update of a compensated state on every CPU path (generic and specialized; plain loops over
/// independent words, which the compiler vectorises).
pub(crate) fn update_compensated<T: Element>(sums: &mut [T], comp: &mut [T], phi_k: &[T], v: &[T]) {
    let dv = v.len();
    let (rows, z) = sums.split_at_mut(phi_k.len() * dv);
    let (comp_rows, comp_z) = comp.split_at_mut(phi_k.len() * dv);
    let rows = rows
        .chunks_exact_mut(dv)
        .zip(comp_rows.chunks_exact_mut(dv));
    for ((((r, c), z), cz), &fk) in rows.zip(z).zip(comp_z).zip(phi_k) {
        for ((x, cx), &ve) in r.iter_mut().zip(c).zip(v) {
            kahan_add(x, cx, fk * ve);
        }
        kahan_add(z, cz, fk);
    }
}

impl<T: Element> GenericProgram<T> {
    pub(crate) fn new(config: &KernelConfig) -> Self {
        let plan = KernelPlan::new(config);
        Self {
            d_k: config.d_k(),
            d_v: config.d_v(),
            suffixes: plan.suffixes(),
            weights: plan.weights.iter().map(|&w| T::from_f64(w)).collect(),
        }
    }

    pub(crate) fn scratch(&self) -> Scratch<T> {
        let m = self.weights.len();
        Scratch {
            phi_k: vec![T::zero(); m],
            phi_q: vec![T::zero(); m],
            acc: vec![0.0; self.d_v + 1],
        }
    }

    /// `Phi(x)` for all orders by the suffix recurrence: order p's features with first
    /// coordinate i are `x_i` times a contiguous stretch of order p - 1, so this is one
    /// multiply per feature in `d_k` long runs per order (the prefix recurrence's runs, one
    /// per parent, are at most `d_k` long).
    fn features(&self, x: &[T], out: &mut [T]) {
        out[0] = T::one();
        for s in &self.suffixes {
            // Sources lie in the order below their destination: `src + len <= dest`.
            let (done, todo) = out.split_at_mut(s.dest);
            let xi = x[s.coord];
            for (o, &f) in todo[..s.len].iter_mut().zip(&done[s.src..s.src + s.len]) {
                *o = xi * f;
            }
        }
    }

    /// Query features with the weights folded in: `w_j Phi_j(q)`.
    fn weighted_features(&self, q: &[T], out: &mut [T]) {
        self.features(q, out);
        for (o, &w) in out.iter_mut().zip(&self.weights) {
            *o = *o * w;
        }
    }

    /// Causal attention over one lane: for each token, absorb `(k_t, v_t)` and then read with
    /// `q_t`, fused into one pass over the state rows.
    pub(crate) fn prefill(
        &self,
        s: &mut Scratch<T>,
        state: &mut [T],
        (q, k, v): (&[T], &[T], &[T]),
        out: &mut [T],
        mut answered: impl FnMut(usize, Answer),
    ) {
        let (dk, dv) = (self.d_k, self.d_v);
        let words = self.weights.len() * (dv + 1);
        let (state, mut comp) = split_lane(state, words);
        for t in 0..q.len() / dk {
            self.features(&k[t * dk..(t + 1) * dk], &mut s.phi_k);
            self.weighted_features(&q[t * dk..(t + 1) * dk], &mut s.phi_q);
            let vt = &v[t * dv..(t + 1) * dv];
            if let Some(comp) = comp.as_deref_mut() {
                // Compensated: update, then read in a second pass.
                update_compensated(state, comp, &s.phi_k, vt);
                self.read_one(s, state);
                answered(t, answer(&s.acc, &mut out[t * dv..(t + 1) * dv]));
                continue;
            }
            s.acc.iter_mut().for_each(|a| *a = 0.0);
            let (rows, z) = state.split_at_mut(s.phi_k.len() * dv);
            let rows = rows.chunks_exact_mut(dv).zip(z);
            for ((r, z), (&fk, &fq)) in rows.zip(s.phi_k.iter().zip(&s.phi_q)) {
                let fq = fq.widen();
                for ((x, &ve), a) in r.iter_mut().zip(vt).zip(s.acc.iter_mut()) {
                    *x = *x + fk * ve;
                    *a += fq * x.widen();
                }
                *z = *z + fk;
                s.acc[dv] += fq * z.widen();
            }
            answered(t, answer(&s.acc, &mut out[t * dv..(t + 1) * dv]));
        }
    }

    /// Adds every `(k_t, v_t)` of one lane to its state, answering no query.
    pub(crate) fn absorb(&self, s: &mut Scratch<T>, state: &mut [T], k: &[T], v: &[T]) {
        let (dk, dv) = (self.d_k, self.d_v);
        let words = self.weights.len() * (dv + 1);
        let (state, mut comp) = split_lane(state, words);
        for t in 0..k.len() / dk {
            self.features(&k[t * dk..(t + 1) * dk], &mut s.phi_k);
            let vt = &v[t * dv..(t + 1) * dv];
            if let Some(comp) = comp.as_deref_mut() {
                update_compensated(state, comp, &s.phi_k, vt);
                continue;
            }
            let (rows, z) = state.split_at_mut(s.phi_k.len() * dv);
            for ((r, z), &fk) in rows.chunks_exact_mut(dv).zip(z).zip(&s.phi_k) {
                for (x, &ve) in r.iter_mut().zip(vt) {
                    *x = *x + fk * ve;
                }
                *z = *z + fk;
            }
        }
    }

    /// Answers every query of one lane from its state, leaving the state unchanged.
    pub(crate) fn query(
        &self,
        s: &mut Scratch<T>,
        state: &[T],
        q: &[T],
        out: &mut [T],
        mut answered: impl FnMut(usize, Answer),
    ) {
        let (dk, dv) = (self.d_k, self.d_v);
        // A compensated lane's sums come first; reading them alone is accurate to an ulp.
        let state = &state[..self.weights.len() * (dv + 1)];
        for t in 0..q.len() / dk {
            self.weighted_features(&q[t * dk..(t + 1) * dk], &mut s.phi_q);
            self.read_one(s, state);
            answered(t, answer(&s.acc, &mut out[t * dv..(t + 1) * dv]));
        }
    }

    /// `acc = sum_j phi_q[j] [S[j], Z[j]]` (f64) for the weighted query features in `s`.
    fn read_one(&self, s: &mut Scratch<T>, state: &[T]) {
        let dv = self.d_v;
        s.acc.iter_mut().for_each(|a| *a = 0.0);
        let (rows, z) = state.split_at(s.phi_q.len() * dv);
        for ((r, z), &fq) in rows.chunks_exact(dv).zip(z).zip(&s.phi_q) {
            let fq = fq.widen();
            for (a, &x) in s.acc.iter_mut().zip(r) {
                *a += fq * x.widen();
            }
            s.acc[dv] += fq * z.widen();
        }
    }
}
