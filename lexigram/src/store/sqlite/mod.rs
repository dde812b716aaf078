//! The SQLite event store: one file (or memory), one process, no server.
//!
//! Appends go through one writer at a time (an in-process async lock, then `BEGIN IMMEDIATE`
//! so other processes sharing the file wait on SQLite's `busy_timeout` instead of failing);
//! reads run concurrently on the pool's other connections thanks to WAL. The global position
//! is the events table's `INTEGER PRIMARY KEY AUTOINCREMENT` row id: writers are serialised,
//! so positions are handed out in commit order and a reader following
//! [`read_all`](crate::store::EventStore::read_all) can never miss one. `AUTOINCREMENT` also means a
//! position is never reused, even after the newest stream is deleted.
//!
//! The schema is created and upgraded on [`connect`](SqliteEventStore::connect), by versioned
//! migrations recorded in `<prefix>migrations`; the events, streams and snapshots tables
//! share one file, so [`SqliteEventStore::snapshot_store`] gives a snapshot store on the same
//! connections.
//!
//! # Examples
//!
//! ```
//! use lexigram::message::{MessageMetadata, NewEvent, Payload};
//! use lexigram::snapshot::{Snapshot, SnapshotStore};
//! use lexigram::store::{EventStore, ExpectedVersion, SqliteConfig, SqliteEventStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! # let dir = std::env::temp_dir().join(format!("lexigram-doc-{}", uuid::Uuid::new_v4()));
//! # std::fs::create_dir_all(&dir).map_err(|e| lexigram::Error::Config { problems: vec![e.to_string()] })?;
//! let config = SqliteConfig::file(dir.join("bank.db")).table_prefix("bank_");
//! let events = SqliteEventStore::connect(&config).await?;
//! let deposited = NewEvent::new("bank.Deposited", 1, Payload::from_json_text("5"), MessageMetadata::new());
//! events.append("acc-1", vec![deposited], ExpectedVersion::NoStream).await?;
//!
//! let snapshots = events.snapshot_store();
//! snapshots.save(Snapshot::new("acc-1".into(), "Account", 1, serde_json::json!({"balance": 5}), 1)).await?;
//! assert_eq!(events.version("acc-1").await?, 1);
//! # events.close().await?;
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(()) }
//! ```

mod config;
mod dialect;
mod schema;
pub(crate) mod snapshot;
mod statements;
mod watch;

use std::fmt;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};

use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{NewEvent, StreamId};
use crate::store::sql::{self, Dialect, EventLog, SqlDb, to_i64, to_u64};
use crate::store::{AppendResult, ExpectedVersion, stream_hash};

pub use config::SqliteConfig;
pub(crate) use dialect::SqliteDialect;
use dialect::now_micros;
use snapshot::SqliteSnapshotStore;

/// The database of a SQLite store: its pool, statements and writer's turn.
pub(crate) type SqliteDb = SqlDb<SqliteDialect>;

