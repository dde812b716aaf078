//! Procedural macros for [lexigram](https://docs.rs/lexigram).
//!
//! Do not depend on this crate directly: `lexigram` re-exports every macro at a pinned version,
//! and the generated code only reaches into `::lexigram::__private`.
