//! Every CUDA kernel the generator emits for the registry, compiled by NVRTC to CUBIN for real
//! GPUs (sm_80, sm_90) with the ptxas report checked against the plan: no spills, no stack
//! frame, registers within the plan's budget, shared memory exactly what the plan declared.
//! No GPU is needed; NVRTC is (`.ci/run` installs it).

mod common;

use sata::codegen::cuda::{CHECKED_ARCHITECTURES, CudaLayout, CudaOptions};
use sata::codegen::registry::precompiled_configs;
use sata::codegen::{KernelConfig, KernelPlan, Unroll};
use sata::cuda::nvrtc::{check_resources, compile, compile_source};

/// Compiles `plan` as `options` say for `archs`; returns the violations found.
fn compile_and_check(plan: &KernelPlan, options: &CudaOptions, archs: &[u32]) -> Vec<String> {
    let layout = CudaLayout::new(plan, options).unwrap();
    let mut problems = Vec::new();
    for &arch in archs {
        let module = compile(plan, options, arch).unwrap_or_else(|e| panic!("{}: {e}", plan.name));
        assert!(
            module.cubin.len() > 1000,
            "{} sm_{arch}: tiny CUBIN",
            plan.name
        );
        // A CUBIN is an ELF object.
        assert_eq!(&module.cubin[..4], b"\x7fELF", "{} sm_{arch}", plan.name);
        assert_eq!(
            module.resources.len(),
            layout.symbols().count(),
            "{}",
            module.log
        );
        assert_eq!(
            layout.backward.len(),
            if options.compensated { 0 } else { 2 },
            "{}",
            plan.name
        );
        problems.extend(check_resources(&layout, &module));
        for r in &module.resources {
            assert!(r.registers > 0, "{} sm_{arch}: no register count", r.symbol);
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn registry_within_resources(arch: u32) {
    if !common::nvrtc_available() {
        return;
    }
    let problems = precompiled_configs()
        .iter()
        .flat_map(|c| compile_and_check(&KernelPlan::new(c), &CudaOptions::default(), &[arch]))
        .collect();
    assert_none(problems);
}

#[test]
fn every_registry_kernel_compiles_for_sm80_within_its_resources() {
    registry_within_resources(CHECKED_ARCHITECTURES[0]);
}

#[test]
fn every_registry_kernel_compiles_for_sm90_within_its_resources() {
    registry_within_resources(CHECKED_ARCHITECTURES[1]);
}

#[test]
fn both_feature_program_forms_and_odd_shapes_compile_within_their_resources() {
    if !common::nvrtc_available() {
        return;
    }
    // Straight-line and table forms of the same kernel; d_v wider than a block (several
    // columns per thread); d_k != d_v; P = 1; a non-default scale.
    let configs = [
        KernelConfig::new(8, 8, 3).unwrap(),
        KernelConfig::new(3, 300, 3).unwrap(),
        KernelConfig::new(80, 7, 2).unwrap(),
        KernelConfig::new(5, 3, 1).unwrap(),
        KernelConfig::new(6, 6, 4).unwrap().with_scale(1.5).unwrap(),
    ];
    let mut problems = Vec::new();
    for config in configs {
        for unroll in [Unroll::Full, Unroll::PerOrder] {
            let options = CudaOptions {
                compensated: false,
                unroll: Some(unroll),
            };
            problems.extend(compile_and_check(
                &KernelPlan::new(&config),
                &options,
                &CHECKED_ARCHITECTURES,
            ));
        }
    }
    assert_none(problems);
}

#[test]
fn compensated_kernels_compile_within_their_resources() {
    if !common::nvrtc_available() {
        return;
    }
    // The Kahan variant of the largest registry kernels in both forms and of a wide one.
    let mut problems = Vec::new();
    for (d_k, d_v, terms) in [
        (16, 16, 4),
        (32, 32, 4),
        (16, 16, 6),
        (8, 8, 3),
        (3, 300, 3),
    ] {
        let plan = KernelPlan::new(&KernelConfig::new(d_k, d_v, terms).unwrap());
        let options = CudaOptions::compensated(true);
        let layout = CudaLayout::new(&plan, &options).unwrap();
        for arch in CHECKED_ARCHITECTURES {
            let module = compile(&plan, &options, arch).unwrap();
            assert!(
                module
                    .resources
                    .iter()
                    .all(|r| r.symbol.contains("_kahan_"))
            );
            problems.extend(check_resources(&layout, &module));
        }
    }
    assert_none(problems);
}

#[test]
fn compile_errors_and_warnings_are_errors() {
    if !common::nvrtc_available() {
        return;
    }
    let broken = compile_source(
        "extern \"C\" __global__ void k() { undefined(); }",
        "broken",
        90,
    );
    let message = broken.unwrap_err().to_string();
    assert!(message.contains("broken for sm_90"), "{message}");
    // A variable set but never used: NVRTC warns, which fails the compilation.
    let warned = compile_source(
        "extern \"C\" __global__ void k(int* p) { int unused = 1; p[0] = 2; }",
        "warned",
        90,
    );
    let message = warned.unwrap_err().to_string();
    assert!(message.contains("warn"), "{message}");
}
