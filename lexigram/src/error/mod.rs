//! Every error lexigram returns.
//!
//! [`Error`] is the one type public APIs return. Each variant names what failed (stream,
//! version, event type, handler) and, where there is one, how to fix it. The larger cases have
//! their own types ([`ConcurrencyError`], [`EventLoadError`], [`SchemaError`]) so callers can
//! match on them:
//!
//! ```
//! use lexigram::error::{ConcurrencyError, Error};
//! use lexigram::store::ExpectedVersion;
//!
//! fn should_retry(err: &Error) -> bool {
//!     matches!(err, Error::Concurrency(ConcurrencyError { .. }))
//! }
//! let err = Error::from(ConcurrencyError {
//!     stream: "order-1".into(),
//!     expected: ExpectedVersion::Exact(3),
//!     actual: 4,
//! });
//! assert!(should_retry(&err));
//! assert_eq!(
//!     err.to_string(),
//!     "concurrency conflict on stream `order-1`: expected version 3, but the stream is at version 4; \
//!      reload the aggregate and retry the command"
//! );
//! ```
//!
//! An append that reuses a stored event id, and is not an exact retry, fails with
//! [`Error::DuplicateEvent`] (stream and id as fields), so code that derives ids from a key can
//! tell "already applied" from a failure.

mod bootstrap;

pub use bootstrap::{BootstrapReport, Location, Problem};

use std::sync::Arc;

use crate::message::EventId;
use crate::message::ExpectedVersion;
use crate::message::StreamId;

