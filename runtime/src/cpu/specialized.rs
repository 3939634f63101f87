//! A specialized (generated) kernel as the CPU backend's lane kernel, on the instruction set
//! chosen at run time.

use super::backend::{LaneKernel, Split, answers};
use super::driver::{backward_scratch_words, chunked_scratch_words};
use super::features::scratch_words;
use super::kernel::{BackwardLane, Execution, KernelDescriptor, SpecializedKernel};
use super::scratch::KernelScratch;
use super::simd::Isa;
use crate::backend::{LaneBackward, LaneGradients, LaneInputs};
use crate::stats::Answer;

/// A specialized kernel, the instruction set it runs with and its forward chunk.
pub(crate) struct Specialized {
    kernel: &'static dyn SpecializedKernel,
    run: Execution,
}

impl Specialized {
    /// `kernel` on the widest instruction set this CPU supports, with the default chunk for
    /// its size.
    pub fn new(kernel: &'static dyn SpecializedKernel) -> Self {
        let features = kernel.descriptor().features;
        Self {
            kernel,
            run: Execution {
                isa: Isa::detect(),
                chunk: super::chunk_choice::default_chunk(features),
                parallel_chunks: false,
            },
        }
    }
}

impl LaneKernel<f32> for Specialized {
    type Scratch = KernelScratch;

    fn describe(&self) -> String {
        format!(
            "{} (kernel {}, {}, {})",
            crate::backend::BackendKind::Cpu,
            self.kernel.descriptor().name,
            self.run.isa,
            super::chunk_choice::describe(self.run.chunk)
        )
    }

    fn descriptor(&self) -> Option<&'static KernelDescriptor> {
        Some(self.kernel.descriptor())
    }

    fn execution(&self) -> Option<Execution> {
        Some(self.run)
    }

    fn execution_mut(&mut self) -> Option<&mut Execution> {
        Some(&mut self.run)
    }

    fn scratch(&self) -> KernelScratch {
        let d = self.kernel.descriptor();
        let chunked = match self.run.chunk > 1 {
            true => chunked_scratch_words(d.features, d.d_k, d.d_v),
            false => 0,
        };
        KernelScratch::take(scratch_words(d.features).max(chunked))
    }

    fn lane_backward(&self) -> Option<&dyn LaneBackward<f32>> {
        Some(self)
    }

    fn prefill(
        &self,
        scratch: &mut KernelScratch,
        state: &mut [f32],
        qkv: (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    ) {
        let run = self.run.splitting(split.0);
        self.kernel
            .prefill(run, scratch, state, qkv, out, &mut answers(answered));
    }

    fn absorb(
        &self,
        scratch: &mut KernelScratch,
        state: &mut [f32],
        (k, v): (&[f32], &[f32]),
        split: Split,
    ) {
        let run = self.run.splitting(split.0);
        self.kernel.absorb(run, scratch, state, k, v);
    }

    fn query(
        &self,
        scratch: &mut KernelScratch,
        state: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    ) {
        let run = self.run.splitting(split.0);
        self.kernel
            .query(run, scratch, state, q, out, &mut answers(answered));
    }
}

/// The kernel's generated backward on one lane; pass B's state starts as the final state's
/// gradient.
impl LaneBackward<f32> for Specialized {
    fn describe(&self) -> String {
        LaneKernel::<f32>::describe(self)
    }

    fn lane(&self, causal: bool, x: &LaneInputs<'_, f32>, g: LaneGradients<'_, f32>) {
        match x.d_final {
            Some(d) => g.d_initial.copy_from_slice(d),
            None => g.d_initial.fill(0.0),
        }
        let d = self.kernel.descriptor();
        let mut scratch = KernelScratch::take(backward_scratch_words(d.features, d.d_k, d.d_v + 1));
        self.kernel.backward(
            self.run.isa,
            &mut scratch,
            causal,
            BackwardLane {
                q: x.q,
                k: x.k,
                v: x.v,
                dout: x.dout,
                state: x.initial,
                grad_state: g.d_initial,
                dq: g.dq,
                dk: g.dk,
                dv: g.dv,
            },
        );
    }
}
