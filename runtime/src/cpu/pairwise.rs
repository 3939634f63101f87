//! Attention over whole sequences from an empty state, pair by pair: a training step's forward
//! and backward when no state comes before the call and none is kept after it.
//!
//! Without a state to read or to leave, query `t`'s weights are `A[t][s] = T_P(q_t·k_s / c)`
//! over the keys it sees (`s <= t` when causal) and its sums are `A [V, 1]`: the quadratic form
//! of `docs/design.md` (section 1, a single chunk with no state), which costs
//! `O(tokens^2 (d_k + d_v))` per lane against the feature path's `O(tokens m (d_v + 1))`. For
//! short sequences and many features (a training step of P >= 4, or P = 3 below a few hundred
//! tokens) it is far cheaper; [`cheaper`] decides.
//!
//! Per block of [`BLOCK`] queries, with `X = Q K^T / c` over the keys the block sees:
//! - forward: `A = T_P(X) ∘ mask`, `[N | D] = A [V, 1]`, answered by the rule every backend
//!   shares ([`crate::stats::answer`]);
//! - backward, with the cotangents `dO'` of `super::backward`: `G = dO' [V, 1]^T`,
//!   `A' = T_{P-1}(X) ∘ G ∘ mask / c` (`T_{P-1} = T_P'`), then `dQ = A' K`, `dK += A'^T Q`,
//!   `dV += A^T dO'[:, :d_v]`.
//!
//! Everything runs in f64 (`dgemm`) whatever the element type: the products are small, and the
//! sums are then as exact as the float64 reference.

use sata_codegen::KernelConfig;

use super::gemm::{View, gemm};
use super::simd::Isa;
use crate::element::{Element, narrow};
use crate::stats::{Answer, answer};
use crate::training::Mode;

/// Queries per block: the products of a block are `BLOCK x keys`.
pub(crate) const BLOCK: usize = 64;

/// Cost of a pair's multiply-add in f64 against a feature word's in the f32 kernels: f64 has
/// half the SIMD width, and `dgemm` on `64 x keys` blocks of inner size `d_k` or `d_v + 1`
/// runs below the chunked kernels' efficiency. Fitted to the crossovers measured by
/// `benches/sequence_form.rs` (`benches/results/sequence-form-2026-12-06.md`: d16 P3 between
/// 128 and 256 tokens, d16 P4 near 1,024; the fit ranges 1.3-2.1 over them).
const PAIR_COST: f64 = 1.6;

/// Multiply-adds of the backward per multiply-add of the forward on the feature path
/// (2.7-3x measured, `benches/results/backward-2026-12-02.md`).
const FEATURE_BACKWARD: f64 = 2.9;

/// The (query, key) products one lane computes: causal blocks of [`BLOCK`] queries see every
/// key up to the block's end.
fn pairs(causal: bool, queries: usize, keys: usize) -> usize {
    if !causal {
        return queries * keys;
    }
    (0..queries.div_ceil(BLOCK))
        .map(|b| {
            let end = ((b + 1) * BLOCK).min(queries);
            (end - b * BLOCK) * end
        })
        .sum()
}

/// Whether pairs cost less than features for a forward and backward of `queries` queries over
/// `keys` keys per lane (causal: one query per key).
pub(crate) fn cheaper(config: &KernelConfig, mode: Mode, queries: usize, keys: usize) -> bool {
    let (d_k, d_v, terms) = (config.d_k(), config.d_v(), config.terms());
    let row = d_v + 1;
    let pairs = pairs(mode == Mode::Causal, queries, keys) as f64;
    // Forward: X, the polynomial, A [V, 1]; backward: X, G, both polynomials, dQ, dK, dV.
    let per_pair = (d_k + row + terms) + (3 * d_k + row + d_v + 2 * terms);
    let pair_cost = pairs * per_pair as f64 * PAIR_COST;
    // A read per query and an advance per key, each m (d_v + 1) multiply-adds.
    let words = (config.features() * row) as f64;
    let feature_cost = (queries + keys) as f64 * words * (1.0 + FEATURE_BACKWARD);
    pair_cost < feature_cost
}

/// The pairwise forward and backward of one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Pairwise {
    d_k: usize,
    d_v: usize,
    inv_scale: f64,
    /// `1 / p!` for `p < P`: `T_P`, and its first `P - 1` for `T_P' = T_{P-1}`.
    coefficients: Vec<f64>,
    isa: Isa,
}

