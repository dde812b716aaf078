//! The SQLite snapshot store: the `<prefix>snapshots` table beside the events.

use super::{SqliteConfig, SqliteDialect};
use crate::store::sql::{self, SnapshotTable};

/// A [`SnapshotStore`](crate::snapshot::SnapshotStore) in a SQLite database, keeping at most
/// `max_per_aggregate` snapshots of each aggregate (3 by default; the oldest go first).
///
/// Get one beside an event store with
/// [`SqliteEventStore::snapshot_store`](crate::store::SqliteEventStore::snapshot_store)
/// (same connections), or on its own with [`connect`](Self::connect).
///
/// ```
/// use lexigram::snapshot::{Snapshot, SnapshotStore, SqliteSnapshotStore};
/// use lexigram::store::SqliteConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let store = SqliteSnapshotStore::connect(&SqliteConfig::in_memory()).await?;
/// store.save(Snapshot::new("acc-1".into(), "Account", 10, serde_json::json!({"balance": 5}), 1)).await?;
/// assert_eq!(store.latest("acc-1").await?.map(|s| s.version), Some(10));
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteSnapshotStore {
    table: SnapshotTable<SqliteDialect>,
}

sql::sql_snapshot_store!(
    SqliteSnapshotStore,
    SqliteDialect,
    SqliteConfig,
    #[doc = "Opens (creating if needed) the database and brings its schema up to date."]
);
