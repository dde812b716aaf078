//! Event stores: the append-only log every other part of lexigram reads from.
//!
//! [`EventStore`] is the contract every backend meets (and proves, by passing the behavioural
//! suite in the `testing` module, behind the `testing` feature):
//!
//! - **Atomic, optimistic appends.** [`append`](EventStore::append) writes all events or none,
//!   after checking an [`ExpectedVersion`]; a mismatch is a
//!   [`ConcurrencyError`](crate::error::ConcurrencyError) and writes nothing, even for an
//!   empty append.
//! - **Idempotent retries.** Appending events whose ids are already stored, in order, at the
//!   versions the append would have given them returns the original [`AppendResult`] and writes
//!   nothing: a retry after a lost reply is safe.
//! - **Numbering.** Stream versions are 1-based and dense; global positions are 1-based and
//!   strictly increasing across all streams. [`read`](EventStore::read) bounds are inclusive;
//!   [`read_all`](EventStore::read_all) starts *after* the given position, so a reader passes
//!   the last position it saw.
//! - **Purge keeps versions.** [`purge`](EventStore::purge) drops old events, but the remaining
//!   ones keep their versions and the next append continues the count.
//! - **Upcasting on read.** A store built with a [`SchemaRegistry`](crate::schema::SchemaRegistry)
//!   upcasts old events on every read path.
//! - **Filtered pages that prove the log.** [`read_page`](EventStore::read_page) returns the
//!   events matching a [`ReadFilter`] and [`Page::scanned_to`]: nothing matching at or below
//!   it will appear later, so a reader of rare events still moves its checkpoint.
//! - **Wake-ups.** [`append_signal`](EventStore::append_signal) wakes a live reader after
//!   appends through the store (and other processes' where the backend can tell).
//! - **Typed duplicates.** An append that reuses a stored event id and is not an exact retry
//!   fails with [`Error::DuplicateEvent`].
//!
//! # Examples
//!
//! ```
//! use lexigram::message::{MessageMetadata, NewEvent, Payload};
//! use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore, VersionRange};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let store = InMemoryEventStore::new();
//! let event = NewEvent::new("cart.ItemAdded", 1, Payload::from_json_text("42"), MessageMetadata::new());
//! let written = store.append("cart-1", vec![event], ExpectedVersion::NoStream).await?;
//! assert_eq!(written.version, 1);
//!
//! let events = store.read("cart-1", VersionRange::all()).await?;
//! assert_eq!(events[0].global_position, written.positions[0]);
//!
//! // A second writer that still believes the stream is new loses, and writes nothing.
//! let late = NewEvent::new("cart.ItemAdded", 1, Payload::from_json_text("7"), MessageMetadata::new());
//! let err = store.append("cart-1", vec![late], ExpectedVersion::NoStream).await.unwrap_err();
//! assert!(matches!(err, lexigram::Error::Concurrency(_)));
//! assert_eq!(store.version("cart-1").await?, 1);
//! # Ok(()) }
//! ```

mod held;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod read;
mod signal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};
use crate::message::{EventEnvelope, EventId, NewEvent, StreamId};

pub(crate) use crate::message::check_stream_id;
pub use crate::message::{ExpectedVersion, MAX_STREAM_ID_BYTES};
pub use held::HeldBack;
pub use memory::InMemoryEventStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresConfig, PostgresEventStore, Wakeups};
pub use read::{Page, PartitionSet, ReadFilter};
pub(crate) use signal::AppendNotifier;
pub use signal::AppendSignal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use signal::{Watcher, WeakNotifier};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteConfig, SqliteEventStore, SqliteWriteTx};

