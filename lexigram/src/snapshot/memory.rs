//! The in-memory snapshot store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::message::AggregateId;

/// A [`SnapshotStore`] in memory, keeping at most `max_per_aggregate` snapshots of each
/// aggregate (3 by default; the oldest go first). Clones share the same data.
///
/// ```
/// use lexigram::snapshot::{InMemorySnapshotStore, Snapshot, SnapshotStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let store = InMemorySnapshotStore::new().with_max_per_aggregate(2);
/// for version in [10, 20, 30] {
///     store.save(Snapshot::new("acc-1".into(), "Account", version, serde_json::json!({}), 1)).await?;
/// }
/// assert_eq!(store.latest("acc-1").await?.map(|s| s.version), Some(30));
/// assert!(store.by_version("acc-1", 10).await?.is_none()); // over the cap
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InMemorySnapshotStore {
    inner: Arc<RwLock<Inner>>,
    max_per_aggregate: usize,
}

#[derive(Default)]
struct Inner {
    closed: bool,
    /// Snapshots of each aggregate, ascending by version.
    by_aggregate: HashMap<AggregateId, Vec<Snapshot>>,
}

impl Default for InMemorySnapshotStore {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            max_per_aggregate: 3,
        }
    }
}

impl fmt::Debug for InMemorySnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemorySnapshotStore")
            .field("aggregates", &self.inner.read().by_aggregate.len())
            .field("max_per_aggregate", &self.max_per_aggregate)
            .finish()
    }
}

impl InMemorySnapshotStore {
    /// An empty store keeping 3 snapshots per aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `max` snapshots per aggregate (at least 1).
    #[must_use]
    pub fn with_max_per_aggregate(mut self, max: usize) -> Self {
        self.max_per_aggregate = max.max(1);
        self
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> Result<T> {
        let inner = self.inner.read();
        if inner.closed {
            return Err(closed());
        }
        Ok(f(&inner))
    }

    /// Drops every snapshot of `aggregate_id` (open or closed): the event store's
    /// `delete_stream` calls it under its own lock.
    pub(crate) fn forget(&self, aggregate_id: &str) {
        self.inner.write().by_aggregate.remove(aggregate_id);
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T> {
        let mut inner = self.inner.write();
        if inner.closed {
            return Err(closed());
        }
        Ok(f(&mut inner))
    }
}

fn closed() -> Error {
    Error::StoreClosed { backend: "memory" }
}

fn trim(list: &mut Vec<Snapshot>, keep: usize) -> u64 {
    let excess = list.len().saturating_sub(keep);
    list.drain(..excess);
    excess as u64
}

#[async_trait]
impl SnapshotStore for InMemorySnapshotStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        crate::message::check_stream_id(snapshot.aggregate_id.as_str())?;
        let max = self.max_per_aggregate;
        self.write(|inner| {
            let list = inner
                .by_aggregate
                .entry(snapshot.aggregate_id.clone())
                .or_default();
            match list.binary_search_by_key(&snapshot.version, |s| s.version) {
                Ok(index) => list[index] = snapshot,
                Err(index) => list.insert(index, snapshot),
            }
            trim(list, max);
        })
    }

    async fn latest(&self, aggregate_id: &str) -> Result<Option<Snapshot>> {
        crate::message::check_stream_id(aggregate_id)?;
        self.read(|inner| {
            inner
                .by_aggregate
                .get(aggregate_id)
                .and_then(|l| l.last().cloned())
        })
    }

    async fn by_version(&self, aggregate_id: &str, version: u64) -> Result<Option<Snapshot>> {
        crate::message::check_stream_id(aggregate_id)?;
        self.read(|inner| {
            let list = inner.by_aggregate.get(aggregate_id)?;
            let index = list.binary_search_by_key(&version, |s| s.version).ok()?;
            list.get(index).cloned()
        })
    }

    async fn delete_old(&self, aggregate_id: &str, keep: usize) -> Result<u64> {
        crate::message::check_stream_id(aggregate_id)?;
        self.write(|inner| {
            inner
                .by_aggregate
                .get_mut(aggregate_id)
                .map_or(0, |l| trim(l, keep))
        })
    }

    async fn delete_all(&self, aggregate_id: &str) -> Result<u64> {
        crate::message::check_stream_id(aggregate_id)?;
        self.write(|inner| {
            inner
                .by_aggregate
                .remove(aggregate_id)
                .map_or(0, |l| l.len() as u64)
        })
    }

    async fn close(&self) -> Result<()> {
        self.inner.write().closed = true;
        Ok(())
    }
}
