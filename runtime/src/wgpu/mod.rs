//! The `wgpu` backend: WGSL compute shaders rendered by the generator from the same kernel
//! plan as the CPU kernels, run on any adapter wgpu reaches (Vulkan, Metal, DX12; Mesa's
//! llvmpipe on machines without a GPU). This folder holds only the device's memory and launch
//! code ([`Wgpu`]); the calls are `crate::device`'s, shared with CUDA.
//!
//! [`WgpuAttention`] works on [`WgpuState`]s that stay on the device between calls. States
//! move to and from the host (`WgpuState::download`, `WgpuAttention::upload`) in the layout of
//! [`crate::State`], so checkpoints and continuation work across backends.
//! [`crate::Attention`] with the `wgpu` backend runs the same kernels on host states (one copy
//! of the state each way per call).

mod context;
mod device;
mod kernel;

use sata_codegen::KernelConfig;

pub use context::{AdapterSummary, adapter};
pub use device::Wgpu;

use crate::device::{DeviceAttention, DeviceState};
use crate::error::SataError;

/// Attention with the WGSL kernels, on states that stay on the device.
pub type WgpuAttention = DeviceAttention<Wgpu>;
/// A state in the wgpu device's memory.
pub type WgpuState = DeviceState<Wgpu>;

/// The attention the backend contract opens for [`crate::BackendKind::Wgpu`].
pub(crate) fn open(config: KernelConfig) -> Result<WgpuAttention, SataError> {
    WgpuAttention::new(config)
}
