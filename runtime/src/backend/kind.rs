//! Backend names, what a caller asks for, and what was chosen.
//!
//! The names are part of the CLI and API contract, so that scripts keep working as backends
//! land. Selection never falls back silently: [`Selection::fallback`] says why a requested
//! path was not taken.

use std::str::FromStr;

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

    /// The cargo feature a build needs for this backend (the CPU needs none).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Cpu | Self::CpuGeneric => None,
            Self::Wgpu => Some("wgpu"),
            Self::Cuda | Self::CudaHost => Some("cuda"),
        }
    }

    /// Whether this build has the backend.
    pub fn is_built(self) -> bool {
        match self {
            Self::Cpu | Self::CpuGeneric => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda | Self::CudaHost => cfg!(sata_cuda),
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
