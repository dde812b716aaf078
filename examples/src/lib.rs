//! Runnable examples for lexigram: see `examples/bank`.
