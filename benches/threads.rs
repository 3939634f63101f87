//! The CPU backend on one thread against several, d_k = d_v = 16, P = 4, f32, specialized
//! kernel: decode steps at 1 to 1,024 heads, a 64-head prefill, a one-lane prefill of 2,048
//! tokens (its chunks split over the threads) and a 64-head backward. The
//! machines this runs on are noisy, so besides criterion's means it prints the median of
//! paired samples (one call on 1 thread, then the same call on N, repeated): the speedup.
//! Where the speedup of small calls crosses 1 is what sets `PARALLEL_MIN_WORK`: run with
//! `SATA_PARALLEL_MIN_WORK=0` to make every call of several lanes parallel.
//!
//! Each attention keeps one state per case, made before any timing: decode steps go on
//! adding tokens to it, and a prefill or training call first resets it (a memset of pages
//! already mapped; a fresh state per call would time the kernel's page faults too). A decode
//! step streams the whole state, so beside each decode case the same samples time the
//! streaming floor over a buffer of the state's size on 1 thread and on N (the buffer cut
//! into N contiguous parts): the floor's speedup is what the memory system lets N threads
//! gain at all.
//!
//! `cargo bench --bench threads` (N = the machine's cores, at least 2).

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use common::{inputs, line_aligned_inputs, median, per_call};
use criterion::{BenchmarkId, Criterion};
use rayon::prelude::*;
use sata::{Attention, Isa, KernelConfig, Mode, State, TensorRef, floor};

const D: usize = 16;
const TERMS: usize = 4;
/// Decode steps per sample.
const STEPS: usize = 8;

