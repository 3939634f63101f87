//! A training step's attention (`forward_for_training_from_empty` then `backward`, causal, f32)
//! computed pair by pair and through features, in paired samples on one thread: the
//! measurements behind `SequenceForm::Auto`'s choice. Per configuration and sequence length,
//! prints the median of features / pairs over paired samples (one of each, repeated), and
//! whether `Auto` chose pairs; a ratio above 1 means pairs are faster, so `Auto` should choose
//! pairs exactly there. Criterion times the d16 P3 and P5 steps at 64 tokens.
//!
//! `cargo bench --bench sequence_form` (`-- --quick-table` for the table only).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{median, output_dir, training_inputs};
use criterion::{BenchmarkId, Criterion};
use sata::{Attention, KernelConfig, Mode, SequenceForm, TensorRef};

/// Lanes per call (batch 1): a few heads, as a training step's batch x heads has many more.
const HEADS: usize = 4;

/// (d, P) with d_k = d_v = d.
const CONFIGS: [(usize, usize); 6] = [(16, 2), (16, 3), (16, 4), (16, 5), (16, 6), (8, 8)];
const LENGTHS: [usize; 5] = [64, 128, 256, 512, 1024];

fn attention(d: usize, terms: usize, form: SequenceForm) -> Attention<f32> {
    Attention::new(KernelConfig::new(d, d, terms).unwrap())
        .unwrap()
        .with_threads(1)
        .unwrap()
        .with_sequence_form(form)
}

/// One forward and backward, and whether it computed pairs.
fn step(attention: &Attention<f32>, d: usize, n: usize) -> (Duration, bool) {
    let len = HEADS * n * d;
    let (q, k, v, dy) = training_inputs(len);
    let shape = [1, HEADS, n, d];
    let start = Instant::now();
    let (_, saved) = attention
        .forward_for_training_from_empty(
            Mode::Causal,
            TensorRef::query(&q, shape).unwrap(),
            TensorRef::key(&k, shape).unwrap(),
            TensorRef::value(&v, shape).unwrap(),
        )
        .unwrap();
    let dy = TensorRef::output_gradient(&dy, shape).unwrap();
    black_box(attention.backward(&saved, dy, None).unwrap());
    (start.elapsed(), saved.computed_pairs())
}

fn table() {
    println!(
        "\nfeatures / pairs per training step (median of paired samples), causal, f32, \
         {HEADS} lanes, 1 thread; `auto` = what SequenceForm::Auto computes"
    );
    println!("| config | tokens | features ms | pairs ms | features / pairs | auto |");
    println!("|---|---|---|---|---|---|");
    for (d, terms) in CONFIGS {
        let pairs = attention(d, terms, SequenceForm::Pairs);
        let features = attention(d, terms, SequenceForm::Features);
        let auto = attention(d, terms, SequenceForm::Auto);
        for n in LENGTHS {
            step(&pairs, d, n);
            step(&features, d, n);
            let (start, mut samples) = (Instant::now(), Vec::new());
            while samples.len() < 3
                || (start.elapsed() < Duration::from_secs(2) && samples.len() < 30)
            {
                let p = step(&pairs, d, n).0.as_secs_f64();
                let f = step(&features, d, n).0.as_secs_f64();
                samples.push((f, p));
            }
            let f = median(samples.iter().map(|s| s.0).collect());
            let p = median(samples.iter().map(|s| s.1).collect());
            let ratio = median(samples.iter().map(|s| s.0 / s.1).collect());
            let chose = if step(&auto, d, n).1 {
                "pairs"
            } else {
                "features"
            };
            println!(
                "| d{d} P{terms} | {n} | {:.2} | {:.2} | {ratio:.2} | {chose} |",
                f * 1e3,
                p * 1e3
            );
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick-table");
    table();
    if quick {
        return;
    }
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    let mut group = c.benchmark_group("training_from_empty");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for terms in [3, 5] {
        for (form, name) in [
            (SequenceForm::Pairs, "pairs"),
            (SequenceForm::Features, "features"),
        ] {
            let a = attention(16, terms, form);
            group.bench_function(BenchmarkId::new(name, format!("d16_p{terms}_64")), |b| {
                b.iter(|| step(&a, 16, 64))
            });
        }
    }
    group.finish();
    c.final_summary();
}
