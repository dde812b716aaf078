//! # lexigram
//!
//! CQRS and event sourcing for Rust: aggregates and repositories over an append-only event
//! store with optimistic concurrency (in memory, SQLite or PostgreSQL), snapshots, schema
//! evolution, and command, query and event buses wired at startup from annotated handlers.
//!
//! # Quick start
//!
//! Events, an aggregate, a command handler and an event handler; the app wires them at
//! startup and checks the wiring (every problem reported at once, with `file:line`).
//!
//! ```rust,standalone_crate
//! use lexigram::prelude::*; // the traits and macros
//! use lexigram::{AggregateId, App, Dep, EventsConfig, EventsModule, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! #[event(name = "bank.Deposited", version = 1)]
//! struct Deposited { amount: u64 }
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! #[aggregate(name = "Account")]
//! impl Account {
//!     #[apply]
//!     fn deposited(&mut self, e: &Deposited) { self.balance += e.amount; }
//! }
//!
//! #[derive(Debug, Command)]
//! #[command(output = u64)]
//! struct Deposit { account: AggregateId, amount: u64 }
//!
//! #[command_handler]
//! async fn deposit(cmd: Deposit, accounts: Repository<Account>) -> lexigram::Result<u64> {
//!     let mut account = accounts.load(&cmd.account).await?;  // snapshot + tail replay
//!     account.record(Deposited { amount: cmd.amount })?;     // applied at once, buffered
//!     accounts.save(&mut account).await?;                     // append with expected version
//!     Ok(account.state().balance)
//! }
//!
//! #[derive(Debug, Default)]
//! struct Ledger(std::sync::atomic::AtomicU64);
//!
//! #[event_handler]
//! async fn audit(e: &Deposited, ledger: Dep<Ledger>) -> lexigram::Result<()> {
//!     ledger.0.fetch_add(e.amount, std::sync::atomic::Ordering::SeqCst);
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let app = App::builder()
//!     .module(EventsModule::configure(EventsConfig::memory()))
//!     .provide(Ledger::default())
//!     .build()
//!     .await?;
//! let account = AggregateId::new();
//! app.commands().dispatch(Deposit { account: account.clone(), amount: 5 }).await?;
//! let balance = app.commands().dispatch(Deposit { account, amount: 7 }).await?;
//! assert_eq!(balance, 12);
//!
//! app.events().drain().await;
//! assert_eq!(app.get::<Ledger>().map(|l| l.0.load(std::sync::atomic::Ordering::SeqCst)), Some(12));
//! app.shutdown().await
//! # }
//! ```
//!
//! Everything the macros write can be written by hand (see [`aggregate`](mod@aggregate),
//! [`Repository`], [`module::EventsModule::handlers`]).
//!
//! # Where things are
//!
//! - [`message`]: commands, queries, events, metadata, envelopes.
//! - [`store`]: the [`EventStore`] contract and its backends.
//! - [`schema`]: event type registry and upcasters.
//! - [`aggregate`](mod@aggregate), [`repository`], [`snapshot`]: the write side.
//! - [`command`], [`query`], [`event`], [`middleware`]: the buses.
//! - [`module`], [`config`]: the app, its container and modules, `EventsModule`, `EventsConfig`.
//! - [`error`]: every error, with what failed and how to fix it.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

// Lets macro-generated `::lexigram::...` paths resolve inside this crate's own tests.
#[allow(unused_extern_crates)]
extern crate self as lexigram;

/// A boxed, sendable future: the one allocation of a dispatch.
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub mod aggregate;
mod bus;
pub mod command;
pub mod config;
mod context;
mod delivery;
pub mod error;
pub mod event;
pub(crate) mod fault;
pub mod message;
pub mod middleware;
pub mod module;
pub mod query;
pub mod registration;
pub mod repository;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod subscription;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

#[doc(inline)]
pub use crate::aggregate::{Aggregate, AggregateRoot, Apply};
#[doc(inline)]
pub use crate::command::{CommandBus, CommandContext};
#[doc(inline)]
pub use crate::config::EventsConfig;
#[doc(inline)]
pub use crate::error::{Error, Result};
#[doc(inline)]
pub use crate::event::{EventBus, EventContext};
#[doc(inline)]
pub use crate::message::{
    AggregateId, Command, Event, EventEnvelope, MessageMetadata, Query, StreamId,
};
#[doc(inline)]
pub use crate::module::{App, Dep, EventsModule, Module};
#[doc(inline)]
pub use crate::query::{QueryBus, QueryContext};
#[doc(inline)]
pub use crate::repository::Repository;
#[doc(inline)]
pub use crate::store::{EventStore, ExpectedVersion, InMemoryEventStore};
/// Implement [`Module`] (and the store traits) with `#[lexigram::async_trait]`, without a
/// dependency of your own.
pub use async_trait::async_trait;

/// The traits and macros most programs need: `use lexigram::prelude::*;`. Types are imported
/// by name from the crate root (`use lexigram::{App, EventsModule, Repository};`).
pub mod prelude {
    pub use crate::aggregate::{Aggregate, Apply};
    pub use crate::command::CommandHandler;
    pub use crate::event::{EnvelopeHandler, EventHandler};
    pub use crate::message::{Command, Event, Query};
    pub use crate::middleware::{Middleware, Validate};
    pub use crate::module::Module;
    pub use crate::query::QueryHandler;
    pub use crate::repository::EventPublisher;
    pub use crate::snapshot::SnapshotStore;
    pub use crate::store::EventStore;
    pub use lexigram_macros::{
        Command, Event, FromContainer, Query, aggregate, apply, command_handler, event_handler,
        handlers, query_handler, reaction,
    };
}

#[doc(inline)]
pub use lexigram_macros::{
    Command, Event, FromContainer, Query, aggregate, apply, command_handler, event_handler,
    handlers, query_handler, reaction,
};

/// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private;

/// The code blocks of the README and the guide in `docs/`, compiled and run as doctests so
/// that none of them can rot.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/quick-start.md")]
    struct QuickStart;
    #[doc = include_str!("../../docs/concepts.md")]
    struct Concepts;
    #[doc = include_str!("../../docs/architecture.md")]
    struct Architecture;
    #[doc = include_str!("../../docs/schema-evolution.md")]
    struct SchemaEvolution;
    #[doc = include_str!("../../docs/buses.md")]
    struct Buses;
    #[doc = include_str!("../../docs/backends.md")]
    struct Backends;
    #[doc = include_str!("../../docs/postgres-ordering.md")]
    struct PostgresOrdering;
    #[doc = include_str!("../../docs/benchmarks.md")]
    struct Benchmarks;
    #[doc = include_str!("../../docs/macros.md")]
    struct Macros;
    #[doc = include_str!("../../docs/subscriptions.md")]
    struct Subscriptions;
    #[doc = include_str!("../../docs/projections.md")]
    struct Projections;
}
