//! The runtime's error type. Every public entry point returns it; none panics on user input.

use std::path::PathBuf;

use sata_codegen::{ConfigError, KernelConfig};

use crate::backend::BackendUnavailable;
use crate::element::DType;
use crate::shape::Role;

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
    #[error("cannot run on the requested threads: {reason}")]
    InvalidThreads { reason: String },
    #[error("a prefill chunk must be 1 (token by token) to {max} tokens, got {chunk}")]
    InvalidChunk { chunk: usize, max: usize },
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
        "output value {value} at flat index {index} exceeds the range of {dtype} (the state has \
         advanced; only the output could not be stored)"
    )]
    OutputOverflow {
        dtype: &'static str,
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
        "a training record of {saved} was given to the backward of an attention for {attention}"
    )]
    SavedConfigMismatch {
        saved: KernelConfig,
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
    Backend(#[from] BackendUnavailable),

    /// The GPU device failed (out of memory, a limit exceeded, a lost device).
    #[error("GPU error on {adapter}: {message}")]
    Gpu { adapter: String, message: String },

    /// The CUDA backend failed: no driver or NVRTC, a compile error, a launch error.
    #[error("CUDA: {message}")]
    Cuda { message: String },

    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a SATA checkpoint (bad magic bytes)")]
    BadMagic,
    #[error(
        "written by a newer sata (format version {found}); this build reads versions up to {supported}"
    )]
    FutureVersion { found: u32, supported: u32 },
    #[error("format version 0 does not exist; the file is corrupt")]
    ZeroVersion,
    #[error("truncated or over-long: header says {expected} bytes, file has {found}")]
    Length { expected: u128, found: usize },
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}); the file is corrupt"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("stored configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("unknown element type code {0}")]
    UnknownDType(u8),
    #[error("state is {found} but {expected} was asked for")]
    DType { found: DType, expected: DType },
    #[error("unknown state layout code {0}")]
    UnknownLayout(u8),
    #[error(
        "header says {found} data words, but batch={batch} x heads={heads} x {per_head} = {expected}"
    )]
    WordCount {
        found: u64,
        batch: u32,
        heads: u32,
        per_head: usize,
        expected: u128,
    },
    #[error("holds a non-finite value at word {0}")]
    NonFinite(usize),
    #[error("batch={batch} or heads={heads} does not fit the format's 32-bit fields")]
    TooManyLanes { batch: usize, heads: usize },
    #[error("refusing to save a poisoned state (it holds non-finite values)")]
    Poisoned,
}