/// Checks a batch before it is written: valid JSON payloads, no id twice.
pub(crate) fn check_batch(stream: &str, events: &[NewEvent]) -> Result<()> {
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(event.payload.as_str()) {
            return Err(Error::EventPersistence {
                stream: StreamId::from(stream),
                reason: format!(
                    "the payload of event `{}` ({}) is not valid JSON; encode events with `Payload::encode`",
                    event.event_type, event.event_id
                ),
                source: Some(Box::new(err)),
            });
        }
        if !seen.insert(event.event_id) {
            // Nothing is stored: a mistake in this batch, not a duplicate of a stored event.
            return Err(Error::EventPersistence {
                stream: StreamId::from(stream),
                reason: format!(
                    "event id {} appears twice in this append; give every new event its own id",
                    event.event_id
                ),
                source: None,
            });
        }
    }
    Ok(())
}

/// The error for an event id that is stored already, found by a unique key (`source`) or an
/// index, without knowing where it is stored.
pub(crate) fn duplicate_id(stream: &str, id: EventId, source: Option<BoxError>) -> Error {
    Error::DuplicateEvent {
        stream: StreamId::from(stream),
        event_id: id,
        stored_stream: None,
        stored_version: None,
        source,
    }
}

/// The versions `(start, end]` a retried append of `count` events must have been stored at,
/// when its first event id is stored at `first_version`. `None` when they would pass
/// `u64::MAX`: no stored append can be there, so it is not a retry.
pub(crate) fn retry_span(
    expected: ExpectedVersion,
    first_version: u64,
    count: usize,
) -> Option<(u64, u64)> {
    let start = expected
        .start()
        .unwrap_or_else(|| first_version.saturating_sub(1));
    let end = start.checked_add(u64::try_from(count).ok()?)?;
    Some((start, end))
}

/// The error for an append whose first event id is stored already (at `first_version` of
/// `first_stream`) but which is not an exact retry of the append that stored it.
pub(crate) fn not_a_retry(
    stream: &str,
    id: EventId,
    first_stream: &str,
    first_version: u64,
) -> Error {
    Error::DuplicateEvent {
        stream: StreamId::from(stream),
        event_id: id,
        stored_stream: Some(StreamId::from(first_stream)),
        stored_version: Some(first_version),
        source: None,
    }
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of each event written, in order (empty for an empty append).
    pub positions: Vec<u64>,
    /// When the store recorded the events.
    pub recorded_at: DateTime<Utc>,
}

impl AppendResult {
    /// Builds a result; for backends.
    pub fn new(version: u64, positions: Vec<u64>, recorded_at: DateTime<Utc>) -> Self {
        Self {
            version,
            positions,
            recorded_at,
        }
    }

    /// The first position written, if any.
    pub fn first_position(&self) -> Option<u64> {
        self.positions.first().copied()
    }

    /// The last position written, if any.
    pub fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }
}

/// Which versions of a stream to read. Bounds are inclusive and 1-based.
///
/// ```
/// use lexigram::store::VersionRange;
/// let range = VersionRange::from(10).to(20).limit(5);
/// assert_eq!((range.from, range.to, range.limit), (10, Some(20), Some(5)));
/// assert_eq!(VersionRange::all().from, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionRange {
    /// First version to return (inclusive; 0 and 1 both mean the start).
    pub from: u64,
    /// Last version to return (inclusive), or the end of the stream.
    pub to: Option<u64>,
    /// At most this many events.
    pub limit: Option<usize>,
}

impl VersionRange {
    /// The whole stream.
    pub const fn all() -> Self {
        Self {
            from: 1,
            to: None,
            limit: None,
        }
    }

    /// From `version` (inclusive) to the end.
    pub const fn from(version: u64) -> Self {
        Self {
            from: version,
            to: None,
            limit: None,
        }
    }

    /// Stops at `version` (inclusive).
    #[must_use]
    pub const fn to(mut self, version: u64) -> Self {
        self.to = Some(version);
        self
    }

    /// Returns at most `limit` events.
    #[must_use]
    pub const fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The effective first version (1-based).
    pub(crate) fn start(&self) -> u64 {
        self.from.max(1)
    }

