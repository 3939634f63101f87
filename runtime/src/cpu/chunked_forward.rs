//! The forward entries in chunked form (`docs/design.md`, section 1): per chunk of up to
//! [`CHUNK`] tokens the state is read and advanced by matrix products over the chunk instead
//! of one sweep per token:
//!
//! - the chunk's queries read the state before it, `[N | D] = (W ∘ Phi(Q)) [S | Z]`
//!   (`super::chunk_products::read`: blocks of features summed in f32, added into f64);
//! - the pairs inside the chunk (causal prefill) are the polynomial of `q·k` directly,
//!   `A = T_P(Q K^T / c) ∘ mask`, and add `A [V, 1]`;
//! - the keys advance the state, `S += Phi(K)^T V` and `Z += Phi(K)^T 1`
//!   (`super::chunk_products::advance`).
//!
//! The features of a chunk come from `super::chunk_features` (feature-major, one row per
//! feature). Only plain (uncompensated) f32 lanes run here; the drivers keep compensated ones
//! on the token loop, whose Kahan update needs every product added to the state one at a time.

use std::borrow::Cow;

use super::chunk_features::CHUNK;
use super::chunk_features::{self, Lanes, Run, Segment, lanes};
use super::chunk_pairs;
use super::chunk_products::{self, PackedValues, READ_BLOCK, Sums};
use super::execution::Execution;
use super::features::{KEY_FIRST, QUERY_FIRST};
use super::simd::Isa;
use crate::stats::answer;

/// What the chunked entries need to know of a kernel: its sizes, its Taylor polynomial and
/// its feature program, as runs in map order cut into segments.
pub struct ChunkProgram<'a> {
    pub(super) d_k: usize,
    pub(super) d_v: usize,
    pub(super) features: usize,
    terms: usize,
    inv_scale: f32,
    /// The kernel's (generated code's) runs, or the plan's that the generic path owns.
    runs: Cow<'a, [Run]>,
    segments: Vec<Segment>,
    /// The first leaf feature (`chunk_features::first_leaf`).
    leaf: usize,
}

/// A kernel's sizes and polynomial for [`ChunkProgram::new`]: `d_k`, `d_v`, features `m`,
/// terms `P` and `1 / c`.
#[derive(Clone, Copy)]
pub struct ChunkShape {
    pub d_k: usize,
    pub d_v: usize,
    pub features: usize,
    pub terms: usize,
    pub inv_scale: f32,
}

impl<'a> ChunkProgram<'a> {
    /// The chunked entries of a kernel of `shape` whose feature map is `runs` (in map order).
    pub fn new(shape: ChunkShape, runs: impl Into<Cow<'a, [Run]>>) -> Self {
        let runs = runs.into();
        Self {
            d_k: shape.d_k,
            d_v: shape.d_v,
            features: shape.features,
            terms: shape.terms,
            inv_scale: shape.inv_scale,
            segments: chunk_features::segments(&runs, SEGMENT),
            leaf: chunk_features::first_leaf(&runs),
            runs,
        }
    }
}

/// Features per segment: a segment's query and key features are made, read and added to
/// the state while they are in L1. Feature rows are 256 bytes; the leaves (at d16 P4, 816 of
/// 969 features) go through two segment-sized buffers (20 KiB each) instead of whole-chunk
/// buffers (2 x 248 KiB at d16 P4) that spill out of L2.
const SEGMENT: usize = 64;

/// Words of f32 scratch the chunked entries need (`ChunkBuffers`).
pub const fn scratch_words(features: usize, d_k: usize, d_v: usize) -> usize {
    2 * (features + SEGMENT + d_k) * CHUNK
        + 2 * d_k * CHUNK
        + CHUNK * CHUNK
        + (d_v + 1) * CHUNK
        + chunk_products::value_scratch_words(d_v)
}

