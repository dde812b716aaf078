//! The snapshot manager: when to take a snapshot, and how to restore one safely.

use std::fmt;
use std::sync::Arc;

use super::{Snapshot, SnapshotContext, SnapshotPolicy, SnapshotStore};
use crate::aggregate::{Aggregate, AggregateRoot};
use crate::error::Result;
use crate::message::AggregateId;
use crate::schema::SchemaRegistry;

/// Ties a [`SnapshotStore`] to a [`SnapshotPolicy`] and the schema that upcasts old state.
///
/// The [`Repository`](crate::Repository) uses it: [`due`](Self::due) serializes the snapshot
/// the policy asks for *before* events are appended; [`restore`](Self::restore) returns the
/// latest usable snapshot, skipping (with a warning) one that cannot be read, since a snapshot
/// is only a cache of what the events say.
///
/// ```
/// use lexigram::snapshot::{InMemorySnapshotStore, SnapshotManager, SnapshotPolicy};
/// let manager = SnapshotManager::new(InMemorySnapshotStore::new(), SnapshotPolicy::EveryEvents(50));
/// assert_eq!(manager.store().backend(), "memory");
/// ```
#[derive(Clone)]
pub struct SnapshotManager {
    store: Arc<dyn SnapshotStore>,
    policy: SnapshotPolicy,
    schema: Option<Arc<SchemaRegistry>>,
}

impl fmt::Debug for SnapshotManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotManager")
            .field("store", &self.store.backend())
            .field("policy", &self.policy)
            .field("schema", &self.schema.is_some())
            .finish()
    }
}

impl SnapshotManager {
    /// Snapshots into `store` when `policy` fires.
    pub fn new(store: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        Self::shared(Arc::new(store), policy)
    }

    /// Like [`new`](Self::new), with a shared store.
    pub fn shared(store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self {
        Self {
            store,
            policy,
            schema: None,
        }
    }

    /// Upcasts old snapshot state with `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: Arc<SchemaRegistry>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &SnapshotPolicy {
        &self.policy
    }

    /// The snapshot the policy asks for now, already serialized, or `None`.
    pub fn due<A: Aggregate>(&self, root: &AggregateRoot<A>) -> Result<Option<Snapshot>> {
        let ctx = SnapshotContext {
            version: root.version(),
            events_since_snapshot: root.events_since_snapshot(),
            since_last_snapshot: root.since_last_snapshot(),
        };
        if !self.policy.should_snapshot(&ctx) {
            return Ok(None);
        }
        root.create_snapshot().map(Some)
    }

    /// Stores `snapshot` and marks `root` as snapshotted.
    pub async fn save<A: Aggregate>(
        &self,
        root: &mut AggregateRoot<A>,
        snapshot: Snapshot,
    ) -> Result<()> {
        let at = snapshot.created_at;
        self.store.save(snapshot).await?;
        root.mark_snapshot(at);
        Ok(())
    }

    /// The aggregate restored from its latest usable snapshot, if any. A store failure or an
    /// unreadable snapshot is logged and treated as "no snapshot".
    pub async fn restore<A: Aggregate>(&self, id: &AggregateId) -> Option<AggregateRoot<A>> {
        let snapshot = match self.store.latest(id.as_str()).await {
            Ok(found) => found?,
            Err(err) => {
                tracing::warn!(aggregate = A::TYPE, %id, error = %err, "snapshot store failed; replaying all events");
                return None;
            }
        };
        let restored = self
            .upcast::<A>(snapshot)
            .and_then(|s| AggregateRoot::load_from_snapshot(&s));
        match restored {
            Ok(root) => Some(root),
            Err(err) => {
                tracing::warn!(aggregate = A::TYPE, %id, error = %err, "snapshot unusable; replaying all events");
                None
            }
        }
    }

    fn upcast<A: Aggregate>(&self, mut snapshot: Snapshot) -> Result<Snapshot> {
        if snapshot.schema_version == A::SNAPSHOT_VERSION {
            return Ok(snapshot);
        }
        let schema = self.schema.clone().unwrap_or_default();
        snapshot.state = schema.upcast_snapshot(
            A::TYPE,
            snapshot.schema_version,
            A::SNAPSHOT_VERSION,
            snapshot.state,
        )?;
        snapshot.schema_version = A::SNAPSHOT_VERSION;
        Ok(snapshot)
    }
}