/// One lane's inputs widened to f64: queries and keys `tokens x d_k`, values with a ones
/// column `tokens x (d_v + 1)`.
struct Widened {
    q: Vec<f64>,
    k: Vec<f64>,
    values: Vec<f64>,
}

/// The keys a block of queries starting at `start` sees.
fn keys_seen(causal: bool, start: usize, block: usize, keys: usize) -> usize {
    if causal { start + block } else { keys }
}

impl Pairwise {
    pub fn new(config: &KernelConfig) -> Self {
        let mut factorial = 1.0;
        let coefficients = (0..config.terms())
            .map(|p| {
                factorial *= p.max(1) as f64;
                1.0 / factorial
            })
            .collect();
        Self {
            d_k: config.d_k(),
            d_v: config.d_v(),
            inv_scale: 1.0 / config.scale(),
            coefficients,
            isa: Isa::detect(),
        }
    }

    /// A lane's work in the units of the lane loop's parallel threshold (words times tokens).
    pub fn work(&self, causal: bool, queries: usize, keys: usize) -> usize {
        pairs(causal, queries, keys) * (self.d_k + self.d_v + 1)
    }

    fn widen<T: Element>(&self, q: &[T], k: &[T], v: &[T]) -> Widened {
        let widen = |x: &[T]| x.iter().map(|x| x.widen()).collect::<Vec<f64>>();
        let values = v
            .chunks_exact(self.d_v)
            .flat_map(|row| row.iter().map(|x| x.widen()).chain([1.0]))
            .collect();
        Widened {
            q: widen(q),
            k: widen(k),
            values,
        }
    }

    /// Row `xs` of a block's logits `q·k` into the weights `T_P(q·k / c)` of its first
    /// `visible` keys and zeros after; with `gs` (the row of `G`), also
    /// `gs[s] *= T_P'(q·k / c) / c` under the same mask.
    fn weights_row(&self, xs: &mut [f64], gs: &mut [f64], visible: usize) {
        let (c, inv_scale) = (&self.coefficients[..], self.inv_scale);
        #[cfg(target_arch = "x86_64")]
        if self.isa.runs_avx2() {
            // SAFETY: runs_avx2 checked that this CPU has avx2 and fma; the body indexes
            // slices only.
            unsafe { compiled::row_avx2(xs, gs, visible, c, inv_scale) };
            return;
        }
        compiled::row_portable(xs, gs, visible, c, inv_scale);
    }

    /// `x = Q[start..start + block] K[..keys]^T` into `x` (`block x keys`).
    fn logits(&self, w: &Widened, (start, block, keys): (usize, usize, usize), x: &mut [f64]) {
        let dk = self.d_k;
        let q = View::rows(&w.q[start * dk..], dk);
        gemm(
            (block, dk, keys),
            q,
            View::transposed(&w.k, dk),
            0.0,
            x,
            keys,
        );
    }

    /// One lane's forward: every query's output into `out` (`queries x d_v`), each answer
    /// reported to `answered` in query order.
    pub fn forward<T: Element>(
        &self,
        causal: bool,
        (q, k, v): (&[T], &[T], &[T]),
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
    ) {
        let (dk, dv, row) = (self.d_k, self.d_v, self.d_v + 1);
        let (queries, keys) = (q.len() / dk, k.len() / dk);
        let w = self.widen(q, k, v);
        let mut x = vec![0.0; BLOCK.min(queries) * keys];
        let mut sums = vec![0.0; BLOCK * row];
        for start in (0..queries).step_by(BLOCK) {
            let block = BLOCK.min(queries - start);
            let seen = keys_seen(causal, start, block, keys);
            self.logits(&w, (start, block, seen), &mut x);
            // (No keys: no rows to weigh, and the sums are zeros.)
            for (i, xs) in x.chunks_exact_mut(seen.max(1)).take(block).enumerate() {
                let visible = if causal { start + i + 1 } else { seen };
                self.weights_row(xs, &mut [], visible);
            }
            let a = View::rows(&x, seen);
            gemm(
                (block, seen, row),
                a,
                View::rows(&w.values, row),
                0.0,
                &mut sums,
                row,
            );
            for (i, s) in sums.chunks_exact(row).take(block).enumerate() {
                let t = start + i;
                answered(t, answer(s, &mut out[t * dv..(t + 1) * dv]));
            }
        }
    }

