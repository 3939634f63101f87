//! The chunked forward of one lane split over the current rayon pool, for calls with fewer
//! lanes than threads (a long prompt of one sequence and head). The work items are the
//! lane's chunks, each computing exactly what the sequential form (`super::chunked_forward`)
//! computes for it:
//!
//! 1. the keys of each chunk make its state increment `D_c = Phi(K_c)^T [V_c, 1]` in a buffer
//!    of `-0.0` words: the advance adds one sum per word, and `-0.0 + d` is `d` exactly;
//! 2. the states after each chunk follow in chunk order, `S_c = S_{c-1} + D_c` word by word:
//!    the very additions the advance makes on the state in the sequential form (in parallel
//!    over ranges of words, which are independent);
//! 3. the queries of each chunk read the state before it and add the pairs inside the chunk,
//!    as the sequential form does (a segment is read there before it is advanced).
//!
//! Outputs, denominators and the final state are therefore bit for bit the sequential form's
//! for any thread count and schedule (`tests/threads.rs`, and the test below). Chunks go
//! through in groups of a few per thread, so the states kept between the phases stay bounded.

use rayon::prelude::*;

use super::chunked_forward::{ChunkProgram, scratch_words};
use super::execution::Execution;
use super::scratch::KernelScratch;
use super::simd::Isa;

/// Chunks per thread of one group.
const CHUNKS_PER_THREAD: usize = 8;
/// Most bytes of the states one group keeps.
const GROUP_BYTES: usize = 64 << 20;
/// Words of state per work item of phase 2.
const PREFIX_WORDS: usize = 1 << 12;

/// Chunks `(t0, n)` of one call.
type Chunks = [(usize, usize)];

/// Answers of one chunk, in order: denominator and whether the output is usable.
type Answers = Vec<(f64, bool)>;

impl ChunkProgram<'_> {
    fn buffer(&self) -> KernelScratch {
        KernelScratch::take(scratch_words(self.features, self.d_k, self.d_v))
    }

    /// Chunks per group for states of `words` words.
    fn group(words: usize) -> usize {
        let by_threads = CHUNKS_PER_THREAD * rayon::current_num_threads();
        (GROUP_BYTES / (4 * words).max(1)).clamp(1, by_threads.max(1))
    }

    /// Phase 1: the state increment of each chunk into its block of `deltas`.
    fn increments(&self, isa: Isa, chunks: &Chunks, kv: (&[f32], &[f32]), deltas: &mut [f32]) {
        let words = deltas.len() / chunks.len();
        deltas
            .par_chunks_mut(words)
            .zip(chunks)
            .for_each(|(delta, &chunk)| {
                delta.fill(-0.0);
                self.advance_chunk(isa, &mut self.buffer(), delta, kv, chunk);
            });
    }

    /// Phase 3: the answers of each chunk into `out` (the chunks' outputs, in order); chunk
    /// `c` reads `sums_before(c)` (`None`: zeros), then reports in token order.
    fn answers<'s>(
        &self,
        isa: Isa,
        chunks: &Chunks,
        sums_before: impl Fn(usize) -> Option<&'s [f32]> + Sync,
        qkv: (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let rows = chunks[0].1 * self.d_v;
        let answers: Vec<Answers> = out
            .par_chunks_mut(rows)
            .zip(chunks)
            .enumerate()
            .map(|(c, (out, &chunk))| {
                let mut answers = Answers::with_capacity(chunk.1);
                let mut record = |_: usize, d: f64, ok: bool| answers.push((d, ok));
                let on = (isa, &mut self.buffer()[..]);
                self.read_chunk(on, sums_before(c), qkv, chunk, out, &mut record);
                answers
            })
            .collect();
        for (t, (d, ok)) in (chunks[0].0..).zip(answers.into_iter().flatten()) {
            answered(t, d, ok);
        }
    }

    /// Phases 1 and 2 over the chunks of `kv`, a group at a time: `then(group, before,
    /// states)` sees the sums before the group and the states after each of its chunks, and
    /// `sums` ends as the state after the last chunk.
    fn advance_groups(
        &self,
        run: Execution,
        sums: &mut [f32],
        kv: (&[f32], &[f32]),
        mut then: impl FnMut(&Chunks, &[f32], &[f32]),
    ) {
        let words = sums.len();
        let chunks: Vec<_> = Self::chunks(kv.0.len() / self.d_k, run.chunk).collect();
        let group = Self::group(words);
        let mut states = vec![0.0f32; group.min(chunks.len()) * words];
        for chunks in chunks.chunks(group) {
            let states = &mut states[..chunks.len() * words];
            self.increments(run.isa, chunks, kv, states);
            prefix(sums, states);
            then(chunks, sums, states);
            sums.copy_from_slice(&states[states.len() - words..]);
        }
    }

    /// [`ChunkProgram::prefill`] with the chunks split over the current pool.
    pub(super) fn prefill_parallel(
        &self,
        run: Execution,
        sums: &mut [f32],
        (q, k, v): (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let (dv, words) = (self.d_v, sums.len());
        // The sequential form skips the reads of a state of zeros, in its first chunk only.
        let mut zero = sums.iter().all(|&x| x == 0.0);
        self.advance_groups(run, sums, (k, v), |chunks, before, states| {
            let before = (!zero).then_some(before);
            let sums_before = |c: usize| match c {
                0 => before,
                c => Some(&states[(c - 1) * words..c * words]),
            };
            let (t0, (last, n)) = (chunks[0].0, chunks[chunks.len() - 1]);
            let out = &mut out[t0 * dv..(last + n) * dv];
            self.answers(run.isa, chunks, sums_before, (q, k, v), out, answered);
            zero = false;
        });
    }

    /// [`ChunkProgram::absorb`] with the chunks split over the current pool.
    pub(super) fn absorb_parallel(&self, run: Execution, sums: &mut [f32], kv: (&[f32], &[f32])) {
        self.advance_groups(run, sums, kv, |_, _, _| {});
    }

    /// [`ChunkProgram::query`] with the chunks split over the current pool: every chunk
    /// reads the same sums.
    pub(super) fn query_parallel(
        &self,
        run: Execution,
        sums: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, f64, bool),
    ) {
        let chunks: Vec<_> = Self::chunks(q.len() / self.d_k, run.chunk).collect();
        let x = (q, &[][..], &[][..]);
        self.answers(run.isa, &chunks, |_| Some(sums), x, out, answered);
    }
}