/// One call of a case on `attention` with `state`, one of the case's (its inputs made
/// beforehand, outside the timing).
fn call(attention: &Attention<f32>, case: &Case, state: &mut State<f32>) {
    let (heads, n) = (case.heads, case.tokens);
    let [q, k, v] = &case.qkv;
    let shape = [1, heads, n, D];
    let (q, k, v) = (
        TensorRef::query(q, shape).unwrap(),
        TensorRef::key(k, shape).unwrap(),
        TensorRef::value(v, shape).unwrap(),
    );
    if case.kind != "decode" {
        state.reset();
    }
    match case.kind {
        "decode" => {
            for _ in 0..STEPS {
                black_box(attention.decode(state, q, k, v).unwrap());
            }
        }
        "prefill" => {
            black_box(attention.prefill(state, q, k, v).unwrap());
        }
        _ => {
            let (_, saved) = attention
                .forward_for_training(state, Mode::Causal, q, k, v)
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
    /// The state of each attention (1 thread, N threads).
    states: [RefCell<State<f32>>; 2],
    /// For decode: a buffer of the state's size for the streaming floor.
    floor: Option<RefCell<(Vec<f32>, Range<usize>)>>,
}

impl Case {
    fn new(
        kind: &'static str,
        heads: usize,
        tokens: usize,
        attentions: [&Attention<f32>; 2],
    ) -> Self {
        let len = heads * tokens * D;
        let qkv = [inputs(len, 0.1), inputs(len, 0.2), inputs(len, 0.3)];
        let states = attentions.map(|a| RefCell::new(a.new_state(1, heads).unwrap()));
        let floor = (kind == "decode").then(|| {
            let words = heads * attentions[0].config().state_words_per_head();
            RefCell::new(line_aligned_inputs(words, 0.4))
        });
        let case = Self {
            kind,
            heads,
            tokens,
            qkv,
            states,
            floor,
        };
        // Decode steps run on states that already hold tokens, with their pages mapped.
        if kind == "decode" {
            for (attention, state) in attentions.iter().zip(&case.states) {
                call(attention, &case, &mut state.borrow_mut());
            }
        }
        case
    }

    fn run(&self, which: usize, attention: &Attention<f32>) {
        call(attention, self, &mut self.states[which].borrow_mut());
    }
}

/// The streaming floor over `buf` on `pool` (1 thread: on the calling thread), each of the
/// pool's threads taking one contiguous part, cut at 64-byte lines.
fn stream(isa: Isa, pool: Option<&rayon::ThreadPool>, buf: &mut [f32]) {
    match pool {
        None => floor::stream(isa, buf),
        Some(pool) => {
            let part = buf
                .len()
                .div_ceil(pool.current_num_threads())
                .next_multiple_of(16);
            pool.install(|| {
                buf.par_chunks_mut(part)
                    .for_each(|part| floor::stream(isa, part))
            });
        }
    }
    black_box(buf);
}

/// One paired sample: seconds on 1 thread and on N, and for decode the floor's (1, N).
struct Sample {
    one: f64,
    many: f64,
    floors: Option<(f64, f64)>,
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
    let floor_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .unwrap();
    let isa = Isa::detect();
    let attentions = [&one, &many];
    // 1,024 heads is the first decode at the default threshold (1,024 x 16,473 state words).
    let mut cases: Vec<Case> = [1, 2, 4, 8, 16, 64, 256, 1024]
        .map(|heads| Case::new("decode", heads, 1, attentions))
        .into();
    cases.push(Case::new("prefill", 64, 256, attentions));
    // One lane: its chunks split over the threads.
    cases.push(Case::new("prefill", 1, 2048, attentions));
    cases.push(Case::new("training", 64, 256, attentions));
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
            for (which, (label, attention)) in [("1", &one), ("n", &many)].into_iter().enumerate() {
                group.bench_function(BenchmarkId::new(label, &id), |b| {
                    b.iter(|| case.run(which, attention))
                });
            }
        }
        group.finish();
    }
    c.final_summary();
    println!(
        "\nd{D} P{TERMS} f32, {}, {}; {cores} threads against 1, medians of paired samples \
         (a decode sample is {STEPS} steps; the floor streams a buffer of the state's size once, \
         on 1 thread and on {cores}, in the same samples)",
        many.describe_path(),
        isa.name()
    );
    println!(
        "  {:>9} {:>6} {:>7} {:>14} {:>14} {:>9} {:>13} {:>13} {:>7}",
        "call",
        "heads",
        "tokens",
        "1 thread",
        "n threads",
        "speedup",
        "floor speedup",
        "1 thr / floor",
        "pairs"
    );
    for case in &cases {
        let (start, mut samples) = (Instant::now(), Vec::new());
        while samples.len() < 9 || start.elapsed() < Duration::from_secs(2) {
            let one = per_call(1, || case.run(0, &one));
            let many = per_call(1, || case.run(1, &many));
            // Decode only: the floor over the state's words on 1 thread and on N.
            let floors = case.floor.as_ref().map(|buf| {
                let (buf, words) = &mut *buf.borrow_mut();
                let buf = &mut buf[words.clone()];
                let one = per_call(1, || stream(isa, None, buf));
                (one, per_call(1, || stream(isa, Some(&floor_pool), buf)))
            });
            samples.push(Sample { one, many, floors });
        }
        let median_of = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let floor_column = |f: fn(&Sample) -> f64| match case.floor {
            Some(_) => format!("{:.2}x", median_of(f)),
            None => "-".to_string(),
        };
        println!(
            "  {:>9} {:>6} {:>7} {:>11.1} us {:>11.1} us {:>8.2}x {:>13} {:>13} {:>7}",
            case.kind,
            case.heads,
            case.tokens,
            median_of(|s| s.one) * 1e6,
            median_of(|s| s.many) * 1e6,
            median_of(|s| s.one / s.many),
            floor_column(|s| s.floors.map_or(f64::NAN, |(one, many)| one / many)),
            floor_column(|s| s
                .floors
                .map_or(f64::NAN, |(one, _)| s.one / STEPS as f64 / one)),
            samples.len()
        );
    }
}