    /// One lane's gradients from its inputs and the cotangents `dout` (`queries x (d_v + 1)`,
    /// f64): `dq`, `dk`, `dv` written (not added to).
    pub fn backward<T: Element>(
        &self,
        causal: bool,
        (q, k, v): (&[T], &[T], &[T]),
        dout: &[f64],
        (dq, dk, dv): (&mut [T], &mut [T], &mut [T]),
    ) {
        let (d_k, d_v, row) = (self.d_k, self.d_v, self.d_v + 1);
        let (queries, keys) = (q.len() / d_k, k.len() / d_k);
        let w = self.widen(q, k, v);
        let width = BLOCK.min(queries) * keys;
        let (mut x, mut g) = (vec![0.0; width], vec![0.0; width]);
        let mut dq64 = vec![0.0; queries * d_k];
        let (mut dk64, mut dv64) = (vec![0.0; keys * d_k], vec![0.0; keys * d_v]);
        for start in (0..queries).step_by(BLOCK) {
            let block = BLOCK.min(queries - start);
            let seen = keys_seen(causal, start, block, keys);
            self.logits(&w, (start, block, seen), &mut x);
            let d = &dout[start * row..];
            let values = View::transposed(&w.values, row);
            gemm(
                (block, row, seen),
                View::rows(d, row),
                values,
                0.0,
                &mut g,
                seen,
            );
            let rows = x
                .chunks_exact_mut(seen.max(1))
                .zip(g.chunks_exact_mut(seen.max(1)));
            for (i, (xs, gs)) in rows.take(block).enumerate() {
                let visible = if causal { start + i + 1 } else { seen };
                self.weights_row(xs, gs, visible);
            }
            let block_dq = &mut dq64[start * d_k..];
            let da = View::rows(&g, seen);
            gemm(
                (block, seen, d_k),
                da,
                View::rows(&w.k, d_k),
                0.0,
                block_dq,
                d_k,
            );
            let (a_t, da_t) = (View::transposed(&x, seen), View::transposed(&g, seen));
            let block_q = View::rows(&w.q[start * d_k..], d_k);
            gemm((seen, block, d_k), da_t, block_q, 1.0, &mut dk64, d_k);
            gemm(
                (seen, block, d_v),
                a_t,
                View::rows(d, row),
                1.0,
                &mut dv64,
                d_v,
            );
        }
        narrow(&dq64, dq);
        narrow(&dk64, dk);
        narrow(&dv64, dv);
    }
}

/// Logits per pass of the row polynomials: fixed-size arrays the compiler keeps in vectors.
const ROW_LANES: usize = 32;

/// [`Pairwise::weights_row`]: Horner's rule across the row, one multiply-add per coefficient
/// and element, [`ROW_LANES`] elements at a time.
#[inline(always)]
fn row_body(xs: &mut [f64], gs: &mut [f64], visible: usize, c: &[f64], inv_scale: f64) {
    let top = c.len() - 1;
    let slopes = !gs.is_empty();
    let (live, masked) = xs.split_at_mut(visible);
    for (i, xs) in live.chunks_mut(ROW_LANES).enumerate() {
        let mut x = [0.0; ROW_LANES];
        for (x, a) in x.iter_mut().zip(xs.iter()) {
            *x = a * inv_scale;
        }
        let mut value = [c[top]; ROW_LANES];
        for &c in c[..top].iter().rev() {
            for (v, x) in value.iter_mut().zip(&x) {
                *v = *v * x + c;
            }
        }
        if slopes {
            // T_P' = T_{P-1}: the same coefficients without the last (zero for P = 1).
            let mut slope = [if top > 0 { c[top - 1] } else { 0.0 }; ROW_LANES];
            for &c in c[..top.saturating_sub(1)].iter().rev() {
                for (s, x) in slope.iter_mut().zip(&x) {
                    *s = *s * x + c;
                }
            }
            let g = &mut gs[i * ROW_LANES..i * ROW_LANES + xs.len()];
            for (g, s) in g.iter_mut().zip(&slope) {
                *g *= s * inv_scale;
            }
        }
        xs.copy_from_slice(&value[..xs.len()]);
    }
    masked.fill(0.0);
    if slopes {
        gs[visible..].fill(0.0);
    }
}

mod compiled {
    use super::*;

    compiled_twice! {
        fn row_portable, row_avx2(
            xs: &mut [f64],
            gs: &mut [f64],
            visible: usize,
            c: &[f64],
            inv_scale: f64,
        ) => row_body;
    }
}
