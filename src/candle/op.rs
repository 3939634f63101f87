//! The attention as a candle custom op: the forward runs the project's CPU kernels and keeps
//! what the backward needs; candle's autograd calls the generated backward.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use sata_runtime::{
    Attention, BackendKind, BackendRequest, Element, KernelConfig, Mode, SataError, Saved,
    SpecializedKernel, TensorRef,
};

use super::checks::{self, extent};
use super::error::to_candle;

/// One attention per element type (and device) the op computes in.
struct Kernels {
    f32: Attention<f32>,
    f64: Attention<f64>,
    /// f32 on CUDA device 0, opened on the first call with CUDA tensors.
    #[cfg(feature = "candle-cuda")]
    cuda: std::sync::OnceLock<Result<Attention<f32>, String>>,
}

impl Kernels {
    /// The f32 attention on the runtime's CUDA backend, opened (and its kernels compiled) on
    /// first use and shared by the op's clones.
    #[cfg(feature = "candle-cuda")]
    fn cuda_f32(&self) -> candle_core::Result<&Attention<f32>> {
        self.cuda
            .get_or_init(|| {
                let request = BackendRequest::Kind(BackendKind::Cuda);
                Attention::with_backend(*self.f32.config(), request).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|message| {
                candle_core::Error::Msg(format!("sata attention on CUDA: {message}"))
            })
    }
}

/// SATA over candle tensors `[batch, heads, tokens, dim]`: `forward(q, k, v)` is
/// differentiable with respect to all three, through the backward generated from the same
/// kernel plan as the forward.
///
/// f32 runs the specialized CPU kernel of the registry (or of [`with_kernel`](Self::with_kernel))
/// where there is one and the generic path otherwise ([`describe_path`](Self::describe_path)
/// says which); f64 runs the generic path; bf16 and f16 tensors are computed in f32 and the
/// outputs converted back. Every call starts from an empty state and keeps none (training:
/// `Attention::forward_for_training_from_empty`, which computes every pair's weight directly
/// where that costs less than features); generation with a carried state is
/// [`super::SataAttention::forward_with_state`].
#[derive(Clone)]
pub struct TaylorAttention {
    kernels: Arc<Kernels>,
    mode: Mode,
}

impl std::fmt::Debug for TaylorAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaylorAttention")
            .field("config", self.config())
            .field("mode", &self.mode)
            .field("f32_path", &self.kernels.f32.describe_path())
            .finish()
    }
}

impl TaylorAttention {
    /// Causal attention for `config` on the best CPU path.
    pub fn new(config: KernelConfig) -> Result<Self, SataError> {
        let f32 = Attention::with_backend(config, BackendRequest::Kind(BackendKind::Cpu))?;
        Self::from_f32(f32)
    }

    /// Causal attention whose f32 path runs `kernel` (e.g. one made by `#[sata::kernel]`).
    pub fn with_kernel(kernel: &'static dyn SpecializedKernel) -> Result<Self, SataError> {
        Self::from_f32(Attention::with_kernel(kernel)?)
    }

    fn from_f32(f32: Attention<f32>) -> Result<Self, SataError> {
        let request = BackendRequest::Kind(BackendKind::CpuGeneric);
        let f64 = Attention::with_backend(*f32.config(), request)?;
        Ok(Self {
            kernels: Arc::new(Kernels {
                f32,
                f64,
                #[cfg(feature = "candle-cuda")]
                cuda: std::sync::OnceLock::new(),
            }),
            mode: Mode::Causal,
        })
    }

    /// Query `t` sees keys `..=t` (the default); queries and keys have the same length.
    pub fn causal(mut self) -> Self {
        self.mode = Mode::Causal;
        self
    }

    /// Every query sees every key (cross attention); the number of queries may differ.
    pub fn non_causal(mut self) -> Self {
        self.mode = Mode::NonCausal;
        self
    }

