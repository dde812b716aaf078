//! The repository: loads aggregates from snapshots and events, saves what they recorded.
//!
//! [`Repository<A>`] is the seed's `EventSourcingRepository`. [`load`](Repository::load)
//! restores the latest snapshot (if a snapshot store is configured) and replays only the
//! events after it, which gives exactly the state a full replay gives.
//! [`save`](Repository::save) appends the pending events with the loaded version as expected
//! version, so a concurrent writer makes it fail with a
//! [`ConcurrencyError`](crate::error::ConcurrencyError) and leaves the pending events in place;
//! it then takes a snapshot if the policy says so and hands the stored envelopes to the
//! [`EventPublisher`] (the event bus), if any.
//!
//! # A committed save never fails
//!
//! Once the append has committed, `save` returns `Ok` with the stored envelopes, whatever
//! happens after: a snapshot that cannot be stored only means a longer replay, and a publisher
//! that refuses the events (a bus that is shut down, or that has no handler and
//! `allow_no_handlers` off) is **best effort**. The refusal is logged at `error` level (target
//! `lexigram::repository`, with the stream, the versions and the error) and handed to every
//! hook added with [`on_publish_failure`](Repository::on_publish_failure). It is never returned,
//! because a caller that saw `Err` would retry the command and store the fact twice. Reactions
//! that must not miss an event read the store's global log instead of the in-process bus.
//!
//! # Examples
//!
//! ```
//! use lexigram::prelude::*;
//! use lexigram::snapshot::{InMemorySnapshotStore, SnapshotPolicy};
//! use lexigram::{InMemoryEventStore, Repository};
//! # use lexigram::aggregate::Route;
//! # use lexigram::error::EventLoadError;
//! # use lexigram::EventEnvelope;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Serialize, Deserialize)]
//! # struct Ticked;
//! # impl Event for Ticked { const NAME: &'static str = "Ticked"; const VERSION: u32 = 1; }
//! # #[derive(Debug, Default, Serialize, Deserialize)]
//! # struct Counter { n: u64 }
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "Counter";
//! #     fn apply_stored(&mut self, e: &EventEnvelope) -> Result<(), EventLoadError> { Route::new(self, e).on::<Ticked>().finish() }
//! # }
//! # impl Apply<Ticked> for Counter { fn apply(&mut self, _: &Ticked) { self.n += 1; } }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let snapshots = InMemorySnapshotStore::new();
//! let counters = Repository::<Counter>::new(InMemoryEventStore::new())
//!     .with_snapshots(snapshots.clone(), SnapshotPolicy::EveryEvents(10));
//!
//! let mut counter = counters.load("c-1").await?;
//! for _ in 0..25 {
//!     counter.record(Ticked)?;
//! }
//! counters.save(&mut counter).await?;
//! assert_eq!(snapshots.latest("c-1").await?.map(|s| s.version), Some(25));
//! assert_eq!(counters.load("c-1").await?.state().n, 25);
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::aggregate::{Aggregate, AggregateRoot};
use crate::error::{Error, Result};
use crate::message::{AggregateId, EventEnvelope};
use crate::schema::SchemaRegistry;
use crate::snapshot::{SnapshotManager, SnapshotPolicy, SnapshotStore};
use crate::store::{EventStore, ExpectedVersion, VersionRange};

/// Receives the envelopes a [`Repository`] stored, in order. The event bus implements it.
#[async_trait]
pub trait EventPublisher: Send + Sync + fmt::Debug + 'static {
    /// Publishes envelopes that are already stored.
    async fn publish(&self, envelopes: &[EventEnvelope]) -> Result<()>;
}

/// The metadata key under which the repository stamps the aggregate type on saved events.
pub const AGGREGATE_TYPE_KEY: &str = "aggregate_type";

/// A hook told of envelopes that were stored but that the publisher refused.
type PublishFailureHook = Arc<dyn Fn(&[EventEnvelope], &Error) + Send + Sync>;

