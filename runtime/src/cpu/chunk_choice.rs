//! The forward chunk the specialized kernels run with unless told otherwise, chosen from
//! measurements (`benches/results/prefill-2026-12-02.md`, `cargo bench --bench prefill`): the
//! chunked form through `matrixmultiply` measured 0.29-0.93x the token loop's speed on every
//! registry kernel, so every configuration runs the token loop by default and the chunked
//! form is opt-in (`Attention::with_prefill_chunk`) until it is faster.

/// Tokens per chunk of the forward entries by default (1: the token loop).
pub(crate) const DEFAULT_CHUNK: usize = 1;

/// How the forward entries run, for `describe_path`: `chunks of 64` or `token loop`.
pub(crate) fn describe(chunk: usize) -> String {
    match chunk {
        1 => "token loop".to_string(),
        n => format!("chunks of {n}"),
    }
}