/// A boxed error from user code (handlers, upcasters), kept as the source of a lexigram error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with lexigram's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type of every public lexigram API.
///
/// `Display` is one sentence (a bootstrap failure: the whole report); the underlying error,
/// when there is one, is the [`source`](std::error::Error::source), never repeated in the
/// message, so anyhow, eyre and `tracing` print each cause once. `Debug` prints the message
/// and its chain of causes, so `fn main() -> Result<(), lexigram::Error>` shows a bootstrap
/// report with its `file:line`s rather than a struct dump. Match on the variant for its
/// fields.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An append found the stream at another version than expected. Nothing was written.
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),

    /// A stored event could not be turned back into a typed event.
    #[error(transparent)]
    EventLoad(#[from] EventLoadError),

    /// Registering or applying a schema (event types, upcasters) failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),

    /// An aggregate was required to exist but its stream is empty.
    #[error(
        "aggregate `{aggregate_type}` with id `{id}` not found; create it first, or use `Repository::load`, which returns a new aggregate when none exists"
    )]
    AggregateNotFound {
        /// The aggregate type name.
        aggregate_type: &'static str,
        /// The id that was looked up.
        id: String,
    },

    /// Recording an event would break an invariant of the aggregate. Nothing was applied.
    #[error("aggregate `{aggregate_type}` `{id}` rejected event `{event_type}`: {reason}")]
    InvariantViolation {
        /// The aggregate type name.
        aggregate_type: &'static str,
        /// The aggregate id.
        id: String,
        /// The rejected event's type.
        event_type: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The store refused or failed to write events.
    #[error("could not persist events to stream `{stream}`: {reason}")]
    EventPersistence {
        /// The stream being written.
        stream: StreamId,
        /// What went wrong, and how to fix it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// An event id is already stored, and the append that carries it again is not an exact
    /// retry of the one that stored it. Nothing was written. Code that makes event ids from a
    /// key (idempotent commands, inboxes) matches on it: "this was already applied".
    #[error(
        "cannot append to stream `{stream}`: an event with id {event_id} is already stored{}, and this append is not an exact retry of the one that stored it (a retry resends the same events, in order, with the same expected version); give every new event its own id",
        stored_at(stored_stream.as_ref(), *stored_version)
    )]
    DuplicateEvent {
        /// The stream being written.
        stream: StreamId,
        /// The id that is stored already.
        event_id: EventId,
        /// The stream that holds the stored event, when the store said.
        stored_stream: Option<StreamId>,
        /// Its version there, when the store said.
        stored_version: Option<u64>,
        /// The database's refusal, when a unique key found the duplicate.
        #[source]
        source: Option<BoxError>,
    },

    /// The store is closed, unreachable, or its connection failed.
    #[error("{backend} store unavailable: {reason}")]
    StoreConnection {
        /// Which backend (`memory`, `sqlite`, `postgres`, ...).
        backend: &'static str,
        /// What went wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The store was closed (by [`close`](crate::store::EventStore::close) or the app's
    /// shutdown). Retrying cannot help: open a new store.
    #[error("the {backend} store was closed; open a new one")]
    StoreClosed {
        /// Which backend (`memory`, `sqlite`, `postgres`, ...).
        backend: &'static str,
    },

    /// A stream id no store can hold. Nothing was read or written.
    #[error(
        "invalid stream id `{preview}`: {reason}; stream ids are UTF-8 text of at most {max} bytes without NUL characters",
        max = crate::message::MAX_STREAM_ID_BYTES
    )]
    InvalidStreamId {
        /// The start of the id (long ids are cut, NULs shown as `\0`).
        preview: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value could not be serialized or deserialized.
    #[error("could not serialize or deserialize {what}")]
    Serialization {
        /// What was being (de)serialized.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// No handler is registered for a message type.
    #[error(
        "no handler registered for {kind} `{message_type}`; annotate one with `#[{kind}_handler]` or register it on the bus, and make sure its crate is linked"
    )]
    HandlerNotFound {
        /// `command` or `query`.
        kind: &'static str,
        /// The message's type name.
        message_type: &'static str,
    },

    /// A second handler was registered for a command or query.
    #[error(
        "{kind} `{message_type}` already has a handler ({existing}); a {kind} must have exactly one. Remove one of them, or replace it explicitly"
    )]
    DuplicateHandler {
        /// `command` or `query`.
        kind: &'static str,
        /// The message's type name.
        message_type: &'static str,
        /// The handler already registered (name and `file:line` when known).
        existing: String,
    },

    /// A command handler failed. The handler's own error is the source (downcast it).
    #[error("command `{command_type}` failed in handler `{handler}`")]
    CommandExecution {
        /// The command's type name.
        command_type: &'static str,
        /// The handler's name.
        handler: Arc<str>,
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// A query handler failed. The handler's own error is the source (downcast it).
    #[error("query `{query_type}` failed in handler `{handler}`")]
    QueryExecution {
        /// The query's type name.
        query_type: &'static str,
        /// The handler's name.
        handler: Arc<str>,
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// Publishing events failed.
    #[error("could not publish event `{event_type}`: {reason}")]
    Publish {
        /// The event type.
        event_type: Arc<str>,
        /// What went wrong.
        reason: String,
    },

    /// Building the app found problems in its wiring. Every problem is listed, sorted.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapReport),

    /// A call got an argument it cannot use (a partition index past the total, ...).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong, and what would be right.
        reason: String,
    },

    /// A snapshot was asked of a repository that has no snapshot store.
    #[error(
        "cannot snapshot aggregate `{aggregate_type}`: the repository has no snapshot store; add one with `Repository::with_snapshots`, or set `snapshots` in the configuration"
    )]
    SnapshotsDisabled {
        /// The aggregate type name.
        aggregate_type: &'static str,
    },

    /// The configuration is invalid. Every problem is listed.
    #[error("invalid lexigram configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config {
        /// One line per problem.
        problems: Vec<String>,
    },

    /// A handler (or a whole dispatch) did not finish in time. It was cancelled.
    #[error(
        "{operation} timed out after {after:?} and was cancelled; make the handler faster, or raise the timeout"
    )]
    Timeout {
        /// What timed out, e.g. "command `bank::Deposit` in handler `deposit`".
        operation: String,
        /// The time limit.
        after: std::time::Duration,
    },

    /// A command or query failed validation (see `lexigram::middleware::Validate`). Its handler
    /// was not called.
    #[error("{kind} `{message_type}` is invalid: {}; fix the message before sending it", problems.join("; "))]
    Validation {
        /// `command` or `query`.
        kind: &'static str,
        /// The message's type name.
        message_type: &'static str,
        /// One entry per problem.
        problems: Vec<String>,
    },

    /// A middleware replaced the message or the result with a value of another type.
    #[error(
        "a middleware replaced the {what} of {kind} `{message_type}` with a value of another type (expected `{expected}`); a middleware may change the value, not its type"
    )]
    MiddlewareType {
        /// `command` or `query`.
        kind: &'static str,
        /// The message's type name.
        message_type: &'static str,
        /// `message` or `result`.
        what: &'static str,
        /// The type the bus expected.
        expected: &'static str,
    },

    /// An event handler failed on its last attempt (returned by a dead-letter replay).
    #[error("event handler `{handler}` failed on event `{event_type}` after {attempts} attempt(s)")]
    EventHandler {
        /// The event type.
        event_type: Arc<str>,
        /// The handler's name.
        handler: Arc<str>,
        /// How many attempts were made.
        attempts: u32,
        /// The handler's last error (downcast it).
        #[source]
        source: BoxError,
    },

    /// No dead letter has this id (it was replayed or deleted already).
    #[error("no dead letter with id {id}; list the current ones with `EventBus::dead_letters`")]
    DeadLetterNotFound {
        /// The requested id.
        id: u64,
    },

    /// A dead letter could not be replayed. It stays in the dead-letter queue.
    #[error("cannot replay dead letter {id}: {reason}")]
    DeadLetterReplay {
        /// The dead letter's id.
        id: u64,
        /// Why, and what to do.
        reason: String,
    },

    /// A component did not finish its work before the shutdown deadline. Its background tasks
    /// were stopped anyway; the unfinished work was abandoned.
    #[error(
        "{component} did not drain within {deadline:?}: {abandoned} event(s) abandoned; give shutdown a longer deadline, or find the handler that hangs"
    )]
    ShutdownTimeout {
        /// What was shutting down (`event bus`).
        component: &'static str,
        /// The deadline given.
        deadline: std::time::Duration,
        /// How many accepted events were not handled.
        abandoned: u64,
    },

    /// A durable subscription's partition is held by another node now: its lease expired
    /// (the node could not renew it in time) or the subscription was split.
    #[error(
        "partition {partition} of subscription `{subscription}` (version {version}) was taken over by another node: the lease of epoch {epoch} expired or was fenced out by a split; nothing of the batch in flight was committed, and the worker will claim again"
    )]
    LeaseLost {
        /// The subscription.
        subscription: String,
        /// Its checkpoint version.
        version: u32,
        /// The partition.
        partition: u32,
        /// The epoch of the lost lease.
        epoch: u64,
    },

    /// An exactly-once reaction could not set up its read model (at start) or reset it (for
    /// a rebuild); nothing of that step was committed, and its checkpoints are where they
    /// were.
    #[error(
        "reaction `{subscription}` could not {step} its read model, so nothing of it was committed and its checkpoints are where they were; fix its `TransactionalReactor::{step}` (the default `reset` refuses: implement it to make the reaction rebuildable)"
    )]
    ReadModel {
        /// The subscription.
        subscription: String,
        /// `setup` or `reset`.
        step: &'static str,
        /// What the step returned.
        #[source]
        source: BoxError,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        if cause.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        while let Some(err) = cause {
            write!(f, "\n    {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl Error {
    /// Whether repeating the same call, unchanged, may succeed: the store was unreachable or
    /// lost its connection ([`StoreConnection`](Error::StoreConnection)), or the work did not
    /// finish in time ([`Timeout`](Error::Timeout)).
    ///
    /// Retrying an append is safe even when its connection died after the commit: appends are
    /// idempotent by event id, so a retry of a stored append returns its original result. A
    /// [`Concurrency`](Error::Concurrency) conflict is not retryable as is (reload the
    /// aggregate and decide again), and errors about the input
    /// ([`EventPersistence`](Error::EventPersistence), [`DuplicateEvent`](Error::DuplicateEvent),
    /// [`InvalidStreamId`](Error::InvalidStreamId), [`Config`](Error::Config), ...) or a
    /// [`StoreClosed`](Error::StoreClosed) store never go away by themselves.
    ///
    /// ```
    /// use lexigram::Error;
    /// let outage = Error::StoreConnection { backend: "postgres", reason: "connection reset".into(), source: None };
    /// assert!(outage.is_retryable());
    /// assert!(!Error::StoreClosed { backend: "postgres" }.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::StoreConnection { .. } | Self::Timeout { .. })
    }
}

/// An append found the stream at another version than expected. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "concurrency conflict on stream `{stream}`: expected {expected}, but the stream is at version {actual}; reload the aggregate and retry the command"
)]
pub struct ConcurrencyError {
    /// The stream written to.
    pub stream: StreamId,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's actual version.
    pub actual: u64,
}

