//! The CUDA backend on a real GPU: one decode step (upload q, k, v; one launch; download y) on
//! a state that stays on the device, and a causal prefill, for the registry's d_k = d_v
//! configurations at P = 4 (and d16 P5), 1 to 1024 heads, with the achieved GB/s of state
//! traffic (every state word read and written once per step) beside the model's H100 bound.
//!
//! `cargo bench --bench cuda` (run by `scripts/gpu-check.sh`, which also writes the table to
//! `benches/results/`). Without an NVIDIA GPU and driver it prints why and exits: host
//! execution of the kernels measures a CPU emulating a GPU and is not benchmarked.

mod common;

use std::time::Duration;

use common::{device, mean_seconds, output_dir};
use criterion::{Criterion, Throughput};
use sata::KernelConfig;
use sata::codegen::KernelPlan;
use sata::codegen::cuda::{CudaLayout, CudaOptions};
use sata::cuda::{CudaAttention, Executor};

const CONFIGS: [(usize, usize); 4] = [(8, 4), (16, 4), (32, 4), (16, 5)];
const HEADS: [usize; 6] = [1, 4, 16, 64, 256, 1024];
const PREFILL_TOKENS: usize = 512;
const PREFILL_HEADS: usize = 16;

fn name(d: usize, terms: usize) -> String {
    format!("d{d}_p{terms}")
}

fn decode(c: &mut Criterion, cuda: &CudaAttention, d: usize, terms: usize) {
    let layout = cuda.layout();
    let mut group = c.benchmark_group(format!("cuda_decode_{}", name(d, terms)));
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    for heads in HEADS {
        group.throughput(Throughput::Bytes(
            layout.traffic.decode_bytes * heads as u64,
        ));
        device::decode(&mut group, "cuda", cuda, heads);
    }
    group.finish();
}

fn prefill(c: &mut Criterion, cuda: &CudaAttention, d: usize, terms: usize) {
    let mut group = c.benchmark_group(format!("cuda_prefill_{}", name(d, terms)));
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(10);
    let (n, heads) = (PREFILL_TOKENS, PREFILL_HEADS);
    group.throughput(Throughput::Elements((heads * n) as u64));
    device::prefill(&mut group, "cuda", cuda, heads, n);
    group.finish();
}

/// The results as a markdown table (`scripts/gpu-check.sh` commits it).
fn summary(dir: &std::path::Path, gpu: &str) {
    println!("\n## CUDA decode on {gpu}\n");
    println!("| config | heads | time per step | state GB/s | H100 model GB/s bound |");
    println!("|---|---|---|---|---|");
    for (d, terms) in CONFIGS {
        let plan = KernelPlan::new(&KernelConfig::new(d, d, terms).unwrap());
        let Ok(layout) = CudaLayout::new(&plan, &CudaOptions::default()) else {
            continue;
        };
        for heads in HEADS {
            let group = format!("cuda_decode_{}", name(d, terms));
            let Some(s) = mean_seconds(dir, &group, "cuda", &heads.to_string()) else {
                continue;
            };
            let bytes = layout.traffic.decode_bytes as f64 * heads as f64;
            println!(
                "| d{d} P{terms} | {heads} | {:.2} us | {:.1} | 3350 |",
                s * 1e6,
                bytes / s * 1e-9
            );
        }
    }
    println!("\n## CUDA prefill on {gpu}, {PREFILL_HEADS} heads x {PREFILL_TOKENS} tokens\n");
    println!("| config | head-tokens/s |");
    println!("|---|---|");
    for (d, terms) in CONFIGS {
        let group = format!("cuda_prefill_{}", name(d, terms));
        if let Some(s) = mean_seconds(dir, &group, "cuda", &PREFILL_HEADS.to_string()) {
            let tokens = (PREFILL_TOKENS * PREFILL_HEADS) as f64;
            println!("| d{d} P{terms} | {:.3e} |", tokens / s);
        }
    }
}

fn main() {
    let gpu = match sata::cuda::gpu_summary() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("cuda bench skipped: {e}");
            return;
        }
    };
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    for (d, terms) in CONFIGS {
        let config = KernelConfig::new(d, d, terms).unwrap();
        let cuda = CudaAttention::new(config, Executor::Gpu).unwrap();
        decode(&mut c, &cuda, d, terms);
        prefill(&mut c, &cuda, d, terms);
    }
    c.final_summary();
    summary(&dir, &gpu);
}
