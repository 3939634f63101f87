//! Specialized (generated, SIMD) kernels against the generic path, with the machine's floors
//! measured in the same run. (SATA against softmax decode is `benches/crossover.rs`.)
//!
//! `cargo bench --bench specialized` prints criterion's report, then tables with explicit
//! units.
//!
//! The speed targets of the d16 P4 decode are judged by the `target` group: each of its samples
//! times the generic path, the specialized kernel, the stream floor and the FMA peak back to
//! back (milliseconds apart), and the summary reports the distribution of the per-sample
//! ratios. Separate criterion benchmarks run seconds to minutes apart, and on a shared machine
//! their ratio moved by 2x between runs while the paired ratio stays put.
//!
//! FLOPs are `CostModel::decode_flops` per head-token; "state GB/s" counts the state read and
//! written once per token; the FMA floor is `2 m (d_v + 1)` multiply-adds at the FMA peak
//! measured here, the stream floor the time of `x = x * a + b` over a buffer of the state's
//! size, also measured here.

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use common::{decode_step, inputs, line_aligned_inputs, mean_seconds, output_dir, per_call};
use criterion::{BenchmarkId, Criterion, Throughput};
use sata::codegen::CostModel;
use sata::floor;
use sata::{Attention, BackendKind, BackendRequest, Isa, KernelConfig, TensorRef};

const DIMS: [usize; 3] = [8, 16, 32];
const TERMS: [usize; 3] = [2, 3, 4];
const HEADS: [usize; 2] = [1, 64];
const PREFILL_TOKENS: usize = 64;

fn attention(config: KernelConfig, path: &str) -> Attention<f32> {
    let kind = if path == "generic" {
        BackendKind::CpuGeneric
    } else {
        BackendKind::Cpu
    };
    let a = Attention::with_backend(config, BackendRequest::Kind(kind)).expect("backend");
    assert_eq!(a.kernel().is_some(), path != "generic", "{config} {path}");
    a
}