/// A stored event could not be decoded. Names the stream, version and event type.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot load event `{event_type}` at version {stream_version} of stream `{stream}`: {kind}"
)]
pub struct EventLoadError {
    /// The stream holding the event.
    pub stream: StreamId,
    /// The event's version within the stream.
    pub stream_version: u64,
    /// The stored event type.
    pub event_type: Arc<str>,
    /// What went wrong (part of the message; it has no source of its own).
    pub kind: EventLoadErrorKind,
}

impl EventLoadError {
    pub(crate) fn new(
        stream: StreamId,
        stream_version: u64,
        event_type: Arc<str>,
        kind: EventLoadErrorKind,
    ) -> Self {
        Self {
            stream,
            stream_version,
            event_type,
            kind,
        }
    }
}

/// Why a stored event could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventLoadErrorKind {
    /// No event type of this name is known to the reader.
    #[error(
        "unknown event type; register it (`#[derive(Event)]`, or `SchemaRegistry::register`) or handle it in the aggregate's apply"
    )]
    UnknownType,
    /// The envelope holds another type than the one requested.
    #[error("expected an event of type `{expected}`")]
    WrongType {
        /// The requested type.
        expected: &'static str,
    },
    /// The stored schema version differs from the one this binary reads.
    #[error(
        "stored at schema version {stored}, but this binary reads version {expected}; register upcasters for every step from v{stored} to v{expected} and attach the schema registry to the store"
    )]
    VersionMismatch {
        /// The stored version.
        stored: u32,
        /// The version the code reads.
        expected: u32,
    },
    /// The payload is not valid JSON for the type.
    #[error("corrupt payload: {0}")]
    Corrupt(serde_json::Error),
    /// An upcaster failed.
    #[error(transparent)]
    Upcast(SchemaError),
    /// The stored row is damaged (written behind the store's back, or by a faulty tool).
    #[error(
        "the stored row is damaged: {reason}; repair or delete the row (readers of the log pass over it)"
    )]
    DamagedRow {
        /// Which column, and what is wrong with it.
        reason: Arc<str>,
    },
}