/// Loads and saves aggregates of type `A`. Cheap to clone.
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    snapshots: Option<SnapshotManager>,
    publisher: Option<Arc<dyn EventPublisher>>,
    schema: Option<Arc<SchemaRegistry>>,
    publish_failure_hooks: Vec<PublishFailureHook>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            snapshots: self.snapshots.clone(),
            publisher: self.publisher.clone(),
            schema: self.schema.clone(),
            publish_failure_hooks: self.publish_failure_hooks.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("store", &self.store.backend())
            .field("snapshots", &self.snapshots)
            .field("publisher", &self.publisher.is_some())
            .finish()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, without snapshots or publisher.
    pub fn new(store: impl EventStore) -> Self {
        Self::from_store(Arc::new(store))
    }

    /// A repository over a shared store.
    pub fn from_store(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            snapshots: None,
            publisher: None,
            schema: None,
            publish_failure_hooks: Vec::new(),
            _aggregate: PhantomData,
        }
    }

    /// Loads from and saves snapshots to `store`, taking one when `policy` fires.
    #[must_use]
    pub fn with_snapshots(self, store: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        self.with_snapshot_manager(SnapshotManager::new(store, policy))
    }

    /// Uses `manager` for snapshots (its store, policy and schema).
    #[must_use]
    pub fn with_snapshot_manager(mut self, manager: SnapshotManager) -> Self {
        self.snapshots = Some(match &self.schema {
            Some(schema) => manager.with_schema(Arc::clone(schema)),
            None => manager,
        });
        self
    }

    /// Hands every saved batch of envelopes to `publisher`.
    #[must_use]
    pub fn with_publisher(mut self, publisher: Arc<dyn EventPublisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Calls `hook` with the envelopes and the error whenever the publisher refuses events
    /// that are already stored. [`save`](Self::save) still returns `Ok` then (see the
    /// [module docs](self)); use the hook to count or alert. A panicking hook is logged and
    /// ignored.
    #[must_use]
    pub fn on_publish_failure(
        mut self,
        hook: impl Fn(&[EventEnvelope], &Error) + Send + Sync + 'static,
    ) -> Self {
        self.publish_failure_hooks.push(Arc::new(hook));
        self
    }

    /// Upcasts old snapshot state with `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: Arc<SchemaRegistry>) -> Self {
        self.snapshots = self.snapshots.map(|m| m.with_schema(Arc::clone(&schema)));
        self.schema = Some(schema);
        self
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads an aggregate: the latest snapshot, then the events after it. An aggregate with no
    /// events comes back new, at version 0.
    ///
    /// A snapshot is trusted only as far as the stream goes: when no event follows it, the
    /// stream's version is checked (one more read), and a snapshot claiming a version the
    /// stream never reached (left behind by a store that was edited by hand, or restored from
    /// another backup) is ignored with a warning and the stream replayed from its start.
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate = A::TYPE, id = %id.as_ref()))]
    pub async fn load(&self, id: impl Into<AggregateId> + AsRef<str>) -> Result<AggregateRoot<A>> {
        let id = id.into();
        if let Some(manager) = &self.snapshots
            && let Some(mut root) = manager.restore::<A>(&id).await
        {
            let snapshot_version = root.version();
            let mut tail = 0_u64;
            self.store
                .visit(
                    id.as_str(),
                    VersionRange::from(snapshot_version + 1),
                    &mut |envelope| {
                        tail += 1;
                        root.replay_one(envelope)
                    },
                )
                .await?;
            if tail > 0 {
                return Ok(root);
            }
            let stream_version = self.store.version(id.as_str()).await?;
            if stream_version >= snapshot_version {
                return Ok(root);
            }
            tracing::warn!(
                aggregate = A::TYPE,
                %id,
                snapshot_version,
                stream_version,
                "the latest snapshot claims a version the stream never reached; ignoring it and replaying the stream"
            );
        }
        let mut root = AggregateRoot::new(id.clone());
        self.store
            .visit(id.as_str(), VersionRange::from(1), &mut |envelope| {
                root.replay_one(envelope)
            })
            .await?;
        Ok(root)
    }

    /// Loads an aggregate that must exist, or fails with [`Error::AggregateNotFound`].
    pub async fn load_or_error(
        &self,
        id: impl Into<AggregateId> + AsRef<str>,
    ) -> Result<AggregateRoot<A>> {
        let root = self.load(id).await?;
        if root.is_new() {
            return Err(Error::AggregateNotFound {
                aggregate_type: A::TYPE,
                id: root.id().to_string(),
            });
        }
        Ok(root)
    }

    /// Whether the aggregate has any stored event.
    pub async fn exists(&self, id: impl AsRef<str>) -> Result<bool> {
        self.store.exists(id.as_ref()).await
    }

    /// Saves the pending events of `root` and returns them as stored.
    ///
    /// With nothing pending this does nothing (no append, no publish). On a concurrency
    /// conflict nothing is written and `root` keeps its pending events. A snapshot due by the
    /// policy is serialized *before* the append, so a state that cannot be serialized fails
    /// the save without writing anything.
    ///
    /// `Err` always means nothing was written. Once the append committed, `save` returns `Ok`:
    /// a snapshot or publish failure after it is logged (and publish failures go to the
    /// [`on_publish_failure`](Self::on_publish_failure) hooks), never returned.
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate = A::TYPE, id = %root.id(), pending = root.pending().len()))]
    pub async fn save(&self, root: &mut AggregateRoot<A>) -> Result<Vec<EventEnvelope>> {
        if root.pending().is_empty() {
            return Ok(Vec::new());
        }
        let snapshot = match &self.snapshots {
            Some(manager) => manager.due(root)?,
            None => None,
        };
        let expected = match root.persisted_version() {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        let stream = root.id().stream_id();
        let mut events = root.pending().to_vec();
        for event in &mut events {
            event.metadata =
                std::mem::take(&mut event.metadata).with_custom(AGGREGATE_TYPE_KEY, A::TYPE);
        }
        let written = self
            .store
            .append(stream.as_str(), events.clone(), expected)
            .await?;
        root.pending_mut().clear();
        let envelopes: Vec<EventEnvelope> = events
            .into_iter()
            .zip(&written.positions)
            .zip(
                written
                    .version
                    .saturating_sub(written.positions.len() as u64)
                    + 1..,
            )
            .map(|((event, position), version)| {
                EventEnvelope::new(
                    event,
                    stream.clone(),
                    version,
                    *position,
                    written.recorded_at,
                )
            })
            .collect();

        if let (Some(manager), Some(snapshot)) = (&self.snapshots, snapshot) {
            let version = snapshot.version;
            // The events are durable already: a failed snapshot only means a longer replay.
            if let Err(err) = manager.save(root, snapshot).await {
                tracing::warn!(
                    aggregate = A::TYPE, id = %root.id(), version, error = %err,
                    "snapshot not stored; the aggregate will load from an older snapshot or its events"
                );
            }
        }
        if let Some(publisher) = &self.publisher
            && let Err(err) = publisher.publish(&envelopes).await
        {
            self.publish_failed(&envelopes, &err);
        }
        Ok(envelopes)
    }

    /// Logs a refused publish of stored events and tells the hooks.
    fn publish_failed(&self, envelopes: &[EventEnvelope], err: &Error) {
        let (first, last) = (
            envelopes.first().map(|e| e.stream_version),
            envelopes.last().map(|e| e.stream_version),
        );
        tracing::error!(
            target: "lexigram::repository",
            aggregate = A::TYPE,
            stream = %envelopes.first().map_or("", |e| e.stream_id.as_str()),
            first_version = ?first,
            last_version = ?last,
            error = %err,
            "events were stored but the in-process publisher refused them; the save succeeded \
             and in-process handlers will not see these events (durable reactions reading the \
             store will)"
        );
        for hook in &self.publish_failure_hooks {
            let call = std::panic::AssertUnwindSafe(|| hook(envelopes, err));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(
                    target: "lexigram::repository",
                    aggregate = A::TYPE,
                    "an on_publish_failure hook panicked; ignored"
                );
            }
        }
    }

    /// Takes and stores a snapshot of `root` now, whatever the policy. Fails if no snapshot
    /// store is configured.
    pub async fn force_snapshot(&self, root: &mut AggregateRoot<A>) -> Result<()> {
        let Some(manager) = &self.snapshots else {
            return Err(Error::SnapshotsDisabled {
                aggregate_type: A::TYPE,
            });
        };
        let snapshot = root.create_snapshot()?;
        manager.save(root, snapshot).await
    }
}
