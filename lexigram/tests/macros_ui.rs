//! Compile-time behaviour of the macros: what compiles, and the errors for what must not.
//! Regenerate the `.stderr` snapshots with `TRYBUILD=overwrite cargo test --test macros_ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
