//! Snapshots of emitted kernels: any change to generated code is reviewed as a diff
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` and `git diff`). The same
//! kernels are compiled and run by the runtime's tests (registry) and the root crate's tests
//! (`#[sata::kernel]`), so a snapshot is never the only check of what it shows.

use sata_codegen::render::{RustOptions, render_rust};
use sata_codegen::{KernelConfig, KernelPlan, Unroll};

/// One helper for every target's snapshots: the suffix names the target.
fn snapshot(name: &str, target: &str, source: &str) {
    insta::with_settings!({ snapshot_suffix => target, prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, source);
    });
}

fn plan(d_k: usize, d_v: usize, terms: usize) -> KernelPlan {
    KernelPlan::new(&KernelConfig::new(d_k, d_v, terms).unwrap())
}

#[test]
fn rust_d2_v2_p3() {
    let source = render_rust(&plan(2, 2, 3), &RustOptions::default()).unwrap();
    snapshot("d2_v2_p3", "rust", &source);
}

#[test]
fn rust_d3_v3_p3() {
    let source = render_rust(&plan(3, 3, 3), &RustOptions::default()).unwrap();
    snapshot("d3_v3_p3", "rust", &source);
}

#[test]
fn rust_d3_v2_p3_per_order_loops() {
    let plan = plan(3, 2, 3).with_unroll(Unroll::PerOrder);
    let source = render_rust(&plan, &RustOptions::default()).unwrap();
    snapshot("d3_v2_p3_per_order", "rust", &source);
}

#[test]
fn wgsl_d2_v2_p3() {
    let source = sata_codegen::render::render_wgsl(&plan(2, 2, 3)).unwrap();
    snapshot("d2_v2_p3", "wgsl", &source);
}

#[test]
fn wgsl_d3_v2_p3_per_order_loops() {
    let plan = plan(3, 2, 3).with_unroll(Unroll::PerOrder);
    let source = sata_codegen::render::render_wgsl(&plan).unwrap();
    snapshot("d3_v2_p3_per_order", "wgsl", &source);
}

#[test]
fn cuda_d2_v2_p3() {
    let source = sata_codegen::render::render_cuda(&plan(2, 2, 3)).unwrap();
    snapshot("d2_v2_p3", "cuda", &source);
}

#[test]
fn cuda_d3_v2_p3_per_order_loops() {
    let plan = plan(3, 2, 3).with_unroll(Unroll::PerOrder);
    let source = sata_codegen::render::render_cuda(&plan).unwrap();
    snapshot("d3_v2_p3_per_order", "cuda", &source);
}

#[test]
fn cuda_d2_v2_p3_compensated() {
    let source = sata_codegen::render::render_cuda_variant(&plan(2, 2, 3), true).unwrap();
    snapshot("d2_v2_p3_compensated", "cuda", &source);
}

#[test]
fn wgsl_d2_v2_p3_compensated() {
    let source = sata_codegen::render::render_wgsl_variant(&plan(2, 2, 3), true).unwrap();
    snapshot("d2_v2_p3_compensated", "wgsl", &source);
}
