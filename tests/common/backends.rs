//! Every backend the suites run on, written once: how to build each one's attention on host
//! states, its attention on states of its own (a device's memory, or the host for the CPU),
//! whether this machine can run it, and [`every_backend!`], which instantiates a test body
//! once per backend.

use sata::cuda::{CudaAttention, CudaState, Executor, ThreadOrder};
use sata::wgpu::{WgpuAttention, WgpuState};
use sata::{
    Accumulation, Attended, Attention, BackendKind, BackendRequest, DenominatorPolicy, Element,
    Isa, KernelConfig, SataError, State, TensorRef,
};

/// A backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `cpu`: the specialized registry kernel with this instruction set (the generic path
    /// where the registry has none).
    Cpu(Isa),
    /// `cpu-generic`.
    CpuGeneric,
    /// The WGSL kernels through wgpu (Mesa's llvmpipe where there is no GPU).
    Wgpu,
    /// The CUDA kernels executed on the CPU (g++ and the host-execution header), threads in
    /// the given order, each lane's state dealt to `split` blocks.
    CudaHost(ThreadOrder, usize),
    /// The CUDA kernels on the GPU, where there is one (`scripts/gpu-check.sh`).
    CudaGpu,
}

impl Backend {
    /// The backends `cpu`, `cpu-generic`, `wgpu` and `cuda-host` name on the command line.
    pub fn kind(self) -> BackendKind {
        match self {
            Backend::Cpu(_) => BackendKind::Cpu,
            Backend::CpuGeneric => BackendKind::CpuGeneric,
            Backend::Wgpu => BackendKind::Wgpu,
            Backend::CudaHost(..) => BackendKind::CudaHost,
            Backend::CudaGpu => BackendKind::Cuda,
        }
    }

    /// Whether the backend computes with the CUDA kernels.
    pub fn is_cuda(self) -> bool {
        matches!(self, Backend::CudaHost(..) | Backend::CudaGpu)
    }

    /// False (and says so) when this machine cannot run the backend. Without a Vulkan driver
    /// the wgpu tests fail unless `SATA_SKIP_WGPU=1` (see `super::wgpu_available`); without a
    /// GPU the `cuda` instance is skipped, unless `SATA_CUDA_EXECUTOR=gpu` says there must be
    /// one (`scripts/gpu-check.sh`).
    pub fn available(self) -> bool {
        match self {
            Backend::Cpu(isa) if !isa.is_supported() => {
                eprintln!("skipped: this CPU does not support {isa}");
                false
            }
            Backend::Wgpu => super::wgpu_available(),
            Backend::CudaGpu => match sata::cuda::gpu_summary() {
                Ok(gpu) => {
                    eprintln!("CUDA GPU: {gpu}");
                    true
                }
                Err(e) if std::env::var("SATA_CUDA_EXECUTOR").as_deref() == Ok("gpu") => {
                    panic!("SATA_CUDA_EXECUTOR=gpu but {e}")
                }
                Err(e) => {
                    eprintln!("skipped: {e}");
                    false
                }
            },
            _ => true,
        }
    }

    fn cuda(self, config: KernelConfig) -> CudaAttention {
        match self {
            Backend::CudaHost(order, split) => CudaAttention::new(config, Executor::Host(order))
                .unwrap()
                .with_split(split),
            _ => CudaAttention::new(config, Executor::Gpu).unwrap(),
        }
    }

    /// The backend's [`Attention`] on host states.
    pub fn attention<T: Element>(self, config: KernelConfig) -> Attention<T> {
        let attention = match self {
            Backend::Cpu(isa) => {
                Attention::with_backend(config, BackendRequest::Kind(BackendKind::Cpu))
                    .unwrap()
                    .with_isa(isa)
                    .unwrap()
            }
            Backend::CudaHost(..) | Backend::CudaGpu => {
                Attention::with_device(self.cuda(config)).unwrap()
            }
            other => Attention::with_backend(config, BackendRequest::Kind(other.kind())).unwrap(),
        };
        let chosen = attention.selection().backend;
        match self {
            // Without a registry kernel the cpu backend falls back, visibly.
            Backend::Cpu(_) => assert!(
                chosen == BackendKind::Cpu || attention.selection().fallback.is_some(),
                "{config}: {chosen}"
            ),
            _ => assert_eq!(chosen, self.kind(), "{config}"),
        }
        attention
    }

    /// The backend's attention on states of its own: device states for the device backends,
    /// host states for the CPU.
    pub fn resident(self, config: KernelConfig) -> Resident {
        match self {
            Backend::Wgpu => Resident::Wgpu(WgpuAttention::new(config).unwrap()),
            Backend::CudaHost(..) | Backend::CudaGpu => Resident::Cuda(self.cuda(config)),
            cpu => Resident::Host(cpu.attention(config)),
        }
    }
}

/// One backend's attention on its own states (see [`Backend::resident`]).
pub enum Resident {
    Host(Attention<f32>),
    Wgpu(WgpuAttention),
    Cuda(CudaAttention),
}

/// A state of a [`Resident`] attention.
#[derive(Debug)]
pub enum ResidentState {
    Host(State<f32>),
    Wgpu(WgpuState),
    Cuda(CudaState),
}

