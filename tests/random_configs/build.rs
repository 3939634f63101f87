//! Draws small SATA configurations at random and writes one `#[sata::kernel]` struct per
//! configuration into `$OUT_DIR/kernels.rs`, which `src/lib.rs` includes: every fresh build
//! (every CI run starts from a fresh clone) generates, compiles and tests new configurations.
//! `SATA_CONFIG_SEED=<u64>` reproduces a draw, and changing it draws again.

use std::fmt::Write;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Configurations per draw: enough to cover rows with and without vector tails, P = 1..5 and
/// non-default scales, few enough to keep the build short on a 2-core machine.
const DRAWS: usize = 8;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SATA_CONFIG_SEED");
    let seed = std::env::var("SATA_CONFIG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut src = String::new();
    writeln!(
        src,
        "/// The seed these configurations were drawn from: `SATA_CONFIG_SEED={seed}` redraws them."
    )
    .unwrap();
    writeln!(src, "pub const SEED: u64 = {seed};").unwrap();
    let mut names = Vec::new();
    for i in 0..DRAWS {
        let d_k = rng.random_range(1..=8usize);
        let d_v = rng.random_range(1..=20usize);
        let terms = rng.random_range(1..=5usize);
        // Half the draws keep the default scale sqrt(d_k); the others get one in [0.5, 4]
        // with three decimals, written as a float literal.
        let scale = if rng.random_bool(0.5) {
            String::new()
        } else {
            format!(
                ", scale = {:.3}",
                rng.random_range(500..=4000u32) as f64 / 1000.0
            )
        };
        writeln!(
            src,
            "#[sata::kernel(d_k = {d_k}, d_v = {d_v}, terms = {terms}{scale})]\npub struct Random{i};"
        )
        .unwrap();
        names.push(format!("&Random{i}"));
    }
    writeln!(
        src,
        "/// Every drawn kernel.\npub static KERNELS: &[&dyn sata::SpecializedKernel] = &[{}];",
        names.join(", ")
    )
    .unwrap();
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("kernels.rs"), src).expect("OUT_DIR is writable");
}