/// Registering or applying schemas failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Two different Rust types were registered under one event name.
    #[error(
        "event name `{name}` is registered twice: by `{first}` and by `{second}`; give one of them another `name`"
    )]
    DuplicateEventName {
        /// The clashing name.
        name: Arc<str>,
        /// The first Rust type.
        first: &'static str,
        /// The second Rust type.
        second: &'static str,
    },
    /// Two upcasters start from the same version of one type.
    #[error("`{name}` already has an upcaster from v{from}; keep one upcaster per step")]
    DuplicateUpcaster {
        /// The event type or aggregate type.
        name: Arc<str>,
        /// The version both start from.
        from: u32,
    },
    /// An upcaster must move a version forward.
    #[error("upcaster for `{name}` goes from v{from} to v{to}; an upcaster must raise the version")]
    BackwardUpcaster {
        /// The event type or aggregate type.
        name: Arc<str>,
        /// Its start version.
        from: u32,
        /// Its end version.
        to: u32,
    },
    /// The chain of upcasters has a hole.
    #[error(
        "no migration path from v{from} to v{to} for `{name}`: no upcaster starts at v{missing}; register one with `SchemaRegistry::upcaster(\"{name}\", {missing}, ..)`"
    )]
    NoMigrationPath {
        /// The event type or aggregate type.
        name: Arc<str>,
        /// The stored version.
        from: u32,
        /// The version the code reads.
        to: u32,
        /// The first version no upcaster starts from.
        missing: u32,
    },
    /// Data is newer than any version this binary knows.
    #[error(
        "`{name}` was stored at v{stored}, newer than v{known} known to this binary; deploy the newer code"
    )]
    NewerThanKnown {
        /// The event type or aggregate type.
        name: Arc<str>,
        /// The stored version.
        stored: u32,
        /// The newest version this binary knows.
        known: u32,
    },
    /// An upcaster returned an error or met a payload it cannot parse.
    #[error("upcaster for `{name}` from v{from} failed: {cause}")]
    UpcasterFailed {
        /// The event type or aggregate type.
        name: Arc<str>,
        /// The step's start version.
        from: u32,
        /// The upcaster's error (part of the message, so this error has no source).
        cause: BoxError,
    },
}