/// Phase 2: block `c` of `states` (each `before.len()` words) becomes `before + D_0 + ... +
/// D_c`, added in that order word by word, in parallel over ranges of words.
fn prefix(before: &[f32], states: &mut [f32]) {
    let words = before.len();
    // Range `r` of every block, gathered per range: the work items.
    let mut ranges: Vec<Vec<&mut [f32]>> = Vec::new();
    for block in states.chunks_mut(words) {
        for (r, part) in block.chunks_mut(PREFIX_WORDS).enumerate() {
            match ranges.get_mut(r) {
                Some(parts) => parts.push(part),
                None => ranges.push(vec![part]),
            }
        }
    }
    ranges.into_par_iter().enumerate().for_each(|(r, parts)| {
        let mut previous = &before[r * PREFIX_WORDS..(r * PREFIX_WORDS + parts[0].len())];
        for part in parts {
            for (x, &p) in part.iter_mut().zip(previous) {
                *x += p;
            }
            previous = part;
        }
    });
}

#[cfg(test)]
mod tests {
    use sata_codegen::{KernelConfig, KernelPlan};

    use super::super::chunk_features::CHUNK;
    use super::super::chunk_features::plan_runs;
    use super::super::chunked_forward::ChunkShape;
    use super::*;

    /// Inputs that are neither zero nor round.
    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + salt * 13) as f32 * 0.61).sin() * 0.8)
            .collect()
    }

    /// The split prefill, absorb and query against the sequential ones, bit for bit, on
    /// several groups and a partial last chunk, from a fresh and from a used state.
    #[test]
    fn split_chunks_give_the_sequential_bits() {
        let config = KernelConfig::new(8, 5, 4).unwrap();
        let plan = KernelPlan::new(&config);
        let (dk, dv, m) = (8, 5, plan.features);
        let shape = ChunkShape {
            d_k: dk,
            d_v: dv,
            features: m,
            terms: 4,
            inv_scale: (1.0 / config.scale()) as f32,
        };
        let p = ChunkProgram::new(shape, plan_runs(&plan, false));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let n = CHUNK * (3 * CHUNKS_PER_THREAD + 1) + 17;
        let (q, k, v) = (values(n * dk, 1), values(n * dk, 2), values(n * dv, 3));
        let mut buffer = vec![0.0f32; scratch_words(m, dk, dv)];
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let run = |parallel_chunks| Execution {
                isa,
                chunk: CHUNK,
                parallel_chunks,
            };
            for start in [vec![0.0f32; m * (dv + 1)], values(m * (dv + 1), 4)] {
                let mut results = Vec::new();
                for split in [false, true] {
                    let (mut sums, mut out) = (start.clone(), vec![f32::NAN; 2 * n * dv]);
                    let (prefilled, queried) = out.split_at_mut(n * dv);
                    let mut dens = Vec::new();
                    let mut record = |t: usize, d: f64, ok: bool| dens.push((t, d.to_bits(), ok));
                    pool.install(|| {
                        let qkv = (&q[..], &k[..], &v[..]);
                        p.prefill(
                            run(split),
                            &mut buffer,
                            &mut sums,
                            qkv,
                            prefilled,
                            &mut record,
                        );
                        p.absorb(run(split), &mut buffer, &mut sums, &k, &v);
                        p.query(run(split), &mut buffer, &sums, &q, queried, &mut record);
                    });
                    assert_eq!(dens.len(), 2 * n);
                    assert!(out.iter().all(|x| x.is_finite()));
                    let bits = |x: &[f32]| x.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
                    results.push((bits(&out), bits(&sums), dens));
                }
                assert!(results[0] == results[1], "{isa}: the split chunks differ");
            }
        }
    }
}
