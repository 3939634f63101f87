//! The one contract between the public API and a backend, for states in host memory.
//!
//! [`crate::Attention`] validates a call once (the state's configuration and health, every
//! input's shape and finiteness, the output's length), runs the transaction of the denominator
//! policy and keeps the state's token count and key norms (`crate::call`); a backend only
//! computes. The CPU implements it directly (`crate::cpu::CpuBackend`), the device backends
//! through one copy of the state each way (`crate::device`).

use super::lane_backward::{BatchBackward, LaneBackward};
use crate::cpu::kernel::KernelDescriptor;
use crate::cpu::simd::Isa;
use crate::cpu::threads::Threads;
use crate::element::Element;
use crate::error::SataError;
use crate::state::State;
use crate::stats::CallStats;
use crate::tensor::{Qkv, TensorRef};

/// A backend for host states of element type `T`.
pub(crate) trait HostBackend<T: Element>: Send + Sync {
    /// One line saying which code runs, e.g. `cpu (kernel d16_v16_p4, avx2+fma)`.
    fn describe_path(&self) -> String;

    /// The specialized kernel that runs, if any.
    fn kernel(&self) -> Option<&'static KernelDescriptor> {
        None
    }

    /// Runs the specialized kernel with `isa` (supported by this CPU: the caller checked);
    /// nothing to do elsewhere.
    fn set_isa(&mut self, isa: Isa) {
        let _ = isa;
    }

    /// Runs the specialized CPU kernels' forward entries `chunk` tokens at a time (1: token by
    /// token); nothing to do elsewhere.
    fn set_chunk(&mut self, chunk: usize) {
        let _ = chunk;
    }

    /// The forward chunk of the specialized CPU kernels (1: token by token, or another path).
    fn chunk(&self) -> usize {
        1
    }

    /// Runs lanes on `threads` (the CPU backends; devices have their own parallelism).
    fn set_threads(&mut self, threads: Threads) {
        let _ = threads;
    }

    /// The threads lanes run on (and the backward's lanes, where they run one at a time).
    fn threads(&self) -> Threads {
        Threads::default()
    }

    /// Whether the backend computes on the CPU (where a training forward from an empty state
    /// may compute pairs instead of features, `crate::cpu::pairwise`).
    fn computes_on_cpu(&self) -> bool {
        false
    }

    /// What computes the backward of one lane, if the backend has its own; the reference
    /// passes run otherwise.
    fn lane_backward(&self) -> Option<&dyn LaneBackward<T>> {
        None
    }

    /// What computes the backward of every lane at once, if the backend has it (it is then
    /// preferred to [`HostBackend::lane_backward`]).
    fn batch_backward(&self) -> Option<&dyn BatchBackward<T>> {
        None
    }

    /// Causal attention: for every lane and token, add the key and value to the lane's state,
    /// then answer the query into `out`, and its denominator into `dens` unless `dens` is
    /// empty (training keeps them). Each query sees the state's keys and its own prefix.
    /// Leaves the header (token count, key norm) to the caller.
    fn prefill(
        &self,
        state: &mut State<T>,
        qkv: Qkv<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError>;

    /// Adds every key and value to its lane's state, answering nothing.
    fn absorb(
        &self,
        state: &mut State<T>,
        kv: (TensorRef<'_, T>, TensorRef<'_, T>),
    ) -> Result<(), SataError>;

    /// Answers every query from its lane's state, which stays unchanged; denominators into
    /// `dens` as for [`HostBackend::prefill`].
    fn query(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError>;
}
