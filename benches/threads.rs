//! The CPU backend on one thread against several, d_k = d_v = 16, P = 4, f32, specialized
//! kernel: decode steps at 1 to 64 heads, a 64-head prefill, a one-lane prefill of 2,048
//! tokens (its chunks split over the threads) and a 64-head backward. The
//! machines this runs on are noisy, so besides criterion's means it prints the median of
//! paired samples (one call on 1 thread, then the same call on N, repeated): the speedup.
//! Where the speedup of small calls crosses 1 is what sets `PARALLEL_MIN_WORK`: run with
//! `SATA_PARALLEL_MIN_WORK=0` to make every call of several lanes parallel.
//!
//! `cargo bench --bench threads` (N = the machine's cores, at least 2).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::inputs;
use criterion::{BenchmarkId, Criterion};
use sata::{Attention, KernelConfig, Mode, TensorRef};

const D: usize = 16;
const TERMS: usize = 4;
/// Decode steps per sample.
const STEPS: usize = 8;

/// One call of a case on `attention` (its inputs made beforehand, outside the timing).
fn call(attention: &Attention<f32>, case: &Case) {
    let (heads, n) = (case.heads, case.tokens);
    let [q, k, v] = &case.qkv;
    let shape = [1, heads, n, D];
    let (q, k, v) = (
        TensorRef::query(q, shape).unwrap(),
        TensorRef::key(k, shape).unwrap(),
        TensorRef::value(v, shape).unwrap(),
    );
    let mut state = attention.new_state(1, heads).unwrap();
    match case.kind {
        "decode" => {
            for _ in 0..STEPS {
                black_box(attention.decode(&mut state, q, k, v).unwrap());
            }
        }
        "prefill" => {
            black_box(attention.prefill(&mut state, q, k, v).unwrap());
        }
        _ => {
            let (_, saved) = attention
                .forward_for_training(&mut state, Mode::Causal, q, k, v)
                .unwrap();
            let dy = TensorRef::output_gradient(q.data(), shape).unwrap();
            black_box(attention.backward(&saved, dy, None).unwrap());
        }
    }
}

struct Case {
    kind: &'static str,
    heads: usize,
    tokens: usize,
    qkv: [Vec<f32>; 3],
}

impl Case {
    fn new(kind: &'static str, heads: usize, tokens: usize) -> Self {
        let len = heads * tokens * D;
        let qkv = [inputs(len, 0.1), inputs(len, 0.2), inputs(len, 0.3)];
        Self {
            kind,
            heads,
            tokens,
            qkv,
        }
    }
}

fn main() {
    let config = KernelConfig::new(D, D, TERMS).unwrap();
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let one = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(1)
        .unwrap();
    let many = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(cores)
        .unwrap();
    let mut cases: Vec<Case> = [1, 2, 4, 8, 16, 64]
        .map(|heads| Case::new("decode", heads, 1))
        .into();
    cases.push(Case::new("prefill", 64, 256));
    // One lane: its chunks split over the threads.
    cases.push(Case::new("prefill", 1, 2048));
    cases.push(Case::new("training", 64, 256));
    let mut c = Criterion::default()
        .output_directory(&common::output_dir())
        .configure_from_args();
    {
        let mut group = c.benchmark_group("threads");
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(10);
        for case in cases.iter().filter(|c| c.heads == 64) {
            let id = format!("{}_{}x{}", case.kind, case.heads, case.tokens);
            for (label, attention) in [("1", &one), ("n", &many)] {
                group.bench_function(BenchmarkId::new(label, &id), |b| {
                    b.iter(|| call(attention, case))
                });
            }
        }
        group.finish();
    }
    c.final_summary();
    println!(
        "\nd{D} P{TERMS} f32, {}; {cores} threads against 1, median of paired samples",
        many.describe_path()
    );
    println!(
        "  {:>9} {:>6} {:>7} {:>14} {:>14} {:>9} {:>7}",
        "call", "heads", "tokens", "1 thread", "n threads", "speedup", "pairs"
    );
    for case in &cases {
        let (start, mut pairs) = (Instant::now(), Vec::new());
        while pairs.len() < 9 || start.elapsed() < Duration::from_secs(2) {
            let t = Instant::now();
            call(&one, case);
            let a = t.elapsed().as_secs_f64();
            let t = Instant::now();
            call(&many, case);
            pairs.push((a, t.elapsed().as_secs_f64()));
        }
        let mut ratios: Vec<f64> = pairs.iter().map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let median = |x: &mut Vec<f64>| {
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let (mut a, mut b): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        println!(
            "  {:>9} {:>6} {:>7} {:>11.1} us {:>11.1} us {:>8.2}x {:>7}",
            case.kind,
            case.heads,
            case.tokens,
            median(&mut a) * 1e6,
            median(&mut b) * 1e6,
            ratios[ratios.len() / 2],
            pairs.len()
        );
    }
}
