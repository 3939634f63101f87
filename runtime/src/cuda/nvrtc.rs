//! Compiling generated CUDA C with NVRTC to CUBIN for a real architecture, and reading the
//! ptxas resource report (registers, spills, shared memory) that `-Xptxas=-v` puts in the
//! program log. No GPU is needed for any of this; only libnvrtc.

use std::collections::BTreeMap;

use sata_codegen::KernelPlan;
use sata_codegen::cuda::{self, CudaLayout, CudaOptions};

use super::ffi;
use crate::error::SataError;

pub use sata_codegen::cuda::CHECKED_ARCHITECTURES;

/// What ptxas reported for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResources {
    pub symbol: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_bytes: u32,
    pub shared_bytes: u32,
}

/// One compiled module: the CUBIN, the log, and the report of each kernel.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    pub arch: u32,
    pub cubin: Vec<u8>,
    pub log: String,
    pub resources: Vec<KernelResources>,
}

/// Whether NVRTC can be loaded here (`LD_LIBRARY_PATH` must reach libnvrtc.so.12; `.ci/run`
/// installs it from pip).
pub fn nvrtc_available() -> bool {
    ffi::nvrtc_present()
}

/// The loaded NVRTC's version, e.g. "12.9".
pub fn nvrtc_version() -> Result<String, SataError> {
    if !ffi::nvrtc_present() {
        return Err(no_nvrtc());
    }
    let (major, minor) = ffi::nvrtc_version().map_err(cuda_error)?;
    Ok(format!("{major}.{minor}"))
}

fn no_nvrtc() -> SataError {
    cuda_error(
        "NVRTC (libnvrtc.so.12) not found: install the CUDA toolkit or `pip install \
         nvidia-cuda-nvrtc-cu12` and add its nvidia/cuda_nvrtc/lib to LD_LIBRARY_PATH",
    )
}

pub(crate) fn cuda_error(message: impl std::fmt::Display) -> SataError {
    SataError::Cuda {
        message: message.to_string(),
    }
}

/// The NVRTC options of every compilation: a real architecture (so the result is a CUBIN and
/// ptxas runs), the resource report, and C++17 (`if constexpr`).
pub fn nvrtc_options(arch: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{arch}"),
        "-Xptxas=-v".to_string(),
        "--std=c++17".to_string(),
    ]
}

/// Renders and compiles `plan`'s CUDA module (plain or compensated, as `options` say) for
/// `sm_<arch>`. A compile error or a warning in the log is an error.
pub fn compile(
    plan: &KernelPlan,
    options: &CudaOptions,
    arch: u32,
) -> Result<CompiledModule, SataError> {
    let source = cuda::render(plan, options).map_err(cuda_error)?;
    let name = CudaLayout::new(plan, options).map_err(cuda_error)?.name;
    compile_source(&source, &name, arch)
}

/// Compiles CUDA C `source` (module `name`) for `sm_<arch>`.
pub fn compile_source(source: &str, name: &str, arch: u32) -> Result<CompiledModule, SataError> {
    if !ffi::nvrtc_present() {
        return Err(no_nvrtc());
    }
    let c_source = ffi::c_string(source).map_err(cuda_error)?;
    let c_name = ffi::c_string(&format!("{name}.cu")).map_err(cuda_error)?;
    let output = ffi::nvrtc_compile_cubin(&c_source, &c_name, &nvrtc_options(arch));
    if let Some(error) = output.error {
        return Err(cuda_error(format!(
            "{name} for sm_{arch}: {error}\n{}",
            output.log
        )));
    }
    if output
        .log
        .lines()
        .any(|l| l.to_ascii_lowercase().contains("warning"))
    {
        return Err(cuda_error(format!(
            "{name} for sm_{arch}: NVRTC warned:\n{}",
            output.log
        )));
    }
    let cubin = output
        .cubin
        .ok_or_else(|| cuda_error(format!("{name} for sm_{arch}: no CUBIN")))?;
    let resources = parse_report(&output.log);
    Ok(CompiledModule {
        arch,
        cubin,
        log: output.log,
        resources,
    })
}

