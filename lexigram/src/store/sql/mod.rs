//! The SQL core: what the SQLite and PostgreSQL backends share, written once over a narrow
//! [`Dialect`] trait.
//!
//! A backend is a dialect: the sqlx driver it runs on, its statements (most of them built
//! here by [`EventSql`] and [`SnapshotSql`] from its table names and placeholder style), how
//! it decodes an event row and a timestamp, and how it takes its writers in turn. Everything
//! else — reading a stream or the global log, versions, stream info, listing, counting,
//! deleting and purging, recognising a retried append, running migrations, the snapshot table
//! — lives here once, in [`EventLog`] and [`SnapshotTable`], and is the same for every
//! dialect. What stays in each backend's folder is what really differs: its schema, its
//! append (SQLite: one writer at a time and `BEGIN IMMEDIATE`; PostgreSQL: one call of a
//! server-side function, ordered by transaction id), its wake-ups, its configuration.
//!
//! A new table (checkpoints, leases, saga state, an outbox) follows the same shape: its
//! statements are built once from a dialect's [`Tables`] and [`Spelling`], its operations
//! are written once over [`Dialect`], and each backend adds only its migration step.
//!
//! Nothing here is public API.

mod append;
mod config;
mod log;
mod page;
mod row;
mod schema;
mod snapshot;
mod statements;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use crate::error::{Error, Result};
use crate::message::EventId;

pub(crate) use super::{check_batch, duplicate_id};
pub(crate) use append::{StoredSlot, is_transient, metadata_text};
#[cfg(feature = "postgres")]
pub(crate) use config::option_duration_ms;
pub(crate) use config::{check_identifier, duration_ms, setters};
pub(crate) use log::{EventLog, Query, sql_event_store};
pub(crate) use row::{EventRow, Interner, limit_i64, to_i64, to_u64};
pub(crate) use schema::{Migration, run_migrations};
pub(crate) use snapshot::{SnapshotTable, sql_snapshot_store};
pub(crate) use statements::{EventSql, SnapshotSql, Spelling, StoreSql, Tables};

/// What one SQL backend is: its driver, its statements, and the few things it decodes or
/// orders its own way. Implemented by a marker type per backend (`SqliteDialect`,
/// `PostgresDialect`); never instantiated.
pub(crate) trait Dialect: Sized + Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;
    /// The statements only this backend runs, built once per table prefix (and schema),
    /// beside the shared ones in [`StoreSql`].
    type Statements: Send + Sync + 'static;
    /// A timestamp as the backend stores it (SQLite: microseconds; PostgreSQL: `PgTime`).
    type Time: for<'q> Encode<'q, Self::Db>
        + for<'r> Decode<'r, Self::Db>
        + Type<Self::Db>
        + Send
        + Unpin
        + 'static;
    /// A schema version (`u32`) as the backend stores it.
    type SchemaVersion: for<'q> Encode<'q, Self::Db>
        + for<'r> Decode<'r, Self::Db>
        + Type<Self::Db>
        + Send
        + Unpin
        + 'static;
    /// An event id as the backend stores it (SQLite: text; PostgreSQL: `uuid`).
    type EventIdArg: for<'q> Encode<'q, Self::Db> + Type<Self::Db> + Send + 'static;

    /// The backend's name: `sqlite`, `postgres`.
    const BACKEND: &'static str;
    /// What a person should check when the database cannot be used, for error messages.
    const OUTAGE_HINT: &'static str;
    /// The statement that opens a write transaction, when the backend needs one of its own
    /// (SQLite's `BEGIN IMMEDIATE`), else `None` (`BEGIN`).
    const BEGIN_WRITE: Option<&'static str>;
    /// Whether the writers of this process take turns on an in-process lock before they
    /// open a write transaction (SQLite: one writer per file), and single-statement writes
    /// run in such a transaction too. When `false`, a single statement runs on its own.
    const ONE_WRITER: bool;

    /// A stored time; `column` names it in a warning when it cannot be shown.
    fn time(value: Self::Time, column: &'static str) -> DateTime<Utc>;
    /// A time to store.
    fn store_time(value: DateTime<Utc>) -> Self::Time;
    /// A stored schema version.
    fn schema_version(value: Self::SchemaVersion) -> u32;
    /// A schema version to store.
    fn store_schema_version(value: u32) -> Self::SchemaVersion;
    /// An event id to look up.
    fn event_id(id: EventId) -> Self::EventIdArg;

    /// Reads one event row (columns in [`COLUMNS`] order).
    fn event_row<'r>(
        row: &'r <Self::Db as Database>::Row,
        names: &mut Interner,
    ) -> Result<EventRow<'r>>;
    /// Reads one row of the retry lookup (`stream_version, event_id, global_position,
    /// recorded_at`).
    fn stored_slot(row: &<Self::Db as Database>::Row) -> Result<StoredSlot>;
    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// The error for a failed call: [`Error::StoreClosed`] once the pool is closed, else
    /// [`Error::StoreConnection`] saying what failed and what to check.
    fn unavailable(what: &str, err: sqlx::Error) -> Error {
        if matches!(err, sqlx::Error::PoolClosed) {
            return Self::closed();
        }
        Error::StoreConnection {
            backend: Self::BACKEND,
            // The driver's error is the source, not part of the message (printed once).
            reason: format!("{what} failed; {}", Self::OUTAGE_HINT),
            source: Some(Box::new(err)),
        }
    }

    /// The error for a call on a closed store.
    fn closed() -> Error {
        Error::StoreClosed {
            backend: Self::BACKEND,
        }
    }
}

