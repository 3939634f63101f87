//! Test-only crate: SATA kernels for small configurations drawn at random by `build.rs` when
//! the crate is built (see there), exposed as [`KERNELS`] with the [`SEED`] that drew them.

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
