//! Each file in `tests/ui/` must fail to compile with the error in its `.stderr`.
//! Regenerate the snapshots with `TRYBUILD=overwrite cargo test -p annals-derive`, then
//! read them.

#[test]
fn misuse_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
