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
//! # Examples
//!
//! ```
//! use lexigram::prelude::*;
//! use lexigram::snapshot::{InMemorySnapshotStore, SnapshotPolicy, SnapshotStore};
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

/// Loads and saves aggregates of type `A`. Cheap to clone.
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    snapshots: Option<SnapshotManager>,
    publisher: Option<Arc<dyn EventPublisher>>,
    schema: Option<Arc<SchemaRegistry>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            snapshots: self.snapshots.clone(),
            publisher: self.publisher.clone(),
            schema: self.schema.clone(),
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
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate = A::TYPE, id = %id.as_ref()))]
    pub async fn load(&self, id: impl Into<AggregateId> + AsRef<str>) -> Result<AggregateRoot<A>> {
        let id = id.into();
        let restored = match &self.snapshots {
            Some(manager) => manager.restore(&id).await,
            None => None,
        };
        let mut root = match restored {
            Some(root) => root,
            None => AggregateRoot::new(id.clone()),
        };
        let tail = VersionRange::from(root.version() + 1);
        self.store
            .visit(id.as_str(), tail, &mut |envelope| root.replay_one(envelope))
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
        if let Some(publisher) = &self.publisher {
            publisher.publish(&envelopes).await?;
        }
        Ok(envelopes)
    }

    /// Takes and stores a snapshot of `root` now, whatever the policy. Fails if no snapshot
    /// store is configured.
    pub async fn force_snapshot(&self, root: &mut AggregateRoot<A>) -> Result<()> {
        let Some(manager) = &self.snapshots else {
            return Err(Error::Config {
                problems: vec![format!(
                    "cannot snapshot aggregate `{}`: the repository has no snapshot store; add one with `with_snapshots`",
                    A::TYPE
                )],
            });
        };
        let snapshot = root.create_snapshot()?;
        manager.save(root, snapshot).await
    }
}
