//! The in-memory event store: for tests, examples and single-process prototypes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use super::{
    AppendNotifier, AppendResult, AppendSignal, EventStore, ExpectedVersion, Page, Partition,
    ReadFilter, StreamInfo, VersionRange, stream_hash,
};
use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{EventEnvelope, EventId, NewEvent, StreamId};
use crate::schema::SchemaRegistry;
use crate::snapshot::InMemorySnapshotStore;

/// An [`EventStore`] that keeps everything in memory.
///
/// Appending is O(events appended); reading `k` events of a stream from any version is O(k)
/// (each stream indexes its events' positions); reads by type use a type index. An optional
/// per-stream retention keeps only the newest events of each stream without ever changing
/// versions. Clones share the same data.
///
/// [`snapshot_store`](Self::snapshot_store) gives the snapshot store that belongs to it:
/// [`delete_stream`](EventStore::delete_stream) removes a stream's snapshots with its events.
///
/// ```
/// use lexigram::store::InMemoryEventStore;
/// let store = InMemoryEventStore::new().with_retention(1_000);
/// # let _ = store;
/// ```
#[derive(Clone, Default)]
pub struct InMemoryEventStore {
    inner: Arc<RwLock<Inner>>,
    /// The snapshots of this store's aggregates, dropped with their streams.
    snapshots: InMemorySnapshotStore,
    schema: Option<Arc<SchemaRegistry>>,
    retention: Option<usize>,
    /// Wakes this store's [`append_signal`](EventStore::append_signal)s after each append.
    appended: AppendNotifier,
}

#[derive(Default)]
struct Inner {
    closed: bool,
    /// The global log; index `p - 1` holds position `p`. Purged or deleted events leave `None`.
    log: Vec<Option<Slot>>,
    streams: HashMap<StreamId, StreamState>,
    /// Where each stored event id lives: its stream and version.
    ids: HashMap<EventId, (StreamId, u64), BuildHasherDefault<IdHasher>>,
    /// Global positions of each event type, ascending (may point at removed events).
    by_type: HashMap<Arc<str>, Vec<u64>>,
    stored: u64,
}

/// A fast hasher for event ids (UUIDs, mostly random bits): the multiply-rotate mix of
/// rustc's FxHasher. Not DoS-resistant, which an in-process development store does not need.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

struct Slot {
    hash: u32,
    /// Shared with the pages that [`read_page`](EventStore::read_page) hands out.
    envelope: Arc<EventEnvelope>,
}

struct StreamState {
    id: StreamId,
    version: u64,
    /// The version of `positions[0]`.
    first_version: u64,
    /// Global positions of the stream's stored events, by version.
    positions: VecDeque<u64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("InMemoryEventStore")
            .field("streams", &inner.streams.len())
            .field("events", &inner.stored)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upcasts old events with `schema` on every read.
    #[must_use]
    pub fn with_schema(mut self, schema: Arc<SchemaRegistry>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Keeps at most `max_events` of each stream, dropping the oldest (their versions are
    /// never reused).
    #[must_use]
    pub fn with_retention(mut self, max_events: usize) -> Self {
        self.retention = Some(max_events.max(1));
        self
    }

    /// The snapshot store of this event store's aggregates (sharing its data with every other
    /// handle from this store): deleting a stream deletes its snapshots at the same time.
    pub fn snapshot_store(&self) -> InMemorySnapshotStore {
        self.snapshots.clone()
    }

    fn upcast(&self, envelopes: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
        match &self.schema {
            Some(schema) => schema.upcast_read(envelopes),
            None => envelopes,
        }
    }
}

fn closed() -> Error {
    Error::StoreClosed { backend: "memory" }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed { Err(closed()) } else { Ok(()) }
    }

    fn envelope(&self, position: u64) -> Option<&EventEnvelope> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.log.get(index)?.as_ref().map(|slot| &*slot.envelope)
    }