fn config_id(d: usize, terms: usize) -> String {
    format!("d{d}_p{terms}")
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for d in DIMS {
        for terms in TERMS {
            let config = KernelConfig::new(d, d, terms).unwrap();
            let cost = CostModel::new(&config);
            for heads in HEADS {
                let (q, k, v) = (
                    inputs(heads * d, 0.1),
                    inputs(heads * d, 0.2),
                    inputs(heads * d, 0.3),
                );
                let mut out = vec![0.0f32; heads * d];
                group.throughput(Throughput::ElementsAndBytes {
                    elements: cost.decode_flops * heads as u64,
                    bytes: 2 * cost.state_bytes(4) as u64 * heads as u64,
                });
                for path in ["generic", "specialized"] {
                    let a = attention(config, path);
                    let mut state = a.new_state(1, heads).unwrap();
                    let id = BenchmarkId::new(format!("{}_{path}", config_id(d, terms)), heads);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            let shape = [1, heads, 1, d];
                            decode_step(&a, &mut state, (&q, &k, &v), shape, &mut out)
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for d in DIMS {
        for terms in TERMS {
            let config = KernelConfig::new(d, d, terms).unwrap();
            let cost = CostModel::new(&config);
            for heads in HEADS {
                let n = heads * PREFILL_TOKENS * d;
                let (q, k, v) = (inputs(n, 0.4), inputs(n, 0.5), inputs(n, 0.6));
                let mut out = vec![0.0f32; n];
                group.throughput(Throughput::Elements(
                    cost.decode_flops * (heads * PREFILL_TOKENS) as u64,
                ));
                for path in ["generic", "specialized"] {
                    let a = attention(config, path);
                    let id = BenchmarkId::new(format!("{}_{path}", config_id(d, terms)), heads);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            let mut state = a.new_state(1, heads).unwrap();
                            let shape = [1, heads, PREFILL_TOKENS, d];
                            a.prefill_into(
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
            }
        }
    }
    group.finish();
}

/// Configuration, heads and samples of the paired target measurement.
const TARGET: (usize, usize) = (16, 4);
const TARGET_SAMPLES: usize = 60;
/// FMA-peak rounds timed in each paired sample (about 4 µs).
const TARGET_FMA_ITERS: usize = 2_000;

/// One sample of the `target` group: seconds per decode step (all heads) of each path and of
/// the stream floor, and the FMA peak in FLOP/s, timed back to back.
#[derive(Clone, Copy)]
struct Paired {
    generic: f64,
    specialized: f64,
    stream: f64,
    fma_peak: f64,
}

/// The d16 P4 decode targets, measured as paired samples (see the module comment). Criterion
/// times the specialized kernel; every sample's four timings go to `samples[heads]`.
fn target(c: &mut Criterion, samples: &RefCell<Vec<(usize, Paired)>>) {
    let (d, terms) = TARGET;
    let config = KernelConfig::new(d, d, terms).unwrap();
    let cost = CostModel::new(&config);
    let isa = Isa::detect();
    let mut group = c.benchmark_group("target");
    group.sample_size(TARGET_SAMPLES);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for heads in HEADS {
        let (q, k, v) = (
            inputs(heads * d, 0.1),
            inputs(heads * d, 0.2),
            inputs(heads * d, 0.3),
        );
        let mut out = vec![0.0f32; heads * d];
        let shape = [1, heads, 1, d];
        let paths = ["generic", "specialized"].map(|path| attention(config, path));
        let mut states = paths.each_ref().map(|a| a.new_state(1, heads).unwrap());
        let (mut buf, words) = line_aligned_inputs(cost.state_words * heads, 0.7);
        let id = BenchmarkId::new(format!("{}_paired", config_id(d, terms)), heads);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut step = |i: usize| {
                    per_call(iters, || {
                        decode_step(&paths[i], &mut states[i], (&q, &k, &v), shape, &mut out)
                    })
                };
                let generic = step(0);
                let specialized = step(1);
                let stream = per_call(iters, || {
                    floor::stream(isa, &mut buf[words.clone()]);
                    black_box(&buf);
                });
                let fma = per_call(1, || {
                    black_box(floor::fma_peak(isa, black_box(TARGET_FMA_ITERS)));
                });
                let flops = floor::fma_peak(isa, 1).1 as f64 * TARGET_FMA_ITERS as f64;
                samples.borrow_mut().push((
                    heads,
                    Paired {
                        generic,
                        specialized,
                        stream,
                        fma_peak: flops / fma,
                    },
                ));
                Duration::from_secs_f64(specialized * iters as f64)
            })
        });
    }
    group.finish();
}

/// The `q`-quantile of `xs` (sorted in place), by nearest rank.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

/// Summary of the paired target samples: the last `TARGET_SAMPLES` of each head count are the
/// measured ones (criterion's warm-up calls come first).
fn target_summary(samples: &[(usize, Paired)]) {
    let (d, terms) = TARGET;
    let cost = CostModel::new(&KernelConfig::new(d, d, terms).unwrap());
    println!(
        "\nTargets, d{d} P{terms} decode, paired samples (generic, specialized, stream floor and FMA \
         peak timed back to back in each sample); median [10th-90th percentile] of the per-sample values"
    );
    println!(
        "  {:>5}  {:>8}  {:>22}  {:>22}  {:>26}",
        "heads",
        "samples",
        "specialized / token",
        "speedup (target >= 4)",
        "x limit (target <= 1.3)"
    );
    for heads in HEADS {
        let mine: Vec<Paired> = samples
            .iter()
            .filter(|(h, _)| *h == heads)
            .map(|&(_, p)| p)
            .collect();
        let measured = &mine[mine.len().saturating_sub(TARGET_SAMPLES)..];
        if measured.is_empty() {
            continue;
        }
        let stat = |f: &dyn Fn(&Paired) -> f64| {
            let mut xs: Vec<f64> = measured.iter().map(f).collect();
            (
                quantile(&mut xs, 0.5),
                quantile(&mut xs, 0.1),
                quantile(&mut xs, 0.9),
            )
        };
        let limit = |p: &Paired| {
            let fma_floor = 2.0 * cost.decode_fmas as f64 * heads as f64 / p.fma_peak;
            fma_floor.max(p.stream)
        };
        let time = stat(&|p| p.specialized / heads as f64 * 1e6);
        let speedup = stat(&|p| p.generic / p.specialized);
        let x_limit = stat(&|p| p.specialized / limit(p));
        println!(
            "  {heads:>5}  {:>8}  {:>6.3} [{:.3}-{:.3}] us  {:>9.2}x [{:.2}-{:.2}]  {:>12.2}x [{:.2}-{:.2}]",
            measured.len(),
            time.0,
            time.1,
            time.2,
            speedup.0,
            speedup.1,
            speedup.2,
            x_limit.0,
            x_limit.1,
            x_limit.2
        );
    }
}

fn floors(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    let isa = Isa::detect();
    let iters = 10_000;
    group.throughput(Throughput::Elements(
        floor::fma_peak(isa, 1).1 * iters as u64,
    ));
    group.bench_function(BenchmarkId::new("fma_peak", "10000"), |b| {
        b.iter(|| black_box(floor::fma_peak(isa, black_box(iters))))
    });
    for d in DIMS {
        for terms in TERMS {
            let cost = CostModel::new(&KernelConfig::new(d, d, terms).unwrap());
            for heads in HEADS {
                let (mut buf, words) = line_aligned_inputs(cost.state_words * heads, 0.7);
                group.throughput(Throughput::Bytes(
                    2 * cost.state_bytes(4) as u64 * heads as u64,
                ));
                let id = BenchmarkId::new(format!("stream_{}", config_id(d, terms)), heads);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        floor::stream(isa, &mut buf[words.clone()]);
                        black_box(&buf);
                    })
                });
            }
        }
    }
    group.finish();
}

