//! Shared by the benchmarks: where criterion writes, and reading its mean estimates back so a
//! bench can print a summary table with explicit units.
#![allow(dead_code)]

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod device;
pub mod online_softmax;

use std::path::{Path, PathBuf};

/// Criterion's output directory: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
/// `target/criterion` of this workspace. Benches pass it to criterion explicitly so the
/// summary reads the same place.
pub fn output_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Mean time in seconds of benchmark `group/function/parameter`, if it ran.
pub fn mean_seconds(dir: &Path, group: &str, function: &str, parameter: &str) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join(parameter)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? * 1e-9)
}

/// Deterministic inputs in [-0.5, 0.5) (a sine hash), so every run and every path sees the
/// same numbers; with d = 16 they give `q·k / c` of order 0.5, so every Taylor order
/// contributes.
pub fn inputs(len: usize, salt: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f32 * 0.7548 + salt).sin() * 43758.547).fract() - 0.5)
        .collect()
}

/// Queries, keys, values and an output gradient of `len` numbers each from [`inputs`] (for
/// `d_k = d_v`), the inputs of a training step.
pub fn training_inputs(len: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        inputs(len, 0.1),
        inputs(len, 0.2),
        inputs(len, 0.3),
        inputs(len, 0.4),
    )
}

/// [`inputs`] starting on a 64-byte boundary of a buffer with slack, as the runtime places a
/// state, so that a floor is measured on the same footing as the kernels: the buffer and the
/// range of its words to use.
pub fn line_aligned_inputs(len: usize, salt: f32) -> (Vec<f32>, std::ops::Range<usize>) {
    const SLACK: usize = 64 / std::mem::size_of::<f32>();
    let buf = inputs(len + SLACK, salt);
    let start = buf.as_ptr().align_offset(64).min(SLACK);
    (buf, start..start + len)
}

/// One decode step of `attention` over `state` with one token per head (`shape` is
/// `[1, heads, 1, d]`), its output kept from being optimised away.
pub fn decode_step(
    attention: &sata::Attention<f32>,
    state: &mut sata::State<f32>,
    (q, k, v): (&[f32], &[f32], &[f32]),
    shape: [usize; 4],
    out: &mut [f32],
) {
    use sata::TensorRef;
    attention
        .decode_into(
            state,
            TensorRef::query(q, shape).unwrap(),
            TensorRef::key(k, shape).unwrap(),
            TensorRef::value(v, shape).unwrap(),
            out,
        )
        .unwrap();
    std::hint::black_box(out);
}

/// Seconds per call of `f`, over `iters` calls: one timing of a paired sample.
pub fn per_call(iters: u64, mut f: impl FnMut()) -> f64 {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / iters as f64
}

/// The median of `xs` (the upper one of an even count); NaN when empty.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}