impl From<SchemaError> for EventLoadErrorKind {
    fn from(err: SchemaError) -> Self {
        Self::Upcast(err)
    }
}

/// ` (at version 3 of stream `x`)`, or nothing, for [`Error::DuplicateEvent`].
fn stored_at(stream: Option<&StreamId>, version: Option<u64>) -> String {
    match (stream, version) {
        (Some(stream), Some(version)) => format!(" (at version {version} of stream `{stream}`)"),
        (Some(stream), None) => format!(" (in stream `{stream}`)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("insufficient funds")]
    struct Insufficient;

    #[test]
    fn a_message_never_repeats_its_source_and_debug_shows_the_chain() {
        let err = Error::CommandExecution {
            command_type: "bank::Withdraw",
            handler: "withdraw".into(),
            source: Box::new(Insufficient),
        };
        assert_eq!(
            err.to_string(),
            "command `bank::Withdraw` failed in handler `withdraw`"
        );
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some("insufficient funds".to_owned())
        );
        assert_eq!(
            format!("{err:?}"),
            "command `bank::Withdraw` failed in handler `withdraw`\n\nCaused by:\n    insufficient funds"
        );
    }

    #[test]
    fn debug_of_a_bootstrap_failure_is_the_report() {
        let report = BootstrapReport::new(vec![
            Problem::new("handler `notify` needs `Dep<Mailer>`, but no module provides it").at(
                Location {
                    file: "src/notify.rs",
                    line: 7,
                },
                "bank::notify",
            ),
        ]);
        let err = Error::from(report.clone());
        assert_eq!(format!("{err:?}"), report.to_string());
        assert!(format!("{err:?}").contains("--> src/notify.rs:7"));
    }

    #[test]
    fn an_event_load_error_says_everything_once() {
        let payload: std::result::Result<u8, _> = serde_json::from_str("{");
        let Err(json) = payload else { return };
        let err = Error::from(EventLoadError::new(
            StreamId::from("acc-1"),
            2,
            Arc::from("bank.Deposited"),
            EventLoadErrorKind::Corrupt(json),
        ));
        let message = err.to_string();
        assert!(message.starts_with("cannot load event `bank.Deposited` at version 2 of stream `acc-1`: corrupt payload: "), "{message}");
        assert!(
            std::error::Error::source(&err).is_none(),
            "the cause is in the message"
        );
    }
}
