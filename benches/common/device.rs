//! The bench body every device backend shares (`benches/wgpu.rs`, `benches/cuda.rs`): a decode
//! step on a state that stays on the device (upload q, k, v; one launch; download y), and a
//! causal prefill of a fresh state, with the same inputs as the CPU benches.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use sata::TensorRef;
use sata::device::{Device, DeviceAttention};

use super::inputs;

/// Adds the decode step of `heads` heads to `group` as `name/heads`.
pub fn decode<D: Device>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    attention: &DeviceAttention<D>,
    heads: usize,
) {
    let (dk, dv) = (attention.config().d_k(), attention.config().d_v());
    let (q, k, v) = (
        inputs(heads * dk, 0.1),
        inputs(heads * dk, 0.2),
        inputs(heads * dv, 0.3),
    );
    let mut out = vec![0.0f32; heads * dv];
    let mut state = attention.new_state(1, heads).unwrap();
    group.bench_function(BenchmarkId::new(name, heads), |b| {
        b.iter(|| {
            attention
                .decode_into(
                    &mut state,
                    TensorRef::query(&q, [1, heads, 1, dk]).unwrap(),
                    TensorRef::key(&k, [1, heads, 1, dk]).unwrap(),
                    TensorRef::value(&v, [1, heads, 1, dv]).unwrap(),
                    &mut out,
                )
                .unwrap();
            black_box(&out);
        })
    });
}

/// Adds a causal prefill of `tokens` tokens on `heads` heads of a fresh state to `group` as
/// `name/heads`.
pub fn prefill<D: Device>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    attention: &DeviceAttention<D>,
    heads: usize,
    tokens: usize,
) {
    let (dk, dv) = (attention.config().d_k(), attention.config().d_v());
    let (q, k, v) = (
        inputs(heads * tokens * dk, 0.4),
        inputs(heads * tokens * dk, 0.5),
        inputs(heads * tokens * dv, 0.6),
    );
    let mut out = vec![0.0f32; heads * tokens * dv];
    group.bench_function(BenchmarkId::new(name, heads), |b| {
        b.iter(|| {
            let mut state = attention.new_state(1, heads).unwrap();
            attention
                .prefill_into(
                    &mut state,
                    TensorRef::query(&q, [1, heads, tokens, dk]).unwrap(),
                    TensorRef::key(&k, [1, heads, tokens, dk]).unwrap(),
                    TensorRef::value(&v, [1, heads, tokens, dv]).unwrap(),
                    &mut out,
                )
                .unwrap();
            black_box(&out);
        })
    });
}
