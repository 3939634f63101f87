//! The forward chunk the specialized kernels run with unless told otherwise, chosen from
//! measurements (`cargo bench --bench prefill -- chunk`, `benches/results/prefill-2026-12-06.md`):
//! across the registry the chunked form at 64 tokens was the fastest chunk wherever it beat
//! the token loop, and it beat it from about 64 features on (d4 P5, 70 features: 1.2x; d8 P4,
//! 165: 1.3x; d16 P4, 969: 1.5x; d16 P6, 20,349: 2.9x). Below that the chunk's own work (the
//! pairs inside it, `O(chunk (d_k + d_v))` per token) outweighs the state's (`m (d_v + 1)`):
//! d16 P2, 17 features, ran at 0.54x.

use super::chunk_features::CHUNK;

/// Features from which the chunked form is the default.
pub(crate) const MIN_CHUNKED_FEATURES: usize = 64;

/// Tokens per chunk of the forward entries by default for a kernel of `features` features
/// (1: the token loop).
pub(crate) fn default_chunk(features: usize) -> usize {
    if features >= MIN_CHUNKED_FEATURES {
        CHUNK
    } else {
        1
    }
}

/// How the forward entries run, for `describe_path`: `chunks of 64` or `token loop`.
pub(crate) fn describe(chunk: usize) -> String {
    match chunk {
        1 => "token loop".to_string(),
        n => format!("chunks of {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_kernels_keep_the_token_loop() {
        assert_eq!(default_chunk(17), 1);
        assert_eq!(default_chunk(63), 1);
        assert_eq!(default_chunk(969), CHUNK);
        assert_eq!(describe(default_chunk(969)), "chunks of 64");
        assert_eq!(describe(1), "token loop");
    }
}
