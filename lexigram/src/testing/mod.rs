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

mod event_store;
mod paired;
mod snapshot_store;

pub use event_store::event_store_suite;
pub use paired::paired_store_suite;
pub use snapshot_store::snapshot_store_suite;
