//! Messages: commands, queries and events, the metadata they travel with, and the envelope an
//! event is stored in.
//!
//! A [`Command`] asks the system to change something and has exactly one handler; a [`Query`]
//! asks for data and changes nothing; an [`Event`] records a fact that already happened and may
//! have any number of handlers. Each carries [`MessageMetadata`] (ids, correlation, causation,
//! user, tenant, custom values). Once stored, an event lives in an [`EventEnvelope`] that adds
//! its stream, version and global position.
//!
//! Domain events stay inside the service that records them; [integration
//! events](EventKind::Integration) are meant to leave it (through an outbox, a broker or a
//! webhook), so their schema is a public contract.
//!
//! # Examples
//!
//! ```
//! use lexigram::message::{Event, EventKind, MessageMetadata};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct AccountOpened {
//!     owner: String,
//! }
//!
//! impl Event for AccountOpened {
//!     const NAME: &'static str = "bank.AccountOpened";
//!     const VERSION: u32 = 1;
//! }
//!
//! assert_eq!(AccountOpened::KIND, EventKind::Domain);
//! let meta = MessageMetadata::new().with_user_id("alice").with_custom("channel", "web");
//! assert_eq!(meta.user_id(), Some("alice"));
//! ```

mod envelope;
mod ids;
mod metadata;
mod version;

pub use envelope::{EventEnvelope, NewEvent, Payload};
pub(crate) use ids::check_stream_id;
pub use ids::{AggregateId, CorrelationId, EventId, MAX_STREAM_ID_BYTES, MessageId, StreamId};
pub use metadata::{MessageMetadata, TraceContext};
pub use version::ExpectedVersion;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A request to change the state of the system, handled by exactly one handler.
///
/// `Output` is what the handler returns on success (often `()` or the id of what it created).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lexigram command",
    label = "this type must implement `lexigram::Command`",
    note = "derive it with `#[derive(Command)]` and `#[command(output = ...)]`, or implement `Command` by hand"
)]
pub trait Command: Send + 'static {
    /// What a successful handler returns.
    type Output: Send + 'static;

    /// The name used in errors, logs and traces. Defaults to the Rust type name.
    fn command_name() -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A request for data that changes nothing, handled by exactly one handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lexigram query",
    label = "this type must implement `lexigram::Query`",
    note = "derive it with `#[derive(Query)]` and `#[query(output = ...)]`, or implement `Query` by hand"
)]
pub trait Query: Send + 'static {
    /// What a successful handler returns.
    type Output: Send + 'static;

    /// The name used in errors, logs and traces. Defaults to the Rust type name.
    fn query_name() -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// Whether an event stays inside the service or is meant to leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A fact private to the service that recorded it; its schema may change with the code.
    #[default]
    Domain,
    /// A fact published to other services; its schema is a public, versioned contract.
    Integration,
}

/// A fact that happened, stored under a stable name and schema version.
///
/// `NAME` is what is written to the store: keep it stable across renames of the Rust type
/// (a dotted `context.EventName` is the convention). `VERSION` starts at 1 and goes up when the
/// payload changes shape; register an upcaster for each step so old events still load (see
/// [`schema`](crate::schema)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lexigram event",
    label = "this type must implement `lexigram::Event`",
    note = "derive it with `#[derive(Event)]` and `#[event(name = \"...\", version = 1)]`, or implement `Event` by hand"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name stored with every event of this type.
    const NAME: &'static str;
    /// The current schema version of the payload (1-based).
    const VERSION: u32;
    /// Domain (default) or integration event.
    const KIND: EventKind = EventKind::Domain;
}
