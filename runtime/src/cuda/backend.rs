//! The CUDA device: memory and launch of the generated CUDA kernels on an NVIDIA GPU (cudarc)
//! or on the CPU (the same source compiled by g++ against the host-execution header), through
//! one launch computation ([`super::launch`]).

use std::sync::Arc;

use sata_codegen::cuda::{CudaLayout, CudaOptions};
use sata_codegen::{KernelConfig, KernelPlan};

use super::gpu::{self, GpuDevice, GpuModule};
use super::host::{self, HostModule, ThreadOrder};
use super::launch::{Arguments, dims, split_for};
use super::nvrtc::cuda_error;
use crate::backend::BackendKind;
use crate::device::{BackwardLaunch, Device, DeviceAttention, Launch, Sealed, StateAccess};
use crate::error::SataError;
use crate::state::Accumulation;

/// Where the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// CUDA device 0, through the driver (needs an NVIDIA GPU, its driver and NVRTC).
    Gpu,
    /// The CPU: the same CUDA source compiled by g++ against the host-execution header, the
    /// threads of each block run as fibers in the given order. Slow; for verification.
    Host(ThreadOrder),
}

#[derive(Clone)]
enum Exec {
    Gpu(Arc<GpuDevice>),
    Host(ThreadOrder),
}

/// The CUDA device of one executor, and how launches deal a lane's state over blocks.
#[derive(Clone)]
pub struct Cuda {
    exec: Exec,
    /// Blocks per lane; `None` picks enough for two blocks per SM.
    split: Option<usize>,
}

/// Words in a CUDA executor's memory.
pub enum CudaMemory {
    Gpu(cudarc::driver::CudaSlice<f32>),
    Host(Vec<f32>),
}

/// One configuration's compiled kernels and their layout.
pub struct CudaKernels {
    layout: CudaLayout,
    module: Module,
}

enum Module {
    Gpu(Arc<GpuModule>),
    Host(Arc<HostModule>),
}

fn mixed() -> SataError {
    cuda_error("a state of one CUDA executor was used with another")
}

impl Cuda {
    /// The device of `executor` (for the GPU, device 0, opened once per process).
    pub fn open(executor: Executor) -> Result<Self, SataError> {
        let exec = match executor {
            Executor::Gpu => Exec::Gpu(gpu::device()?),
            Executor::Host(order) => Exec::Host(order),
        };
        Ok(Self { exec, split: None })
    }

    pub fn executor(&self) -> Executor {
        match self.exec {
            Exec::Gpu(_) => Executor::Gpu,
            Exec::Host(order) => Executor::Host(order),
        }
    }

    fn sm_count(&self) -> usize {
        match &self.exec {
            Exec::Gpu(d) => d.sm_count,
            Exec::Host(_) => 1,
        }
    }
}

impl Sealed for Cuda {}

impl Device for Cuda {
    type Memory = CudaMemory;
    type Kernels = CudaKernels;
    const NAME: &'static str = "cuda";

    fn kind(&self) -> BackendKind {
        match self.exec {
            Exec::Gpu(_) => BackendKind::Cuda,
            Exec::Host(_) => BackendKind::CudaHost,
        }
    }

    fn describe(&self) -> String {
        match &self.exec {
            Exec::Gpu(d) => format!("{}, sm_{}, {} SMs", d.name, d.arch, d.sm_count),
            Exec::Host(order) => format!(
                "host execution on the CPU, threads {}",
                match order {
                    ThreadOrder::Forward => "forward",
                    ThreadOrder::Reverse => "reverse",
                }
            ),
        }
    }

    fn compile(
        &self,
        plan: &KernelPlan,
        accumulation: Accumulation,
    ) -> Result<Arc<CudaKernels>, SataError> {
        let options = CudaOptions::compensated(accumulation == Accumulation::Compensated);
        let layout = CudaLayout::new(plan, &options).map_err(cuda_error)?;
        let module = match &self.exec {
            Exec::Gpu(d) => Module::Gpu(d.module(plan, &layout)?),
            Exec::Host(_) => Module::Host(host::module(plan, &layout)?),
        };
        Ok(Arc::new(CudaKernels { layout, module }))
    }

    fn alloc(&self, words: usize) -> Result<CudaMemory, SataError> {
        Ok(match &self.exec {
            Exec::Gpu(d) => CudaMemory::Gpu(d.alloc_zeroed(words)?),
            Exec::Host(_) => CudaMemory::Host(vec![0.0; words.max(1)]),
        })
    }

