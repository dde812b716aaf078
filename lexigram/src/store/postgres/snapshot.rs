//! The PostgreSQL snapshot store: the `<prefix>snapshots` table beside the events.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::snapshot::{Snapshot, SnapshotStore};
use crate::error::{Error, Result};
use crate::message::AggregateId;
use crate::store::PostgresConfig;
use crate::store::postgres::{PgDb, PgTime, closed, unavailable};
use crate::store::sql::{limit_i64, to_i64, to_u64};

/// A [`SnapshotStore`] in PostgreSQL, keeping at most `max_per_aggregate` snapshots of each
/// aggregate (3 by default; the oldest go first). A save and its trimming commit together.
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
    db: PgDb,
    owns_pool: bool,
    closed: Arc<AtomicBool>,
    max_per_aggregate: usize,
}

impl fmt::Debug for PostgresSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSnapshotStore")
            .field("max_per_aggregate", &self.max_per_aggregate)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

type SnapshotRow = (String, i64, String, String, i32, PgTime);

fn into_snapshot(row: SnapshotRow) -> Result<Snapshot> {
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
    snapshot.created_at = created_at.or_epoch("snapshot created_at");
    Ok(snapshot)
}

impl PostgresSnapshotStore {
    /// Connects, creates the schema if needed and applies pending migrations.
    pub async fn connect(config: &PostgresConfig) -> Result<Self> {
        Ok(Self::from_db(config.open().await?, true))
    }

    pub(crate) fn from_db(db: PgDb, owns_pool: bool) -> Self {
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
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, SnapshotRow, sqlx::postgres::PgArguments>,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>> {
        self.check_open()?;
        let row = query
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("reading snapshots of `{aggregate_id}`"), e))?;
        row.map(into_snapshot).transpose()
    }

    async fn delete(
        &self,
        sql: &str,
        aggregate_id: &str,
        keep: Option<usize>,
        what: &str,
    ) -> Result<u64> {
        self.check_open()?;
        let mut query = sqlx::query(sql).bind(aggregate_id);
        if let Some(keep) = keep {
            query = query.bind(limit_i64(keep));
        }
        Ok(query
            .execute(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("{what} of `{aggregate_id}`"), e))?
            .rows_affected())
    }
}

#[async_trait]
impl SnapshotStore for PostgresSnapshotStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        crate::store::check_stream_id(snapshot.aggregate_id.as_str())?;
        self.check_open()?;
        let id = snapshot.aggregate_id.as_str();
        let what = format!(
            "saving a snapshot of `{id}` at version {}",
            snapshot.version
        );
        let mut tx = self
            .db
            .pool
            .begin()
            .await
            .map_err(|e| unavailable(&what, e))?;
        sqlx::query(&self.db.names.snapshot_save)
            .bind(id)
            .bind(to_i64(snapshot.version))
            .bind(&*snapshot.aggregate_type)
            .bind(snapshot.state.to_string())
            .bind(i32::try_from(snapshot.schema_version).unwrap_or(i32::MAX))
            .bind(snapshot.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?;
        sqlx::query(&self.db.names.snapshot_delete_old)
            .bind(id)
            .bind(limit_i64(self.max_per_aggregate))
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?;
        tx.commit().await.map_err(|e| unavailable(&what, e))
    }

    async fn latest(&self, aggregate_id: &str) -> Result<Option<Snapshot>> {
        crate::store::check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.names.snapshot_latest).bind(aggregate_id);
        self.fetch(query, aggregate_id).await
    }

    async fn by_version(&self, aggregate_id: &str, version: u64) -> Result<Option<Snapshot>> {
        crate::store::check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.names.snapshot_by_version)
            .bind(aggregate_id)
            .bind(to_i64(version));
        self.fetch(query, aggregate_id).await
    }

    async fn delete_old(&self, aggregate_id: &str, keep: usize) -> Result<u64> {
        crate::store::check_stream_id(aggregate_id)?;
        let sql = Arc::clone(&self.db.names);
        self.delete(
            &sql.snapshot_delete_old,
            aggregate_id,
            Some(keep),
            "deleting old snapshots",
        )
        .await
    }

    async fn delete_all(&self, aggregate_id: &str) -> Result<u64> {
        crate::store::check_stream_id(aggregate_id)?;
        let sql = Arc::clone(&self.db.names);
        self.delete(
            &sql.snapshot_delete_all,
            aggregate_id,
            None,
            "deleting the snapshots",
        )
        .await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if self.owns_pool {
            self.db.pool.close().await;
        }
        Ok(())
    }
}
