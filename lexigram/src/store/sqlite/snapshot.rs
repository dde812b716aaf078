//! The SQLite snapshot store: the `<prefix>snapshots` table beside the events.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::snapshot::{Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::message::AggregateId;
use crate::store::SqliteConfig;
use crate::store::sql::{limit_i64, to_i64, to_u64};
use crate::store::sqlite::{SqliteDb, closed, from_micros, unavailable};

/// A [`SnapshotStore`] in a SQLite database, keeping at most `max_per_aggregate` snapshots of
/// each aggregate (3 by default; the oldest go first).
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
    db: SqliteDb,
    /// Whether closing this store closes the pool (it opened it itself).
    owns_pool: bool,
    closed: Arc<AtomicBool>,
    max_per_aggregate: usize,
}

impl fmt::Debug for SqliteSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSnapshotStore")
            .field("max_per_aggregate", &self.max_per_aggregate)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteSnapshotStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn connect(config: &SqliteConfig) -> Result<Self> {
        Ok(Self::from_db(config.open().await?, true))
    }

    pub(crate) fn from_db(db: SqliteDb, owns_pool: bool) -> Self {
        Self {
            db,
            owns_pool,
            closed: Arc::new(AtomicBool::new(false)),
            max_per_aggregate: 3,
        }
    }

    /// Keeps at most `max` snapshots per aggregate (at least 1).
    #[must_use]
    pub fn with_max_per_aggregate(mut self, max: usize) -> Self {
        self.max_per_aggregate = max.max(1);
        self
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    async fn fetch<'q>(
        &self,
        query: sqlx::query::QueryAs<
            'q,
            sqlx::Sqlite,
            SnapshotRow,
            sqlx::sqlite::SqliteArguments<'q>,
        >,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>> {
        self.check_open()?;
        let row = query
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("reading snapshots of `{aggregate_id}`"), e))?;
        row.map(into_snapshot).transpose()
    }
}

type SnapshotRow = (String, i64, String, String, i64, i64);

fn into_snapshot(row: SnapshotRow) -> Result<Snapshot> {
    {
        let (id, version, aggregate_type, state, schema_version, created_at) = row;
        let state = serde_json::from_str(&state).map_err(|source| Error::Serialization {
            what: format!("the snapshot of `{id}` at version {version} (stored state is not JSON)"),
            source,
        })?;
        let mut snapshot = Snapshot::new(
            AggregateId::from(id),
            aggregate_type,
            to_u64(version),
            state,
            u32::try_from(schema_version).unwrap_or(0),
        );
        snapshot.created_at = from_micros(created_at);
        Ok(snapshot)
    }
}

#[async_trait]
impl SnapshotStore for SqliteSnapshotStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        crate::store::check_stream_id(snapshot.aggregate_id.as_str())?;
        self.check_open()?;
        let id = snapshot.aggregate_id.as_str();
        let what = format!(
            "saving a snapshot of `{id}` at version {}",
            snapshot.version
        );
        let (_guard, mut tx) = self.db.begin_write().await?;
        sqlx::query(&self.db.sql.snapshot_save)
            .bind(id)
            .bind(to_i64(snapshot.version))
            .bind(&*snapshot.aggregate_type)
            .bind(snapshot.state.to_string())
            .bind(i64::from(snapshot.schema_version))
            .bind(snapshot.created_at.timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?;
        sqlx::query(&self.db.sql.snapshot_delete_old)
            .bind(id)
            .bind(limit_i64(self.max_per_aggregate))
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?;
        tx.commit().await.map_err(|e| unavailable(&what, e))
    }

    async fn latest(&self, aggregate_id: &str) -> Result<Option<Snapshot>> {
        crate::store::check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.sql.snapshot_latest).bind(aggregate_id);
        self.fetch(query, aggregate_id).await
    }

    async fn by_version(&self, aggregate_id: &str, version: u64) -> Result<Option<Snapshot>> {
        crate::store::check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.sql.snapshot_by_version)
            .bind(aggregate_id)
            .bind(to_i64(version));
        self.fetch(query, aggregate_id).await
    }

    async fn delete_old(&self, aggregate_id: &str, keep: usize) -> Result<u64> {
        crate::store::check_stream_id(aggregate_id)?;
        self.check_open()?;
        let what = format!("deleting old snapshots of `{aggregate_id}`");
        let (_guard, mut tx) = self.db.begin_write().await?;
        let gone = sqlx::query(&self.db.sql.snapshot_delete_old)
            .bind(aggregate_id)
            .bind(limit_i64(keep))
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?
            .rows_affected();
        tx.commit().await.map_err(|e| unavailable(&what, e))?;
        Ok(gone)
    }

    async fn delete_all(&self, aggregate_id: &str) -> Result<u64> {
        crate::store::check_stream_id(aggregate_id)?;
        self.check_open()?;
        let what = format!("deleting the snapshots of `{aggregate_id}`");
        let (_guard, mut tx) = self.db.begin_write().await?;
        let gone = sqlx::query(&self.db.sql.snapshot_delete_all)
            .bind(aggregate_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?
            .rows_affected();
        tx.commit().await.map_err(|e| unavailable(&what, e))?;
        Ok(gone)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if self.owns_pool {
            self.db.pool.close().await;
        }
        Ok(())
    }
}