    fn upload(&self, data: &[f32]) -> Result<CudaMemory, SataError> {
        Ok(match &self.exec {
            Exec::Gpu(d) => CudaMemory::Gpu(d.upload(data)?),
            Exec::Host(_) if data.is_empty() => CudaMemory::Host(vec![0.0]),
            Exec::Host(_) => CudaMemory::Host(data.to_vec()),
        })
    }

    fn write(&self, memory: &mut CudaMemory, data: &[f32]) -> Result<(), SataError> {
        match (&self.exec, memory) {
            (Exec::Gpu(d), CudaMemory::Gpu(m)) => d.write(m, data),
            (Exec::Host(_), CudaMemory::Host(m)) => match m.get_mut(..data.len()) {
                Some(to) => {
                    to.copy_from_slice(data);
                    Ok(())
                }
                None => Err(cuda_error("writing past the end of host memory")),
            },
            _ => Err(mixed()),
        }
    }

    fn read(&self, memory: &CudaMemory, out: &mut [f32]) -> Result<(), SataError> {
        match (&self.exec, memory) {
            (Exec::Gpu(d), CudaMemory::Gpu(m)) => d.read(m, out),
            (Exec::Host(_), CudaMemory::Host(m)) => match m.get(..out.len()) {
                Some(from) => {
                    out.copy_from_slice(from);
                    Ok(())
                }
                None => Err(cuda_error("reading past the end of host memory")),
            },
            _ => Err(mixed()),
        }
    }

    fn duplicate(&self, memory: &CudaMemory) -> Result<CudaMemory, SataError> {
        match (&self.exec, memory) {
            (Exec::Gpu(d), CudaMemory::Gpu(m)) => Ok(CudaMemory::Gpu(d.duplicate(m)?)),
            (Exec::Host(_), CudaMemory::Host(m)) => Ok(CudaMemory::Host(m.clone())),
            _ => Err(mixed()),
        }
    }

    fn zero(&self, memory: &mut CudaMemory) -> Result<(), SataError> {
        match (&self.exec, memory) {
            (Exec::Gpu(d), CudaMemory::Gpu(m)) => d.zero(m),
            (Exec::Host(_), CudaMemory::Host(m)) => {
                m.fill(0.0);
                Ok(())
            }
            _ => Err(mixed()),
        }
    }

    fn launch(
        &self,
        kernels: &CudaKernels,
        launch: Launch<'_, CudaMemory>,
    ) -> Result<(), SataError> {
        let layout = &kernels.layout;
        let split = self
            .split
            .unwrap_or_else(|| split_for(layout, launch.lanes, self.sm_count()));
        let dims = dims(layout, launch.lanes, split)?;
        let Launch {
            entry,
            q,
            k,
            v,
            state,
            out,
            lanes,
            tokens,
        } = launch;
        let symbol = layout.kernel(entry).symbol.as_str();
        match (&self.exec, &kernels.module) {
            (Exec::Gpu(d), Module::Gpu(module)) => {
                let address = |m: &CudaMemory| match m {
                    CudaMemory::Gpu(s) => Ok(d.address(s)),
                    CudaMemory::Host(_) => Err(mixed()),
                };
                let addresses = [
                    address(q)?,
                    address(k)?,
                    address(v)?,
                    address(state.memory())?,
                    address(out)?,
                ];
                let mut args = Arguments::forward(addresses, lanes, tokens)?;
                // SAFETY: `Launch` is built only by the device driver, with every buffer sized
                // for `entry` at these lanes and tokens (see `crate::device::Launch`); all of
                // them outlive the launch, whose results are read back (which synchronises)
                // or waited for before they are dropped.
                unsafe { d.launch(module, symbol, dims, &mut args) }
            }
            (Exec::Host(order), Module::Host(module)) => {
                let address = |m: &CudaMemory| match m {
                    CudaMemory::Host(words) => Ok(words.as_ptr() as u64),
                    CudaMemory::Gpu(_) => Err(mixed()),
                };
                // The kernel writes the output and, for entries that update, the state: their
                // addresses come from exclusive borrows.
                let state_address = match state {
                    StateAccess::Write(CudaMemory::Host(words)) => words.as_mut_ptr() as u64,
                    StateAccess::Read(m) => address(m)?,
                    StateAccess::Write(CudaMemory::Gpu(_)) => return Err(mixed()),
                };
                let out_address = match out {
                    CudaMemory::Host(words) => words.as_mut_ptr() as u64,
                    CudaMemory::Gpu(_) => return Err(mixed()),
                };
                let addresses = [
                    address(q)?,
                    address(k)?,
                    address(v)?,
                    state_address,
                    out_address,
                ];
                let mut args = Arguments::forward(addresses, lanes, tokens)?;
                // SAFETY: as for the GPU, in host memory; the launch runs to completion before
                // it returns. Only entries that update receive the state from an exclusive
                // borrow, and only they write it.
                unsafe { module.launch(symbol, dims, &mut args, *order) }
            }
            _ => Err(mixed()),
        }
    }

