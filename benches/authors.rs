//! The paper's configuration for unbounded generation, d_k = d_v = 8 with P = 8 (and P = 7,
//! whose weights are all positive), at 1,024 heads: a decode step of the registry kernel on
//! one thread and on every core, against the streaming floor of a buffer the size of the
//! state (`x = x * a + b` over it: one read and one write per word, as a decode step does),
//! measured back to back in each sample. The state (237 MB at P = 8) is far beyond the caches,
//! so the floor is DRAM's.
//!
//! At P = 8 the same step also runs on a `#[sata::kernel]` of the configuration forced to the
//! straight-line feature program (`unroll = "full"`), which the registry used before it switched
//! large configurations to the suffix pieces: the paired ratio shows what the form is worth.
//!
//! `cargo bench --bench authors` prints criterion's means, then the medians of the paired
//! ratios: one thread against the floor, one thread against all cores, and (P = 8) the
//! straight-line form against the registry's.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{decode_step, inputs, line_aligned_inputs, median, per_call};
use criterion::{BenchmarkId, Criterion};
use sata::codegen::CostModel;
use sata::floor;
use sata::{Attention, Isa, KernelConfig};

const D: usize = 8;

#[sata::kernel(d_k = 8, d_v = 8, terms = 8, unroll = "full")]
struct StraightLineP8;

const HEADS: usize = 1024;
const TERMS: [usize; 2] = [7, 8];

/// One configuration's attentions, state and inputs.
struct Case {
    terms: usize,
    one: Attention<f32>,
    many: Attention<f32>,
    /// One thread on the straight-line form (P = 8 only).
    straight: Option<Attention<f32>>,
    state: sata::State<f32>,
    qkv: [Vec<f32>; 3],
    out: Vec<f32>,
    /// A buffer of the state's size, for the floor.
    buf: (Vec<f32>, std::ops::Range<usize>),
}

impl Case {
    fn new(terms: usize, cores: usize) -> Self {
        let config = KernelConfig::new(D, D, terms).unwrap();
        let threads = |n| {
            let a = Attention::<f32>::new(config)
                .unwrap()
                .with_threads(n)
                .unwrap();
            assert!(a.kernel().is_some(), "d8 P{terms} is in the registry");
            a
        };
        let words = CostModel::new(&config).state_words * HEADS;
        let one = threads(1);
        let state = one.new_state(1, HEADS).unwrap();
        let straight = (terms == 8).then(|| {
            Attention::<f32>::with_kernel(&StraightLineP8)
                .unwrap()
                .with_threads(1)
                .unwrap()
        });
        Self {
            terms,
            straight,
            many: threads(cores),
            one,
            state,
            qkv: [0.1, 0.2, 0.3].map(|salt| inputs(HEADS * D, salt)),
            out: vec![0.0; HEADS * D],
            buf: line_aligned_inputs(words, 0.7),
        }
    }

    fn step(&mut self, many: bool) {
        let attention = if many { &self.many } else { &self.one };
        Self::decode(attention, &mut self.state, &self.qkv, &mut self.out);
    }

    /// One step on the straight-line kernel; false where there is none.
    fn step_straight(&mut self) -> bool {
        let Some(attention) = &self.straight else {
            return false;
        };
        Self::decode(attention, &mut self.state, &self.qkv, &mut self.out);
        true
    }

    fn decode(
        attention: &Attention<f32>,
        state: &mut sata::State<f32>,
        [q, k, v]: &[Vec<f32>; 3],
        out: &mut [f32],
    ) {
        decode_step(attention, state, (q, k, v), [1, HEADS, 1, D], out);
    }

    fn floor(&mut self, isa: Isa) {
        let (buf, words) = &mut self.buf;
        floor::stream(isa, &mut buf[words.clone()]);
        black_box(&buf);
    }
}

fn main() {
    let isa = Isa::detect();
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut cases: Vec<Case> = TERMS.iter().map(|&p| Case::new(p, cores)).collect();
    let mut c = Criterion::default()
        .output_directory(&common::output_dir())
        .configure_from_args();
    {
        let mut group = c.benchmark_group("authors");
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(10);
        for case in &mut cases {
            let param = format!("d8_p{}x{HEADS}", case.terms);
            let id = |what: &str| BenchmarkId::new(what, &param);
            group.bench_function(id("decode_1"), |b| b.iter(|| case.step(false)));
            group.bench_function(id("decode_n"), |b| b.iter(|| case.step(true)));
            group.bench_function(id("stream_floor"), |b| b.iter(|| case.floor(isa)));
            if case.straight.is_some() {
                group.bench_function(id("decode_1_straight_line"), |b| {
                    b.iter(|| case.step_straight())
                });
            }
        }
        group.finish();
    }
    c.final_summary();
    println!(
        "\nd8, {HEADS} heads, decode per step, {isa:?}; medians of paired samples \
         (1 thread, {cores} threads, floor back to back)"
    );
    println!(
        "  {:>3} {:>12} {:>12} {:>12} {:>10} {:>10} {:>6}",
        "P", "1 thread", "n threads", "floor", "1 / floor", "1 / n", "pairs"
    );
    for case in &mut cases {
        let (start, mut samples, mut straight) = (Instant::now(), Vec::new(), Vec::new());
        while samples.len() < 9 || start.elapsed() < Duration::from_secs(3) {
            let one = per_call(1, || case.step(false));
            let many = per_call(1, || case.step(true));
            let floor = per_call(1, || case.floor(isa));
            samples.push((one, many, floor));
            let t = Instant::now();
            if case.step_straight() {
                straight.push(t.elapsed().as_secs_f64() / one);
            }
        }
        let column = |f: fn(&(f64, f64, f64)) -> f64| median(samples.iter().map(f).collect());
        println!(
            "  {:>3} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2}x {:>9.2}x {:>6}",
            case.terms,
            column(|s| s.0) * 1e3,
            column(|s| s.1) * 1e3,
            column(|s| s.2) * 1e3,
            column(|s| s.0 / s.2),
            column(|s| s.0 / s.1),
            samples.len()
        );
        println!(
            "      per head-token on 1 thread: {:.1} us",
            column(|s| s.0) * 1e6 / HEADS as f64
        );
        if !straight.is_empty() {
            println!(
                "      straight-line feature program / the registry's pieces, 1 thread: {:.2}x",
                median(straight)
            );
        }
    }
}
