//! # lexigram
//!
//! CQRS and event sourcing for Rust: aggregates and repositories over an append-only event
//! store with optimistic concurrency, snapshots, schema evolution, and the buses, projections
//! and sagas built on them.
//!
//! # Quick start
//!
//! ```
//! use lexigram::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//! impl Event for Deposited { const NAME: &'static str = "bank.Deposited"; const VERSION: u32 = 1; }
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
//!         Route::new(self, event).on::<Deposited>().finish()
//!     }
//! }
//! impl Apply<Deposited> for Account {
//!     fn apply(&mut self, event: &Deposited) { self.balance += event.amount; }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let accounts = Repository::<Account>::new(InMemoryEventStore::new());
//! let mut account = accounts.load("acc-1").await?;
//! account.record(Deposited { amount: 5 })?;
//! account.record(Deposited { amount: 7 })?;
//! accounts.save(&mut account).await?;
//!
//! let again = accounts.load_or_error("acc-1").await?;
//! assert_eq!((again.state().balance, again.version()), (12, 2));
//! # Ok(()) }
//! ```
//!
//! # Where things are
//!
//! - [`message`]: commands, queries, events, metadata, envelopes.
//! - [`store`]: the [`EventStore`] contract and its backends.
//! - [`schema`]: event type registry and upcasters.
//! - [`aggregate`](mod@aggregate), [`repository`], [`snapshot`]: the write side.
//! - [`command`], [`query`], [`event`], [`middleware`]: the buses.
//! - [`error`]: every error, with what failed and how to fix it.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

// Lets macro-generated `::lexigram::...` paths resolve inside this crate's own tests.
#[allow(unused_extern_crates)]
extern crate self as lexigram;

pub mod aggregate;
mod bus;
pub mod command;
pub mod config;
pub mod error;
pub mod event;
pub mod message;
pub mod middleware;
pub mod module;
pub mod query;
pub mod registration;
pub mod repository;
pub mod schema;
pub mod snapshot;
pub mod store;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

#[doc(inline)]
pub use crate::aggregate::{Aggregate, AggregateRoot, Apply};
#[doc(inline)]
pub use crate::command::CommandBus;
#[doc(inline)]
pub use crate::error::{Error, Result};
#[doc(inline)]
pub use crate::event::EventBus;
#[doc(inline)]
pub use crate::message::{
    AggregateId, Command, Event, EventEnvelope, MessageMetadata, Query, StreamId,
};
#[doc(inline)]
pub use crate::query::QueryBus;
#[doc(inline)]
pub use crate::repository::Repository;
#[doc(inline)]
pub use crate::store::{EventStore, ExpectedVersion, InMemoryEventStore};

/// The traits and types most programs need: `use lexigram::prelude::*;`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, AggregateRoot, Apply, Route};
    pub use crate::command::{CommandBus, CommandContext, CommandHandler};
    pub use crate::config::EventsConfig;
    pub use crate::error::{Error, EventLoadError};
    pub use crate::event::{EnvelopeHandler, EventBus, EventContext, EventHandler};
    pub use crate::message::{AggregateId, Command, Event, EventEnvelope, MessageMetadata, Query};
    pub use crate::middleware::{Middleware, Validate};
    pub use crate::module::{App, Dep, EventsModule};
    pub use crate::query::{QueryBus, QueryContext, QueryHandler};
    pub use crate::repository::EventPublisher;
    pub use crate::repository::Repository;
    pub use crate::snapshot::{InMemorySnapshotStore, SnapshotPolicy};
    pub use crate::store::{EventStore, ExpectedVersion, InMemoryEventStore};
    pub use lexigram_macros::{
        Command, Event, FromContainer, Query, aggregate, apply, command_handler, event_handler,
        handlers, query_handler,
    };
}

#[doc(inline)]
pub use lexigram_macros::{
    Command, Event, FromContainer, Query, aggregate, apply, command_handler, event_handler,
    handlers, query_handler,
};

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::module::{
        HandlerParam, HandlerRegistration, HandlerSite, Injected, Wiring, inject_field,
    };
    pub use crate::registration::{AggregateRegistration, EventRegistration, MessageRegistration};
    pub use inventory;
}
