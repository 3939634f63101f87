//! Soak run (a benchmark, not a timed test): one long stream of decode tokens through the f32
//! specialized kernel and, on the same stream, the float64 generic path as the reference.
//! Prints the relative error of the f32 outputs against the f64 ones for the block of tokens
//! ending at each power of ten, and the f32 state's order-0 denominator word (a token count)
//! against the true count.
//!
//! `cargo bench --bench soak` (10^7 tokens; `SATA_SOAK_TOKENS=<n>` for another length).

use std::time::Instant;

use sata::{Attention, BackendKind, BackendRequest, KernelConfig, TensorRef};

/// Tokens per prefill call: the stream is causal token by token either way; blocks only cut
/// the per-call overhead.
const BLOCK: usize = 4096;

/// A small deterministic generator (splitmix64) for the stream, uniform in [-1, 1).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// `n` values rounded to f32 (so both paths see the same numbers).
    fn block(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next() as f32 as f64).collect()
    }
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn soak(d: usize, terms: usize, tokens: usize) {
    let config = KernelConfig::new(d, d, terms).unwrap();
    let f32_path = Attention::<f32>::new(config).unwrap();
    let f64_path =
        Attention::<f64>::with_backend(config, BackendRequest::Kind(BackendKind::CpuGeneric))
            .unwrap();
    let (mut s32, mut s64) = (
        f32_path.new_state(1, 1).unwrap(),
        f64_path.new_state(1, 1).unwrap(),
    );
    let mut stream = Stream(d as u64 * 1000 + terms as u64);
    let m = config.features();
    println!(
        "\nd_k = d_v = {d}, P = {terms}: f32 path {}, reference f64 cpu-generic, {tokens} tokens",
        f32_path.describe_path()
    );
    println!(
        "  {:>12}  {:>22}  {:>16}  {:>10}",
        "tokens", "rel. error of block", "f32 Z[0] - count", "elapsed"
    );
    let start = Instant::now();
    let mut done = 0usize;
    let mut next_report = 1000usize;
    while done < tokens {
        // Blocks end exactly at every power of ten so each report covers the tokens just
        // before it.
        let n = BLOCK.min(next_report - done).min(tokens - done);
        let (q, k, v) = (
            stream.block(n * d),
            stream.block(n * d),
            stream.block(n * d),
        );
        let shape = [1, 1, n, d];
        let y64 = f64_path
            .prefill(
                &mut s64,
                TensorRef::query(&q, shape).unwrap(),
                TensorRef::key(&k, shape).unwrap(),
                TensorRef::value(&v, shape).unwrap(),
            )
            .unwrap();
        let f = |x: &[f64]| x.iter().map(|&y| y as f32).collect::<Vec<f32>>();
        let (q, k, v) = (f(&q), f(&k), f(&v));
        let y32 = f32_path
            .prefill(
                &mut s32,
                TensorRef::query(&q, shape).unwrap(),
                TensorRef::key(&k, shape).unwrap(),
                TensorRef::value(&v, shape).unwrap(),
            )
            .unwrap();
        done += n;
        if done == next_report || done == tokens {
            // Z[0], the order-0 denominator word, is the number of tokens absorbed.
            let z0 = f64::from(s32.as_slice()[m * d]);
            println!(
                "  {done:>12}  {:>22.3e}  {:>16}  {:>9.1} s",
                rel_err(&y32.output.data, &y64.output.data),
                z0 - done as f64,
                start.elapsed().as_secs_f64()
            );
            next_report *= 10;
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let tokens = std::env::var("SATA_SOAK_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    for d in [8, 16] {
        soak(d, 4, tokens);
    }
}