    /// Whether the range can contain no event at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.limit == Some(0) || self.to.is_some_and(|to| to < self.start())
    }
}

impl Default for VersionRange {
    fn default() -> Self {
        Self::all()
    }
}

/// One slice of the global log, for sharing work between workers.
///
/// A stream always falls into the same partition (a stable FNV-1a hash of its id, identical
/// in every backend and process), so each worker sees each of its streams in order.
///
/// ```
/// use lexigram::store::Partition;
/// let p = Partition::new(1, 4)?;
/// let owner = Partition::of("order-17", 4);
/// assert!(owner < 4);
/// assert_eq!(p.contains("order-17"), owner == 1);
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    index: u32,
    total: u32,
}

impl Partition {
    /// Partition `index` of `total` (0-based). Fails unless `index < total`.
    pub fn new(index: u32, total: u32) -> Result<Self> {
        if total == 0 || index >= total {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "partition {index} of {total} does not exist: the index must be below the total, which must be at least 1"
                ),
            });
        }
        Ok(Self { index, total })
    }

    /// This partition's 0-based index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions there are.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Whether a stream falls into this partition.
    pub fn contains(&self, stream: &str) -> bool {
        stream_hash(stream) % self.total == self.index
    }

    /// The partition a stream falls into, out of `total`.
    pub fn of(stream: &str, total: u32) -> u32 {
        stream_hash(stream) % total.max(1)
    }
}

/// The stable 32-bit FNV-1a hash of a stream id. Backends store it so partitioned reads can
/// filter without rehashing.
pub fn stream_hash(stream: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    stream.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// What a store knows about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream.
    pub stream_id: StreamId,
    /// Its version: the version of the last event ever appended (purging does not lower it).
    pub version: u64,
    /// How many events it holds now.
    pub event_count: u64,
    /// The global position of its first stored event.
    pub first_position: Option<u64>,
    /// The global position of its last stored event.
    pub last_position: Option<u64>,
    /// When its first event was appended.
    pub created_at: DateTime<Utc>,
    /// When its last event was appended.
    pub updated_at: DateTime<Utc>,
}

impl StreamInfo {
    /// Builds the info; for backends.
    pub fn new(
        stream_id: StreamId,
        version: u64,
        event_count: u64,
        first_position: Option<u64>,
        last_position: Option<u64>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            stream_id,
            version,
            event_count,
            first_position,
            last_position,
            created_at,
            updated_at,
        }
    }
}

