//! What the op checks on candle tensors before any data moves: rank, dtype and device. Shapes
//! against the configuration, and NaN or infinity, are checked by the runtime itself.

use candle_core::{DType, Tensor};

/// The dtype the kernels compute in for inputs of `dtype`: f32 and f64 natively, bf16 and f16
/// through f32 (f32 accumulation, outputs converted back).
pub(crate) fn compute_dtype(dtype: DType) -> candle_core::Result<DType> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(DType::F32),
        DType::F64 => Ok(DType::F64),
        other => Err(candle_core::Error::Msg(format!(
            "sata attention takes f32, f64, bf16 or f16 tensors, not {other:?}"
        ))),
    }
}

/// Checks that `q`, `k`, `v` are `[batch, heads, tokens, dim]` tensors of one floating dtype on
/// the CPU; returns the dtype the kernels compute in.
pub(crate) fn inputs(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<DType> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.rank() != 4 {
            return Err(candle_core::Error::Msg(format!(
                "sata attention: {name} must be [batch, heads, tokens, dim], got shape {:?}",
                t.dims()
            )));
        }
        if t.dtype() != q.dtype() {
            return Err(candle_core::Error::Msg(format!(
                "sata attention: q, k and v must have one dtype, got q {:?} and {name} {:?}",
                q.dtype(),
                t.dtype()
            )));
        }
        if !t.device().is_cpu() {
            return Err(candle_core::Error::Msg(format!(
                "sata attention runs on candle's CPU device; {name} is on {:?} \
                 (the CUDA path needs candle built with its `cuda` feature, see sata::candle)",
                t.device().location()
            )));
        }
    }
    compute_dtype(q.dtype())
}
