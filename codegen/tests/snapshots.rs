//! Snapshots of emitted kernels: any change to generated code is reviewed as a diff
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` and `git diff`). The same
//! kernels are compiled and run by the runtime's tests (registry) and the root crate's tests
//! (`#[sata::kernel]`), so a snapshot is never the only check of what it shows.

use sata_codegen::cuda::CudaOptions;
use sata_codegen::rust::RustOptions;
use sata_codegen::wgsl::WgslOptions;
use sata_codegen::{KernelConfig, KernelPlan, Unroll, cuda, rust, wgsl};

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
    let source = rust::render(&plan(2, 2, 3), &RustOptions::default()).unwrap();
    snapshot("d2_v2_p3", "rust", &source);
}

#[test]
fn rust_d3_v3_p3() {
    let source = rust::render(&plan(3, 3, 3), &RustOptions::default()).unwrap();
    snapshot("d3_v3_p3", "rust", &source);
}

#[test]
fn rust_d3_v2_p3_per_order_loops() {
    let options = RustOptions {
        unroll: Some(Unroll::PerOrder),
        ..RustOptions::default()
    };
    let source = rust::render(&plan(3, 2, 3), &options).unwrap();
    snapshot("d3_v2_p3_per_order", "rust", &source);
}

#[test]
fn wgsl_d2_v2_p3() {
    let source = wgsl::render(&plan(2, 2, 3), &WgslOptions::default()).unwrap();
    snapshot("d2_v2_p3", "wgsl", &source);
}

#[test]
fn wgsl_d3_v2_p3_per_order_loops() {
    let options = WgslOptions {
        unroll: Some(Unroll::PerOrder),
        ..WgslOptions::default()
    };
    let source = wgsl::render(&plan(3, 2, 3), &options).unwrap();
    snapshot("d3_v2_p3_per_order", "wgsl", &source);
}

#[test]
fn cuda_d2_v2_p3() {
    let source = cuda::render(&plan(2, 2, 3), &CudaOptions::default()).unwrap();
    snapshot("d2_v2_p3", "cuda", &source);
}

#[test]
fn cuda_d3_v2_p3_per_order_loops() {
    let options = CudaOptions {
        unroll: Some(Unroll::PerOrder),
        ..CudaOptions::default()
    };
    let source = cuda::render(&plan(3, 2, 3), &options).unwrap();
    snapshot("d3_v2_p3_per_order", "cuda", &source);
}

#[test]
fn cuda_d2_v2_p3_compensated() {
    let source = cuda::render(&plan(2, 2, 3), &CudaOptions::compensated(true)).unwrap();
    snapshot("d2_v2_p3_compensated", "cuda", &source);
}

#[test]
fn wgsl_d2_v2_p3_compensated() {
    let source = wgsl::render(&plan(2, 2, 3), &WgslOptions::compensated(true)).unwrap();
    snapshot("d2_v2_p3_compensated", "wgsl", &source);
}
