//! Chunked (matrix-product) prefill against the token loop, one thread, f32, the registry's
//! specialized kernels.
//!
//! - `target`: d16 P4, 2,048 tokens at 1 and 64 heads. Each criterion sample times the token
//!   loop (`with_prefill_chunk(1)`), the chunked prefill at 64 tokens
//!   and the FMA peak back to back; the summary prints the median per-sample speedup (the
//!   issue's target: at least 3x) and the chunked prefill against the FMA floor, `4 m (d_v + 1)`
//!   FLOPs per token at the peak measured in the same sample (target: at most 1.5x at 64 heads).
//! - `chunk`: every registry configuration, one head, at chunks of 1 (the token loop), 16,
//!   32, 48 and 64 tokens, paired the same way: where the default chunk of
//!   `runtime/src/cpu/chunk_choice.rs` comes from.
//!
//! `cargo bench --bench prefill` (`-- target` or `-- chunk` for one part).

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use common::{inputs, median, output_dir, per_call};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use sata::{Attention, KernelConfig, State, TensorRef};
use sata::{Isa, floor};

const TARGET: (usize, usize) = (16, 4);
const TARGET_HEADS: [usize; 2] = [1, 64];
const TARGET_TOKENS: usize = 2048;
const SAMPLES: usize = 10;
/// FMA-peak rounds timed in each sample (a few µs).
const FMA_ITERS: usize = 20_000;
const CHUNKS: [usize; 5] = [1, 16, 32, 48, 64];
const CHUNK_TOKENS: usize = 1024;

/// One prefill call's inputs and output buffer.
struct Call {
    shape: [usize; 4],
    qkv: [Vec<f32>; 3],
    out: Vec<f32>,
}

impl Call {
    fn new(d: usize, heads: usize, tokens: usize) -> Self {
        let len = heads * tokens * d;
        Self {
            shape: [1, heads, tokens, d],
            qkv: [0.1, 0.2, 0.3].map(|salt| inputs(len, salt)),
            out: vec![0.0; len],
        }
    }

    /// Seconds of one prefill of the whole call on `attention`, from a fresh `state`.
    fn time(&mut self, attention: &Attention<f32>, state: &mut State<f32>) -> f64 {
        let [q, k, v] = &self.qkv;
        let shape = self.shape;
        per_call(1, || {
            state.reset();
            attention
                .prefill_into(
                    state,
                    TensorRef::query(q, shape).unwrap(),
                    TensorRef::key(k, shape).unwrap(),
                    TensorRef::value(v, shape).unwrap(),
                    &mut self.out,
                )
                .unwrap();
            black_box(&self.out);
        })
    }
}

fn attention(config: KernelConfig, chunk: usize) -> Attention<f32> {
    let a = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(1)
        .unwrap()
        .with_prefill_chunk(chunk)
        .unwrap();
    assert!(a.kernel().is_some(), "{config}: no registry kernel");
    a
}

/// Seconds per call of the FMA peak loop and the FLOPs it does.
fn fma_peak(isa: Isa) -> f64 {
    let seconds = per_call(1, || {
        black_box(floor::fma_peak(isa, black_box(FMA_ITERS)));
    });
    floor::fma_peak(isa, 1).1 as f64 * FMA_ITERS as f64 / seconds
}

/// One target sample: seconds of the token loop and of the chunked prefill, and the FMA peak
/// in FLOP/s, timed back to back.
#[derive(Clone, Copy)]
struct TargetSample {
    tokens: f64,
    chunked: f64,
    peak: f64,
}

fn target(c: &mut Criterion, samples: &RefCell<Vec<(usize, TargetSample)>>) {
    let (d, terms) = TARGET;
    let config = KernelConfig::new(d, d, terms).unwrap();
    let token_loop = attention(config, 1);
    let chunked = attention(config, 64);
    println!("token loop: {}", token_loop.describe_path());
    println!("chunked:    {}", chunked.describe_path());
    let isa = Isa::detect();
    let mut group = c.benchmark_group("target");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(SAMPLES);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_secs(1));
    for heads in TARGET_HEADS {
        let mut call = Call::new(d, heads, TARGET_TOKENS);
        let mut states = [&token_loop, &chunked].map(|a| a.new_state(1, heads).unwrap());
        let id = BenchmarkId::new(format!("d{d}_p{terms}_{TARGET_TOKENS}_tokens"), heads);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    let tokens = call.time(&token_loop, &mut states[0]);
                    let fast = call.time(&chunked, &mut states[1]);
                    let peak = fma_peak(isa);
                    samples.borrow_mut().push((
                        heads,
                        TargetSample {
                            tokens,
                            chunked: fast,
                            peak,
                        },
                    ));
                    total += fast;
                }
                Duration::from_secs_f64(total)
            })
        });
    }
    group.finish();
}