    fn launch_backward(
        &self,
        kernels: &CudaKernels,
        launch: BackwardLaunch<'_, CudaMemory>,
    ) -> Result<(), SataError> {
        let layout = &kernels.layout;
        let symbol = layout
            .backward_kernel(launch.pass)
            .map(|k| k.symbol.as_str())
            .ok_or_else(|| cuda_error(format!("{}: no {} kernel", layout.name, launch.pass)))?;
        let dims = dims(layout, launch.lanes, 1)?;
        let BackwardLaunch {
            phase,
            q,
            k,
            v,
            dout,
            state,
            grad,
            scratch,
            lanes,
            tokens,
            ..
        } = launch;
        let counts = [
            (lanes, "lanes"),
            (tokens, "tokens"),
            (phase as usize, "phase"),
        ];
        match (&self.exec, &kernels.module) {
            (Exec::Gpu(d), Module::Gpu(module)) => {
                let address = |m: &CudaMemory| match m {
                    CudaMemory::Gpu(s) => Ok(d.address(s)),
                    CudaMemory::Host(_) => Err(mixed()),
                };
                // In the order of `BackwardBuffer::ALL`.
                let addresses = vec![
                    address(q)?,
                    address(k)?,
                    address(v)?,
                    address(dout)?,
                    address(state)?,
                    address(grad)?,
                    address(scratch)?,
                ];
                let mut args = Arguments::new(addresses, &counts)?;
                // SAFETY: `BackwardLaunch` is built only by the device backward, with every
                // buffer sized for the pass and phase at these lanes and tokens (see
                // `crate::device::BackwardLaunch`); all outlive the launch, whose results are
                // read back (which synchronises) before they are dropped.
                unsafe { d.launch(module, symbol, dims, &mut args) }
            }
            (Exec::Host(order), Module::Host(module)) => {
                let read = |m: &CudaMemory| match m {
                    CudaMemory::Host(words) => Ok(words.as_ptr() as u64),
                    CudaMemory::Gpu(_) => Err(mixed()),
                };
                let write = |m: &mut CudaMemory| match m {
                    CudaMemory::Host(words) => Ok(words.as_mut_ptr() as u64),
                    CudaMemory::Gpu(_) => Err(mixed()),
                };
                let addresses = vec![
                    read(q)?,
                    read(k)?,
                    read(v)?,
                    read(dout)?,
                    write(state)?,
                    write(grad)?,
                    write(scratch)?,
                ];
                let mut args = Arguments::new(addresses, &counts)?;
                // SAFETY: as for the GPU, in host memory; the launch runs to completion before
                // it returns, and the buffers it writes come from exclusive borrows.
                unsafe { module.launch(symbol, dims, &mut args, *order) }
            }
            _ => Err(mixed()),
        }
    }

    fn synchronize(&self) -> Result<(), SataError> {
        match &self.exec {
            Exec::Gpu(d) => d.synchronize(),
            Exec::Host(_) => Ok(()),
        }
    }

    fn accepts(&self, other: &Self) -> Result<(), SataError> {
        match (&self.exec, &other.exec) {
            (Exec::Gpu(_), Exec::Gpu(_)) | (Exec::Host(_), Exec::Host(_)) => Ok(()),
            _ => Err(mixed()),
        }
    }
}

impl DeviceAttention<Cuda> {
    /// Kernels for `config` on `executor`, compiled once per configuration per process.
    pub fn new(config: KernelConfig, executor: Executor) -> Result<Self, SataError> {
        DeviceAttention::open(Cuda::open(executor)?, config)
    }

    /// Deals each lane's state rows to `split` blocks (default: enough blocks for two per SM).
    /// Any split gives the same results within rounding; tests use it to exercise the
    /// cross-block sums.
    pub fn with_split(mut self, split: usize) -> Self {
        self.kernels.device.split = Some(split.max(1));
        self
    }

    /// Where the kernels run.
    pub fn executor(&self) -> Executor {
        self.kernels.device.executor()
    }

    /// The CUDA layout (block, chunk, shared memory, register budgets) of the plain kernels.
    pub fn layout(&self) -> &CudaLayout {
        &self.kernels.plain().layout
    }
}
