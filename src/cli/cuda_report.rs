//! The CUDA kernels of a configuration in figures: the plan's layout and performance model
//! (`sata info --target cuda`), and the ptxas resource report of NVRTC compilations for
//! sm_80 and sm_90 (`sata emit --target cuda --report`, and `info` when NVRTC is present).

use std::fmt::Write;

use crate::codegen::KernelPlan;
#[cfg(any(feature = "cuda", feature = "candle-cuda"))]
use crate::codegen::cuda::CHECKED_ARCHITECTURES;
use crate::codegen::cuda::{CudaLayout, CudaOptions};
#[cfg(any(feature = "cuda", feature = "candle-cuda"))]
use crate::cuda::nvrtc::{check_resources, compile, nvrtc_version, occupancy};

/// H100 SXM HBM3 bandwidth, bytes per second (the decode model).
const H100_BANDWIDTH: f64 = 3.35e12;
/// H100 SXM f32 (non-tensor) FMA throughput, FLOP per second (the prefill model).
const H100_F32_FLOPS: f64 = 67e12;
/// H100 L2 cache, bytes: below it a decode step's state may stay on chip.
const H100_L2: f64 = 50.0 * 1024.0 * 1024.0;

/// Layout and model, no compiler needed.
pub fn model(plan: &KernelPlan) -> Result<String, String> {
    let layout = CudaLayout::new(plan, &CudaOptions::default()).map_err(|e| e.to_string())?;
    let t = layout.traffic;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "CUDA kernels: block of {} threads ({} row groups x {} columns, {} column(s) per \
         thread); {} parent features in shared memory; {} tokens per pass in prefill/absorb/answer; \
         {} bytes of constant run tables",
        layout.block,
        layout.rows,
        layout.cols,
        layout.cols_per_thread,
        layout.parents,
        layout.chunk,
        layout.constant_bytes
    );
    let _ = writeln!(
        s,
        "  kernel                          chunk  shared bytes  register budget"
    );
    for k in &layout.kernels {
        let _ = writeln!(
            s,
            "  {:<32} {:>4}  {:>12}  {:>15}",
            k.symbol, k.chunk, k.shared_bytes, k.register_budget
        );
    }
    let _ = writeln!(
        s,
        "model per head: decode {} bytes and {} FLOPs per step; prefill {:.0} bytes and {:.0} \
         FLOPs per token",
        t.decode_bytes, t.decode_flops, t.prefill_bytes_per_token, t.prefill_flops_per_token
    );
    let _ = writeln!(
        s,
        "predicted H100 (SXM, not measured): decode at the HBM3 bound (3.35 TB/s), prefill at the \
         f32 FMA bound (67 TFLOP/s); a launch alone costs a few microseconds, which dominates \
         small decode steps"
    );
    for heads in [1u64, 64, 1024] {
        let bytes = (t.decode_bytes * heads) as f64;
        let cached = if bytes <= H100_L2 {
            " (state fits in L2: faster than this bound)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {heads:>5} heads: decode {:>10.3} us per step{cached}; prefill {:>10.3} us per token",
            1e6 * bytes / H100_BANDWIDTH,
            1e6 * t.prefill_flops_per_token * heads as f64 / H100_F32_FLOPS
        );
    }
    Ok(s)
}

/// What `resources` says in a build without the CUDA backend.
#[cfg(not(any(feature = "cuda", feature = "candle-cuda")))]
pub fn resources(_plan: &KernelPlan, _compensated: bool) -> Result<String, String> {
    Err("this build of sata was made without the `cuda` feature (NVRTC)".to_string())
}

/// Compiles the (plain or compensated) kernels with NVRTC for sm_80 and sm_90 and tabulates
/// the ptxas report.
#[cfg(any(feature = "cuda", feature = "candle-cuda"))]
pub fn resources(plan: &KernelPlan, compensated: bool) -> Result<String, String> {
    let options = CudaOptions::compensated(compensated);
    let layout = CudaLayout::new(plan, &options).map_err(|e| e.to_string())?;
    let version = nvrtc_version().map_err(|e| e.to_string())?;
    let mut s = String::new();
    let _ = writeln!(s, "ptxas report (NVRTC {version}):");
    let _ = writeln!(
        s,
        "  kernel                          arch   registers (budget)  spill st/ld  shared bytes  blocks/SM  occupancy"
    );
    for arch in CHECKED_ARCHITECTURES {
        let module = compile(plan, &options, arch).map_err(|e| e.to_string())?;
        for r in &module.resources {
            let budget = layout
                .kernels
                .iter()
                .find(|k| k.symbol == r.symbol)
                .map_or(0, |k| k.register_budget);
            let (blocks, occ) = occupancy(arch, layout.block, r.registers, r.shared_bytes);
            let _ = writeln!(
                s,
                "  {:<32} sm_{arch}  {:>9} ({:>3})       {:>4}/{:<4}  {:>12}  {:>9}  {:>8.0}%",
                r.symbol,
                r.registers,
                budget,
                r.spill_stores,
                r.spill_loads,
                r.shared_bytes,
                blocks,
                100.0 * occ
            );
        }
        for problem in check_resources(&layout, &module) {
            let _ = writeln!(s, "  PROBLEM: {problem}");
        }
    }
    Ok(s)
}
