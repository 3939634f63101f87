//! The forward entries in chunked form (`docs/design.md`, section 1): per chunk of up to
//! [`CHUNK`] tokens the state is read and advanced by matrix products over the chunk instead
//! of one sweep per token:
//!
//! - the chunk's queries read the state before it, `[N | D] = (W ∘ Phi(Q)) [S | Z]`, as
//!   products over blocks of [`READ_BLOCK`] features, each block's f32 result added into f64
//!   sums (the two-level summation of `super::simd`'s reads, with wider blocks);
//! - the pairs inside the chunk (causal prefill) are the polynomial of `q·k` directly,
//!   `A = T_P(Q K^T / c) ∘ mask`, and add `A [V, 1]`;
//! - the keys advance the state, `S += Phi(K)^T V` and `Z += Phi(K)^T 1`.
//!
//! The features of a chunk come from `super::chunk_features` (feature-major, one row per
//! feature), the products from `matrixmultiply` through `super::chunked_backward::gemm`. Only
//! plain (uncompensated) f32 lanes run here; the drivers keep compensated ones on the token
//! loop, whose Kahan update needs every product added to the state one at a time.

use super::chunk_features::{self, Run, lanes};
use super::chunked_backward::{CHUNK, Intra, View, gemm};
use super::execution::Execution;
use super::features::{KEY_FIRST, QUERY_FIRST};
use super::simd::Isa;
use crate::stats::answer;

/// Features per block of the read's two-level summation: each block's f32 product is added
/// into f64 sums.
pub const READ_BLOCK: usize = 128;

/// What the chunked entries need to know of a kernel: its sizes, its feature program (as
/// runs) and its Taylor polynomial.
#[derive(Clone, Copy)]
pub struct ChunkProgram<'a> {
    pub d_k: usize,
    pub d_v: usize,
    pub features: usize,
    pub terms: usize,
    pub inv_scale: f32,
    pub runs: &'a [Run],
}

/// Words of f32 scratch the chunked entries need (`ChunkBuffers`).
pub const fn scratch_words(features: usize, d_k: usize, d_v: usize) -> usize {
    2 * features * CHUNK + d_k * CHUNK + CHUNK * CHUNK + CHUNK * (d_v + 1)
}

/// The scratch, split: the chunk's key and weighted query features (`m x CHUNK`), its
/// coordinates (`d_k x CHUNK`), the chunk-internal weights (`CHUNK x CHUNK`) and one f32
/// partial result (`CHUNK x (d_v + 1)`).
struct ChunkBuffers<'s> {
    fk: &'s mut [f32],
    fq: &'s mut [f32],
    xt: &'s mut [f32],
    kappa: &'s mut [f32],
    part: &'s mut [f32],
}

impl<'s> ChunkBuffers<'s> {
    fn split(p: &ChunkProgram<'_>, scratch: &'s mut [f32]) -> Self {
        let m = p.features;
        let (fk, rest) = scratch.split_at_mut(m * CHUNK);
        let (fq, rest) = rest.split_at_mut(m * CHUNK);
        let (xt, rest) = rest.split_at_mut(p.d_k * CHUNK);
        let (kappa, rest) = rest.split_at_mut(CHUNK * CHUNK);
        let part = &mut rest[..CHUNK * (p.d_v + 1)];
        Self {
            fk,
            fq,
            xt,
            kappa,
            part,
        }
    }
}

