//! The forward chunk each configuration runs with unless told otherwise, chosen from
//! measurements (`benches/results/prefill-2026-12-02.md`, `cargo bench --bench prefill`).

use super::driver::MAX_CHUNK;

/// Tokens per chunk of the chunked forward entries for a kernel of these sizes.
pub(crate) fn prefill_chunk(d_k: usize, d_v: usize, features: usize) -> usize {
    let _ = (d_k, d_v, features);
    MAX_CHUNK
}

/// How the forward entries run, for `describe_path`: `chunks of 64` or `token loop`.
pub(crate) fn describe(chunk: usize) -> String {
    match chunk {
        0 | 1 => "token loop".to_string(),
        n => format!("chunks of {n}"),
    }
}
