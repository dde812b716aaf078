//! The snapshot table over one dialect: every [`SnapshotStore`](crate::snapshot::SnapshotStore)
//! operation, written once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlDb, limit_i64, to_i64, to_u64};
use crate::error::{Error, Result};
use crate::message::AggregateId;
use crate::snapshot::Snapshot;
use crate::store::check_stream_id;

/// The state of a SQL snapshot store: its database, whether closing it closes the pool (it
/// opened the pool itself), whether it was closed, and how many snapshots it keeps per
/// aggregate (3 by default; the oldest go first). Clones share the pool and the closed flag.
pub(crate) struct SnapshotTable<D: Dialect> {
    db: SqlDb<D>,
    owns_pool: bool,
    closed: Arc<AtomicBool>,
    max_per_aggregate: usize,
}

impl<D: Dialect> Clone for SnapshotTable<D> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            owns_pool: self.owns_pool,
            closed: Arc::clone(&self.closed),
            max_per_aggregate: self.max_per_aggregate,
        }
    }
}

impl<D: Dialect> SnapshotTable<D> {
    /// An open table in `db`; `owns_pool` when closing it should close the pool.
    pub(crate) fn new(db: SqlDb<D>, owns_pool: bool) -> Self {
        Self {
            db,
            owns_pool,
            closed: Arc::new(AtomicBool::new(false)),
            max_per_aggregate: 3,
        }
    }

    /// Keeps at most `max` snapshots per aggregate (at least 1).
    pub(crate) fn set_max_per_aggregate(&mut self, max: usize) {
        self.max_per_aggregate = max.max(1);
    }

    /// `Debug` for the store named `name`.
    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("max_per_aggregate", &self.max_per_aggregate)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(D::closed())
        } else {
            Ok(())
        }
    }
}

impl<D: Dialect> SnapshotTable<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    pub(crate) async fn save(&self, snapshot: Snapshot) -> Result<()> {
        check_stream_id(snapshot.aggregate_id.as_str())?;
        self.check_open()?;
        let id = snapshot.aggregate_id.as_str();
        let what = format!(
            "saving a snapshot of `{id}` at version {}",
            snapshot.version
        );
        // The save and its trimming commit together.
        let mut write = self.db.begin_write(&what).await?;
        sqlx::query(&self.db.snapshots().save)
            .bind(id)
            .bind(to_i64(snapshot.version))
            .bind(&*snapshot.aggregate_type)
            .bind(snapshot.state.to_string())
            .bind(D::store_schema_version(snapshot.schema_version))
            .bind(D::store_time(snapshot.created_at))
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        sqlx::query(&self.db.snapshots().delete_old)
            .bind(id)
            .bind(limit_i64(self.max_per_aggregate))
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        write.commit(&what).await
    }

    pub(crate) async fn latest(&self, aggregate_id: &str) -> Result<Option<Snapshot>> {
        check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.snapshots().latest).bind(aggregate_id);
        self.fetch(query, aggregate_id).await
    }

    pub(crate) async fn by_version(
        &self,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Option<Snapshot>> {
        check_stream_id(aggregate_id)?;
        let query = sqlx::query_as(&self.db.snapshots().by_version)
            .bind(aggregate_id)
            .bind(to_i64(version));
        self.fetch(query, aggregate_id).await
    }

    pub(crate) async fn delete_old(&self, aggregate_id: &str, keep: usize) -> Result<u64> {
        check_stream_id(aggregate_id)?;
        let query = sqlx::query(&self.db.snapshots().delete_old)
            .bind(aggregate_id)
            .bind(limit_i64(keep));
        self.check_open()?;
        let what = format!("deleting old snapshots of `{aggregate_id}`");
        self.db.write_one(query, &what).await
    }

    pub(crate) async fn delete_all(&self, aggregate_id: &str) -> Result<u64> {
        check_stream_id(aggregate_id)?;
        let query = sqlx::query(&self.db.snapshots().delete_all).bind(aggregate_id);
        self.check_open()?;
        let what = format!("deleting the snapshots of `{aggregate_id}`");
        self.db.write_one(query, &what).await
    }

    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if self.owns_pool {
            self.db.pool.close().await;
        }
        Ok(())
    }

    async fn fetch(&self, query: RowQuery<'_, D>, aggregate_id: &str) -> Result<Option<Snapshot>> {
        self.check_open()?;
        let row = query
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(&format!("reading snapshots of `{aggregate_id}`"), e))?;
        row.map(into_snapshot::<D>).transpose()
    }
}

