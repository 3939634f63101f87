//! The CUDA target: one module per configuration with the four entries of the contract
//! (`decode`, `prefill`, `absorb`, `query`) and, in a plain module, the two backward passes
//! (`backward_queries`, `backward_keys`) as `extern "C"` kernels, compiled by NVRTC for
//! real GPUs and, unchanged, by g++ against the runtime's host-execution header. Sizes, tables
//! and launch bounds are constants; the launch geometry, shared memory, register budgets and
//! performance model are the [`CudaLayout`].

mod layout;
mod options;
mod render;

pub use layout::{
    CUDA_MAX_CHUNK, CUDA_MAX_CONSTANT, CUDA_MAX_STATIC_SHARED, CUDA_REGISTERS_PER_SM,
    CudaBackwardKernel, CudaKernel, CudaLayout, CudaLimitError, CudaRun, CudaTraffic, SharedArrays,
};
pub use options::{CHECKED_ARCHITECTURES, CudaOptions};
pub use render::render;
