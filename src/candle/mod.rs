//! SATA in [candle](https://github.com/huggingface/candle) models (feature `candle`).
//!
//! - [`TaylorAttention`]: the attention as a candle custom op over `[batch, heads, tokens,
//!   dim]` tensors, causal or not. Its forward runs the project's CPU kernels (the registry's
//!   specialized kernel where there is one, the generic path otherwise; f64 on the generic
//!   path; bf16 and f16 computed in f32) and its backward is the generated backward, so
//!   candle's autograd and optimisers train through it.
//! - [`SataAttention`]: a multi-head layer (projections, optional L2-normalised queries and
//!   keys with a learned, clamped temperature) implementing [`candle_nn::Module`] for
//!   training, with [`SataAttention::forward_with_state`] for generation at constant cost per
//!   token on a carried state.
//! - [`RecurrentState`]: one state per layer, saved and loaded as project checkpoints.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use sata::candle::{QkNorm, SataAttention, SataAttentionConfig};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let config = SataAttentionConfig {
//!     d_model: 32, heads: 2, d_k: 16, d_v: 16, terms: 3, qk_norm: QkNorm::Raw,
//! };
//! let layer = SataAttention::new(config, vb)?;
//! let x = Tensor::randn(0f32, 1.0, (1, 10, 32), &Device::Cpu)?;
//!
//! // Training: a differentiable causal forward.
//! let y = layer.forward(&x)?;
//! let grads = y.sqr()?.sum_all()?.backward()?;
//! assert!(grads.get(&varmap.all_vars()[0]).is_some());
//!
//! // Generation: prefill the prompt, then decode at constant cost per token.
//! let mut state = layer.new_state(1)?;
//! let prompt = layer.forward_with_state(&x.narrow(1, 0, 9)?, &mut state)?;
//! let next = layer.forward_with_state(&x.narrow(1, 9, 1)?, &mut state)?;
//! let diff = (Tensor::cat(&[prompt, next], 1)? - &y)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! assert_eq!(state.tokens(), 10);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! The op runs on candle's CPU device, and with the `candle-cuda` feature (candle's own `cuda`
//! feature, which needs a CUDA toolkit to build) on CUDA device 0 in f32, bf16 or f16: its
//! `cuda_fwd` and backward run the project's generated CUDA kernels, with the inputs and
//! answers copied through the host once per call (see the `cuda` module). That path has been
//! compiled but not linked or run: no machine of this project has had a GPU.

mod checks;
#[cfg(feature = "candle-cuda")]
mod cuda;
mod error;
mod layer;
mod op;
mod state;

pub use layer::{Diagnostics, QkNorm, SataAttention, SataAttentionConfig};
pub use op::TaylorAttention;
pub use state::RecurrentState;