/// The columns of an event row, in the order [`Dialect::event_row`] reads them.
pub(crate) const COLUMNS: &str = "global_position, stream_id, stream_version, event_id, event_type, event_version, payload, metadata, recorded_at";

/// A pool with its migrated schema and its statements, shared by a backend's event and
/// snapshot stores (clones share everything).
pub(crate) struct SqlDb<D: Dialect> {
    pub(crate) pool: Pool<D::Db>,
    pub(crate) sql: Arc<StoreSql<D::Statements>>,
    /// Taken before every write transaction when the dialect has [`Dialect::ONE_WRITER`].
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl<D: Dialect> Clone for SqlDb<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            sql: Arc::clone(&self.sql),
            writer: self.writer.clone(),
        }
    }
}

/// A write transaction, holding this process's turn to write where the dialect takes turns.
/// Owns its turn (no borrow of the store), so it can be handed out and kept across awaits.
pub(crate) struct Write<D: Dialect> {
    /// The transaction; dropping it uncommitted rolls it back (before the turn is given up:
    /// fields drop in declaration order).
    pub(crate) tx: Transaction<'static, D::Db>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<D: Dialect> Write<D> {
    /// Commits, then gives up the turn. `what` names the write in an error.
    pub(crate) async fn commit(self, what: &str) -> Result<()> {
        self.tx.commit().await.map_err(|e| D::unavailable(what, e))
    }
}

/// Where one write statement runs: in a write transaction holding this process's turn where
/// the dialect takes turns, else on a pooled connection of its own (the statement commits by
/// itself).
enum OneWrite<D: Dialect> {
    InTurn(Write<D>),
    Alone(PoolConnection<D::Db>),
}

impl<D: Dialect> OneWrite<D> {
    /// The connection the statement runs on.
    fn conn(&mut self) -> &mut <D::Db as Database>::Connection {
        match self {
            Self::InTurn(write) => &mut write.tx,
            Self::Alone(conn) => conn,
        }
    }

    /// Commits the statement's transaction, if it has one. `what` names the write in an error.
    async fn finish(self, what: &str) -> Result<()> {
        match self {
            Self::InTurn(write) => write.commit(what).await,
            Self::Alone(_) => Ok(()),
        }
    }
}

impl<D: Dialect> SqlDb<D> {
    /// The database behind `pool`, with `sql` for its statements.
    pub(crate) fn new(pool: Pool<D::Db>, sql: StoreSql<D::Statements>) -> Self {
        Self {
            pool,
            sql: Arc::new(sql),
            writer: D::ONE_WRITER.then(Arc::default),
        }
    }

    /// The event-table statements.
    pub(crate) fn events(&self) -> &EventSql {
        &self.sql.events
    }

    /// The snapshot-table statements.
    pub(crate) fn snapshots(&self) -> &SnapshotSql {
        &self.sql.snapshots
    }

    /// Starts a write transaction: this process's turn first (where the dialect takes
    /// turns), then [`Dialect::BEGIN_WRITE`]. `what` names the write in an error.
    pub(crate) async fn begin_write(&self, what: &str) -> Result<Write<D>> {
        let turn = match &self.writer {
            Some(writer) => Some(Arc::clone(writer).lock_owned().await),
            None => None,
        };
        let tx = match D::BEGIN_WRITE {
            Some(begin) => self.pool.begin_with(begin).await,
            None => self.pool.begin().await,
        }
        .map_err(|e| D::unavailable(what, e))?;
        Ok(Write { tx, _turn: turn })
    }
}

impl<D: Dialect> SqlDb<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
{
    /// Where one write statement runs (see [`OneWrite`]). `what` names the write in an error.
    async fn one_write(&self, what: &str) -> Result<OneWrite<D>> {
        if D::ONE_WRITER {
            return Ok(OneWrite::InTurn(self.begin_write(what).await?));
        }
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| D::unavailable(what, e))?;
        Ok(OneWrite::Alone(conn))
    }

    /// Runs one write statement and returns how many rows it changed: in a write
    /// transaction where the dialect takes turns to write, else on its own.
    pub(crate) async fn write_one(&self, query: Query<'_, D>, what: &str) -> Result<u64> {
        let mut on = self.one_write(what).await?;
        let done = query
            .execute(on.conn())
            .await
            .map_err(|e| D::unavailable(what, e))?;
        on.finish(what).await?;
        Ok(D::rows_affected(&done))
    }

    /// Runs a writing statement that returns at most one row, the way
    /// [`write_one`](Self::write_one) runs one, and returns the row.
    pub(crate) async fn write_returning(
        &self,
        query: Query<'_, D>,
        what: &str,
    ) -> Result<Option<<D::Db as Database>::Row>> {
        let mut on = self.one_write(what).await?;
        let row = query
            .fetch_optional(on.conn())
            .await
            .map_err(|e| D::unavailable(what, e))?;
        on.finish(what).await?;
        Ok(row)
    }
}
