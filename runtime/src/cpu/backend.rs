//! The CPU as a backend: one loop over a state's lanes for every entry, running a
//! [`LaneKernel`]: the generic program (any configuration, f32 or f64) or a specialized kernel
//! (`super::specialized`, f32).

use super::generic::{GenericProgram, Scratch};
use super::kernel::KernelDescriptor;
use super::simd::Isa;
use crate::backend::{HostBackend, LaneBackward};
use crate::element::Element;
use crate::error::SataError;
use crate::state::State;
use crate::stats::{Answer, CallStats};
use crate::tensor::{Qkv, TensorRef};

/// What the CPU runs on one (batch, head) lane: `state` is the lane's words, `q`, `k`, `v` its
/// `tokens x dim` blocks, `out` its `tokens x d_v` block; every answered query is reported to
/// `answered` with its index in the lane.
pub(crate) trait LaneKernel<T: Element>: Send + Sync {
    /// Buffers a call reuses across its lanes and tokens.
    type Scratch;
    fn describe(&self) -> String;
    fn descriptor(&self) -> Option<&'static KernelDescriptor> {
        None
    }
    fn set_isa(&mut self, isa: Isa) {
        let _ = isa;
    }
    fn scratch(&self) -> Self::Scratch;
    /// The lane kernel's own backward, if it has one.
    fn lane_backward(&self) -> Option<&dyn LaneBackward<T>> {
        None
    }
    fn prefill(
        &self,
        scratch: &mut Self::Scratch,
        state: &mut [T],
        qkv: (&[T], &[T], &[T]),
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
    );
    fn absorb(&self, scratch: &mut Self::Scratch, state: &mut [T], k: &[T], v: &[T]);
    fn query(
        &self,
        scratch: &mut Self::Scratch,
        state: &[T],
        q: &[T],
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
    );
}

/// The CPU backend running lane kernel `K`.
pub(crate) struct CpuBackend<K>(pub K);

impl<T: Element, K: LaneKernel<T>> HostBackend<T> for CpuBackend<K> {
    fn describe_path(&self) -> String {
        self.0.describe()
    }

    fn kernel(&self) -> Option<&'static KernelDescriptor> {
        self.0.descriptor()
    }

    fn set_isa(&mut self, isa: Isa) {
        self.0.set_isa(isa);
    }

    fn lane_backward(&self) -> Option<&dyn LaneBackward<T>> {
        self.0.lane_backward()
    }

    fn prefill(
        &self,
        state: &mut State<T>,
        (q, k, v): Qkv<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let mut stats = CallStats::default();
        let mut scratch = self.0.scratch();
        let (heads, before) = (state.heads(), state.tokens());
        let n = q.shape().tokens;
        let block = n * state.config().d_v();
        for (lane, lane_state) in state.lanes_mut().enumerate() {
            let out = &mut out[lane * block..(lane + 1) * block];
            let qkv = (q.lane(lane), k.lane(lane), v.lane(lane));
            self.0
                .prefill(&mut scratch, lane_state, qkv, out, &mut |t, a| {
                    if let Some(d) = dens.get_mut(lane * n + t) {
                        *d = a.denominator;
                    }
                    stats.record_answer((lane, heads), t, a, before + t as u64 + 1)
                });
        }
        Ok(stats)
    }

    fn absorb(
        &self,
        state: &mut State<T>,
        (k, v): (TensorRef<'_, T>, TensorRef<'_, T>),
    ) -> Result<(), SataError> {
        let mut scratch = self.0.scratch();
        for (lane, lane_state) in state.lanes_mut().enumerate() {
            self.0
                .absorb(&mut scratch, lane_state, k.lane(lane), v.lane(lane));
        }
        Ok(())
    }

    fn query(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let mut stats = CallStats::default();
        let mut scratch = self.0.scratch();
        let (heads, keys) = (state.heads(), state.tokens());
        let n = q.shape().tokens;
        let block = n * state.config().d_v();
        for (lane, lane_state) in state.lanes().enumerate() {
            let out = &mut out[lane * block..(lane + 1) * block];
            self.0
                .query(&mut scratch, lane_state, q.lane(lane), out, &mut |t, a| {
                    if let Some(d) = dens.get_mut(lane * n + t) {
                        *d = a.denominator;
                    }
                    stats.record_answer((lane, heads), t, a, keys)
                });
        }
        Ok(stats)
    }
}

impl<T: Element> LaneKernel<T> for GenericProgram<T> {
    type Scratch = Scratch<T>;

    fn describe(&self) -> String {
        crate::backend::BackendKind::CpuGeneric.to_string()
    }

    fn scratch(&self) -> Scratch<T> {
        GenericProgram::scratch(self)
    }

    fn prefill(
        &self,
        scratch: &mut Scratch<T>,
        state: &mut [T],
        qkv: (&[T], &[T], &[T]),
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
    ) {
        GenericProgram::prefill(self, scratch, state, qkv, out, answered)
    }

    fn absorb(&self, scratch: &mut Scratch<T>, state: &mut [T], k: &[T], v: &[T]) {
        GenericProgram::absorb(self, scratch, state, k, v)
    }

    fn query(
        &self,
        scratch: &mut Scratch<T>,
        state: &[T],
        q: &[T],
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
    ) {
        GenericProgram::query(self, scratch, state, q, out, answered)
    }
}
