//! The `cuda` backend: CUDA C rendered by the generator from the same kernel plan as the CPU
//! and WGSL kernels, compiled by NVRTC and launched through cudarc on an NVIDIA GPU, or
//! compiled by g++ against a host-execution header and run on the CPU ([`Executor::Host`]),
//! through the same launch code. This folder holds only the device's memory, compilation and
//! launch code ([`Cuda`]); the calls are `crate::device`'s, shared with wgpu.
//!
//! [`CudaAttention`] works on [`CudaState`]s that stay in the executor's memory between
//! calls. States move to and from the host (`CudaState::download`, `CudaAttention::upload`)
//! in the layout of [`crate::State`], so checkpoints and continuation work across backends.
//!
//! The CUDA libraries are loaded at run time: a build without a GPU or CUDA toolkit works,
//! and asking for the GPU there is one error line. `unsafe` lives in `ffi` and in the two
//! `launch` functions of the executors, whose only caller (`Cuda`'s launch) receives buffers
//! the device driver sized from the plan.

mod backend;
mod ffi;
mod gpu;
mod host;
pub mod launch;
pub mod nvrtc;

use sata_codegen::KernelConfig;

pub use backend::{Cuda, CudaMemory, Executor};
pub use gpu::gpu_summary;
pub use host::{HOST_EXEC_HEADER, HostLibrary, ThreadOrder};

use crate::device::{DeviceAttention, DeviceState};
use crate::error::SataError;

/// Attention with the CUDA kernels, on states that stay in the executor's memory.
pub type CudaAttention = DeviceAttention<Cuda>;
/// A state in a CUDA executor's memory.
pub type CudaState = DeviceState<Cuda>;

/// The attention the backend contract opens for [`crate::BackendKind::Cuda`] and
/// [`crate::BackendKind::CudaHost`].
pub(crate) fn open(config: KernelConfig, executor: Executor) -> Result<CudaAttention, SataError> {
    CudaAttention::new(config, executor)
}