    pub fn config(&self) -> &KernelConfig {
        self.kernels.f32.config()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The f32 attention the op runs, for generation with a carried state.
    pub fn attention_f32(&self) -> &Attention<f32> {
        &self.kernels.f32
    }

    /// Which code runs for tensors of `dtype`, e.g. `cpu (kernel d16_v16_p4, avx2+fma, token loop)`.
    pub fn describe_path(&self, dtype: DType) -> candle_core::Result<String> {
        let path = match checks::compute_dtype(dtype)? {
            DType::F64 => self.kernels.f64.describe_path(),
            _ => self.kernels.f32.describe_path(),
        };
        Ok(match dtype {
            DType::BF16 | DType::F16 => format!("{path}, {dtype:?} computed in f32"),
            _ => path,
        })
    }

    /// `y = SATA(q, k, v)`: `[batch, heads, queries, d_v]`, in the inputs' dtype.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let compute = checks::inputs(q, k, v)?;
        let dtype = q.dtype();
        let prepare = |t: &Tensor| t.to_dtype(compute)?.contiguous();
        let op = SataOp {
            kernels: Arc::clone(&self.kernels),
            mode: self.mode,
            record: Mutex::new(None),
        };
        let y = prepare(q)?.apply_op3(&prepare(k)?, &prepare(v)?, op)?;
        y.to_dtype(dtype)
    }
}

/// What one forward kept for its backward.
enum Record {
    F32(Saved<f32>),
    F64(Saved<f64>),
    /// A forward on CUDA tensors, by the CUDA attention: its backward runs there too.
    #[cfg(feature = "candle-cuda")]
    CudaF32(Saved<f32>),
}

/// One application of the op: candle keeps it in the graph, so the record of its forward is
/// there when autograd calls [`CustomOp3::bwd`].
struct SataOp {
    kernels: Arc<Kernels>,
    mode: Mode,
    record: Mutex<Option<Record>>,
}

/// The element types the op computes in.
trait Float: Element + WithDType {
    fn attention(kernels: &Kernels) -> &Attention<Self>;
    fn record(saved: Saved<Self>) -> Record;
    /// The saved forward of this element type, and the attention whose backward goes with it.
    fn saved<'a>(
        record: &'a Record,
        kernels: &'a Kernels,
    ) -> candle_core::Result<Option<(&'a Saved<Self>, &'a Attention<Self>)>>;
}

impl Float for f32 {
    fn attention(kernels: &Kernels) -> &Attention<f32> {
        &kernels.f32
    }
    fn record(saved: Saved<f32>) -> Record {
        Record::F32(saved)
    }
    fn saved<'a>(
        record: &'a Record,
        kernels: &'a Kernels,
    ) -> candle_core::Result<Option<(&'a Saved<f32>, &'a Attention<f32>)>> {
        Ok(match record {
            Record::F32(s) => Some((s, &kernels.f32)),
            Record::F64(_) => None,
            #[cfg(feature = "candle-cuda")]
            Record::CudaF32(s) => Some((s, kernels.cuda_f32()?)),
        })
    }
}

impl Float for f64 {
    fn attention(kernels: &Kernels) -> &Attention<f64> {
        &kernels.f64
    }
    fn record(saved: Saved<f64>) -> Record {
        Record::F64(saved)
    }
    fn saved<'a>(
        record: &'a Record,
        kernels: &'a Kernels,
    ) -> candle_core::Result<Option<(&'a Saved<f64>, &'a Attention<f64>)>> {
        Ok(match record {
            Record::F64(s) => Some((s, &kernels.f64)),
            _ => None,
        })
    }
}

/// The contiguous data of one input and its shape.
fn view<'a, T: Float>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [T], [usize; 4])> {
    let (range, dims) = extent(layout)?;
    Ok((&storage.as_slice::<T>()?[range], dims))
}

