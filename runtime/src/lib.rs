//! The SATA runtime: symmetry-aware Taylor attention with a fixed-size state.
//!
//! - [`Attention`]: causal prefill, one-token decode, non-causal / cross attention and
//!   continuation from a [`State`], in `f32` or `f64`, on any backend; `f16` and `bf16`
//!   inputs and outputs on f32 states through the `*_half` calls ([`HalfFloat`]);
//! - [`State`]: `S_p` and `Z_p` for every (batch, head), saved and loaded through
//!   [`checkpoint`];
//! - [`backend`]: backend names and the visible selection of the path that runs;
//! - [`kernel`]: specialized (generated) CPU kernels and their registry;
//! - `device` (features `wgpu`, `cuda`): attention on states that stay in a device's memory,
//!   written once over a small device trait; [`wgpu`](mod@wgpu) and `cuda` hold each device's
//!   memory and launch code;
//! - every entry point returns [`SataError`] on bad input instead of panicking.
//!
//! Tensors are `[batch, heads, tokens, dim]` row-major slices wrapped in [`TensorRef`].

mod attention;
pub mod backend;
mod call;
pub mod checkpoint;
mod checks;
mod cpu;
#[cfg(sata_cuda)]
pub mod cuda;
#[cfg(any(feature = "wgpu", sata_cuda))]
pub mod device;
mod element;
mod error;
mod half_precision;
mod output;
mod shape;
mod state;
mod stats;
mod tensor;
mod training;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use attention::Attention;
pub use backend::{BackendKind, BackendRequest, BackendUnavailable, Selection};
pub use cpu::kernel;
pub use cpu::kernel::{KernelDescriptor, SpecializedKernel};
pub use cpu::simd::Isa;
/// Machine-limit probes for the benchmarks; not an API.
#[doc(hidden)]
pub use cpu::simd::floor;
pub use element::{DType, Element};
pub use error::{CheckpointError, QueryIndex, SataError};
pub use half::{bf16, f16};
pub use half_precision::HalfFloat;
pub use output::Attended;
pub use sata_codegen::{ConfigError, KernelConfig};
pub use shape::{Role, Shape};
pub use state::{Accumulation, State, StateHeader};
pub use stats::{CallStats, DenominatorPolicy, TINY_WEIGHT_PER_KEY};
pub use tensor::{Tensor, TensorRef};
pub use training::{Gradients, Mode, Saved, SequenceForm, StateGradient};
