//! Backend names and the selection of the path that actually runs.
//!
//! The names are part of the CLI and API contract and are fixed now, before every backend
//! exists, so that scripts keep working as backends land. Selection never falls back silently:
//! [`Selection::fallback`] says why a requested path was not taken.

use std::str::FromStr;

use sata_codegen::KernelConfig;

use crate::element::DType;
use crate::kernel::{self, SpecializedKernel};

/// A backend the runtime knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Specialized (code-generated) CPU kernels from the registry.
    Cpu,
    /// The generic CPU path, any configuration.
    CpuGeneric,
    /// WGSL compute shaders through wgpu.
    Wgpu,
    /// CUDA kernels through cudarc, on an NVIDIA GPU.
    Cuda,
    /// The same CUDA kernels compiled by g++ and executed on the CPU (verification; slow).
    CudaHost,
}

impl BackendKind {
    pub const ALL: [BackendKind; 5] = [
        Self::Cpu,
        Self::CpuGeneric,
        Self::Wgpu,
        Self::Cuda,
        Self::CudaHost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::CpuGeneric => "cpu-generic",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
            Self::CudaHost => "cuda-host",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendRequest {
    /// The fastest path available for the configuration.
    #[default]
    Auto,
    /// Exactly this backend (with a visible fallback for `cpu` when no kernel matches).
    Kind(BackendKind),
}

/// An unknown backend name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}'; expected one of: auto, cpu, cpu-generic, wgpu, cuda, cuda-host")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendRequest {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .map(Self::Kind)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

/// The backend chosen for a configuration, and why a requested one was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The backend whose code runs.
    pub backend: BackendKind,
    /// Set when the request named (or `auto` preferred) a faster path that was not available.
    pub fallback: Option<String>,
}

/// A backend that cannot run in this build or on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend '{backend}' is not available: {reason}")]
pub struct BackendUnavailable {
    pub backend: BackendKind,
    pub reason: String,
}

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
            let (built, feature) = match kind {
                BackendKind::Wgpu => (cfg!(feature = "wgpu"), "wgpu"),
                _ => (cfg!(feature = "cuda"), "cuda"),
            };
            if !built {
                return Err(BackendUnavailable {
                    backend: kind,
                    reason: format!("this build of sata was made without the `{feature}` feature"),
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
            if cfg!(feature = "cuda") {
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
