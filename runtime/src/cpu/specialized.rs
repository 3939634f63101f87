//! A specialized (generated) kernel as the CPU backend's lane kernel, on the instruction set
//! chosen at run time.

use super::backend::LaneKernel;
use super::driver::backward_scratch_words;
use super::features::scratch_words;
use super::kernel::{BackwardLane, KernelDescriptor, SpecializedKernel};
use super::scratch::KernelScratch;
use super::simd::Isa;
use crate::backend::{LaneBackward, LaneGradients, LaneInputs};
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
            self.isa,
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
