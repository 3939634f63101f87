//! **sata**: symmetry-aware Taylor attention at constant cost per token.
//!
//! This facade is the one crate users depend on. It re-exports the runtime (attention, states,
//! checkpoints, backends) at the top level, the generator library as [`codegen`], and holds
//! the `sata` command line ([`cli`]).
//!
//! ```
//! use sata::{Attention, KernelConfig, TensorRef};
//!
//! // d_k = 8, d_v = 4, P = 4 Taylor terms (orders 0..3), scale sqrt(8).
//! let attention = Attention::<f32>::new(KernelConfig::new(8, 4, 4)?)?;
//! let (q, k, v) = (vec![0.1f32; 2 * 3 * 8], vec![-0.2f32; 2 * 3 * 8], vec![0.5f32; 2 * 3 * 4]);
//! let mut state = attention.new_state(1, 2)?; // batch 1, 2 heads
//! let y = attention.prefill(
//!     &mut state,
//!     TensorRef::query(&q, [1, 2, 3, 8])?,
//!     TensorRef::key(&k, [1, 2, 3, 8])?,
//!     TensorRef::value(&v, [1, 2, 3, 4])?,
//! )?;
//! assert_eq!(y.output.shape.as_array(), [1, 2, 3, 4]);
//! assert_eq!(y.stats.bad_denominators, 0);
//! println!("ran on {}", attention.selection().backend);
//! # Ok::<(), sata::SataError>(())
//! ```

#[cfg(feature = "candle")]
pub mod candle;
pub mod cli;

pub use sata_codegen as codegen;
/// `#[sata::kernel(d_k = .., d_v = .., terms = ..)] pub struct Name;` makes `Name` a
/// specialized kernel ([`SpecializedKernel`]); run it with [`Attention::with_kernel`].
pub use sata_macros::kernel;
pub use sata_runtime::*;
