//! The wgpu backend: one decode step (upload q, k, v; one dispatch; download y) on a state that
//! stays on the device, and a causal prefill, at d_k = d_v = 16, P = 4, for 1 to 1024 heads,
//! beside the specialized CPU kernel on the same inputs in the same process. Prints the
//! achieved GB/s of state traffic (every state word read and written once per token).
//!
//! `cargo bench --bench wgpu`; on a machine without a GPU, wgpu runs on Mesa's llvmpipe, where
//! only correctness counts (its figures measure a CPU emulating a GPU).

mod common;

use std::time::Duration;

use common::{decode_step, device, inputs, mean_seconds, output_dir};
use criterion::{BenchmarkId, Criterion, Throughput};
use sata::codegen::CostModel;
use sata::wgpu::WgpuAttention;
use sata::{Attention, KernelConfig, TensorRef};

const D: usize = 16;
const TERMS: usize = 4;
const HEADS: [usize; 6] = [1, 4, 16, 64, 256, 1024];
const PREFILL_TOKENS: usize = 64;
const PREFILL_HEADS: usize = 16;

fn decode(c: &mut Criterion, gpu: &WgpuAttention, cpu: &Attention<f32>) {
    let cost = CostModel::new(gpu.config());
    let mut group = c.benchmark_group("wgpu_decode");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(10);
    for heads in HEADS {
        group.throughput(Throughput::Bytes(
            2 * cost.state_bytes(4) as u64 * heads as u64,
        ));
        device::decode(&mut group, "wgpu", gpu, heads);
        let (q, k, v) = (
            inputs(heads * D, 0.1),
            inputs(heads * D, 0.2),
            inputs(heads * D, 0.3),
        );
        let mut out = vec![0.0f32; heads * D];
        let mut state = cpu.new_state(1, heads).unwrap();
        group.bench_function(BenchmarkId::new("cpu", heads), |b| {
            b.iter(|| decode_step(cpu, &mut state, (&q, &k, &v), [1, heads, 1, D], &mut out))
        });
    }
    group.finish();
}

fn prefill(c: &mut Criterion, gpu: &WgpuAttention, cpu: &Attention<f32>) {
    let mut group = c.benchmark_group("wgpu_prefill");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(10);
    let (n, heads) = (PREFILL_TOKENS, PREFILL_HEADS);
    group.throughput(Throughput::Elements((heads * n) as u64));
    device::prefill(&mut group, "wgpu", gpu, heads, n);
    let (q, k, v) = (
        inputs(heads * n * D, 0.4),
        inputs(heads * n * D, 0.5),
        inputs(heads * n * D, 0.6),
    );
    let shape = [1, heads, n, D];
    let mut out = vec![0.0f32; heads * n * D];
    group.bench_function(BenchmarkId::new("cpu", heads), |b| {
        b.iter(|| {
            let mut state = cpu.new_state(1, heads).unwrap();
            cpu.prefill_into(
                &mut state,
                TensorRef::query(&q, shape).unwrap(),
                TensorRef::key(&k, shape).unwrap(),
                TensorRef::value(&v, shape).unwrap(),
                &mut out,
            )
            .unwrap();
            std::hint::black_box(&out);
        })
    });
    group.finish();
}

fn summary(dir: &std::path::Path, gpu: &WgpuAttention) {
    let cost = CostModel::new(gpu.config());
    println!(
        "\nwgpu decode, d_k = d_v = {D}, P = {TERMS}, on {}",
        gpu.adapter()
    );
    println!(
        "  {:>5}  {:>12} {:>14}  {:>12} {:>14}  {:>9}",
        "heads", "wgpu", "wgpu state GB/s", "cpu", "cpu state GB/s", "wgpu/cpu"
    );
    for heads in HEADS {
        let h = heads.to_string();
        let (Some(g), Some(c)) = (
            mean_seconds(dir, "wgpu_decode", "wgpu", &h),
            mean_seconds(dir, "wgpu_decode", "cpu", &h),
        ) else {
            continue;
        };
        let bytes = 2.0 * cost.state_bytes(4) as f64 * heads as f64;
        println!(
            "  {heads:>5}  {:>9.1} us {:>14.2}  {:>9.1} us {:>14.2}  {:>9.2}",
            g * 1e6,
            bytes / g * 1e-9,
            c * 1e6,
            bytes / c * 1e-9,
            g / c
        );
    }
    let h = PREFILL_HEADS.to_string();
    if let (Some(g), Some(c)) = (
        mean_seconds(dir, "wgpu_prefill", "wgpu", &h),
        mean_seconds(dir, "wgpu_prefill", "cpu", &h),
    ) {
        let tokens = (PREFILL_TOKENS * PREFILL_HEADS) as f64;
        println!(
            "  prefill {PREFILL_HEADS} heads x {PREFILL_TOKENS} tokens: wgpu {:.0} head-tokens/s, cpu {:.0} head-tokens/s",
            tokens / g,
            tokens / c
        );
    }
}

fn main() {
    let config = KernelConfig::new(D, D, TERMS).unwrap();
    let gpu = match WgpuAttention::new(config) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("wgpu bench skipped: {e}");
            return;
        }
    };
    let cpu = Attention::<f32>::new(config).unwrap();
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    decode(&mut c, &gpu, &cpu);
    prefill(&mut c, &gpu, &cpu);
    c.final_summary();
    summary(&dir, &gpu);
}
