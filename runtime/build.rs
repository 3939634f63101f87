//! Generates the precompiled kernel registry (`$OUT_DIR/registry.rs`) from the one table in
//! `sata_codegen::registry`, through the same `Builder` that users' build scripts call.
//! Templates are compiled into `sata-codegen`, so editing one rebuilds it and reruns this.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // `sata_cuda`: the CUDA backend is compiled in, whichever way its libraries are found.
    println!("cargo::rustc-check-cfg=cfg(sata_cuda)");
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    if feature("CUDA") || feature("CUDA_LINKED") {
        println!("cargo::rustc-cfg=sata_cuda");
    }
    generate(sata_codegen::registry::precompiled_configs(), "registry.rs");
    // This crate's unit tests need one registry kernel (d8 P3, see `backend::select`), not
    // the whole registry, which is most of the crate's compile time: their test binary
    // includes this one instead (`cpu::kernel`).
    let unit_test_configs = [sata_codegen::KernelConfig::new(8, 8, 3).expect("a valid config")];
    generate(unit_test_configs, "registry_unit_tests.rs");
}

fn generate(configs: impl IntoIterator<Item = sata_codegen::KernelConfig>, file_name: &str) {
    let result = sata_codegen::Builder::new()
        .configs(configs)
        .runtime_path("crate::kernel")
        .file_name(file_name)
        .compile();
    if let Err(e) = result {
        eprintln!("error: generating the SATA kernel registry ({file_name}): {e}");
        std::process::exit(1);
    }
}