/// The same call on whichever attention `$r` holds, with its state `$s` of the same kind.
macro_rules! on_state {
    ($r:expr, $s:expr, |$a:ident, $st:ident| $body:expr) => {
        match ($r, $s) {
            (Resident::Host($a), ResidentState::Host($st)) => $body,
            (Resident::Wgpu($a), ResidentState::Wgpu($st)) => $body,
            (Resident::Cuda($a), ResidentState::Cuda($st)) => $body,
            _ => panic!("a state of another backend"),
        }
    };
}

impl Resident {
    pub fn describe_path(&self) -> String {
        match self {
            Resident::Host(a) => a.describe_path(),
            Resident::Wgpu(a) => a.describe_path(),
            Resident::Cuda(a) => a.describe_path(),
        }
    }

    pub fn with_denominator_policy(self, policy: DenominatorPolicy) -> Self {
        match self {
            Resident::Host(a) => Resident::Host(a.with_denominator_policy(policy)),
            Resident::Wgpu(a) => Resident::Wgpu(a.with_denominator_policy(policy)),
            Resident::Cuda(a) => Resident::Cuda(a.with_denominator_policy(policy)),
        }
    }

    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<ResidentState, SataError> {
        Ok(match self {
            Resident::Host(a) => {
                ResidentState::Host(a.new_state_with(batch, heads, accumulation)?)
            }
            Resident::Wgpu(a) => {
                ResidentState::Wgpu(a.new_state_with(batch, heads, accumulation)?)
            }
            Resident::Cuda(a) => {
                ResidentState::Cuda(a.new_state_with(batch, heads, accumulation)?)
            }
        })
    }

    pub fn new_state(&self, batch: usize, heads: usize) -> Result<ResidentState, SataError> {
        self.new_state_with(batch, heads, Accumulation::Plain)
    }

    /// The backend's copy of a host state.
    pub fn upload(&self, state: &State<f32>) -> Result<ResidentState, SataError> {
        Ok(match self {
            Resident::Host(a) => {
                if state.config() != a.config() {
                    return Err(SataError::StateConfigMismatch {
                        state: *state.config(),
                        attention: *a.config(),
                    });
                }
                ResidentState::Host(state.clone())
            }
            Resident::Wgpu(a) => ResidentState::Wgpu(a.upload(state)?),
            Resident::Cuda(a) => ResidentState::Cuda(a.upload(state)?),
        })
    }

    pub fn prefill(
        &self,
        state: &mut ResidentState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        on_state!(self, state, |a, s| a.prefill(s, q, k, v))
    }

    pub fn decode(
        &self,
        state: &mut ResidentState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        on_state!(self, state, |a, s| a.decode(s, q, k, v))
    }

    pub fn absorb(
        &self,
        state: &mut ResidentState,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError> {
        on_state!(self, state, |a, s| a.absorb(s, k, v))
    }

    pub fn query(
        &self,
        state: &ResidentState,
        q: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        on_state!(self, state, |a, s| a.query(s, q))
    }
}

impl ResidentState {
    pub fn tokens(&self) -> u64 {
        match self {
            ResidentState::Host(s) => s.tokens(),
            ResidentState::Wgpu(s) => s.tokens(),
            ResidentState::Cuda(s) => s.tokens(),
        }
    }

    /// A host copy (for checkpoints, or to continue elsewhere).
    pub fn download(&self) -> State<f32> {
        match self {
            ResidentState::Host(s) => s.clone(),
            ResidentState::Wgpu(s) => s.download().unwrap(),
            ResidentState::Cuda(s) => s.download().unwrap(),
        }
    }

    pub fn reset(&mut self) {
        match self {
            ResidentState::Host(s) => s.reset(),
            ResidentState::Wgpu(s) => s.reset().unwrap(),
            ResidentState::Cuda(s) => s.reset().unwrap(),
        }
    }
}

/// Instantiates each `fn test(backend: Backend)` listed once per backend, in a module per
/// backend; a backend this machine cannot run says so and passes (see
/// [`Backend::available`]).
macro_rules! every_backend {
    ($($test:ident),+ $(,)?) => {
        every_backend!(@on cpu_avx2, Cpu(sata::Isa::Avx2); $($test),+);
        every_backend!(@on cpu_portable, Cpu(sata::Isa::Portable); $($test),+);
        every_backend!(@on cpu_generic, CpuGeneric; $($test),+);
        every_backend!(@on wgpu, Wgpu; $($test),+);
        every_backend!(@on cuda_host_forward, CudaHost(sata::cuda::ThreadOrder::Forward, 1); $($test),+);
        // Reverse thread order and three blocks per lane: the cross-block sums and any missing
        // barrier.
        every_backend!(@on cuda_host_reverse_split, CudaHost(sata::cuda::ThreadOrder::Reverse, 3); $($test),+);
        // Runs only where there is an NVIDIA GPU (`scripts/gpu-check.sh`).
        every_backend!(@on cuda_gpu, CudaGpu; $($test),+);
    };
    (@on $module:ident, $backend:expr; $($test:ident),+) => {
        mod $module {
            #[allow(unused_imports)]
            use crate::common::backends::Backend::*;
            $(
                #[test]
                fn $test() {
                    let backend: crate::common::backends::Backend = $backend;
                    if backend.available() {
                        super::$test(backend);
                    }
                }
            )+
        }
    };
}
pub(crate) use every_backend;
