//! Generates the precompiled kernel registry (`$OUT_DIR/registry.rs`) from the one table in
//! `sata_codegen::registry`, through the same `Builder` that users' build scripts call.
//! Templates are compiled into `sata-codegen`, so editing one rebuilds it and reruns this.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let result = sata_codegen::Builder::new()
        .configs(sata_codegen::registry::precompiled_configs())
        .runtime_path("crate::kernel")
        .file_name("registry.rs")
        .compile();
    if let Err(e) = result {
        eprintln!("error: generating the SATA kernel registry: {e}");
        std::process::exit(1);
    }
}
