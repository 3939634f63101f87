//! The SATA kernel generator library.
//!
//! Pure and free of I/O so that build scripts, the proc-macro and the CLI can all call it:
//!
//! - [`KernelConfig`]: a validated `(d_k, d_v, P, scale)`;
//! - [`Basis`]: the symmetric monomial basis in lexicographic order, multiplicities `C_p`,
//!   query weights `alpha_p C_p` and the prefix tree (parent and extra coordinate per feature);
//! - [`CostModel`]: state size, FLOPs per token and the KV-cache break-even context;
//! - [`TaylorBound`]: the truncation error bound from a bound on `|q·k| / c`, and the smallest
//!   `P` for a tolerance;
//! - [`KernelPlan`]: the target-independent kernel plan (feature program, weights, sizes);
//! - [`contract`]: what every generated kernel offers and how it is called (entry names,
//!   buffer order, what an entry writes, the state's lane stride), read by the templates and
//!   the runtime;
//! - one module per target, each owning its options, lowering and templates, all rendering as
//!   `render(&plan, &Options)`: [`rust`] (the runtime's specialized CPU kernels), [`wgsl`]
//!   (compute shaders for wgpu) and [`cuda`] (CUDA C for NVRTC and host execution); [`gpu`]
//!   holds what the two GPU targets share, [`render`] what all three share;
//! - [`Builder`]: the `build.rs` API; [`registry`]: the precompiled configurations.
//!
//! ```
//! use sata_codegen::{Basis, KernelConfig};
//!
//! let config = KernelConfig::new(16, 16, 4)?;
//! let basis = Basis::new(&config);
//! assert_eq!(basis.len(), 969);
//! assert_eq!(basis.monomial(20), vec![0, 3]); // after [], 16 singles, (0,0), (0,1), (0,2)
//! # Ok::<(), sata_codegen::ConfigError>(())
//! ```

mod basis;
mod builder;
mod combinatorics;
mod config;
pub mod contract;
mod cost;
pub mod cuda;
mod error_bound;
pub mod gpu;
mod plan;
pub mod registry;
pub mod render;
pub mod rust;
pub mod wgsl;

pub use basis::{Basis, OrderSpan};
pub use builder::{BuildError, Builder};
pub use config::{ConfigError, KernelConfig, MAX_DIM, MAX_FEATURES, MAX_STATE_WORDS, MAX_TERMS};
pub use contract::Entry;
pub use cost::CostModel;
pub use error_bound::{BoundError, TaylorBound};
pub use plan::{
    FeaturePiece, FeatureRun, FeatureStatement, FeatureSuffix, GENERATOR_VERSION, KernelPlan,
    OrderPlan, Unroll,
};
pub use render::{RenderError, Target};