/// The per-kernel figures of a ptxas `-v` report, in the order the kernels appear.
pub fn parse_report(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            kernels.push(KernelResources {
                symbol: rest.trim().to_string(),
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
                stack_bytes: 0,
                shared_bytes: 0,
            });
        } else if let Some(k) = kernels.last_mut() {
            if line.contains("bytes stack frame") {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(u32::MAX);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(u32::MAX);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(u32::MAX);
            } else if line.contains("Used ") && line.contains("registers") {
                k.registers = number_before(line, "registers").unwrap_or(u32::MAX);
                k.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    kernels
}

/// Checks a compiled module against its plan: every kernel reported, no spills and no stack
/// frame, registers within the plan's budget, shared memory exactly what the plan declared.
/// Returns one line per violation.
pub fn check_resources(layout: &CudaLayout, module: &CompiledModule) -> Vec<String> {
    let reported: BTreeMap<&str, &KernelResources> = module
        .resources
        .iter()
        .map(|r| (r.symbol.as_str(), r))
        .collect();
    let mut problems = Vec::new();
    let forward = layout
        .kernels
        .iter()
        .map(|k| (&k.symbol, k.register_budget, k.shared_bytes));
    let backward = layout
        .backward
        .iter()
        .map(|k| (&k.symbol, k.register_budget, k.shared_bytes));
    for (symbol, register_budget, shared_bytes) in forward.chain(backward) {
        let Some(r) = reported.get(symbol.as_str()) else {
            problems.push(format!("{symbol}: missing from the ptxas report"));
            continue;
        };
        let sm = module.arch;
        if r.spill_stores != 0 || r.spill_loads != 0 || r.stack_bytes != 0 {
            problems.push(format!(
                "{} sm_{sm}: {} bytes spill stores, {} spill loads, {} stack frame",
                symbol, r.spill_stores, r.spill_loads, r.stack_bytes
            ));
        }
        if r.registers as usize > register_budget {
            problems.push(format!(
                "{} sm_{sm}: {} registers, over the budget of {}",
                symbol, r.registers, register_budget
            ));
        }
        if r.shared_bytes as usize != shared_bytes {
            problems.push(format!(
                "{} sm_{sm}: {} bytes of shared memory, the plan says {}",
                symbol, r.shared_bytes, shared_bytes
            ));
        }
    }
    problems
}

/// Resident blocks per SM and occupancy (resident warps over 64) of a kernel with these
/// resources on an sm_80/sm_90 SM: limited by registers (65,536), shared memory (the larger
/// carve-out, 164 KiB on sm_80 and 228 KiB on sm_90, minus 1 KiB per block), 32 blocks and
/// 64 warps.
pub fn occupancy(arch: u32, block: usize, registers: u32, shared_bytes: u32) -> (usize, f64) {
    let warps_per_block = block.div_ceil(32);
    // Registers are allocated per warp in units of 256.
    let regs_per_warp = (registers as usize * 32).div_ceil(256) * 256;
    let by_regs = 65_536 / (regs_per_warp * warps_per_block).max(1);
    let smem_per_sm = if arch >= 90 { 228 * 1024 } else { 164 * 1024 };
    let by_smem = smem_per_sm / (shared_bytes as usize + 1024);
    let by_warps = 64 / warps_per_block;
    let blocks = by_regs.min(by_smem).min(by_warps).min(32);
    (blocks, (blocks * warps_per_block) as f64 / 64.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
ptxas info    : 44 bytes gmem
ptxas info    : Compiling entry function 'k_answer' for 'sm_90'
ptxas info    : Function properties for k_answer
ptxas         .     0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 15168 bytes smem
ptxas info    : Compile time = 129.321 ms
ptxas info    : Function properties for k_decode
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 46 registers, used 1 barriers, 1628 bytes smem, 400 bytes cmem[0]
";

    #[test]
    fn the_ptxas_report_is_read_per_kernel() {
        let r = parse_report(LOG);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                symbol: "k_answer".into(),
                registers: 96,
                spill_stores: 8,
                spill_loads: 4,
                stack_bytes: 0,
                shared_bytes: 15168,
            }
        );
        assert_eq!((r[1].registers, r[1].shared_bytes), (46, 1628));
    }

    #[test]
    fn occupancy_follows_the_tightest_limit() {
        // 64 threads, 46 registers: 2 warps x 1536 registers -> 21 blocks by registers.
        assert_eq!(occupancy(90, 64, 46, 1628).0, 21);
        // 128 registers: 8 blocks.
        assert_eq!(occupancy(90, 64, 128, 27008).0, 8);
        // 40 KiB of shared memory (41 with the per-block reserve) in sm_80's 164 KiB: 4 blocks.
        assert_eq!(occupancy(80, 64, 64, 40 * 1024).0, 4);
        // The same on sm_90's 228 KiB: 5.
        assert_eq!(occupancy(90, 64, 64, 40 * 1024).0, 5);
    }
}
