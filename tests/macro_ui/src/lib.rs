//! Test-only crate: `tests/compile_errors.rs` checks the compile errors of `#[sata::kernel]`
//! with trybuild against `sata` without its optional backends (see Cargo.toml for why).