/// The scratch, split: the chunk's key and weighted query features that are parents (rows
/// below the first leaf) and one segment of leaves of each, their coordinates (`d_k x CHUNK`
/// each), the chunk-internal weights (`CHUNK x CHUNK`) and the advance's packed values.
struct ChunkBuffers<'s> {
    fk: &'s mut [Lanes],
    fq: &'s mut [Lanes],
    leaves_k: &'s mut [Lanes],
    leaves_q: &'s mut [Lanes],
    xk: &'s mut [Lanes],
    xq: &'s mut [Lanes],
    pairs: &'s mut [Lanes],
    /// The read's f32 sums (`d_v + 1` rows), zero between flushes.
    part: &'s mut [Lanes],
    packed: &'s mut [f32],
}

impl<'s> ChunkBuffers<'s> {
    fn split(p: &ChunkProgram<'_>, scratch: &'s mut [f32]) -> Self {
        let (parents, leaves) = (p.leaf, SEGMENT + p.d_k);
        let (fk, rest) = scratch.split_at_mut(parents * CHUNK);
        let (fq, rest) = rest.split_at_mut(parents * CHUNK);
        let (leaves_k, rest) = rest.split_at_mut(leaves * CHUNK);
        let (leaves_q, rest) = rest.split_at_mut(leaves * CHUNK);
        let (xk, rest) = rest.split_at_mut(p.d_k * CHUNK);
        let (xq, rest) = rest.split_at_mut(p.d_k * CHUNK);
        let (pairs, rest) = rest.split_at_mut(CHUNK * CHUNK);
        let (part, rest) = rest.split_at_mut((p.d_v + 1) * CHUNK);
        let packed = &mut rest[..chunk_products::value_scratch_words(p.d_v)];
        part.fill(0.0);
        Self {
            fk: lanes(fk),
            fq: lanes(fq),
            leaves_k: lanes(leaves_k),
            leaves_q: lanes(leaves_q),
            xk: lanes(xk),
            xq: lanes(xq),
            pairs: lanes(pairs),
            part: lanes(part),
            packed,
        }
    }
}

