//! The backward against the forward on the same inputs, in one run: a causal
//! `forward_for_training` (the forward of training) and `backward` (the two passes), both on
//! the CPU backend's specialized kernel, d_k = d_v = 16, P = 4, f32, one thread. Prints
//! backward / forward from criterion's means and, because the machines this runs on are
//! noisy, the median of paired samples (one forward, then one backward, repeated), and the
//! backward's GFLOP/s against the FLOP model (177 kFLOP per token per head at d16 P4,
//! `docs/design.md`).
//!
//! `cargo bench --bench backward`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{inputs, mean_seconds, output_dir, training_inputs};
use criterion::{BenchmarkId, Criterion, Throughput};
use sata::{Attention, KernelConfig, Mode, TensorRef};

const D: usize = 16;
const TERMS: usize = 4;
/// (heads, tokens).
const CASES: [(usize, usize); 4] = [(1, 1024), (1, 8192), (64, 1024), (64, 8192)];

fn name(heads: usize, tokens: usize) -> String {
    format!("{heads}x{tokens}")
}

/// Median backward / forward of paired samples per case, and the number of pairs.
type Paired = Vec<(f64, usize)>;

fn bench(c: &mut Criterion, attention: &Attention<f32>) -> Paired {
    let mut paired = Vec::new();
    let mut group = c.benchmark_group("training");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(10);
    for (heads, n) in CASES {
        let len = heads * n * D;
        let (q, k, v, dy) = training_inputs(len);
        let shape = [1, heads, n, D];
        let forward = || {
            let mut state = attention.new_state(1, heads).unwrap();
            attention
                .forward_for_training(
                    &mut state,
                    Mode::Causal,
                    TensorRef::query(&q, shape).unwrap(),
                    TensorRef::key(&k, shape).unwrap(),
                    TensorRef::value(&v, shape).unwrap(),
                )
                .unwrap()
        };
        group.throughput(Throughput::Elements((heads * n) as u64));
        group.bench_function(BenchmarkId::new("forward", name(heads, n)), |b| {
            b.iter(|| black_box(forward()))
        });
        let (_, saved) = forward();
        group.bench_function(BenchmarkId::new("backward", name(heads, n)), |b| {
            b.iter(|| {
                let dy = TensorRef::output_gradient(&dy, shape).unwrap();
                black_box(attention.backward(&saved, dy, None).unwrap())
            })
        });
        // Pairs for at least 4 s and at least 5 of them.
        let (start, mut ratios) = (Instant::now(), Vec::new());
        while ratios.len() < 5 || start.elapsed() < Duration::from_secs(4) {
            let t = Instant::now();
            let (_, saved) = black_box(forward());
            let f = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let dy = TensorRef::output_gradient(&dy, shape).unwrap();
            black_box(attention.backward(&saved, dy, None).unwrap());
            ratios.push(t.elapsed().as_secs_f64() / f);
        }
        ratios.sort_by(f64::total_cmp);
        paired.push((ratios[ratios.len() / 2], ratios.len()));
    }
    group.finish();
    paired
}

/// Which code runs the backward, from a small call.
fn backward_path(attention: &Attention<f32>) -> String {
    let shape = [1, 1, 1, D];
    let x = inputs(D, 0.5);
    let mut state = attention.new_state(1, 1).unwrap();
    let (_, saved) = attention
        .forward_for_training(
            &mut state,
            Mode::Causal,
            TensorRef::query(&x, shape).unwrap(),
            TensorRef::key(&x, shape).unwrap(),
            TensorRef::value(&x, shape).unwrap(),
        )
        .unwrap();
    attention
        .backward(&saved, TensorRef::output_gradient(&x, shape).unwrap(), None)
        .unwrap()
        .path
}

fn main() {
    let config = KernelConfig::new(D, D, TERMS).unwrap();
    // One thread: the ratio is per thread (the default pool would run the 64-head cases'
    // lanes on every core).
    let attention = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(1)
        .unwrap();
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    let paired = bench(&mut c, &attention);
    c.final_summary();
    println!(
        "\nTraining step parts, d{D} P{TERMS}, f32, 1 thread; forward on {}, backward on {}",
        attention.describe_path(),
        backward_path(&attention)
    );
    println!(
        "  {:>12}  {:>14} {:>14} {:>10} {:>18} {:>22}",
        "heads x n",
        "forward/token",
        "backward/token",
        "ratio",
        "backward GFLOP/s",
        "paired ratio (pairs)"
    );
    for ((heads, n), (ratio, pairs)) in CASES.into_iter().zip(paired) {
        let id = name(heads, n);
        let (Some(f), Some(b)) = (
            mean_seconds(&dir, "training", "forward", &id),
            mean_seconds(&dir, "training", "backward", &id),
        ) else {
            continue;
        };
        let tokens = (heads * n) as f64;
        println!(
            "  {id:>12}  {:>11.3} us {:>11.3} us {:>9.2}x {:>18.2} {:>16.2}x ({pairs})",
            f / tokens * 1e6,
            b / tokens * 1e6,
            b / f,
            177_000.0 * tokens / b * 1e-9,
            ratio
        );
    }
}