fn target_summary(samples: &[(usize, TargetSample)]) {
    let (d, terms) = TARGET;
    let config = KernelConfig::new(d, d, terms).unwrap();
    let m = config.features() as f64;
    let flops_per_token = 4.0 * m * (d as f64 + 1.0);
    println!(
        "\nd{d} P{terms}, prefill of {TARGET_TOKENS} tokens, one thread; per head-token, median \
         of {SAMPLES} paired samples"
    );
    println!(
        "| heads | token loop | chunked | FMA floor | speedup (target >= 3) | chunked / floor (target <= 1.5) | token loop / floor | peak |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for heads in TARGET_HEADS {
        let mine: Vec<TargetSample> = samples
            .iter()
            .filter(|(h, _)| *h == heads)
            .map(|&(_, s)| s)
            .collect();
        let per = (heads * TARGET_TOKENS) as f64;
        let floor = |s: &TargetSample| flops_per_token * per / s.peak;
        let us = |x: f64| x / per * 1e6;
        println!(
            "| {heads} | {:.3} µs | {:.3} µs | {:.3} µs | {:.2}x | {:.2}x | {:.2}x | {:.1} GFLOP/s |",
            us(median(mine.iter().map(|s| s.tokens).collect())),
            us(median(mine.iter().map(|s| s.chunked).collect())),
            us(median(mine.iter().map(floor).collect())),
            median(mine.iter().map(|s| s.tokens / s.chunked).collect()),
            median(mine.iter().map(|s| s.chunked / floor(s)).collect()),
            median(mine.iter().map(|s| s.tokens / floor(s)).collect()),
            median(mine.iter().map(|s| s.peak).collect()) * 1e-9,
        );
    }
}

/// Every registry configuration at every chunk of [`CHUNKS`], one head, paired samples:
/// seconds per token of each chunk.
fn chunk_sweep(c: &mut Criterion, rows: &RefCell<Vec<(KernelConfig, [f64; 5])>>) {
    let mut group = c.benchmark_group("chunk");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(SAMPLES);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_millis(500));
    for config in sata::codegen::registry::precompiled_configs() {
        let paths = CHUNKS.map(|chunk| attention(config, chunk));
        let mut states = paths.each_ref().map(|a| a.new_state(1, 1).unwrap());
        let mut call = Call::new(config.d_k(), 1, CHUNK_TOKENS);
        // The value tensor is `d_v` wide.
        call.qkv[2] = inputs(CHUNK_TOKENS * config.d_v(), 0.3);
        call.out = vec![0.0; CHUNK_TOKENS * config.d_v()];
        let mut per_sample: Vec<[f64; 5]> = Vec::new();
        let id = BenchmarkId::new("registry", config.to_string());
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    let times: [f64; 5] = std::array::from_fn(|i| {
                        call.time(&paths[i], &mut states[i]) / CHUNK_TOKENS as f64
                    });
                    total += times[CHUNKS.len() - 1];
                    per_sample.push(times);
                }
                Duration::from_secs_f64(total * CHUNK_TOKENS as f64)
            })
        });
        if per_sample.is_empty() {
            continue; // filtered out
        }
        let medians = std::array::from_fn(|i| median(per_sample.iter().map(|t| t[i]).collect()));
        rows.borrow_mut().push((config, medians));
    }
    group.finish();
}

fn chunk_summary(rows: &[(KernelConfig, [f64; 5])]) {
    println!(
        "\nRegistry kernels, prefill of {CHUNK_TOKENS} tokens, one head, one thread: µs per token \
         (median of paired samples)"
    );
    println!(
        "| config | m | token loop | chunk 16 | chunk 32 | chunk 48 | chunk 64 | best | best vs token loop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (config, t) in rows {
        let (best, &fastest) = t[1..]
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, x)| (CHUNKS[i + 1], x))
            .unwrap();
        println!(
            "| {config} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {best} | {:.2}x |",
            config.features(),
            t[0] * 1e6,
            t[1] * 1e6,
            t[2] * 1e6,
            t[3] * 1e6,
            t[4] * 1e6,
            t[0] / fastest,
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let targets = RefCell::new(Vec::new());
    let rows = RefCell::new(Vec::new());
    target(&mut c, &targets);
    chunk_sweep(&mut c, &rows);
    c.final_summary();
    let targets = targets.into_inner();
    if !targets.is_empty() {
        target_summary(&targets);
    }
    let rows = rows.into_inner();
    if !rows.is_empty() {
        chunk_summary(&rows);
    }
}