/// An [`EventStore`](crate::store::EventStore) in a SQLite database. Clones share the pool.
///
/// # Examples
///
/// ```
/// use lexigram::message::{MessageMetadata, NewEvent, Payload};
/// use lexigram::store::{EventStore, ExpectedVersion, SqliteConfig, SqliteEventStore, VersionRange};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let store = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
/// let event = NewEvent::new("cart.ItemAdded", 1, Payload::from_json_text("42"), MessageMetadata::new());
/// store.append("cart-1", vec![event], ExpectedVersion::NoStream).await?;
/// assert_eq!(store.read("cart-1", VersionRange::all()).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteEventStore {
    log: EventLog<SqliteDialect>,
    /// How often the watcher of other processes' appends looks; `None` in memory, where no
    /// other process can append.
    change_poll: Option<Duration>,
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("table_prefix", &self.log.db.sql.prefix)
            .field("closed", &self.log.is_closed())
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    ///
    /// Fails with [`Error::Config`] for an invalid configuration, or
    /// [`Error::StoreConnection`] when the file cannot be opened or migrated.
    pub async fn connect(config: &SqliteConfig) -> Result<Self> {
        Ok(Self {
            log: EventLog::new(config.open().await?),
            change_poll: (!config.is_memory()).then_some(config.change_poll_interval),
        })
    }

    /// Opens a write transaction that takes this store's writer turn first (the same one
    /// appends take, then `BEGIN IMMEDIATE`), so your own writes in this database
    /// (projections, checkpoints) queue behind appends instead of failing with
    /// `SQLITE_BUSY`, and appends wait while it is open. Commit it with
    /// [`SqliteWriteTx::commit`]; dropping it rolls back. Keep it short: every append of the
    /// process waits for it.
    ///
    /// ```
    /// use lexigram::store::{SqliteConfig, SqliteEventStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lexigram::Error> {
    /// let store = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
    /// let mut tx = store.write_tx().await?;
    /// # let fail = |e: sqlx::Error| lexigram::Error::InvalidArgument { reason: e.to_string() };
    /// sqlx::query("CREATE TABLE balances (id TEXT PRIMARY KEY, cents INTEGER)")
    ///     .execute(&mut *tx)
    ///     .await
    ///     .map_err(fail)?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_tx(&self) -> Result<SqliteWriteTx> {
        self.log.check_open()?;
        Ok(SqliteWriteTx {
            write: self
                .log
                .db
                .begin_write("starting a write transaction")
                .await?,
        })
    }

    /// Starts, once, the task that announces appends by other processes (or other pools) on
    /// a file database: it checks `PRAGMA data_version` on a connection of its own every
    /// [`SqliteConfig::change_poll_interval`] and, when it moved, announces the last
    /// position. Nothing starts in memory or outside a tokio runtime.
    fn watch_other_processes(&self) {
        let Some(interval) = self.change_poll else {
            return;
        };
        let options = (*self.log.db.pool.connect_options()).clone();
        let last_position = self.log.db.events().last_position.clone();
        let notifier = self.log.appended.downgrade();
        self.log
            .watcher
            .start_once(move || watch::data_version(options, last_position, interval, notifier));
    }

    /// [`EventStore::append`](crate::store::EventStore::append), the SQLite way (the span and
    /// the checks every append makes are in the core).
    async fn append_events(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            metadata.push(sql::metadata_text(stream, event)?);
        }
        let mut write = self
            .log
            .db
            .begin_write("starting a write transaction")
            .await?;
        if let Some(previous) = self
            .log
            .previous_append(&mut *write.tx, stream, &events, expected)
            .await?
        {
            return Ok(previous);
        }
        let actual = self.log.stream_version(&mut *write.tx, stream).await?;
        if !expected.matches(actual) {
            return Err(ConcurrencyError {
                stream: StreamId::from(stream),
                expected,
                actual,
            }
            .into());
        }
        let (now, now_micros) = now_micros();
        if events.is_empty() {
            return Ok(AppendResult::new(actual, Vec::new(), now));
        }
        let version = actual + events.len() as u64;
        sqlx::query(&self.log.db.sql.own.upsert_stream)
            .bind(stream)
            .bind(to_i64(version))
            .bind(now_micros)
            .execute(&mut *write.tx)
            .await
            .map_err(|e| SqliteDialect::unavailable(&format!("updating stream `{stream}`"), e))?;
        let hash = i64::from(stream_hash(stream));
        let mut positions = Vec::with_capacity(events.len());
        for ((event, metadata), stream_version) in events.iter().zip(metadata).zip(actual + 1..) {
            let done = sqlx::query(&self.log.db.sql.own.insert)
                .bind(stream)
                .bind(to_i64(stream_version))
                .bind(hash)
                .bind(event.event_id.to_string())
                .bind(&*event.event_type)
                .bind(i64::from(event.event_version))
                .bind(event.payload.as_str())
                .bind(metadata)
                .bind(now_micros)
                .execute(&mut *write.tx)
                .await
                .map_err(|err| {
                    if is_unique_violation(&err, "event_id") {
                        sql::duplicate_id(stream, event.event_id, Some(Box::new(err)))
                    } else if sql::is_transient(&err) {
                        SqliteDialect::unavailable(&format!("appending to stream `{stream}`"), err)
                    } else {
                        Error::EventPersistence {
                            stream: StreamId::from(stream),
                            reason: format!(
                                "could not insert event `{}` at version {stream_version}",
                                event.event_type
                            ),
                            source: Some(Box::new(err)),
                        }
                    }
                })?;
            positions.push(to_u64(done.last_insert_rowid()));
        }
        write.tx.commit().await.map_err(|err| {
            if sql::is_transient(&err) {
                SqliteDialect::unavailable(
                    &format!("committing an append to stream `{stream}`"),
                    err,
                )
            } else {
                Error::EventPersistence {
                    stream: StreamId::from(stream),
                    reason: "the commit failed; nothing was written".into(),
                    source: Some(Box::new(err)),
                }
            }
        })?;
        tracing::debug!(version, first = ?positions.first(), "appended");
        Ok(AppendResult::new(version, positions, now))
    }
}