/// A snapshot row as stored: id, version, aggregate type, state, schema version, time taken.
type SnapshotRow<D> = (
    String,
    i64,
    String,
    String,
    <D as Dialect>::SchemaVersion,
    <D as Dialect>::Time,
);

/// A query for snapshot rows, for dialect `D`.
type RowQuery<'q, D> = sqlx::query::QueryAs<
    'q,
    <D as Dialect>::Db,
    SnapshotRow<D>,
    <<D as Dialect>::Db as Database>::Arguments<'q>,
>;

/// A stored snapshot row as a snapshot; a state that is not JSON is an error naming it.
fn into_snapshot<D: Dialect>(
    (id, version, aggregate_type, state, schema_version, created_at): SnapshotRow<D>,
) -> Result<Snapshot> {
    let state = serde_json::from_str(&state).map_err(|source| Error::Serialization {
        what: format!("the snapshot of `{id}` at version {version} (stored state is not JSON)"),
        source,
    })?;
    let mut snapshot = Snapshot::new(
        AggregateId::from(id),
        aggregate_type,
        to_u64(version),
        state,
        D::schema_version(schema_version),
    );
    snapshot.created_at = D::time(created_at, "snapshot created_at");
    Ok(snapshot)
}

/// Implements [`SnapshotStore`](crate::snapshot::SnapshotStore) and `Debug` for a SQL
/// snapshot store of a dialect (a type with a field `table: SnapshotTable<dialect>`), and
/// gives it `with_max_per_aggregate`.
macro_rules! sql_snapshot_store {
    ($store:ident, $dialect:ty, $config:ty, #[doc = $connect:literal]) => {
        impl $store {
            #[doc = $connect]
            pub async fn connect(config: &$config) -> $crate::Result<Self> {
                Ok(Self::from_db(config.open().await?, true))
            }

            /// The snapshot table of `db`; `owns_pool`: closing the store closes the pool.
            pub(crate) fn from_db(
                db: $crate::store::sql::SqlDb<$dialect>,
                owns_pool: bool,
            ) -> Self {
                Self {
                    table: $crate::store::sql::SnapshotTable::new(db, owns_pool),
                }
            }

            /// Keeps at most `max` snapshots per aggregate (at least 1).
            #[must_use]
            pub fn with_max_per_aggregate(mut self, max: usize) -> Self {
                self.table.set_max_per_aggregate(max);
                self
            }
        }

        impl ::std::fmt::Debug for $store {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.table.debug(stringify!($store), f)
            }
        }

        #[::async_trait::async_trait]
        impl $crate::snapshot::SnapshotStore for $store {
            fn backend(&self) -> &'static str {
                <$dialect as $crate::store::sql::Dialect>::BACKEND
            }

            async fn save(&self, snapshot: $crate::snapshot::Snapshot) -> $crate::Result<()> {
                self.table.save(snapshot).await
            }

            async fn latest(
                &self,
                aggregate_id: &str,
            ) -> $crate::Result<::std::option::Option<$crate::snapshot::Snapshot>> {
                self.table.latest(aggregate_id).await
            }

            async fn by_version(
                &self,
                aggregate_id: &str,
                version: u64,
            ) -> $crate::Result<::std::option::Option<$crate::snapshot::Snapshot>> {
                self.table.by_version(aggregate_id, version).await
            }

            async fn delete_old(&self, aggregate_id: &str, keep: usize) -> $crate::Result<u64> {
                self.table.delete_old(aggregate_id, keep).await
            }

            async fn delete_all(&self, aggregate_id: &str) -> $crate::Result<u64> {
                self.table.delete_all(aggregate_id).await
            }

            async fn close(&self) -> $crate::Result<()> {
                self.table.close().await
            }
        }
    };
}

pub(crate) use sql_snapshot_store;
