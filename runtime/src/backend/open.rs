//! Opening the backend a selection chose, as the contract's trait object.

use std::any::Any;

use sata_codegen::KernelConfig;

use super::contract::HostBackend;
use super::kind::{BackendKind, BackendUnavailable, Selection};
use crate::cpu::generic::GenericProgram;
use crate::cpu::kernel::SpecializedKernel;
use crate::cpu::specialized::Specialized;
use crate::cpu::{CpuBackend, GenericChunked};
use crate::element::{DType, Element};
use crate::error::SataError;

/// The backend `selection` names, for elements of type `T`; `kernel` is the specialized
/// kernel the selection found for the CPU backend.
pub(crate) fn open<T: Element>(
    selection: &Selection,
    kernel: Option<&'static dyn SpecializedKernel>,
    config: KernelConfig,
) -> Result<Box<dyn HostBackend<T>>, SataError> {
    let backend = selection.backend;
    match (backend, kernel) {
        (BackendKind::Cpu, Some(kernel)) => {
            of_f32(backend, Box::new(CpuBackend::new(Specialized::new(kernel))))
        }
        // f32 prefills in chunks on the generic path too; f64 runs its token loop.
        (BackendKind::Cpu | BackendKind::CpuGeneric, _) if T::DTYPE == DType::F32 => of_f32(
            backend,
            Box::new(CpuBackend::new(GenericChunked::new(&config))),
        ),
        (BackendKind::Cpu | BackendKind::CpuGeneric, _) => {
            Ok(Box::new(CpuBackend::new(GenericProgram::<T>::new(&config))))
        }
        (BackendKind::Wgpu, _) => of_f32(backend, device_backend(backend, config)?),
        (BackendKind::Cuda | BackendKind::CudaHost, _) => {
            of_f32(backend, device_backend(backend, config)?)
        }
    }
}

/// The kernels of a device backend behind the contract.
fn device_backend(
    backend: BackendKind,
    config: KernelConfig,
) -> Result<Box<dyn HostBackend<f32>>, SataError> {
    match backend {
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(Box::new(crate::wgpu::open(config)?.kernels)),
        #[cfg(sata_cuda)]
        BackendKind::Cuda => Ok(Box::new(
            crate::cuda::open(config, crate::cuda::Executor::Gpu)?.kernels,
        )),
        #[cfg(sata_cuda)]
        BackendKind::CudaHost => Ok(Box::new(
            crate::cuda::open(
                config,
                crate::cuda::Executor::Host(crate::cuda::ThreadOrder::Forward),
            )?
            .kernels,
        )),
        _ => {
            let _ = config;
            Err(BackendUnavailable {
                backend,
                reason: format!(
                    "this build of sata was made without the `{}` feature",
                    backend.feature().unwrap_or(backend.name())
                ),
            }
            .into())
        }
    }
}

/// An f32 backend as the backend of `T`, which must be f32 (selection refuses the f32-only
/// backends for other types first; this turns a slip into an error, not a panic).
pub(crate) fn of_f32<T: Element>(
    backend: BackendKind,
    f32_backend: Box<dyn HostBackend<f32>>,
) -> Result<Box<dyn HostBackend<T>>, SataError> {
    let any: Box<dyn Any> = Box::new(f32_backend);
    any.downcast::<Box<dyn HostBackend<T>>>()
        .map(|b| *b)
        .map_err(|_| {
            BackendUnavailable {
                backend,
                reason: format!("{backend} computes in float32, not {}", T::DTYPE),
            }
            .into()
        })
}
