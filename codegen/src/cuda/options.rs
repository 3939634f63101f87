//! Options of the CUDA target.

use crate::plan::Unroll;

/// Architectures the project compiles and checks every CUDA kernel for (A100's sm_80 and
/// H100's sm_90): the NVRTC tests, `sata emit --target cuda --report` and `sata info`.
pub const CHECKED_ARCHITECTURES: [u32; 2] = [80, 90];

/// Options of the CUDA renderer and layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Kernels for Kahan-compensated states (`Accumulation::Compensated`: per lane the sums,
    /// then their compensation). Same geometry, shared memory and register budgets.
    pub compensated: bool,
    /// The feature program's form; `None` picks it by `gpu::gpu_unroll`.
    pub unroll: Option<Unroll>,
}

impl CudaOptions {
    pub fn compensated(compensated: bool) -> Self {
        Self {
            compensated,
            unroll: None,
        }
    }
}
