//! Soak run (a benchmark, not a timed test): one long stream of decode tokens through the f32
//! specialized kernel twice, with a plain and with a Kahan-compensated state
//! (`Accumulation`), and, on the same stream, the float64 generic path as the reference.
//! Prints the relative error of each f32 run's outputs against the f64 ones for the block of
//! tokens ending at each power of ten, each f32 state's order-0 denominator word (a token
//! count) against the true count, and the time each f32 run took.
//!
//! `cargo bench --bench soak` (10^7 tokens; `SATA_SOAK_TOKENS=<n>` for another length).

use std::time::Instant;

use std::time::Duration;

use sata::{Accumulation, Attention, BackendKind, BackendRequest, KernelConfig, TensorRef};

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
    let modes = [Accumulation::Plain, Accumulation::Compensated];
    let mut s32 = modes.map(|a| f32_path.new_state_with(1, 1, a).unwrap());
    let mut s64 = f64_path.new_state(1, 1).unwrap();
    let mut stream = Stream(d as u64 * 1000 + terms as u64);
    let m = config.features();
    println!(
        "\nd_k = d_v = {d}, P = {terms}: f32 path {}, plain and compensated; reference f64 \
         cpu-generic; {tokens} tokens",
        f32_path.describe_path()
    );
    println!(
        "  {:>12}  {:>12} {:>12}  {:>12} {:>12}  {:>9}",
        "tokens", "error plain", "compensated", "Z[0]-n plain", "compensated", "elapsed"
    );
    let start = Instant::now();
    let mut f32_time = [Duration::ZERO; 2];
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
        let mut errors = [0.0; 2];
        for (i, state) in s32.iter_mut().enumerate() {
            let t = Instant::now();
            let y32 = f32_path
                .prefill(
                    state,
                    TensorRef::query(&q, shape).unwrap(),
                    TensorRef::key(&k, shape).unwrap(),
                    TensorRef::value(&v, shape).unwrap(),
                )
                .unwrap();
            f32_time[i] += t.elapsed();
            errors[i] = rel_err(&y32.output.data, &y64.output.data);
        }
        done += n;
        if done == next_report || done == tokens {
            // Z[0], the order-0 denominator word, is the number of tokens absorbed.
            let z0 = |s: &sata::State<f32>| f64::from(s.as_slice()[m * d]) - done as f64;
            println!(
                "  {done:>12}  {:>12.3e} {:>12.3e}  {:>12} {:>12}  {:>7.1} s",
                errors[0],
                errors[1],
                z0(&s32[0]),
                z0(&s32[1]),
                start.elapsed().as_secs_f64()
            );
            next_report *= 10;
        }
    }
    println!(
        "  f32 time per token: plain {:.2} us, compensated {:.2} us",
        f32_time[0].as_secs_f64() * 1e6 / tokens as f64,
        f32_time[1].as_secs_f64() * 1e6 / tokens as f64
    );
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
