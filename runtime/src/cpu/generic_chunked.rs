//! The generic path in f32 with the chunked forward: the configurations no specialized kernel
//! covers (another size or scale, no `#[sata::kernel]`) prefill, absorb and query in chunks
//! through the same code as the specialized kernels (`super::chunked_forward`), fed the
//! plan's feature runs instead of generated ones. Decode steps, short calls and compensated
//! lanes run the generic token loop (`super::generic`), which is also the whole f64 path.

use sata_codegen::{KernelConfig, KernelPlan};

use super::backend::{LaneKernel, Split, answers};
use super::chunk_choice;
use super::chunk_features::plan_runs;
use super::chunked_forward::{ChunkProgram, ChunkShape, scratch_words};
use super::driver::MIN_CHUNKED_TOKENS;
use super::execution::Execution;
use super::generic::{GenericProgram, Scratch};
use super::scratch::KernelScratch;
use super::simd::Isa;
use crate::stats::Answer;

/// The generic f32 program with its chunked form.
pub(crate) struct GenericChunked {
    program: GenericProgram<f32>,
    chunked: ChunkProgram<'static>,
    run: Execution,
}

/// The token loop's buffers and, for a chunked forward, the chunk's.
pub(crate) struct GenericScratch {
    tokens: Scratch<f32>,
    chunk: Option<KernelScratch>,
}

impl GenericChunked {
    pub fn new(config: &KernelConfig) -> Self {
        let plan = KernelPlan::new(config);
        let (m, d_k, d_v) = (plan.features, config.d_k(), config.d_v());
        let shape = ChunkShape {
            d_k,
            d_v,
            features: m,
            terms: config.terms(),
            inv_scale: (1.0 / config.scale()) as f32,
        };
        Self {
            program: GenericProgram::new(config),
            chunked: ChunkProgram::new(shape, plan_runs(&plan, false)),
            run: Execution {
                isa: Isa::detect(),
                chunk: chunk_choice::default_chunk(m),
                parallel_chunks: false,
            },
        }
    }

    /// Sums per lane, `m (d_v + 1)`: a longer lane is compensated.
    fn words(&self) -> usize {
        self.chunked.features * (self.chunked.d_v + 1)
    }

    /// The chunked form's way of running a call of `x` (`tokens x d_k` words) on a lane of
    /// `words` words, if it takes the call.
    fn chunked(&self, x: &[f32], words: usize, split: Split) -> Option<Execution> {
        let tokens = x.len() / self.chunked.d_k;
        let wanted = self.run.chunk > 1 && tokens >= MIN_CHUNKED_TOKENS && words == self.words();
        wanted.then_some(self.run.splitting(split.0))
    }
}

impl LaneKernel<f32> for GenericChunked {
    type Scratch = GenericScratch;

    /// `cpu-generic` for the token loop (as the f64 path), with the instruction set and the
    /// chunk when chunked.
    fn describe(&self) -> String {
        let name = crate::backend::BackendKind::CpuGeneric;
        match self.run.chunk {
            1 => name.to_string(),
            n => format!("{name} ({}, {})", self.run.isa, chunk_choice::describe(n)),
        }
    }

    fn execution(&self) -> Option<Execution> {
        Some(self.run)
    }

    fn execution_mut(&mut self) -> Option<&mut Execution> {
        Some(&mut self.run)
    }

    fn scratch(&self) -> GenericScratch {
        let c = &self.chunked;
        GenericScratch {
            tokens: self.program.scratch(),
            chunk: (self.run.chunk > 1)
                .then(|| KernelScratch::take(scratch_words(c.features, c.d_k, c.d_v))),
        }
    }

    fn prefill(
        &self,
        scratch: &mut GenericScratch,
        state: &mut [f32],
        qkv: (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    ) {
        let run = self.chunked(qkv.0, state.len(), split);
        match (run, scratch.chunk.as_deref_mut()) {
            (Some(run), Some(buffer)) => {
                let answered = &mut answers(answered);
                self.chunked.prefill(run, buffer, state, qkv, out, answered)
            }
            _ => self
                .program
                .prefill(&mut scratch.tokens, state, qkv, out, answered),
        }
    }

    fn absorb(
        &self,
        scratch: &mut GenericScratch,
        state: &mut [f32],
        (k, v): (&[f32], &[f32]),
        split: Split,
    ) {
        let run = self.chunked(k, state.len(), split);
        match (run, scratch.chunk.as_deref_mut()) {
            (Some(run), Some(buffer)) => self.chunked.absorb(run, buffer, state, k, v),
            _ => self.program.absorb(&mut scratch.tokens, state, k, v),
        }
    }

    fn query(
        &self,
        scratch: &mut GenericScratch,
        state: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    ) {
        // A compensated lane's sums come first; reading them alone is accurate to an ulp.
        let words = self.words();
        let run = self.chunked(q, words, split);
        match (run, scratch.chunk.as_deref_mut()) {
            (Some(run), Some(buffer)) => {
                let (sums, answered) = (&state[..words], &mut answers(answered));
                self.chunked.query(run, buffer, sums, q, out, answered)
            }
            _ => self
                .program
                .query(&mut scratch.tokens, state, q, out, answered),
        }
    }
}
