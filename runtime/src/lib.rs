//! The SATA runtime: symmetry-aware Taylor attention with a fixed-size state.
//!
//! - [`Attention`]: causal prefill, one-token decode, non-causal / cross attention and
//!   continuation from a [`State`], in `f32` or `f64`;
//! - [`State`]: `S_p` and `Z_p` for every (batch, head), saved and loaded through
//!   [`checkpoint`];
//! - [`backend`]: backend names and the visible selection of the path that runs;
//! - [`kernel`]: specialized (generated) CPU kernels, their registry and drivers; [`simd`]: the
//!   explicit-SIMD state sweeps they use, chosen at run time;
//! - every entry point returns [`SataError`] on bad input instead of panicking.
//!
//! Tensors are `[batch, heads, tokens, dim]` row-major slices wrapped in [`TensorRef`].

mod aligned;
mod attention;
pub mod backend;
pub mod checkpoint;
mod checks;
mod cpu_generic;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod device_backend;
mod element;
mod error;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod kernel;
mod scratch;
pub mod simd;
mod state;
mod stats;
mod tensor;

pub use attention::{Attended, Attention};
pub use backend::{BackendKind, BackendRequest, BackendUnavailable, Selection};
pub use element::{DType, Element};
pub use error::{QueryIndex, SataError};
pub use kernel::{KernelDescriptor, SpecializedKernel};
pub use sata_codegen::{ConfigError, KernelConfig};
pub use simd::Isa;
pub use state::{Accumulation, State};
pub use stats::{CallStats, DenominatorPolicy, TINY_WEIGHT_PER_KEY};
pub use tensor::{Role, Shape, Tensor, TensorRef};
