//! The forward chunk each configuration runs with unless told otherwise, chosen from
//! measurements (`benches/results/prefill-2026-12-02.md`, `cargo bench --bench prefill`): the
//! chunked form through `matrixmultiply` measured 0.29-0.93x the token loop's speed on every
//! registry kernel, so every configuration runs the token loop by default and the chunked
//! form is opt-in (`Attention::with_prefill_chunk`) until it is faster.

/// Tokens per chunk of the forward entries for a kernel of these sizes (1: the token loop).
pub(crate) fn prefill_chunk(d_k: usize, d_v: usize, features: usize) -> usize {
    let _ = (d_k, d_v, features);
    1
}

/// How the forward entries run, for `describe_path`: `chunks of 64` or `token loop`.
pub(crate) fn describe(chunk: usize) -> String {
    match chunk {
        0 | 1 => "token loop".to_string(),
        n => format!("chunks of {n}"),
    }
}
