//! The contract of a backend whose kernels run in memory of their own (wgpu, CUDA): memory,
//! compilation and launch, nothing else. Everything a call does besides (checks, statistics,
//! the denominator policy, answering queries from the kernels' sums, states moving to and from
//! the host) is written once over this trait, in `super::kernels` and `super::attention`.

use std::sync::Arc;

use sata_codegen::contract::{Pass, Phase};
use sata_codegen::{Entry, KernelPlan};

use crate::backend::BackendKind;
use crate::error::SataError;
use crate::state::Accumulation;

mod sealed {
    /// Only this crate's backends implement [`super::Device`].
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// A device the generated kernels run on. Implemented by the wgpu backend (`crate::wgpu::Wgpu`)
/// and the CUDA backend (`crate::cuda::Cuda`); sealed.
///
/// Memory holds f32 words. States are laid out as the kernel contract says
/// (`sata_codegen::contract`): lanes every `lane_stride` words, exactly as a host
/// [`crate::State`] keeps them, so a state moves between host and device in one copy.
pub trait Device: Clone + Send + Sync + 'static + Sealed {
    /// Words in the device's memory.
    type Memory: Send + Sync;
    /// One configuration's compiled kernels, plain or compensated.
    type Kernels: Send + Sync;
    /// The backend's family name, the first word of `describe_path` (`wgpu`, `cuda`).
    const NAME: &'static str;

    /// The backend, as selection names it.
    fn kind(&self) -> BackendKind;
    /// The device in a few words, e.g. `NVIDIA H100 80GB HBM3, sm_90, 132 SMs`.
    fn describe(&self) -> String;
    /// The kernels of `plan` for states that accumulate as `accumulation` says, compiled on
    /// first use and then shared by the process.
    fn compile(
        &self,
        plan: &KernelPlan,
        accumulation: Accumulation,
    ) -> Result<Arc<Self::Kernels>, SataError>;
    /// `words` zeroed words (at least one).
    fn alloc(&self, words: usize) -> Result<Self::Memory, SataError>;
    /// A copy of `data` (at least one word, so that an unused input is still a valid buffer).
    fn upload(&self, data: &[f32]) -> Result<Self::Memory, SataError>;
    /// Overwrites the first `data.len()` words of `memory`.
    fn write(&self, memory: &mut Self::Memory, data: &[f32]) -> Result<(), SataError>;
    /// Copies the first `out.len()` words of `memory` to the host, after everything launched
    /// before.
    fn read(&self, memory: &Self::Memory, out: &mut [f32]) -> Result<(), SataError>;
    /// A copy of `memory` in device memory (the backup of a call that may be undone).
    fn duplicate(&self, memory: &Self::Memory) -> Result<Self::Memory, SataError>;
    /// Sets every word of `memory` to zero.
    fn zero(&self, memory: &mut Self::Memory) -> Result<(), SataError>;
    /// Launches one entry of `kernels` (compiled for the state's accumulation) over the
    /// buffers of `launch`.
    fn launch(
        &self,
        kernels: &Self::Kernels,
        launch: Launch<'_, Self::Memory>,
    ) -> Result<(), SataError>;
    /// Launches one phase of one backward pass of `kernels` (the plain kernels: the
    /// backward's states are plain) over the buffers of `launch`.
    fn launch_backward(
        &self,
        kernels: &Self::Kernels,
        launch: BackwardLaunch<'_, Self::Memory>,
    ) -> Result<(), SataError>;
    /// Waits for everything launched so far.
    fn synchronize(&self) -> Result<(), SataError>;
    /// Fails unless states made on `other` can be used here (CUDA: the same executor).
    fn accepts(&self, other: &Self) -> Result<(), SataError> {
        let _ = other;
        Ok(())
    }
}

/// How a launch may touch the state.
pub enum StateAccess<'a, M> {
    /// Entries that only answer queries.
    Read(&'a M),
    /// Entries that add keys and values.
    Write(&'a mut M),
}

impl<M> StateAccess<'_, M> {
    pub(crate) fn memory(&self) -> &M {
        match self {
            StateAccess::Read(m) => m,
            StateAccess::Write(m) => m,
        }
    }
}

/// The buffers and counts of one launch, in the kernel contract's order. Only this crate
/// builds one (its fields are private), and it does so with every buffer sized for the
/// launch: `lanes * tokens` rows of `d_k`, `d_k` and `d_v` words for the inputs an entry
/// reads (any buffer for those it does not), the state's `lanes` lanes, and `lanes * tokens`
/// rows of `d_v + 1` zeroed words for the output of an entry that answers. A device's launch
/// may rely on that.
pub struct Launch<'a, M> {
    pub(crate) entry: Entry,
    pub(crate) q: &'a M,
    pub(crate) k: &'a M,
    pub(crate) v: &'a M,
    pub(crate) state: StateAccess<'a, M>,
    pub(crate) out: &'a mut M,
    pub(crate) lanes: usize,
    pub(crate) tokens: usize,
}

/// The buffers and counts of one launch of a backward pass in one phase, in the order of
/// `sata_codegen::contract::BackwardBuffer::ALL`. Built only by this crate
/// (`super::backward`), with every buffer sized for the launch: `lanes * tokens` rows of the
/// inputs the phase reads, the state's `lanes` lanes every `lane_stride(state_words)` words,
/// `lanes * tokens` rows of `pass.gradient_row(d_k, d_v)` words of gradients for a phase
/// that reads, and `lanes` lanes of `backward_scratch_words(plan)` words of scratch.
/// `tokens` counts the rows per lane of the buffers the phase visits (keys when pass A adds,
/// queries when pass B adds, both, equal, when a causal pass steps).
pub struct BackwardLaunch<'a, M> {
    pub(crate) pass: Pass,
    pub(crate) phase: Phase,
    pub(crate) q: &'a M,
    pub(crate) k: &'a M,
    pub(crate) v: &'a M,
    pub(crate) dout: &'a M,
    pub(crate) state: &'a mut M,
    pub(crate) grad: &'a mut M,
    pub(crate) scratch: &'a mut M,
    pub(crate) lanes: usize,
    pub(crate) tokens: usize,
}
