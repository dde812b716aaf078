//! Test support: the behavioural suites every store backend must pass.
//!
//! The suites are written once, as generic code, and run against every backend lexigram
//! ships (memory, SQLite, PostgreSQL); a third-party backend proves it keeps the same
//! contract by running them too. Each case builds a fresh store with the factory it is given
//! and panics with a message naming the case and the broken rule.
//!
//! Enable the `testing` feature to use this module.
//!
//! # Examples
//!
//! ```
//! use lexigram::store::InMemoryEventStore;
//! use lexigram::testing::event_store_suite;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), lexigram::Error> {
//! event_store_suite(|schema| async move { Ok(InMemoryEventStore::new().with_schema(schema)) }).await?;
//! # Ok(()) }
//! ```

mod checkpoint_store;
mod event_store;
mod paired;
mod snapshot_store;

pub use checkpoint_store::checkpoint_store_suite;
pub use event_store::event_store_suite;
pub use paired::paired_store_suite;
pub use snapshot_store::snapshot_store_suite;

/// Fault points for crash tests: arm a named point in this process, or set `LEXIGRAM_FAULT`
/// in a child's environment (see the syntax on [`faults::arm`]'s module).
///
/// Points: `subscription.after_handle` (after the reactor handled an event, before its batch
/// is committed), `subscription.after_commit` (after a checkpoint commit).
pub mod faults {
    pub use crate::fault::{Fault, arm, disarm, passes};
}
