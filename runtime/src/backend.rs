//! Backend names and the selection of the path that actually runs.
//!
//! The names are part of the CLI and API contract and are fixed now, before every backend
//! exists, so that scripts keep working as backends land. Selection never falls back silently:
//! [`Selection::fallback`] says why a requested path was not taken.

use std::str::FromStr;

use sata_codegen::KernelConfig;

/// A backend the runtime knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Specialized (code-generated) CPU kernels from the registry.
    Cpu,
    /// The generic CPU path, any configuration.
    CpuGeneric,
    /// WGSL compute shaders through wgpu.
    Wgpu,
    /// CUDA kernels through cudarc.
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [Self::Cpu, Self::CpuGeneric, Self::Wgpu, Self::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::CpuGeneric => "cpu-generic",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
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
#[error("unknown backend '{0}'; expected one of: auto, cpu, cpu-generic, wgpu, cuda")]
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

/// Picks the backend for `config`.
pub fn select(
    request: BackendRequest,
    config: &KernelConfig,
) -> Result<Selection, BackendUnavailable> {
    let no_specialized =
        || format!("no specialized CPU kernel for {config} in this build; using cpu-generic");
    match request {
        BackendRequest::Kind(BackendKind::CpuGeneric) => Ok(Selection {
            backend: BackendKind::CpuGeneric,
            fallback: None,
        }),
        BackendRequest::Auto | BackendRequest::Kind(BackendKind::Cpu) => Ok(Selection {
            backend: BackendKind::CpuGeneric,
            fallback: Some(no_specialized()),
        }),
        BackendRequest::Kind(backend @ (BackendKind::Wgpu | BackendKind::Cuda)) => {
            Err(BackendUnavailable {
                backend,
                reason: "this build of sata does not include it yet; available: cpu, cpu-generic"
                    .to_string(),
            })
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
    fn cpu_reports_its_fallback_and_gpu_backends_are_unavailable() {
        let config = KernelConfig::new(8, 8, 3).unwrap();
        let cpu = select(BackendRequest::Kind(BackendKind::Cpu), &config).unwrap();
        assert_eq!(cpu.backend, BackendKind::CpuGeneric);
        assert!(cpu.fallback.unwrap().contains("d_k=8, d_v=8, P=3"));
        let generic = select(BackendRequest::Kind(BackendKind::CpuGeneric), &config).unwrap();
        assert_eq!(generic.fallback, None);
        assert!(select(BackendRequest::Kind(BackendKind::Wgpu), &config).is_err());
        assert!(select(BackendRequest::Kind(BackendKind::Cuda), &config).is_err());
    }
}
