//! Where SATA decode overtakes a tuned softmax decode: SATA d16 P4 (the specialized kernel)
//! against the online-softmax (flash-decoding style) AVX2 baseline of
//! `benches/common/online_softmax.rs` over a contiguous f32 KV cache, at 1 and 64 heads, on one
//! thread and on every core (both threaded over heads: SATA by the runtime's own rule, softmax
//! on a rayon pool of the same size).
//!
//! Each criterion sample times one SATA decode step and one softmax decode step back to back,
//! so their ratio is paired; the summary reports per head-token medians, the median ratio and
//! the crossover context (log-interpolated between measured contexts), and writes
//! `benches/results/crossover.csv` for `cargo run --example plot_crossover`.
//!
//! `cargo bench --bench crossover`

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use common::online_softmax::KvCache;
use common::{decode_step, inputs, median, output_dir, per_call};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use sata::{Attention, BackendKind, BackendRequest, KernelConfig, TensorRef};

const D: usize = 16;
const TERMS: usize = 4;
const SAMPLES: usize = 15;
/// Heads and the contexts measured at that head count (64 heads x 65,536 tokens is a 537 MB
/// cache).
const CASES: [(usize, &[usize]); 2] = [
    (
        1,
        &[
            256,
            512,
            1 << 10,
            1 << 11,
            1 << 12,
            1 << 14,
            1 << 16,
            1 << 18,
            1 << 20,
        ],
    ),
    (
        64,
        &[
            64,
            128,
            256,
            512,
            1 << 10,
            1 << 11,
            1 << 12,
            1 << 14,
            1 << 16,
        ],
    ),
];

/// Head-tokens of cache below which the softmax baseline stays on the calling thread, as a
/// tuned decode would: on the 2-core VM (2026-12-02) waking the pool cost about 20 µs, so one
/// head never gained and 64 heads gained from 256 tokens of context on.
const SOFTMAX_PARALLEL_MIN: usize = 64 * 256;

/// One paired sample: seconds per decode step (all heads) of each.
#[derive(Clone, Copy)]
struct Sample {
    threads: usize,
    heads: usize,
    context: usize,
    sata: f64,
    softmax: f64,
}

fn run(c: &mut Criterion, threads: usize, samples: &RefCell<Vec<Sample>>) {
    let config = KernelConfig::new(D, D, TERMS).unwrap();
    let attention = Attention::<f32>::with_backend(config, BackendRequest::Kind(BackendKind::Cpu))
        .unwrap()
        .with_threads(threads)
        .unwrap();
    assert!(
        attention.kernel().is_some(),
        "d16 P4 has a specialized kernel"
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for (heads, contexts) in CASES {
        let mut group = c.benchmark_group(format!("crossover_{heads}h_{threads}t"));
        group.sample_size(SAMPLES.max(10));
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(2));
        let (q, k, v) = (
            inputs(heads * D, 0.1),
            inputs(heads * D, 0.2),
            inputs(heads * D, 0.3),
        );
        let shape = [1, heads, 1, D];
        let mut out = vec![0.0f32; heads * D];
        let mut state = attention.new_state(1, heads).unwrap();
        let prompt = [1, heads, 64, D];
        let (pq, pk, pv) = (
            inputs(heads * 64 * D, 0.4),
            inputs(heads * 64 * D, 0.5),
            inputs(heads * 64 * D, 0.6),
        );
        attention
            .prefill(
                &mut state,
                TensorRef::query(&pq, prompt).unwrap(),
                TensorRef::key(&pk, prompt).unwrap(),
                TensorRef::value(&pv, prompt).unwrap(),
            )
            .unwrap();
        for &context in contexts {
            let cache = KvCache::new(
                heads,
                context,
                D,
                inputs(heads * context * D, 0.8),
                inputs(heads * context * D, 0.9),
            );
            let pool = (threads > 1 && heads * context >= SOFTMAX_PARALLEL_MIN).then_some(&pool);
            group.bench_function(BenchmarkId::new("paired", context), |b| {
                b.iter_custom(|iters| {
                    let sata = per_call(iters, || {
                        decode_step(&attention, &mut state, (&q, &k, &v), shape, &mut out)
                    });
                    let softmax = per_call(iters, || {
                        cache.decode(&q, &mut out, pool);
                        std::hint::black_box(&out);
                    });
                    samples.borrow_mut().push(Sample {
                        threads,
                        heads,
                        context,
                        sata,
                        softmax,
                    });
                    Duration::from_secs_f64(softmax * iters as f64)
                })
            });
        }
        group.finish();
        println!(
            "crossover_{heads}h_{threads}t: SATA {}; softmax {} on {} thread(s)",
            attention.describe_path(),
            common::online_softmax::path(D),
            threads
        );
    }
}

