//! The PostgreSQL snapshot store: the `<prefix>snapshots` table beside the events.

use super::{PostgresConfig, PostgresDialect};
use crate::store::sql::{self, SnapshotTable};

/// A [`SnapshotStore`](crate::snapshot::SnapshotStore) in PostgreSQL, keeping at most
/// `max_per_aggregate` snapshots of each aggregate (3 by default; the oldest go first). A
/// save and its trimming commit together.
///
/// Get one beside an event store with
/// [`PostgresEventStore::snapshot_store`](crate::store::PostgresEventStore::snapshot_store)
/// (same connections), or on its own with [`connect`](Self::connect).
///
/// ```no_run
/// use lexigram::snapshot::{PostgresSnapshotStore, Snapshot, SnapshotStore};
/// use lexigram::store::PostgresConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let store = PostgresSnapshotStore::connect(&PostgresConfig::new("postgres://app@localhost/app")).await?;
/// store.save(Snapshot::new("acc-1".into(), "Account", 10, serde_json::json!({"balance": 5}), 1)).await?;
/// assert_eq!(store.latest("acc-1").await?.map(|s| s.version), Some(10));
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PostgresSnapshotStore {
    table: SnapshotTable<PostgresDialect>,
}

sql::sql_snapshot_store!(
    PostgresSnapshotStore,
    PostgresDialect,
    PostgresConfig,
    #[doc = "Connects, creates the schema if needed and applies pending migrations."]
);