    /// If `events` are already stored, in order, where this append would put them, the
    /// original result of that append.
    fn previous_append(
        &self,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
    ) -> Result<Option<AppendResult>> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let Some((first_stream, first_version)) = self.ids.get(&first.event_id) else {
            return Ok(None);
        };
        let not_a_retry = || {
            super::not_a_retry(
                stream,
                first.event_id,
                first_stream.as_str(),
                *first_version,
            )
        };
        let Some((start, version)) = super::retry_span(expected, *first_version, events.len())
        else {
            return Err(not_a_retry());
        };
        let mut positions = Vec::with_capacity(events.len());
        let state = self.streams.get(stream);
        for (version, event) in (start + 1..=version).zip(events) {
            let stored = state.and_then(|s| {
                let index = usize::try_from(version.checked_sub(s.first_version)?).ok()?;
                s.positions.get(index).copied()
            });
            match stored.and_then(|p| self.envelope(p)) {
                Some(env) if env.event_id == event.event_id => positions.push(env.global_position),
                _ => return Err(not_a_retry()),
            }
        }
        let recorded_at = positions
            .first()
            .and_then(|p| self.envelope(*p))
            .map_or_else(Utc::now, |e| e.recorded_at);
        Ok(Some(AppendResult::new(version, positions, recorded_at)))
    }

    /// The stream and which of its stored events `range` selects: how many to skip, then how
    /// many to take.
    fn window(&self, stream: &str, range: VersionRange) -> Option<(&StreamState, usize, usize)> {
        let state = self.streams.get(stream)?;
        if range.is_empty() {
            return None;
        }
        let start = range.start().max(state.first_version);
        let end = range.to.unwrap_or(u64::MAX).min(state.version);
        if start > end {
            return None;
        }
        let skip = usize::try_from(start - state.first_version).unwrap_or(usize::MAX);
        let len = usize::try_from(end - start + 1).unwrap_or(usize::MAX);
        Some((state, skip, range.limit.map_or(len, |l| l.min(len))))
    }

    fn remove_front(&mut self, stream: &str, up_to_version: u64) -> u64 {
        let Some(state) = self.streams.get_mut(stream) else {
            return 0;
        };
        let mut removed = Vec::new();
        while state.first_version <= up_to_version {
            let Some(position) = state.positions.pop_front() else {
                break;
            };
            state.first_version += 1;
            removed.push(position);
        }
        let count = removed.len() as u64;
        for position in removed {
            self.take(position);
        }
        count
    }

    fn take(&mut self, position: u64) {
        let Some(index) = usize::try_from(position.saturating_sub(1)).ok() else {
            return;
        };
        if let Some(slot) = self.log.get_mut(index).and_then(Option::take) {
            self.ids.remove(&slot.envelope.event_id);
            self.stored -= 1;
        }
    }

    fn collect_positions<'a>(
        &'a self,
        positions: impl Iterator<Item = &'a u64>,
        limit: usize,
    ) -> Vec<EventEnvelope> {
        positions
            .filter_map(|p| self.envelope(*p))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    #[tracing::instrument(
        name = "lexigram.append",
        level = "debug",
        skip_all,
        fields(backend = "memory", stream = stream, events = events.len(), expected = %expected)
    )]
    async fn append(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        super::check_stream_id(stream)?;
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        inner.check_open()?;
        if let Some(previous) = inner.previous_append(stream, &events, expected)? {
            return Ok(previous);
        }
        let actual = inner.streams.get(stream).map_or(0, |s| s.version);
        if !expected.matches(actual) {
            return Err(ConcurrencyError {
                stream: StreamId::from(stream),
                expected,
                actual,
            }
            .into());
        }
        let now = Utc::now();
        if events.is_empty() {
            return Ok(AppendResult::new(actual, Vec::new(), now));
        }
        super::check_batch(stream, &events)?;
        if let Some(stored) = events.iter().find(|e| inner.ids.contains_key(&e.event_id)) {
            return Err(super::duplicate_id(stream, stored.event_id, None));
        }

        let hash = stream_hash(stream);
        let state = inner
            .streams
            .entry(StreamId::from(stream))
            .or_insert_with_key(|id| StreamState {
                id: id.clone(),
                version: 0,
                first_version: 1,
                positions: VecDeque::new(),
                created_at: now,
                updated_at: now,
            });
        let stream_id = state.id.clone();
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            let position = inner.log.len() as u64 + 1;
            state.version += 1;
            if state.positions.is_empty() {
                state.first_version = state.version;
            }
            state.positions.push_back(position);
            inner
                .ids
                .insert(event.event_id, (stream_id.clone(), state.version));
            inner
                .by_type
                .entry(Arc::clone(&event.event_type))
                .or_default()
                .push(position);
            let envelope =
                EventEnvelope::new(event, stream_id.clone(), state.version, position, now);
            inner.log.push(Some(Slot {
                hash,
                envelope: Arc::new(envelope),
            }));
            positions.push(position);
        }
        state.updated_at = now;
        let version = state.version;
        inner.stored += positions.len() as u64;
        if let Some(max) = self.retention {
            let excess = state.positions.len().saturating_sub(max) as u64;
            if excess > 0 {
                let up_to = state.first_version + excess - 1;
                inner.remove_front(stream, up_to);
            }
        }
        // Announced once the lock is released, so a woken reader does not wait for it.
        drop(guard);
        if let Some(last) = positions.last() {
            self.appended.announce(*last);
        }
        Ok(AppendResult::new(version, positions, now))
    }

    #[tracing::instrument(name = "lexigram.read", level = "debug", skip_all, fields(backend = "memory", stream = stream, from = range.from))]
    async fn read(&self, stream: &str, range: VersionRange) -> Result<Vec<EventEnvelope>> {
        super::check_stream_id(stream)?;
        let envelopes = {
            let inner = self.inner.read();
            inner.check_open()?;
            let Some((state, skip, take)) = inner.window(stream, range) else {
                return Ok(Vec::new());
            };
            inner.collect_positions(state.positions.iter().skip(skip), take)
        };
        Ok(self.upcast(envelopes))
    }

    async fn visit(
        &self,
        stream: &str,
        range: VersionRange,
        visit: &mut (dyn for<'e> FnMut(&'e EventEnvelope) -> Result<()> + Send),
    ) -> Result<()> {
        super::check_stream_id(stream)?;
        let inner = self.inner.read();
        inner.check_open()?;
        let Some((state, skip, take)) = inner.window(stream, range) else {
            return Ok(());
        };
        let envelopes = state
            .positions
            .iter()
            .skip(skip)
            .filter_map(|p| inner.envelope(*p));
        for envelope in envelopes.take(take) {
            match &self.schema {
                Some(schema) if schema.has_upcasters(&envelope.event_type) => {
                    schema
                        .upcast_read(vec![envelope.clone()])
                        .iter()
                        .try_for_each(&mut *visit)?;
                }
                _ => visit(envelope)?,
            }
        }
        Ok(())
    }

    async fn version(&self, stream: &str) -> Result<u64> {
        super::check_stream_id(stream)?;
        let inner = self.inner.read();
        inner.check_open()?;
        Ok(inner.streams.get(stream).map_or(0, |s| s.version))
    }

    async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>> {
        super::check_stream_id(stream)?;
        let inner = self.inner.read();
        inner.check_open()?;
        Ok(inner.streams.get(stream).map(|s| {
            StreamInfo::new(
                s.id.clone(),
                s.version,
                s.positions.len() as u64,
                s.positions.front().copied(),
                s.positions.back().copied(),
                s.created_at,
                s.updated_at,
            )
        }))
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<StreamId>> {
        let inner = self.inner.read();
        inner.check_open()?;
        let mut ids: Vec<&StreamId> = inner
            .streams
            .keys()
            .filter(|id| after.is_none_or(|after| id.as_str() > after))
            .collect();
        ids.sort_unstable();
        Ok(ids.into_iter().take(limit).cloned().collect())
    }

    async fn count(&self, stream: Option<&str>) -> Result<u64> {
        let inner = self.inner.read();
        inner.check_open()?;
        Ok(match stream {
            None => inner.stored,
            Some(stream) => inner
                .streams
                .get(stream)
                .map_or(0, |s| s.positions.len() as u64),
        })
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        partition: Option<Partition>,
    ) -> Result<Vec<EventEnvelope>> {
        let envelopes = {
            let inner = self.inner.read();
            inner.check_open()?;
            let start = usize::try_from(after).unwrap_or(usize::MAX);
            inner
                .log
                .get(start..)
                .unwrap_or_default()
                .iter()
                .flatten()
                .filter(|slot| partition.is_none_or(|p| slot.hash % p.total() == p.index()))
                .take(limit)
                .map(|slot| EventEnvelope::clone(&slot.envelope))
                .collect()
        };
        Ok(self.upcast(envelopes))
    }

    async fn read_by_type(
        &self,
        event_type: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let envelopes = {
            let inner = self.inner.read();
            inner.check_open()?;
            let Some(positions) = inner.by_type.get(event_type) else {
                return Ok(Vec::new());
            };
            let start = positions.partition_point(|p| *p <= after);
            inner.collect_positions(positions[start..].iter(), limit)
        };
        Ok(self.upcast(envelopes))
    }

    async fn find_by_type(
        &self,
        event_type: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let envelopes = {
            let inner = self.inner.read();
            inner.check_open()?;
            let Some(positions) = inner.by_type.get(event_type) else {
                return Ok(Vec::new());
            };
            positions
                .iter()
                .filter_map(|p| inner.envelope(*p))
                .skip(offset)
                .take(limit)
                .cloned()
                .collect()
        };
        Ok(self.upcast(envelopes))
    }

    /// Reads under the store's lock: when the page is not full, every event up to the head
    /// was looked at, so `scanned_to` is the head.
    async fn read_page(&self, after: u64, limit: usize, filter: &ReadFilter) -> Result<Page> {
        let (envelopes, scanned_to) = {
            let inner = self.inner.read();
            inner.check_open()?;
            if limit == 0 {
                return Ok(Page::new(Vec::new(), after));
            }
            let head = inner.log.len() as u64;
            let start = usize::try_from(after).unwrap_or(usize::MAX);
            let envelopes: Vec<Arc<EventEnvelope>> = inner
                .log
                .get(start..)
                .unwrap_or_default()
                .iter()
                .flatten()
                .filter(|slot| filter.matches_parts(&slot.envelope.event_type, || slot.hash))
                .take(limit)
                .map(|slot| Arc::clone(&slot.envelope))
                .collect();
            let scanned_to = match envelopes.last() {
                Some(last) if envelopes.len() == limit => last.global_position,
                _ => head,
            };
            (envelopes, scanned_to.max(after))
        };
        let envelopes = match &self.schema {
            Some(schema) => schema.upcast_shared(envelopes),
            None => envelopes,
        };
        Ok(Page::shared(envelopes, scanned_to))
    }

    fn append_signal(&self) -> AppendSignal {
        self.appended.subscribe()
    }

    async fn last_position(&self) -> Result<u64> {
        let inner = self.inner.read();
        inner.check_open()?;
        Ok(inner.log.len() as u64)
    }

    async fn delete_stream(&self, stream: &str) -> Result<bool> {
        super::check_stream_id(stream)?;
        let mut inner = self.inner.write();
        inner.check_open()?;
        // The snapshots go while the events' lock is held, so no reader sees the events gone
        // and the snapshots still there.
        self.snapshots.forget(stream);
        let Some(state) = inner.streams.remove(stream) else {
            return Ok(false);
        };
        for position in state.positions {
            inner.take(position);
        }
        Ok(true)
    }

    async fn purge(&self, stream: &str, up_to_version: u64) -> Result<u64> {
        super::check_stream_id(stream)?;
        let mut inner = self.inner.write();
        inner.check_open()?;
        Ok(inner.remove_front(stream, up_to_version))
    }

    async fn close(&self) -> Result<()> {
        self.inner.write().closed = true;
        self.appended.close();
        Ok(())
    }
}