/// The smallest context at which softmax costs as much as SATA, interpolating `log ratio`
/// linearly in `log context` between the two measured contexts that bracket 1.
fn crossover(points: &[(usize, f64)]) -> String {
    if points.first().is_some_and(|&(_, r)| r >= 1.0) {
        return format!("<= {}", points[0].0);
    }
    for w in points.windows(2) {
        let ((n0, r0), (n1, r1)) = (w[0], w[1]);
        if r1 >= 1.0 {
            let t = -r0.ln() / (r1.ln() - r0.ln());
            let n = ((n0 as f64).ln() + t * ((n1 as f64).ln() - (n0 as f64).ln())).exp();
            return format!("{n:.0}");
        }
    }
    format!("> {}", points.last().map_or(0, |p| p.0))
}

fn summary(samples: &[Sample], thread_counts: &[usize]) {
    let mut csv = String::from("threads,heads,context,softmax_us,sata_us,softmax_over_sata\n");
    println!(
        "\nDecode per head-token, d{D} P{TERMS} SATA against online softmax (paired samples, medians)"
    );
    for &threads in thread_counts {
        for (heads, contexts) in CASES {
            let mut ratios = Vec::new();
            for &context in contexts {
                let mine: Vec<Sample> = samples
                    .iter()
                    .filter(|s| s.threads == threads && s.heads == heads && s.context == context)
                    .copied()
                    .collect();
                // Criterion's warm-up calls come first; the last SAMPLES are the measured ones.
                let measured = &mine[mine.len().saturating_sub(SAMPLES)..];
                if measured.is_empty() {
                    continue;
                }
                let per_token = |f: fn(&Sample) -> f64| {
                    median(measured.iter().map(|s| f(s) / heads as f64 * 1e6).collect())
                };
                let (soft, sata) = (per_token(|s| s.softmax), per_token(|s| s.sata));
                let ratio = median(measured.iter().map(|s| s.softmax / s.sata).collect());
                ratios.push((context, ratio));
                println!(
                    "  {threads} thread(s), {heads:>2} heads, context {context:>8}: softmax {soft:>10.3} us, SATA {sata:>7.3} us, softmax/SATA {ratio:>8.2}x"
                );
                csv.push_str(&format!(
                    "{threads},{heads},{context},{soft:.4},{sata:.4},{ratio:.4}\n"
                ));
            }
            if !ratios.is_empty() {
                println!(
                    "  {threads} thread(s), {heads:>2} heads: SATA faster beyond {} tokens",
                    crossover(&ratios)
                );
            }
        }
    }
    let cells: usize = CASES.iter().map(|(_, c)| c.len()).sum::<usize>() * thread_counts.len();
    if csv.lines().count() != cells + 1 {
        println!("  not every case ran (filtered run?); crossover.csv left as it is");
        return;
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/crossover.csv");
    match std::fs::File::create(&path).and_then(|mut f| f.write_all(csv.as_bytes())) {
        Ok(()) => println!("  wrote {}", path.display()),
        Err(e) => println!("  could not write {}: {e}", path.display()),
    }
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    let samples = RefCell::new(Vec::new());
    for &threads in &thread_counts {
        run(&mut c, threads, &samples);
    }
    c.final_summary();
    summary(&samples.borrow(), &thread_counts);
}
