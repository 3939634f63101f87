//! Compile errors of `#[sata::kernel]`: each bad argument is reported at its own span, with
//! the struct kept (each case uses it, so losing it would add an error to the .stderr).
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p sata-macro-ui` and
//! review the diff.

#[test]
fn bad_arguments_are_compile_errors_at_the_argument() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
