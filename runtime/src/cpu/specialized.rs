//! A specialized (generated) kernel as the CPU backend's lane kernel, on the instruction set
//! chosen at run time.

use super::backend::LaneKernel;
use super::features::scratch_words;
use super::kernel::{KernelDescriptor, SpecializedKernel};
use super::scratch::KernelScratch;
use super::simd::Isa;
use crate::stats::Answer;

/// A specialized kernel and the instruction set it runs with.
pub(crate) struct Specialized {
    kernel: &'static dyn SpecializedKernel,
    isa: Isa,
}

impl Specialized {
    /// `kernel` on the widest instruction set this CPU supports.
    pub fn new(kernel: &'static dyn SpecializedKernel) -> Self {
        Self {
            kernel,
            isa: Isa::detect(),
        }
    }
}

impl LaneKernel<f32> for Specialized {
    type Scratch = KernelScratch;

    fn describe(&self) -> String {
        format!(
            "{} (kernel {}, {})",
            crate::backend::BackendKind::Cpu,
            self.kernel.descriptor().name,
            self.isa
        )
    }

    fn descriptor(&self) -> Option<&'static KernelDescriptor> {
        Some(self.kernel.descriptor())
    }

    fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    fn scratch(&self) -> KernelScratch {
        KernelScratch::take(scratch_words(self.kernel.descriptor().features))
    }

    fn prefill(
        &self,
        scratch: &mut KernelScratch,
        state: &mut [f32],
        qkv: (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
    ) {
        self.kernel.prefill(
            self.isa,
            scratch,
            state,
            qkv,
            out,
            &mut |t, denominator, ok| answered(t, Answer { denominator, ok }),
        );
    }

    fn absorb(&self, scratch: &mut KernelScratch, state: &mut [f32], k: &[f32], v: &[f32]) {
        self.kernel.absorb(self.isa, scratch, state, k, v);
    }

    fn query(
        &self,
        scratch: &mut KernelScratch,
        state: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: &mut dyn FnMut(usize, Answer),
    ) {
        self.kernel.query(
            self.isa,
            scratch,
            state,
            q,
            out,
            &mut |t, denominator, ok| answered(t, Answer { denominator, ok }),
        );
    }
}
