//! Half-precision inputs (`f16`, `bf16`, widened to f32 at the call) against f32 inputs on the
//! same f32 attention: d16 P4 decode at 1 and 64 heads, prefill of 2,048 tokens at 1 and 64
//! heads. Each criterion sample times the three dtypes back to back, so their ratios are
//! paired; the summary prints the median per-sample ratio half / f32 (the target: at most 1).
//!
//! `cargo bench --bench half`

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::{inputs, median, output_dir, per_call};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use sata::{Attention, HalfFloat, KernelConfig, State, TensorRef, bf16, f16};

const D: usize = 16;
const TERMS: usize = 4;
const HEADS: [usize; 2] = [1, 64];
const PREFILL_TOKENS: usize = 2048;
const SAMPLES: usize = 20;

/// Seconds per call of the three dtypes, timed back to back.
#[derive(Clone, Copy)]
struct Sample {
    f32: f64,
    f16: f64,
    bf16: f64,
}

fn half<H: HalfFloat>(x: &[f32]) -> Vec<H> {
    x.iter().map(|&v| H::from_f32(v)).collect()
}

/// One call's inputs in every dtype.
struct Inputs {
    shape: [usize; 4],
    f32: [Vec<f32>; 3],
    f16: [Vec<f16>; 3],
    bf16: [Vec<bf16>; 3],
}

impl Inputs {
    fn new(heads: usize, tokens: usize) -> Self {
        let f32 = [0.1, 0.2, 0.3].map(|salt| inputs(heads * tokens * D, salt));
        Self {
            shape: [1, heads, tokens, D],
            f16: f32.each_ref().map(|x| half(x)),
            bf16: f32.each_ref().map(|x| half(x)),
            f32,
        }
    }
}

fn refs<T: Copy>(x: &[Vec<T>; 3], shape: [usize; 4]) -> [TensorRef<'_, T>; 3] {
    [
        TensorRef::query(&x[0], shape).unwrap(),
        TensorRef::key(&x[1], shape).unwrap(),
        TensorRef::value(&x[2], shape).unwrap(),
    ]
}

/// Seconds per `*_half` decode or prefill call of `x` on `state`.
fn time_half<H: HalfFloat>(
    a: &Attention<f32>,
    state: &mut State<f32>,
    x: &[Vec<H>; 3],
    shape: [usize; 4],
    decode: bool,
    iters: u64,
) -> f64 {
    let mut out = vec![H::default(); shape[1] * D];
    let mut scratch = Vec::new();
    let [q, k, v] = refs(x, shape);
    per_call(iters, || {
        let y = if decode {
            a.decode_half_into(state, (q, k, v), &mut out, &mut scratch)
                .map(|_| ())
        } else {
            a.prefill_half(state, q, k, v)
                .map(|y| drop(std::hint::black_box(y)))
        };
        y.unwrap();
    })
}

/// The decode or prefill of `x` in each dtype, each on its own state.
struct Case<'a> {
    attention: &'a Attention<f32>,
    x: Inputs,
    states: [State<f32>; 3],
}

impl Case<'_> {
    fn run(&mut self, iters: u64, decode: bool) -> Sample {
        let (a, shape) = (self.attention, self.x.shape);
        let [s32, s16, sb16] = &mut self.states;
        let heads = shape[1];
        let mut out32 = vec![0.0f32; heads * D];
        let [q, k, v] = refs(&self.x.f32, shape);
        let f32 = per_call(iters, || {
            let y = if decode {
                a.decode_into(s32, q, k, v, &mut out32).map(|_| ())
            } else {
                a.prefill(s32, q, k, v)
                    .map(|y| drop(std::hint::black_box(y)))
            };
            y.unwrap();
        });
        let f16 = time_half(a, s16, &self.x.f16, shape, decode, iters);
        let bf16 = time_half(a, sb16, &self.x.bf16, shape, decode, iters);
        Sample { f32, f16, bf16 }
    }
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let attention = Attention::<f32>::new(KernelConfig::new(D, D, TERMS).unwrap())
        .unwrap()
        .with_threads(1)
        .unwrap();
    // (call, heads, tokens) and a sample.
    type Key = (&'static str, usize, usize);
    let samples: RefCell<Vec<(Key, Sample)>> = RefCell::new(Vec::new());
    for (name, tokens, decode) in [("decode", 1, true), ("prefill", PREFILL_TOKENS, false)] {
        let mut group = c.benchmark_group(format!("half_{name}"));
        group.sample_size(SAMPLES);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(if decode { 2 } else { 8 }));
        for heads in HEADS {
            let mut case = Case {
                attention: &attention,
                x: Inputs::new(heads, tokens),
                states: [(); 3].map(|_| attention.new_state(1, heads).unwrap()),
            };
            let key: Key = (name, heads, tokens);
            group.bench_function(BenchmarkId::new("paired", heads), |b| {
                b.iter_custom(|iters| {
                    let s = case.run(iters, decode);
                    samples.borrow_mut().push((key, s));
                    Duration::from_secs_f64(s.f32 * iters as f64)
                })
            });
        }
        group.finish();
    }
    c.final_summary();
    println!(
        "\nd{D} P{TERMS}, {}: per head-token, medians of paired samples",
        attention.describe_path()
    );
    let samples = samples.borrow();
    let mut keys: Vec<Key> = samples.iter().map(|&(k, _)| k).collect();
    keys.dedup();
    for key @ (name, heads, tokens) in keys {
        let mine: Vec<Sample> = samples
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|&(_, s)| s)
            .collect();
        let measured = &mine[mine.len().saturating_sub(SAMPLES)..];
        let per = |f: fn(&Sample) -> f64| median(measured.iter().map(f).collect());
        let n = (heads * tokens) as f64;
        println!(
            "  {name:<8} {heads:>2} heads x {tokens:>4} tokens: f32 {:>7.3} us, f16 {:>7.3} us ({:.3}x), bf16 {:>7.3} us ({:.3}x)",
            per(|s| s.f32) / n * 1e6,
            per(|s| s.f16) / n * 1e6,
            per(|s| s.f16 / s.f32),
            per(|s| s.bf16) / n * 1e6,
            per(|s| s.bf16 / s.f32),
        );
    }
}
