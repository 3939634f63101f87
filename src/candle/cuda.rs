//! The op on candle's CUDA tensors (feature `candle-cuda`): the forward and the backward run
//! the project's generated CUDA kernels (the runtime's `cuda` backend, NVRTC-compiled for the
//! GPU it finds) on CUDA device 0; this file moves the data.
//!
//! The runtime's device calls take host tensors and answer queries on the host from the sums
//! its kernels write (`sata_runtime::device`), so a call copies `q`, `k`, `v` from candle's
//! storage to the host on candle's stream (which waits for the kernels that wrote them), the
//! runtime uploads them to its own buffers, and the answers go back into a new candle CUDA
//! storage on candle's stream. No pointer crosses between the two CUDA streams, so no
//! cross-stream synchronisation is needed; the cost is one host round trip of the inputs and
//! outputs per call, which a resident-input entry of the runtime would remove.

use candle_core::backend::BackendDevice;
use candle_core::{CudaStorage, DeviceLocation, Layout};

use super::checks::extent;

/// A host copy of one f32 input and its `[batch, heads, tokens, dim]` shape.
pub(super) fn host_copy(
    storage: &CudaStorage,
    layout: &Layout,
) -> candle_core::Result<(Vec<f32>, [usize; 4])> {
    // The runtime's CUDA backend opens device 0 of the process.
    match storage.device.location() {
        DeviceLocation::Cuda { gpu_id: 0 } => {}
        other => {
            return Err(candle_core::Error::Msg(format!(
                "sata attention runs on CUDA device 0; the tensors are on {other:?}"
            )));
        }
    }
    let (range, dims) = extent(layout)?;
    let slice = storage.as_cuda_slice::<f32>()?;
    let data = storage.device.clone_dtoh(&slice.slice(range))?;
    Ok((data, dims))
}

/// `data` in a new CUDA storage on the device (and stream) of `like`.
pub(super) fn upload(like: &CudaStorage, data: &[f32]) -> candle_core::Result<CudaStorage> {
    let slice = like.device.clone_htod(data)?;
    Ok(CudaStorage::wrap_cuda_slice(slice, like.device.clone()))
}
