//! How a specialized kernel runs one call, passed by the runtime to generated code. Its own
//! file, below both the kernel trait and the drivers that read it.

use super::simd::Isa;

/// How a specialized kernel runs one call: the instruction set, and how many tokens the
/// forward entries take at a time ([`Execution::chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub isa: Isa,
    /// Tokens per chunk of the chunked prefill, absorb and query (`docs/design.md`, section
    /// 1), at most the drivers' `MAX_CHUNK`; `1` runs them token by token. Calls of fewer than
    /// the drivers' `MIN_CHUNKED_TOKENS` tokens (a decode step) and compensated lanes always
    /// run token by token.
    pub chunk: usize,
    /// Whether a chunked call splits its lane's chunks over the current rayon pool (the
    /// backend sets it for a call with fewer lanes than threads and runs the call inside the
    /// pool). The results are bit-identical either way (`super::chunked_parallel`).
    pub parallel_chunks: bool,
}

impl Execution {
    /// This execution for one call, its chunks split over the pool or not.
    pub(crate) fn splitting(self, parallel_chunks: bool) -> Self {
        Self {
            parallel_chunks,
            ..self
        }
    }
}