impl SataOp {
    /// The training forward of `attention` from an empty state on contiguous host data:
    /// the output's data, what the backward needs, and the output's shape.
    fn run<T: Element>(
        &self,
        attention: &Attention<T>,
        (q, q_shape): (&[T], [usize; 4]),
        (k, k_shape): (&[T], [usize; 4]),
        (v, v_shape): (&[T], [usize; 4]),
    ) -> candle_core::Result<(Vec<T>, Saved<T>, Shape)> {
        let run = || {
            attention.forward_for_training_from_empty(
                self.mode,
                TensorRef::query(q, q_shape)?,
                TensorRef::key(k, k_shape)?,
                TensorRef::value(v, v_shape)?,
            )
        };
        let (attended, saved) = run().map_err(to_candle)?;
        let shape = Shape::from(attended.output.shape.as_array().to_vec());
        Ok((attended.output.data, saved, shape))
    }

    fn forward<T: Float>(
        &self,
        (q, lq): (&CpuStorage, &Layout),
        (k, lk): (&CpuStorage, &Layout),
        (v, lv): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, q_shape) = view::<T>(q, lq)?;
        let (k, k_shape) = view::<T>(k, lk)?;
        let (v, v_shape) = view::<T>(v, lv)?;
        let attention = T::attention(&self.kernels);
        let (output, saved, shape) =
            self.run(attention, (q, q_shape), (k, k_shape), (v, v_shape))?;
        *self.record.lock().unwrap_or_else(PoisonError::into_inner) = Some(T::record(saved));
        Ok((T::to_cpu_storage_owned(output), shape))
    }

    /// The forward on CUDA tensors (f32): the runtime's CUDA backend computes it, and the
    /// backward it records runs there too (see the `cuda` module for the copies).
    #[cfg(feature = "candle-cuda")]
    fn forward_cuda(
        &self,
        (q, lq): (&candle_core::CudaStorage, &Layout),
        (k, lk): (&candle_core::CudaStorage, &Layout),
        (v, lv): (&candle_core::CudaStorage, &Layout),
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{host_copy, upload};
        let attention = self.kernels.cuda_f32()?;
        let (q_data, q_shape) = host_copy(q, lq)?;
        let (k_data, k_shape) = host_copy(k, lk)?;
        let (v_data, v_shape) = host_copy(v, lv)?;
        let (output, saved, shape) = self.run(
            attention,
            (&q_data, q_shape),
            (&k_data, k_shape),
            (&v_data, v_shape),
        )?;
        *self.record.lock().unwrap_or_else(PoisonError::into_inner) = Some(Record::CudaF32(saved));
        Ok((upload(q, &output)?, shape))
    }

    fn backward<T: Float>(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let saved = match record.as_ref() {
            Some(record) => T::saved(record, &self.kernels)?,
            None => None,
        };
        let (saved, attention) = saved.ok_or_else(|| {
            candle_core::Error::Msg("sata attention: backward before its forward ran".into())
        })?;
        let dy = grad
            .to_dtype(<T as WithDType>::DTYPE)?
            .contiguous()?
            .flatten_all()?;
        let dy = dy.to_vec1::<T>()?;
        let dims: [usize; 4] = grad.dims().try_into().map_err(|_| {
            candle_core::Error::Msg(format!(
                "sata attention: output gradient of shape {:?}",
                grad.dims()
            ))
        })?;
        let grads = TensorRef::output_gradient(&dy, dims)
            .and_then(|dy| attention.backward(saved, dy, None))
            .map_err(to_candle)?;
        let tensor =
            |data: Vec<T>, like: &Tensor| Tensor::from_vec(data, like.shape(), like.device());
        Ok((
            Some(tensor(grads.dq.data, q)?),
            Some(tensor(grads.dk.data, k)?),
            Some(tensor(grads.dv.data, v)?),
        ))
    }
}

impl CustomOp3 for SataOp {
    fn name(&self) -> &'static str {
        "sata-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => self.forward::<f32>((s1, l1), (s2, l2), (s3, l3)),
            CpuStorage::F64(_) => self.forward::<f64>((s1, l1), (s2, l2), (s3, l3)),
            other => Err(candle_core::Error::Msg(format!(
                "sata attention computes in f32 or f64, not {:?}",
                other.dtype()
            ))),
        }
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.forward_cuda((s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match q.dtype() {
            DType::F64 => self.backward::<f64>((q, k, v), grad),
            _ => self.backward::<f32>((q, k, v), grad),
        }
    }
}
