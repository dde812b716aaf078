//! Snapshots: an aggregate's state saved at a version, so loading replays only the tail.
//!
//! A [`Snapshot`] holds the state as JSON with the state's own schema version (upcast like
//! events, see [`SchemaRegistry::snapshot_upcaster`](crate::schema::SchemaRegistry::snapshot_upcaster)).
//! A [`SnapshotStore`] keeps them; a [`SnapshotPolicy`] decides when the repository takes one.
//! Snapshots are a cache: one that cannot be read is skipped (with a warning) and the
//! aggregate is replayed from its events.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use lexigram::snapshot::{SnapshotContext, SnapshotPolicy};
//!
//! // Every 100 events, but at most once a minute.
//! let policy = SnapshotPolicy::all([
//!     SnapshotPolicy::EveryEvents(100),
//!     SnapshotPolicy::Interval(Duration::from_secs(60)),
//! ]);
//! let ctx = SnapshotContext { version: 250, events_since_snapshot: 120, since_last_snapshot: None };
//! assert!(policy.should_snapshot(&ctx));
//! ```

mod manager;
mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::message::AggregateId;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::store::postgres::snapshot::PostgresSnapshotStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::store::sqlite::snapshot::SqliteSnapshotStore;
pub use manager::SnapshotManager;
pub use memory::InMemorySnapshotStore;

/// An aggregate's state at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// The aggregate (and stream) id.
    pub aggregate_id: AggregateId,
    /// The aggregate type name.
    pub aggregate_type: Arc<str>,
    /// The stream version the state reflects.
    pub version: u64,
    /// The serialized state.
    pub state: serde_json::Value,
    /// The schema version of `state`.
    pub schema_version: u32,
    /// When the snapshot was taken.
    pub created_at: DateTime<Utc>,
}

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(
        aggregate_id: AggregateId,
        aggregate_type: impl Into<Arc<str>>,
        version: u64,
        state: serde_json::Value,
        schema_version: u32,
    ) -> Self {
        Self {
            aggregate_id,
            aggregate_type: aggregate_type.into(),
            version,
            state,
            schema_version,
            created_at: Utc::now(),
        }
    }
}

/// Where snapshots are kept. Object safe.
#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug + 'static {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// Saves a snapshot; a snapshot at the same version of the same aggregate is replaced.
    async fn save(&self, snapshot: Snapshot) -> Result<()>;

    /// The snapshot with the highest version for an aggregate.
    async fn latest(&self, aggregate_id: &str) -> Result<Option<Snapshot>>;

    /// The snapshot taken at exactly `version`.
    async fn by_version(&self, aggregate_id: &str, version: u64) -> Result<Option<Snapshot>>;

    /// Deletes all but the `keep` newest snapshots of an aggregate; returns how many went.
    async fn delete_old(&self, aggregate_id: &str, keep: usize) -> Result<u64>;

    /// Deletes every snapshot of an aggregate; returns how many went.
    async fn delete_all(&self, aggregate_id: &str) -> Result<u64>;

    /// Releases resources; later calls fail.
    async fn close(&self) -> Result<()>;
}

/// What a policy looks at when deciding whether to snapshot after a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotContext {
    /// The aggregate's version after the save.
    pub version: u64,
    /// Events applied since the last snapshot (or since version 0).
    pub events_since_snapshot: u64,
    /// Time since the last snapshot, if the aggregate had one when loaded or saved.
    pub since_last_snapshot: Option<Duration>,
}

/// When the repository takes a snapshot.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum SnapshotPolicy {
    /// Never (the default).
    #[default]
    Never,
    /// Once at least this many events were applied since the last snapshot.
    EveryEvents(u64),
    /// Once at least this long has passed since the last snapshot (immediately when there is
    /// none), if any event was applied since.
    Interval(Duration),
    /// When any of the policies fires.
    Any(Vec<SnapshotPolicy>),
    /// When all of the policies fire.
    All(Vec<SnapshotPolicy>),
    /// A custom rule.
    Custom(Arc<dyn Fn(&SnapshotContext) -> bool + Send + Sync>),
}

impl fmt::Debug for SnapshotPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("Never"),
            Self::EveryEvents(n) => f.debug_tuple("EveryEvents").field(n).finish(),
            Self::Interval(d) => f.debug_tuple("Interval").field(d).finish(),
            Self::Any(all) => f.debug_tuple("Any").field(all).finish(),
            Self::All(all) => f.debug_tuple("All").field(all).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl SnapshotPolicy {
    /// Fires when any of `policies` fires.
    pub fn any(policies: impl IntoIterator<Item = SnapshotPolicy>) -> Self {
        Self::Any(policies.into_iter().collect())
    }

    /// Fires when all of `policies` fire.
    pub fn all(policies: impl IntoIterator<Item = SnapshotPolicy>) -> Self {
        Self::All(policies.into_iter().collect())
    }

    /// A custom rule.
    pub fn custom(rule: impl Fn(&SnapshotContext) -> bool + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(rule))
    }

    /// Whether to snapshot now.
    pub fn should_snapshot(&self, ctx: &SnapshotContext) -> bool {
        if ctx.events_since_snapshot == 0 {
            return false;
        }
        match self {
            Self::Never => false,
            Self::EveryEvents(n) => ctx.events_since_snapshot >= (*n).max(1),
            Self::Interval(every) => ctx.since_last_snapshot.is_none_or(|since| since >= *every),
            Self::Any(all) => all.iter().any(|p| p.should_snapshot(ctx)),
            Self::All(all) => !all.is_empty() && all.iter().all(|p| p.should_snapshot(ctx)),
            Self::Custom(rule) => rule(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(events: u64, since: Option<u64>) -> SnapshotContext {
        SnapshotContext {
            version: 1_000,
            events_since_snapshot: events,
            since_last_snapshot: since.map(Duration::from_secs),
        }
    }

    #[test]
    fn every_events_fires_at_the_threshold() {
        let p = SnapshotPolicy::EveryEvents(100);
        assert!(!p.should_snapshot(&ctx(99, None)));
        assert!(p.should_snapshot(&ctx(100, None)));
        assert!(p.should_snapshot(&ctx(150, None)));
    }

    #[test]
    fn interval_needs_elapsed_time_and_new_events() {
        let p = SnapshotPolicy::Interval(Duration::from_secs(60));
        assert!(p.should_snapshot(&ctx(1, None)));
        assert!(!p.should_snapshot(&ctx(1, Some(59))));
        assert!(p.should_snapshot(&ctx(1, Some(60))));
        assert!(!p.should_snapshot(&ctx(0, Some(600))));
    }

    #[test]
    fn composites_combine_and_never_never_fires() {
        let any = SnapshotPolicy::any([SnapshotPolicy::EveryEvents(10), SnapshotPolicy::Never]);
        let all = SnapshotPolicy::all([
            SnapshotPolicy::EveryEvents(10),
            SnapshotPolicy::Interval(Duration::from_secs(60)),
        ]);
        assert!(any.should_snapshot(&ctx(10, Some(1))));
        assert!(!all.should_snapshot(&ctx(10, Some(1))));
        assert!(all.should_snapshot(&ctx(10, Some(61))));
        assert!(!SnapshotPolicy::Never.should_snapshot(&ctx(1_000_000, None)));
        assert!(!SnapshotPolicy::all([]).should_snapshot(&ctx(5, None)));
        assert!(SnapshotPolicy::custom(|c| c.version % 2 == 0).should_snapshot(&ctx(1, None)));
    }
}
