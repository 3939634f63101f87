//! What the op checks on candle tensors before any data moves: rank, dtype and device. Shapes
//! against the configuration, and NaN or infinity, are checked by the runtime itself.

use candle_core::{DType, Layout, Tensor};

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
/// one device the op runs on (the CPU; with the `candle-cuda` feature, also a CUDA device, in
/// f32, bf16 or f16); returns the dtype the kernels compute in.
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
        if !t.device().same_device(q.device()) {
            return Err(candle_core::Error::Msg(format!(
                "sata attention: q, k and v must be on one device, got q on {:?} and {name} on {:?}",
                q.device().location(),
                t.device().location()
            )));
        }
        if !runs_on(t.device()) {
            return Err(candle_core::Error::Msg(format!(
                "sata attention runs on candle's CPU device{}; {name} is on {:?}",
                if cfg!(feature = "candle-cuda") {
                    " and CUDA devices"
                } else {
                    " (CUDA tensors need the `candle-cuda` feature, see sata::candle)"
                },
                t.device().location()
            )));
        }
    }
    let compute = compute_dtype(q.dtype())?;
    if compute == DType::F64 && !q.device().is_cpu() {
        return Err(candle_core::Error::Msg(
            "sata attention computes f64 on the CPU only; on CUDA use f32, bf16 or f16".into(),
        ));
    }
    Ok(compute)
}

fn runs_on(device: &candle_core::Device) -> bool {
    device.is_cpu() || (cfg!(feature = "candle-cuda") && device.is_cuda())
}

/// Where one input's data lies in its storage (it must be contiguous), and its
/// `[batch, heads, tokens, dim]` shape.
pub(crate) fn extent(layout: &Layout) -> candle_core::Result<(std::ops::Range<usize>, [usize; 4])> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("sata attention: inputs must be contiguous".into())
    })?;
    let dims: [usize; 4] = layout.dims().try_into().map_err(|_| {
        candle_core::Error::Msg(format!(
            "sata attention: inputs must be [batch, heads, tokens, dim], got {:?}",
            layout.dims()
        ))
    })?;
    Ok((start..end, dims))
}