/// Whether `err` is the unique key on `column` refusing a row.
fn is_unique_violation(err: &sqlx::Error, column: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation && db.message().contains(column)
        }
        _ => false,
    }
}

/// A write transaction holding the store's writer turn, from
/// [`SqliteEventStore::write_tx`]. Derefs to the connection, so
/// `sqlx::query(..).execute(&mut *tx)` runs in it. Dropping it uncommitted rolls it back;
/// either way the turn is given up afterwards.
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteWriteTx {
    write: sql::Write<SqliteDialect>,
}

impl fmt::Debug for SqliteWriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWriteTx").finish_non_exhaustive()
    }
}

impl std::ops::Deref for SqliteWriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.write.tx
    }
}

impl std::ops::DerefMut for SqliteWriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.write.tx
    }
}

impl SqliteWriteTx {
    /// Commits, then gives up the writer turn. Announces nothing: readers of the event log
    /// are not woken by it.
    pub async fn commit(self) -> Result<()> {
        self.write.commit("committing a write transaction").await
    }
}

sql::sql_event_store!(SqliteEventStore, SqliteDialect, {
    /// A snapshot store in the same database, sharing this store's connections.
    pub fn snapshot_store(&self) -> SqliteSnapshotStore;
    /// The connection pool, for queries of your own (projections in the same file).
    pub fn pool(&self) -> &SqlitePool;
});

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::SqlitePoolOptions;

    use super::statements::Statements;
    use super::*;

    #[tokio::test]
    async fn an_older_schema_is_upgraded_and_rerunning_is_a_no_op() -> Result<()> {
        let config = SqliteConfig::in_memory();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .map_err(|e| SqliteDialect::unavailable("test", e))?;
        let db = SqliteDb::new(pool, Statements::all(&config.table_prefix));
        db.migrate(Some(1)).await?;
        let tables = |db: SqliteDb| async move {
            sqlx::query_scalar::<_, String>(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'lexigram_%' ORDER BY name",
            )
            .fetch_all(&db.pool)
            .await
            .map_err(|e| SqliteDialect::unavailable("test", e))
        };
        assert!(
            !tables(db.clone())
                .await?
                .contains(&"lexigram_snapshots".to_owned())
        );
        db.migrate(None).await?;
        db.migrate(None).await?;
        assert!(
            tables(db.clone())
                .await?
                .contains(&"lexigram_snapshots".to_owned())
        );
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM lexigram_migrations ORDER BY version")
                .fetch_all(&db.pool)
                .await
                .map_err(|e| SqliteDialect::unavailable("test", e))?;
        assert_eq!(versions, [1, 2, 3, 4, 5]);
        Ok(())
    }

    #[test]
    fn config_validation_lists_every_problem() {
        let mut config = SqliteConfig::file("")
            .table_prefix("Bad;")
            .max_connections(0);
        config.busy_timeout = Duration::from_secs(1);
        assert_eq!(config.validate().len(), 3, "{:?}", config.validate());
        assert!(SqliteConfig::default().validate().is_empty());
    }
}