fn summary(dir: &std::path::Path) {
    let isa = Isa::detect();
    let peak = mean_seconds(dir, "floor", "fma_peak", "10000")
        .map(|t| floor::fma_peak(isa, 1).1 as f64 * 10_000.0 / t);
    println!("\nSpecialized vs generic decode, f32, 1 thread, {isa}");
    if let Some(p) = peak {
        println!("  measured FMA peak: {:.1} GFLOP/s", p * 1e-9);
    }
    println!(
        "  {:<7} {:>5}  {:>12} {:>12} {:>8}  {:>9} {:>10}  {:>12} {:>12} {:>9}",
        "config",
        "heads",
        "generic",
        "specialized",
        "speedup",
        "GFLOP/s",
        "state GB/s",
        "FMA floor",
        "stream floor",
        "x limit"
    );
    for d in DIMS {
        for terms in TERMS {
            let cost = CostModel::new(&KernelConfig::new(d, d, terms).unwrap());
            for heads in HEADS {
                let cfg = config_id(d, terms);
                let h = heads.to_string();
                let get = |path: &str| mean_seconds(dir, "decode", &format!("{cfg}_{path}"), &h);
                let stream = mean_seconds(dir, "floor", &format!("stream_{cfg}"), &h);
                let (Some(g), Some(s), Some(stream), Some(peak)) =
                    (get("generic"), get("specialized"), stream, peak)
                else {
                    continue;
                };
                let per = |t: f64| t / heads as f64;
                let fma_floor = 2.0 * cost.decode_fmas as f64 * heads as f64 / peak;
                let limit = fma_floor.max(stream);
                println!(
                    "  {cfg:<7} {heads:>5}  {:>9.3} us {:>9.3} us {:>7.1}x  {:>9.2} {:>10.1}  {:>9.3} us {:>9.3} us {:>8.1}x",
                    per(g) * 1e6,
                    per(s) * 1e6,
                    g / s,
                    (cost.decode_flops * heads as u64) as f64 / s * 1e-9,
                    (2 * cost.state_bytes(4) * heads) as f64 / s * 1e-9,
                    per(fma_floor) * 1e6,
                    per(stream) * 1e6,
                    s / limit
                );
            }
        }
    }
    println!("\nPrefill, {PREFILL_TOKENS} tokens: head-tokens per second");
    for d in DIMS {
        for terms in TERMS {
            for heads in HEADS {
                let cfg = config_id(d, terms);
                let h = heads.to_string();
                let get = |path: &str| mean_seconds(dir, "prefill", &format!("{cfg}_{path}"), &h);
                if let (Some(g), Some(s)) = (get("generic"), get("specialized")) {
                    let n = (heads * PREFILL_TOKENS) as f64;
                    println!(
                        "  {cfg:<7} {heads:>5}  generic {:>10.0}/s  specialized {:>10.0}/s  {:>5.1}x",
                        n / g,
                        n / s,
                        g / s
                    );
                }
            }
        }
    }
}

fn main() {
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    let samples = RefCell::new(Vec::new());
    target(&mut c, &samples);
    decode(&mut c);
    prefill(&mut c);
    floors(&mut c);
    c.final_summary();
    summary(&dir);
    target_summary(&samples.borrow());
}