impl ChunkProgram<'_> {
    /// The chunks of `n` tokens, `chunk` (at most [`CHUNK`]) at a time.
    fn chunks(n: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..n).step_by(chunk).map(move |t0| (t0, chunk.min(n - t0)))
    }

    /// `f = Phi(x * scale)` (keys) or `W ∘ Phi(x / c)` (queries) of tokens `t0..t0 + n` of
    /// `x`, feature-major; the coordinates go through `xt`.
    fn features(
        &self,
        isa: Isa,
        x: &[f32],
        (t0, n): (usize, usize),
        query: bool,
        xt: &mut [f32],
        f: &mut [f32],
    ) {
        let (scale, first) = match query {
            true => (self.inv_scale, &QUERY_FIRST),
            false => (1.0, &KEY_FIRST),
        };
        let xt = lanes(xt);
        chunk_features::coordinates(x, self.d_k, (t0, n), scale, xt);
        chunk_features::map(isa, self.runs, xt, first, n, lanes(f));
    }

    /// `acc[t] += (W ∘ Phi(q_t)) · [S | Z]` for the chunk's `n` queries, whose features are
    /// in `fq`; `acc` is `n x (d_v + 1)`.
    fn read(&self, sums: &[f32], fq: &[f32], n: usize, part: &mut [f32], acc: &mut [f64]) {
        let (m, dv) = (self.features, self.d_v);
        let row = dv + 1;
        let (s, z) = sums.split_at(m * dv);
        for f0 in (0..m).step_by(READ_BLOCK) {
            let kb = READ_BLOCK.min(m - f0);
            // part[t][..dv] = sum over the block of fq[f][t] S[f]; part[t][dv] the same of Z.
            gemm(
                (n, kb, dv),
                View::transposed(&fq[f0 * CHUNK..], CHUNK),
                View::rows(&s[f0 * dv..], dv),
                0.0,
                part,
                row,
            );
            let mut den = [0.0f32; CHUNK];
            for (f, &zf) in z[f0..f0 + kb].iter().enumerate() {
                let row_f = &fq[(f0 + f) * CHUNK..(f0 + f + 1) * CHUNK];
                for (d, &x) in den.iter_mut().zip(row_f) {
                    *d += x * zf;
                }
            }
            for (t, (a, p)) in acc
                .chunks_exact_mut(row)
                .zip(part.chunks_exact(row))
                .take(n)
                .enumerate()
            {
                for (a, &p) in a[..dv].iter_mut().zip(&p[..dv]) {
                    *a += f64::from(p);
                }
                a[dv] += f64::from(den[t]);
            }
        }
    }

    /// `S += Phi(K)^T V`, `Z += Phi(K)^T 1` for the chunk's `n` keys, whose features are in
    /// `fk` (zero past `n`), and values `v` (`n x d_v`).
    fn advance(&self, sums: &mut [f32], fk: &[f32], v: &[f32], n: usize) {
        let (m, dv) = (self.features, self.d_v);
        let (s, z) = sums.split_at_mut(m * dv);
        gemm(
            (m, n, dv),
            View::rows(fk, CHUNK),
            View::rows(v, dv),
            1.0,
            s,
            dv,
        );
        for (zf, row) in z.iter_mut().zip(fk.chunks_exact(CHUNK)) {
            *zf += row.iter().sum::<f32>();
        }
    }

    /// `acc[t] += sum_{s <= t} T_P(q_t·k_s / c) [v_s, 1]` inside one chunk of `n` tokens.
    fn intra(
        &self,
        (q, k, v): (&[f32], &[f32], &[f32]),
        n: usize,
        b: &mut ChunkBuffers<'_>,
        acc: &mut [f64],
    ) {
        let (dv, row) = (self.d_v, self.d_v + 1);
        let intra = Intra {
            d_k: self.d_k,
            row,
            terms: self.terms,
            inv_scale: self.inv_scale,
        };
        let kappa = &mut b.kappa[..n * n];
        intra.causal_weights(n, (q, k), kappa);
        gemm(
            (n, n, dv),
            View::rows(kappa, n),
            View::rows(v, dv),
            0.0,
            b.part,
            row,
        );
        for (t, (a, p)) in acc
            .chunks_exact_mut(row)
            .zip(b.part.chunks_exact(row))
            .take(n)
            .enumerate()
        {
            for (a, &p) in a[..dv].iter_mut().zip(&p[..dv]) {
                *a += f64::from(p);
            }
            a[dv] += kappa[t * n..(t + 1) * n]
                .iter()
                .map(|&w| f64::from(w))
                .sum::<f64>();
        }
    }

    /// Writes the chunk's answers from `acc` and reports them, tokens numbered from `t0`.
    fn answer(
        &self,
        acc: &[f64],
        t0: usize,
        n: usize,
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let (dv, row) = (self.d_v, self.d_v + 1);
        for (t, a) in acc.chunks_exact(row).take(n).enumerate() {
            let o = &mut out[(t0 + t) * dv..(t0 + t + 1) * dv];
            let r = answer(a, o);
            answered(t0 + t, r.denominator, r.ok);
        }
    }

    /// Causal attention over one plain lane (`sums`: `S` then `Z`), `chunk` tokens at a time.
    pub fn prefill(
        &self,
        run: Execution,
        scratch: &mut [f32],
        sums: &mut [f32],
        (q, k, v): (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let (dk, dv, row) = (self.d_k, self.d_v, self.d_v + 1);
        let mut b = ChunkBuffers::split(self, scratch);
        let mut acc = vec![0.0f64; CHUNK * row];
        // While the state is all zeros (a fresh one, before its first keys) the reads give
        // exactly zeros and are skipped.
        let mut zero = sums.iter().all(|&x| x == 0.0);
        let tokens = q.len() / dk;
        let (isa, chunk) = (run.isa, run.chunk);
        for (t0, n) in Self::chunks(tokens, chunk) {
            acc.fill(0.0);
            let qc = &q[t0 * dk..(t0 + n) * dk];
            let kc = &k[t0 * dk..(t0 + n) * dk];
            let vc = &v[t0 * dv..(t0 + n) * dv];
            if !zero {
                self.features(isa, q, (t0, n), true, b.xt, b.fq);
                self.read(sums, b.fq, n, b.part, &mut acc);
            }
            self.intra((qc, kc, vc), n, &mut b, &mut acc);
            self.answer(&acc, t0, n, out, answered);
            self.features(isa, k, (t0, n), false, b.xt, b.fk);
            self.advance(sums, b.fk, vc, n);
            zero = false;
        }
    }

    /// Adds every key and value of one plain lane to its sums, `chunk` tokens at a time.
    pub fn absorb(
        &self,
        run: Execution,
        scratch: &mut [f32],
        sums: &mut [f32],
        k: &[f32],
        v: &[f32],
    ) {
        let (dk, dv) = (self.d_k, self.d_v);
        let b = ChunkBuffers::split(self, scratch);
        let (isa, chunk) = (run.isa, run.chunk);
        for (t0, n) in Self::chunks(k.len() / dk, chunk) {
            self.features(isa, k, (t0, n), false, b.xt, b.fk);
            self.advance(sums, b.fk, &v[t0 * dv..(t0 + n) * dv], n);
        }
    }

    /// Answers every query of one lane from its sums, `chunk` queries at a time.
    pub fn query(
        &self,
        run: Execution,
        scratch: &mut [f32],
        sums: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let row = self.d_v + 1;
        let b = ChunkBuffers::split(self, scratch);
        let mut acc = vec![0.0f64; CHUNK * row];
        let (isa, chunk) = (run.isa, run.chunk);
        for (t0, n) in Self::chunks(q.len() / self.d_k, chunk) {
            acc.fill(0.0);
            self.features(isa, q, (t0, n), true, b.xt, b.fq);
            self.read(sums, b.fq, n, b.part, &mut acc);
            self.answer(&acc, t0, n, out, answered);
        }
    }
}