/// The state one pass over a chunk's feature segments works on, and what it does with it.
enum Sweep<'a> {
    /// The queries read the state.
    Read(&'a [f32]),
    /// The keys advance it.
    Advance(&'a mut [f32]),
    /// Both, each segment read before it is advanced (causal prefill).
    ReadAdvance(&'a mut [f32]),
}

impl ChunkProgram<'_> {
    /// The chunks of `n` tokens, `chunk` (at most [`CHUNK`]) at a time.
    pub(super) fn chunks(n: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..n).step_by(chunk).map(move |t0| (t0, chunk.min(n - t0)))
    }

    /// The coordinates of the chunk of tokens `t0..t0 + n` into the buffers: the queries'
    /// divided by `c` (if `q` is given), the keys' (if `k` is).
    fn coordinates(
        &self,
        (q, k): (&[f32], &[f32]),
        (t0, n): (usize, usize),
        b: &mut ChunkBuffers<'_>,
    ) {
        if !q.is_empty() {
            chunk_features::coordinates(q, self.d_k, (t0, n), self.inv_scale, b.xq);
        }
        if !k.is_empty() {
            chunk_features::coordinates(k, self.d_k, (t0, n), 1.0, b.xk);
        }
    }

    /// One pass over the chunk of `n` tokens whose coordinates are in the buffers and whose
    /// values are `vc` (`n x d_v`): per segment of features, the weighted query features
    /// `W ∘ Phi(q / c)` read the state into `acc` and/or the key features `Phi(k)` add the
    /// chunk's values to it. A segment's state words are read before they are advanced and no
    /// other segment touches them, so the read sees the state before the chunk.
    fn pass(
        &self,
        isa: Isa,
        mut sweep: Sweep<'_>,
        vc: &[f32],
        n: usize,
        b: &mut ChunkBuffers<'_>,
        acc: &mut [Sums],
    ) {
        let (m, dv) = (self.features, self.d_v);
        let read = !matches!(sweep, Sweep::Advance(_));
        // Features summed in f32 since the last flush into `acc`.
        let mut unflushed = 0;
        if read {
            chunk_features::constant(n, b.fq);
        }
        let values = match sweep {
            Sweep::Read(_) => None,
            _ => {
                chunk_features::constant(n, b.fk);
                Some(PackedValues::new(vc, dv, n, b.packed))
            }
        };
        for segment in &self.segments {
            let runs = &self.runs[segment.runs.clone()];
            let f = segment.features.clone();
            let (rows, words) = (f.clone(), f.start * dv..f.end * dv);
            let fq: &[Lanes] = match (read, segment.leaves) {
                (false, _) => &[],
                (true, false) => {
                    chunk_features::map_segment(isa, runs, b.xq, &QUERY_FIRST, b.fq);
                    &b.fq[rows.clone()]
                }
                (true, true) => {
                    let out = &mut b.leaves_q[..f.len()];
                    let x = (&*b.xq, &QUERY_FIRST);
                    chunk_features::map_leaves(isa, runs, x, b.fq, out, f.start);
                    out
                }
            };
            match &mut sweep {
                Sweep::Read(sums) => {
                    let (s, z) = sums.split_at(m * dv);
                    chunk_products::read(isa, fq, (&s[words], &z[rows]), n, b.part);
                }
                Sweep::Advance(sums) | Sweep::ReadAdvance(sums) => {
                    let (s, z) = sums.split_at_mut(m * dv);
                    let (s, z) = (&mut s[words], &mut z[rows.clone()]);
                    if read {
                        chunk_products::read(isa, fq, (s, z), n, b.part);
                    }
                    if let Some(values) = &values {
                        let fk: &[Lanes] = match segment.leaves {
                            false => {
                                chunk_features::map_segment(isa, runs, b.xk, &KEY_FIRST, b.fk);
                                &b.fk[rows]
                            }
                            true => {
                                let out = &mut b.leaves_k[..f.len()];
                                let x = (&*b.xk, &KEY_FIRST);
                                chunk_features::map_leaves(isa, runs, x, b.fk, out, f.start);
                                out
                            }
                        };
                        chunk_products::advance(isa, fk, values, (s, z));
                    }
                }
            }
            unflushed += f.len();
            if read && (unflushed >= READ_BLOCK || f.end == m) {
                chunk_products::flush(isa, b.part, n, acc);
                unflushed = 0;
            }
        }
    }

    /// `acc[j][t] += sum_{s <= t} T_P(q_t·k_s / c) [v_s, 1][j]` inside one chunk of `n`
    /// tokens whose coordinates are in the buffers and whose values are `vc` (`n x d_v`).
    fn intra(&self, isa: Isa, vc: &[f32], n: usize, b: &mut ChunkBuffers<'_>, acc: &mut [Sums]) {
        chunk_pairs::weights(isa, (b.xq, b.xk), self.terms, n, b.pairs);
        chunk_products::read(isa, &b.pairs[..n], (vc, &chunk_pairs::ONES[..n]), n, b.part);
        chunk_products::flush(isa, b.part, n, acc);
    }

    /// Writes the answers of the chunk of `n` tokens from `acc` into `out` (its `n x d_v`
    /// words) and reports them, tokens numbered from `t0`.
    fn answer(
        &self,
        acc: &[Sums],
        (t0, n): (usize, usize),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let dv = self.d_v;
        let mut sums = vec![0.0f64; dv + 1];
        for (t, o) in out.chunks_exact_mut(dv).take(n).enumerate() {
            for (s, a) in sums.iter_mut().zip(acc) {
                *s = a[t];
            }
            let r = answer(&sums, o);
            answered(t0 + t, r.denominator, r.ok);
        }
    }

    /// The keys of the chunk `(t0, n)` advance `sums` (`S` then `Z`).
    pub(super) fn advance_chunk(
        &self,
        isa: Isa,
        scratch: &mut [f32],
        sums: &mut [f32],
        (k, v): (&[f32], &[f32]),
        (t0, n): (usize, usize),
    ) {
        let mut b = ChunkBuffers::split(self, scratch);
        self.coordinates((&[], k), (t0, n), &mut b);
        let vc = &v[t0 * self.d_v..(t0 + n) * self.d_v];
        self.pass(isa, Sweep::Advance(sums), vc, n, &mut b, &mut []);
    }

    /// The answers of the chunk `(t0, n)` into `out` (its `n x d_v` words), reported to
    /// `answered`: its queries read `sums` (`None`: a state of zeros, whose reads are exactly
    /// zero and skipped) and, given the keys and values (causal), the pairs inside the chunk.
    pub(super) fn read_chunk(
        &self,
        (isa, scratch): (Isa, &mut [f32]),
        sums: Option<&[f32]>,
        (q, k, v): (&[f32], &[f32], &[f32]),
        (t0, n): (usize, usize),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let dv = self.d_v;
        let mut b = ChunkBuffers::split(self, scratch);
        let mut acc: Vec<Sums> = vec![[0.0; CHUNK]; dv + 1];
        self.coordinates((q, k), (t0, n), &mut b);
        if let Some(sums) = sums {
            self.pass(isa, Sweep::Read(sums), &[], n, &mut b, &mut acc);
        }
        if !k.is_empty() {
            self.intra(isa, &v[t0 * dv..(t0 + n) * dv], n, &mut b, &mut acc);
        }
        self.answer(&acc, (t0, n), out, answered);
    }

    /// Causal attention over one plain lane (`sums`: `S` then `Z`), `chunk` tokens at a time;
    /// split over the current rayon pool if `run` says so (`super::chunked_parallel`, the
    /// same bits).
    pub fn prefill(
        &self,
        run: Execution,
        scratch: &mut [f32],
        sums: &mut [f32],
        (q, k, v): (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        if run.parallel_chunks {
            return self.prefill_parallel(run, sums, (q, k, v), out, answered);
        }
        let (dk, dv) = (self.d_k, self.d_v);
        let mut b = ChunkBuffers::split(self, scratch);
        let mut acc: Vec<Sums> = vec![[0.0; CHUNK]; dv + 1];
        // While the state is all zeros (a fresh one, before its first keys) the reads give
        // exactly zeros and are skipped.
        let mut zero = sums.iter().all(|&x| x == 0.0);
        let (isa, chunk) = (run.isa, run.chunk);
        for (t0, n) in Self::chunks(q.len() / dk, chunk) {
            acc.iter_mut().for_each(|a| a.fill(0.0));
            let vc = &v[t0 * dv..(t0 + n) * dv];
            self.coordinates((q, k), (t0, n), &mut b);
            // Each segment of the state is read before it is advanced.
            let sweep = match zero {
                true => Sweep::Advance(sums),
                false => Sweep::ReadAdvance(sums),
            };
            self.pass(isa, sweep, vc, n, &mut b, &mut acc);
            self.intra(isa, vc, n, &mut b, &mut acc);
            let out = &mut out[t0 * dv..(t0 + n) * dv];
            self.answer(&acc, (t0, n), out, answered);
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
        if run.parallel_chunks {
            return self.absorb_parallel(run, sums, (k, v));
        }
        for t in Self::chunks(k.len() / self.d_k, run.chunk) {
            self.advance_chunk(run.isa, scratch, sums, (k, v), t);
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
        if run.parallel_chunks {
            return self.query_parallel(run, sums, q, out, answered);
        }
        let dv = self.d_v;
        for (t0, n) in Self::chunks(q.len() / self.d_k, run.chunk) {
            let out = &mut out[t0 * dv..(t0 + n) * dv];
            let x = (q, &[][..], &[][..]);
            let on = (run.isa, &mut scratch[..]);
            self.read_chunk(on, Some(sums), x, (t0, n), out, answered);
        }
    }
}
