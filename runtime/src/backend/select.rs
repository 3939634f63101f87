//! Which backend runs a configuration: a registry kernel on the CPU when one matches, the
//! generic path otherwise, a device backend when asked for by name.

use sata_codegen::KernelConfig;

use super::kind::{BackendKind, BackendRequest, BackendUnavailable, Selection};
use crate::cpu::kernel::{self, SpecializedKernel};
use crate::element::DType;

/// Picks the backend for `config` computed in `dtype`.
pub fn select(
    request: BackendRequest,
    config: &KernelConfig,
    dtype: DType,
) -> Result<Selection, BackendUnavailable> {
    resolve(request, config, dtype).map(|(selection, _)| selection)
}

/// [`select`], also returning the specialized kernel when the CPU backend was chosen.
pub(crate) fn resolve(
    request: BackendRequest,
    config: &KernelConfig,
    dtype: DType,
) -> Result<(Selection, Option<&'static dyn SpecializedKernel>), BackendUnavailable> {
    let generic = |fallback: Option<String>| {
        Ok((
            Selection {
                backend: BackendKind::CpuGeneric,
                fallback,
            },
            None,
        ))
    };
    match request {
        BackendRequest::Kind(BackendKind::CpuGeneric) => generic(None),
        BackendRequest::Auto | BackendRequest::Kind(BackendKind::Cpu) => {
            if dtype != DType::F32 {
                return generic(Some(format!(
                    "specialized CPU kernels compute in float32; {dtype} runs on cpu-generic"
                )));
            }
            match kernel::lookup(config) {
                Some(found) => Ok((
                    Selection {
                        backend: BackendKind::Cpu,
                        fallback: None,
                    },
                    Some(found),
                )),
                None => generic(Some(format!(
                    "no specialized CPU kernel for {config} in this build (register one made by \
                     #[sata::kernel] or a build script); using cpu-generic"
                ))),
            }
        }
        BackendRequest::Kind(
            kind @ (BackendKind::Wgpu | BackendKind::Cuda | BackendKind::CudaHost),
        ) => {
            if !kind.is_built() {
                return Err(BackendUnavailable {
                    backend: kind,
                    reason: format!(
                        "this build of sata was made without the `{}` feature",
                        kind.feature().unwrap_or(kind.name())
                    ),
                });
            }
            if dtype != DType::F32 {
                return Err(BackendUnavailable {
                    backend: kind,
                    reason: format!("{kind} kernels compute in float32, not {dtype}"),
                });
            }
            Ok((
                Selection {
                    backend: kind,
                    fallback: None,
                },
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse(), Ok(BackendRequest::Kind(kind)));
        }
        assert_eq!("auto".parse(), Ok(BackendRequest::Auto));
        assert!("gpu".parse::<BackendRequest>().is_err());
    }

    #[test]
    fn cpu_picks_registry_kernels_and_reports_every_fallback() {
        let cpu = BackendRequest::Kind(BackendKind::Cpu);
        let registered = KernelConfig::new(8, 8, 3).unwrap();
        let chosen = select(cpu, &registered, DType::F32).unwrap();
        assert_eq!(chosen.backend, BackendKind::Cpu);
        assert_eq!(chosen.fallback, None);
        // Not in the registry (d_k != d_v), non-default scale, and f64 all fall back visibly.
        let odd = KernelConfig::new(8, 5, 3).unwrap();
        let scaled = registered.with_scale(2.0).unwrap();
        for (config, dtype) in [
            (odd, DType::F32),
            (scaled, DType::F32),
            (registered, DType::F64),
        ] {
            let s = select(cpu, &config, dtype).unwrap();
            assert_eq!(s.backend, BackendKind::CpuGeneric);
            assert!(s.fallback.is_some());
        }
        let generic = BackendRequest::Kind(BackendKind::CpuGeneric);
        assert_eq!(
            select(generic, &registered, DType::F32).unwrap().fallback,
            None
        );
        // Device backends are f32 only; selecting one does not open a device yet.
        let cuda = BackendRequest::Kind(BackendKind::Cuda);
        assert!(select(cuda, &registered, DType::F64).is_err());
        assert_eq!(
            select(cuda, &registered, DType::F32).map(|s| s.backend),
            if cfg!(sata_cuda) {
                Ok(BackendKind::Cuda)
            } else {
                Err(BackendUnavailable {
                    backend: BackendKind::Cuda,
                    reason: "this build of sata was made without the `cuda` feature".to_string(),
                })
            }
        );
        // The WGSL kernels are f32: f64 is refused, not silently converted.
        let wgpu = BackendRequest::Kind(BackendKind::Wgpu);
        assert!(select(wgpu, &registered, DType::F64).is_err());
        assert_eq!(
            select(wgpu, &odd, DType::F32).map(|s| s.backend),
            if cfg!(feature = "wgpu") {
                Ok(BackendKind::Wgpu)
            } else {
                Err(BackendUnavailable {
                    backend: BackendKind::Wgpu,
                    reason: "this build of sata was made without the `wgpu` feature".to_string(),
                })
            }
        );
    }
}