/// The append-only event log. See the [module docs](self) for the contract.
///
/// Object safe: the container holds stores as `Arc<dyn EventStore>`.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// The backend's name (`memory`, `sqlite`, `postgres`, ...), for errors and health.
    fn backend(&self) -> &'static str;

    /// Appends events to a stream, atomically, if the stream is at the `expected` version.
    async fn append(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult>;

    /// Reads a stream's events in version order, within `range`.
    async fn read(&self, stream: &str, range: VersionRange) -> Result<Vec<EventEnvelope>>;

    /// Calls `visit` with each event [`read`](EventStore::read) would return, in order,
    /// stopping at the first error. Backends override it to skip building a `Vec` (the
    /// repository loads aggregates through it).
    async fn visit(
        &self,
        stream: &str,
        range: VersionRange,
        visit: &mut (dyn for<'e> FnMut(&'e EventEnvelope) -> Result<()> + Send),
    ) -> Result<()> {
        for envelope in self.read(stream, range).await? {
            visit(&envelope)?;
        }
        Ok(())
    }

    /// The stream's version; 0 when it does not exist.
    async fn version(&self, stream: &str) -> Result<u64>;

    /// Whether the stream exists (has had events appended and was not deleted).
    async fn exists(&self, stream: &str) -> Result<bool> {
        Ok(self.version(stream).await? > 0)
    }

    /// What the store knows about a stream, or `None` if it does not exist.
    async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>>;

    /// Stream ids in ascending order, starting after `after`, at most `limit` of them.
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<StreamId>>;

    /// How many events are stored, in one stream or in all.
    async fn count(&self, stream: Option<&str>) -> Result<u64>;

    /// Up to `limit` events with a global position greater than `after`, in global order,
    /// optionally restricted to one partition.
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        partition: Option<Partition>,
    ) -> Result<Vec<EventEnvelope>>;

    /// Up to `limit` events of one type with a global position greater than `after`, in
    /// global order.
    async fn read_by_type(
        &self,
        event_type: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>>;

    /// Events of one type in global order, skipping the first `offset`, at most `limit`.
    async fn find_by_type(
        &self,
        event_type: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<EventEnvelope>>;

    /// The highest global position ever written (0 for an empty store).
    async fn last_position(&self) -> Result<u64>;

    /// Up to `limit` events after `after` that pass `filter`, in global order, and how far
    /// the read proved the log ([`Page::scanned_to`]), so a reader of rare events moves its
    /// checkpoint over the others.
    ///
    /// `limit` 0 gives an empty page with `scanned_to == after`. The built-in backends push
    /// the filter into their query and read the page and the high water together (under
    /// the memory store's lock; in one SQL statement, which on PostgreSQL keeps the settled
    /// watermark of [`read_all`](EventStore::read_all)): a page that is not full proves the
    /// log up to that high water, a full page up to its last event. Events are upcast as
    /// `read_all` upcasts them; the filter applies to the stored type.
    ///
    /// The default reads `limit` events with [`read_all`](EventStore::read_all) and filters
    /// them here; `scanned_to` is then the last position read (or `after`).
    async fn read_page(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Page> {
        if limit == 0 {
            return Ok(Page::new(Vec::new(), after));
        }
        let partition = match filter.partition_set() {
            Some(set) if set.members().len() == 1 => {
                Partition::new(set.members()[0], set.total()).ok()
            }
            _ => None,
        };
        let read = self.read_all(after, limit, partition).await?;
        let scanned_to = read.last().map_or(after, |e| e.global_position.max(after));
        let events = read.into_iter().filter(|e| filter.matches(e)).collect();
        Ok(Page::new(events, scanned_to))
    }

    /// Wakes live readers when events were appended: at once for appends through this store
    /// (and its clones), and from other processes where the backend can tell. The default
    /// never fires; readers then poll.
    ///
    /// PostgreSQL hears other processes through `LISTEN` on `PostgresEventStore::channel`
    /// (when their stores send notifications, the default), a SQLite file by checking
    /// `PRAGMA data_version` every `SqliteConfig::change_poll_interval`; either way one
    /// background task per store, on a connection of its own, started by the first call
    /// made inside a tokio runtime and stopped when the store is closed or dropped. Called
    /// outside a runtime, the signal hears this process only (a later call inside one
    /// starts the task). After [`close`](EventStore::close) the signal ends: `changed`
    /// returns `None`.
    fn append_signal(&self) -> AppendSignal {
        AppendSignal::never()
    }

    /// Deletes a stream and all its events. Returns whether it existed. Its id may be reused.
    async fn delete_stream(&self, stream: &str) -> Result<bool>;

    /// Removes a stream's events up to `up_to_version` (inclusive). The remaining events keep
    /// their versions and the next append continues after the stream's version. Returns how
    /// many events were removed.
    async fn purge(&self, stream: &str, up_to_version: u64) -> Result<u64>;

    /// Releases the store's resources; later calls fail with `StoreConnection`.
    async fn close(&self) -> Result<()>;

    /// What holds readers of the log back now, if anything: on PostgreSQL, committed events
    /// that readers cannot see yet because an older transaction is still open, and that
    /// transaction's server process. `None` when every committed event is readable (always
    /// on the memory and SQLite stores, whose writers take turns).
    async fn held_back(&self) -> Result<Option<HeldBack>> {
        Ok(None)
    }

    /// Checks that the store answers (for health checks).
    async fn ping(&self) -> Result<()> {
        self.last_position().await.map(drop)
    }

    /// Every event after `after` in global order, fetched in batches of `batch`.
    ///
    /// The stream ends at the head of the log as it is when each batch is read; follow the
    /// last position seen to continue later.
    fn stream_all(
        &self,
        after: u64,
        batch: usize,
        partition: Option<Partition>,
    ) -> BoxStream<'_, Result<EventEnvelope>> {
        paged(after, batch, move |after, limit| {
            self.read_all(after, limit, partition)
        })
    }

    /// Every event of one type after `after` in global order, fetched in batches of `batch`.
    fn stream_by_type<'a>(
        &'a self,
        event_type: &'a str,
        after: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<EventEnvelope>> {
        paged(after, batch, move |after, limit| {
            self.read_by_type(event_type, after, limit)
        })
    }
}

/// Turns a paged reader into a stream that follows global positions.
fn paged<'a, F>(after: u64, batch: usize, mut fetch: F) -> BoxStream<'a, Result<EventEnvelope>>
where
    F: FnMut(u64, usize) -> futures_util::future::BoxFuture<'a, Result<Vec<EventEnvelope>>>
        + Send
        + 'a,
{
    let batch = batch.max(1);
    stream::unfold(Some(after), move |state| {
        let next = state.map(|after| fetch(after, batch));
        async move {
            let page = match next?.await {
                Ok(page) => page,
                Err(err) => return Some((stream::iter(vec![Err(err)]), None)),
            };
            let done = page.len() < batch;
            let last = page.last().map(|e| e.global_position);
            let resume = match (done, last) {
                (false, Some(last)) => Some(last),
                _ => None,
            };
            Some((
                stream::iter(page.into_iter().map(Ok).collect::<Vec<_>>()),
                resume,
            ))
        }
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_hash_is_stable() {
        // FNV-1a reference values; changing them would move streams between partitions.
        assert_eq!(stream_hash(""), 0x811c_9dc5);
        assert_eq!(stream_hash("a"), 0xe40c_292c);
        assert_eq!(stream_hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partition_rejects_out_of_range_indices() {
        assert!(Partition::new(0, 0).is_err());
        assert!(Partition::new(3, 3).is_err());
        assert!(Partition::new(2, 3).is_ok());
    }

    #[test]
    fn stream_ids_with_nul_or_too_long_are_refused_with_a_short_preview() {
        assert!(check_stream_id("order-1").is_ok());
        assert!(check_stream_id(&"a".repeat(MAX_STREAM_ID_BYTES)).is_ok());
        let err = check_stream_id("a\0b").map(|()| String::new());
        assert!(
            matches!(&err, Err(Error::InvalidStreamId { preview, .. }) if preview == "a\\0b"),
            "{err:?}"
        );
        let long = "x".repeat(1 << 20);
        let message = check_stream_id(&long).map_or_else(|e| e.to_string(), |()| String::new());
        assert!(message.contains("1048576 bytes"), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn retry_span_follows_the_expectation_and_never_overflows() {
        assert_eq!(retry_span(ExpectedVersion::Any, 5, 2), Some((4, 6)));
        assert_eq!(retry_span(ExpectedVersion::NoStream, 5, 2), Some((0, 2)));
        assert_eq!(retry_span(ExpectedVersion::Exact(3), 5, 2), Some((3, 5)));
        assert_eq!(retry_span(ExpectedVersion::Exact(u64::MAX), 1, 1), None);
        assert_eq!(
            retry_span(ExpectedVersion::Exact(u64::MAX), 1, 0),
            Some((u64::MAX, u64::MAX))
        );
    }

    #[test]
    fn expected_version_exact_zero_is_no_stream() {
        assert!(ExpectedVersion::Exact(0).matches(0));
        assert!(ExpectedVersion::NoStream.matches(0));
        assert!(!ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::Any.matches(7));
    }
}
