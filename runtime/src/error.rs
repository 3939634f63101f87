//! The runtime's error type. Every public entry point returns it; none panics on user input.

use sata_codegen::{ConfigError, KernelConfig};

use crate::element::DType;
use crate::tensor::Role;

/// Position of one query: which batch entry, head and token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryIndex {
    pub batch: usize,
    pub head: usize,
    pub token: usize,
}

impl std::fmt::Display for QueryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {}, head {}, token {}",
            self.batch, self.head, self.token
        )
    }
}

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum SataError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),

    #[error("{role} tensor has {len} elements but shape {shape:?} needs {expected}")]
    LengthMismatch {
        role: Role,
        len: usize,
        shape: [usize; 4],
        expected: usize,
    },

    #[error("{role} tensor has last dimension {found}, expected {expected} ({what})")]
    DimMismatch {
        role: Role,
        found: usize,
        expected: usize,
        what: &'static str,
    },

    #[error("{role} tensor is [{}, {}, ..] (batch, heads) but {against} is [{}, {}, ..]", .found.0, .found.1, .expected.0, .expected.1)]
    BatchHeadsMismatch {
        role: Role,
        found: (usize, usize),
        against: &'static str,
        expected: (usize, usize),
    },

    #[error("{role} tensor has {found} tokens but {against} has {expected}{hint}")]
    TokenMismatch {
        role: Role,
        found: usize,
        against: &'static str,
        expected: usize,
        hint: &'static str,
    },

    #[error("{role} tensor has a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        role: Role,
        index: usize,
        value: f64,
    },

    #[error(
        "a state needs at least one batch entry and one head, got batch={batch}, heads={heads}"
    )]
    EmptyState { batch: usize, heads: usize },

    #[error("state size overflows memory: batch={batch} x heads={heads} x {per_head} words")]
    StateTooLarge {
        batch: usize,
        heads: usize,
        per_head: usize,
    },

    #[error("state was made for {state} but this attention is {attention}")]
    StateConfigMismatch {
        state: KernelConfig,
        attention: KernelConfig,
    },

    #[error(
        "state holds non-finite values (an earlier call overflowed {dtype}); reset it or restore a checkpoint"
    )]
    StatePoisoned { dtype: DType },

    #[error(
        "{count} of {queries} queries had a non-positive or non-finite denominator (first at {first}: {value:e}); \
         with an odd top degree (P even) the truncated exponential goes negative for very negative q·k/c"
    )]
    NonPositiveDenominator {
        count: usize,
        queries: usize,
        first: QueryIndex,
        value: f64,
    },

    #[error(transparent)]
    Backend(#[from] crate::backend::BackendUnavailable),

    /// The GPU device failed (out of memory, a limit exceeded, a lost device).
    #[error("GPU error on {adapter}: {message}")]
    Gpu { adapter: String, message: String },

    /// The CUDA backend failed: no driver or NVRTC, a compile error, a launch error.
    #[error("CUDA: {message}")]
    Cuda { message: String },

    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}
