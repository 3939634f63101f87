//! Baseline of the generic CPU path at d_k = d_v = 16, P = 4 (f32): decode time per token for
//! 1..64 heads, prefill tokens/s, and a state-sized memory stream measured in the same run as
//! the machine floor. Code-generated kernels must beat these numbers.
//!
//! `cargo bench --bench generic` prints criterion's report, then a table with explicit units:
//! time per step, GFLOP/s (FLOPs as counted by `CostModel::decode_flops`), GB/s of state
//! traffic (the state is read and written once per token), and the ratios to the FMA peak of
//! the machine floors of `docs/design.md` and to the stream floor measured here.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{decode_step, inputs, mean_seconds, output_dir};

use criterion::{BenchmarkId, Criterion, Throughput};
use sata::codegen::CostModel;
use sata::{Attention, BackendKind, BackendRequest, KernelConfig, TensorRef};

const D: usize = 16;
const TERMS: usize = 4;
const DECODE_HEADS: [usize; 4] = [1, 4, 16, 64];
const PREFILL_HEADS: [usize; 2] = [1, 64];
const PREFILL_TOKENS: usize = 128;
/// f32 FMA throughput of one core of the reference machine (the dev VM of 2026-11-22, `docs/design.md`).
const DESIGN_FMA_PEAK_GFLOPS: f64 = 105.0;

fn config() -> KernelConfig {
    KernelConfig::new(D, D, TERMS).expect("valid config")
}

/// The generic path, forced: `Attention::new` would pick the registry's specialized kernel.
fn generic() -> Attention<f32> {
    let a = Attention::with_backend(config(), BackendRequest::Kind(BackendKind::CpuGeneric))
        .expect("attention");
    assert!(
        a.kernel().is_none(),
        "the baseline must run the generic path"
    );
    a
}

fn decode(c: &mut Criterion) {
    let cost = CostModel::new(&config());
    let attention = generic();
    let mut group = c.benchmark_group("generic_decode_d16_p4");
    for heads in DECODE_HEADS {
        let mut state = attention.new_state(1, heads).expect("state");
        let (q, k, v) = (
            inputs(heads * D, 0.1),
            inputs(heads * D, 0.2),
            inputs(heads * D, 0.3),
        );
        let mut out = vec![0.0f32; heads * D];
        group.throughput(Throughput::ElementsAndBytes {
            elements: cost.decode_flops * heads as u64,
            bytes: 2 * cost.state_bytes(4) as u64 * heads as u64,
        });
        group.bench_with_input(BenchmarkId::new("heads", heads), &heads, |b, _| {
            b.iter(|| {
                let shape = [1, heads, 1, D];
                decode_step(&attention, &mut state, (&q, &k, &v), shape, &mut out)
            })
        });
    }
    group.finish();
}

fn prefill(c: &mut Criterion) {
    let cost = CostModel::new(&config());
    let attention = generic();
    let mut group = c.benchmark_group("generic_prefill_d16_p4");
    group.sample_size(10);
    for heads in PREFILL_HEADS {
        let n = heads * PREFILL_TOKENS * D;
        let (q, k, v) = (inputs(n, 0.4), inputs(n, 0.5), inputs(n, 0.6));
        let mut out = vec![0.0f32; n];
        group.throughput(Throughput::Elements(
            cost.decode_flops * (heads * PREFILL_TOKENS) as u64,
        ));
        group.bench_with_input(BenchmarkId::new("heads", heads), &heads, |b, _| {
            b.iter(|| {
                let mut state = attention.new_state(1, heads).unwrap();
                let shape = [1, heads, PREFILL_TOKENS, D];
                attention
                    .prefill_into(
                        &mut state,
                        TensorRef::query(&q, shape).unwrap(),
                        TensorRef::key(&k, shape).unwrap(),
                        TensorRef::value(&v, shape).unwrap(),
                        &mut out,
                    )
                    .unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// `s = s * a + b` over a buffer the size of the decode state: the read+write stream floor.
fn stream_floor(c: &mut Criterion) {
    let cost = CostModel::new(&config());
    let mut group = c.benchmark_group("stream_floor_d16_p4");
    for heads in DECODE_HEADS {
        let mut buf = inputs(cost.state_words * heads, 0.7);
        group.throughput(Throughput::Bytes(
            2 * cost.state_bytes(4) as u64 * heads as u64,
        ));
        group.bench_with_input(BenchmarkId::new("heads", heads), &heads, |b, _| {
            b.iter(|| {
                for x in buf.iter_mut() {
                    *x = *x * 0.999_9 + 1e-7;
                }
                black_box(&buf);
            })
        });
    }
    group.finish();
}

fn summary(dir: &std::path::Path) {
    let cost = CostModel::new(&config());
    let state_kib = cost.state_bytes(4) as f64 / 1024.0;
    println!("\nSummary: generic CPU path, d_k = d_v = 16, P = 4, f32, 1 thread");
    println!(
        "  per head: {} FLOPs per decode token, state {state_kib:.1} KiB read + written per token",
        cost.decode_flops
    );
    println!(
        "  {:>5}  {:>12}  {:>9}  {:>10}  {:>10}  {:>12}  {:>12}",
        "heads", "decode/token", "GFLOP/s", "state GB/s", "% FMA peak", "stream floor", "x floor"
    );
    for heads in DECODE_HEADS {
        let (Some(t), Some(floor)) = (
            mean_seconds(dir, "generic_decode_d16_p4", "heads", &heads.to_string()),
            mean_seconds(dir, "stream_floor_d16_p4", "heads", &heads.to_string()),
        ) else {
            continue;
        };
        let flops = (cost.decode_flops * heads as u64) as f64;
        let bytes = (2 * cost.state_bytes(4) * heads) as f64;
        println!(
            "  {heads:>5}  {:>9.2} us  {:>9.2}  {:>10.1}  {:>9.1}%  {:>9.2} us  {:>11.1}x",
            t * 1e6,
            flops / t * 1e-9,
            bytes / t * 1e-9,
            100.0 * flops / t * 1e-9 / DESIGN_FMA_PEAK_GFLOPS,
            floor * 1e6,
            t / floor
        );
    }
    for heads in PREFILL_HEADS {
        if let Some(t) = mean_seconds(dir, "generic_prefill_d16_p4", "heads", &heads.to_string()) {
            let tokens = (heads * PREFILL_TOKENS) as f64;
            println!(
                "  prefill {PREFILL_TOKENS} tokens x {heads} heads: {:.1} ms, {:.0} head-tokens/s, {:.2} GFLOP/s",
                t * 1e3,
                tokens / t,
                tokens * cost.decode_flops as f64 / t * 1e-9
            );
        }
    }
}

fn main() {
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    decode(&mut c);
    prefill(&mut c);
    stream_floor(&mut c);
    c.final_summary();
    summary(&dir);
}
