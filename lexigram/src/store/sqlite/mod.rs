//! The SQLite event store: one file (or memory), one process, no server.
//!
//! Appends go through one writer at a time (an in-process async lock, then `BEGIN IMMEDIATE`
//! so other processes sharing the file wait on SQLite's `busy_timeout` instead of failing);
//! reads run concurrently on the pool's other connections thanks to WAL. The global position
//! is the events table's `INTEGER PRIMARY KEY AUTOINCREMENT` row id: writers are serialised,
//! so positions are handed out in commit order and a reader following
//! [`read_all`](EventStore::read_all) can never miss one. `AUTOINCREMENT` also means a
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

pub(crate) mod snapshot;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::store::sql::{self, EventRow, Migration, StoredSlot, to_i64, to_u64};
use crate::store::{
    AppendResult, EventStore, ExpectedVersion, Partition, StreamInfo, VersionRange, stream_hash,
};
use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{EventEnvelope, NewEvent, StreamId};
use crate::schema::SchemaRegistry;

const BACKEND: &str = "sqlite";

/// Where and how to open a SQLite database.
///
/// Serializes as `{ path, table_prefix, max_connections, busy_timeout }` (the timeout in
/// milliseconds); a missing `path` means an in-memory database. A missing key takes its
/// default (the same as [`SqliteConfig::default`]); an unknown key is an error, so a typo such
/// as `pathh` cannot silently give an in-memory database.
///
/// ```
/// use lexigram::store::SqliteConfig;
/// let config = SqliteConfig::file("bank.db").table_prefix("bank_");
/// assert!(config.validate().is_empty());
/// assert_eq!(SqliteConfig::in_memory().table_prefix("bad-prefix").validate().len(), 1);
/// assert!(serde_json::from_str::<SqliteConfig>(r#"{ "pathh": "bank.db" }"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file, created if missing; `None` for a private in-memory database.
    pub path: Option<PathBuf>,
    /// Prefix of every table name (`<prefix>events`, ...): lowercase letters, digits, `_`;
    /// may be empty. Default `lexigram_`.
    pub table_prefix: String,
    /// Connections in the pool (one writes at a time, the others read). Ignored in memory,
    /// where one connection holds the database. Default 4.
    pub max_connections: u32,
    /// How long a writer waits for another process's lock before failing. Default 5 s.
    #[serde(with = "sql::duration_ms")]
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: None,
            table_prefix: "lexigram_".into(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteConfig {
    /// A database in `path` (created if missing), in WAL mode.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// A private in-memory database: gone when the store is dropped or closed.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Sets the table prefix.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets the pool size.
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets how long a writer waits for a lock held by another process.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Every problem with this configuration (empty when it is usable).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        sql::check_identifier(
            "sqlite.table_prefix",
            &self.table_prefix,
            true,
            &mut problems,
        );
        if self.max_connections == 0 {
            problems.push("sqlite.max_connections must be at least 1".into());
        }
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            problems.push(
                "sqlite.path is empty: give a file name, or leave it out for an in-memory database"
                    .into(),
            );
        }
        problems.sort();
        problems
    }

    fn is_memory(&self) -> bool {
        self.path
            .as_ref()
            .is_none_or(|p| p.as_os_str() == ":memory:")
    }

    /// Opens the pool and brings the schema up to date, retrying within `busy_timeout` while
    /// the file is busy (another connection writing, or setting up the WAL).
    pub(crate) async fn open(&self) -> Result<SqliteDb> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        let deadline = tokio::time::Instant::now() + self.busy_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.open_once().await {
                Err(err) if is_busy(&err) && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %err, ?pause, "the SQLite file is busy; opening again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                outcome => return outcome,
            }
        }
    }

    async fn open_once(&self) -> Result<SqliteDb> {
        let (options, pool_options) = if self.is_memory() {
            let options = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| unavailable("opening an in-memory database", e))?;
            // One connection holds the in-memory database: never let it go idle or expire.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            (options, pool)
        } else {
            let path = self.path.clone().unwrap_or_default();
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new().max_connections(self.max_connections.max(1));
            (options, pool)
        };
        let options = options.busy_timeout(self.busy_timeout).foreign_keys(true);
        let pool = pool_options
            .acquire_timeout(self.busy_timeout.max(Duration::from_secs(5)))
            .connect_with(options)
            .await
            .map_err(|e| {
                let target = self.path.as_ref().map_or_else(
                    || "an in-memory database".to_owned(),
                    |p| format!("`{}`", p.display()),
                );
                unavailable(&format!("opening {target}"), e)
            })?;
        let db = SqliteDb {
            pool,
            sql: Arc::new(Statements::new(&self.table_prefix)),
            write: Arc::new(tokio::sync::Mutex::new(())),
            prefix: self.table_prefix.clone(),
        };
        if let Err(err) = db.migrate(None).await {
            db.pool.close().await;
            return Err(err);
        }
        Ok(db)
    }
}

/// Whether `err` is SQLite saying the file is busy or locked (worth another try).
fn is_busy(err: &Error) -> bool {
    matches!(err, Error::StoreConnection { source: Some(source), .. }
        if source.downcast_ref::<sqlx::Error>().is_some_and(sql::is_transient))
}

/// A pool with its migrated schema, shared by the event and snapshot stores.
#[derive(Clone)]
pub(crate) struct SqliteDb {
    pub(crate) pool: SqlitePool,
    pub(crate) sql: Arc<Statements>,
    /// One writer at a time in this process.
    pub(crate) write: Arc<tokio::sync::Mutex<()>>,
    prefix: String,
}

impl SqliteDb {
    /// Starts a write transaction: in-process lock first, then `BEGIN IMMEDIATE`.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(
        tokio::sync::MutexGuard<'_, ()>,
        Transaction<'static, Sqlite>,
    )> {
        let guard = self.write.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| unavailable("starting a write transaction", e))?;
        Ok((guard, tx))
    }

    /// The schema version recorded in the file (0 for a new file), read without a write lock.
    async fn schema_version(&self) -> Result<i64> {
        let p = &self.prefix;
        let table: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(format!("{p}migrations"))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| unavailable("reading the schema version", e))?;
        if table.is_none() {
            return Ok(0);
        }
        sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {p}migrations"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unavailable("reading the schema version", e))
    }

    /// Applies pending migrations, up to `target` (all when `None`). Re-running is a no-op,
    /// and a file already at the latest version is not locked for writing at all.
    pub(crate) async fn migrate(&self, target: Option<i64>) -> Result<()> {
        let latest = migrations(&self.prefix).last().map_or(0, |m| m.version);
        if self.schema_version().await? >= target.unwrap_or(latest) {
            return Ok(());
        }
        let (_guard, mut tx) = self.begin_write().await?;
        let p = &self.prefix;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {p}migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable("creating the migrations table", e))?;
        let current: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {p}migrations"
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unavailable("reading the schema version", e))?;
        for migration in migrations(p) {
            if migration.version <= current || target.is_some_and(|t| migration.version > t) {
                continue;
            }
            for statement in &migration.statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        unavailable(
                            &format!(
                                "migration {} ({}) of the `{p}` tables",
                                migration.version, migration.name
                            ),
                            e,
                        )
                    })?;
            }
            sqlx::query(&format!(
                "INSERT INTO {p}migrations (version, name, applied_at) VALUES (?1, ?2, ?3)"
            ))
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable("recording a migration", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| unavailable("committing migrations", e))
    }
}

/// The schema, one step per version. Never edit a released step: add a new one.
fn migrations(p: &str) -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            name: "events and streams",
            statements: vec![
                format!(
                    "CREATE TABLE {p}streams (
                        stream_id TEXT PRIMARY KEY NOT NULL,
                        version INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL
                    ) WITHOUT ROWID"
                ),
                format!(
                    "CREATE TABLE {p}events (
                        global_position INTEGER PRIMARY KEY AUTOINCREMENT,
                        stream_id TEXT NOT NULL,
                        stream_version INTEGER NOT NULL,
                        stream_hash INTEGER NOT NULL,
                        event_id TEXT NOT NULL UNIQUE,
                        event_type TEXT NOT NULL,
                        event_version INTEGER NOT NULL,
                        payload TEXT NOT NULL,
                        metadata TEXT NOT NULL,
                        recorded_at INTEGER NOT NULL,
                        UNIQUE (stream_id, stream_version)
                    )"
                ),
                format!(
                    "CREATE INDEX {p}events_by_type ON {p}events (event_type, global_position)"
                ),
            ],
        },
        Migration {
            version: 2,
            name: "snapshots",
            statements: vec![format!(
                "CREATE TABLE {p}snapshots (
                    aggregate_id TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    aggregate_type TEXT NOT NULL,
                    state TEXT NOT NULL,
                    schema_version INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (aggregate_id, version)
                ) WITHOUT ROWID"
            )],
        },
    ]
}

const COLUMNS: &str = "global_position, stream_id, stream_version, event_id, event_type, event_version, payload, metadata, recorded_at";

/// Every statement, with the table prefix spliced in once (it is a validated identifier).
#[derive(Debug)]
pub(crate) struct Statements {
    read: String,
    read_all: String,
    read_by_type: String,
    find_by_type: String,
    version: String,
    info: String,
    list: String,
    count_all: String,
    count_stream: String,
    last_position: String,
    delete_events: String,
    delete_stream: String,
    purge: String,
    find_id: String,
    slots: String,
    upsert_stream: String,
    insert: String,
    pub(crate) snapshot_save: String,
    pub(crate) snapshot_latest: String,
    pub(crate) snapshot_by_version: String,
    pub(crate) snapshot_delete_old: String,
    pub(crate) snapshot_delete_all: String,
}

impl Statements {
    fn new(p: &str) -> Self {
        let events = format!("{p}events");
        let select = format!("SELECT {COLUMNS} FROM {events}");
        let snap_cols = "aggregate_id, version, aggregate_type, state, schema_version, created_at";
        Self {
            read: format!(
                "{select} WHERE stream_id = ?1 AND stream_version >= ?2 AND stream_version <= ?3 ORDER BY stream_version LIMIT ?4"
            ),
            read_all: format!(
                "{select} WHERE global_position > ?1 AND (?2 = 0 OR stream_hash % ?2 = ?3) ORDER BY global_position LIMIT ?4"
            ),
            read_by_type: format!(
                "{select} WHERE event_type = ?1 AND global_position > ?2 ORDER BY global_position LIMIT ?3"
            ),
            find_by_type: format!(
                "{select} WHERE event_type = ?1 ORDER BY global_position LIMIT ?2 OFFSET ?3"
            ),
            version: format!("SELECT version FROM {p}streams WHERE stream_id = ?1"),
            info: format!(
                "SELECT s.version, s.created_at, s.updated_at, COUNT(e.global_position), MIN(e.global_position), MAX(e.global_position)
                 FROM {p}streams s LEFT JOIN {events} e ON e.stream_id = s.stream_id
                 WHERE s.stream_id = ?1 GROUP BY s.stream_id"
            ),
            list: format!(
                "SELECT stream_id FROM {p}streams WHERE ?1 IS NULL OR stream_id > ?1 ORDER BY stream_id LIMIT ?2"
            ),
            count_all: format!("SELECT COUNT(*) FROM {events}"),
            count_stream: format!("SELECT COUNT(*) FROM {events} WHERE stream_id = ?1"),
            last_position: format!(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{events}'), 0)"
            ),
            delete_events: format!("DELETE FROM {events} WHERE stream_id = ?1"),
            delete_stream: format!("DELETE FROM {p}streams WHERE stream_id = ?1"),
            purge: format!("DELETE FROM {events} WHERE stream_id = ?1 AND stream_version <= ?2"),
            find_id: format!("SELECT stream_id, stream_version FROM {events} WHERE event_id = ?1"),
            slots: format!(
                "SELECT stream_version, event_id, global_position, recorded_at FROM {events}
                 WHERE stream_id = ?1 AND stream_version > ?2 AND stream_version <= ?3"
            ),
            upsert_stream: format!(
                "INSERT INTO {p}streams (stream_id, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at"
            ),
            insert: format!(
                "INSERT INTO {events} (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            snapshot_save: format!(
                "INSERT INTO {p}snapshots ({snap_cols}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (aggregate_id, version) DO UPDATE SET aggregate_type = excluded.aggregate_type,
                 state = excluded.state, schema_version = excluded.schema_version, created_at = excluded.created_at"
            ),
            snapshot_latest: format!(
                "SELECT {snap_cols} FROM {p}snapshots WHERE aggregate_id = ?1 ORDER BY version DESC LIMIT 1"
            ),
            snapshot_by_version: format!(
                "SELECT {snap_cols} FROM {p}snapshots WHERE aggregate_id = ?1 AND version = ?2"
            ),
            snapshot_delete_old: format!(
                "DELETE FROM {p}snapshots WHERE aggregate_id = ?1 AND version NOT IN
                 (SELECT version FROM {p}snapshots WHERE aggregate_id = ?1 ORDER BY version DESC LIMIT ?2)"
            ),
            snapshot_delete_all: format!("DELETE FROM {p}snapshots WHERE aggregate_id = ?1"),
        }
    }
}

/// An [`EventStore`] in a SQLite database. Clones share the pool.
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
    db: SqliteDb,
    closed: Arc<AtomicBool>,
    schema: Option<Arc<SchemaRegistry>>,
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("table_prefix", &self.db.prefix)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    ///
    /// Fails with [`Error::Config`] for an invalid configuration, or
    /// [`Error::StoreConnection`] when the file cannot be opened or migrated.
    pub async fn connect(config: &SqliteConfig) -> Result<Self> {
        let db = config.open().await?;
        Ok(Self {
            db,
            closed: Arc::new(AtomicBool::new(false)),
            schema: None,
        })
    }

    /// Upcasts old events with `schema` on every read.
    #[must_use]
    pub fn with_schema(mut self, schema: Arc<SchemaRegistry>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// A snapshot store in the same database, sharing this store's connections.
    pub fn snapshot_store(&self) -> crate::snapshot::SqliteSnapshotStore {
        crate::snapshot::SqliteSnapshotStore::from_db(self.db.clone(), false)
    }

    /// The connection pool, for queries of your own (projections in the same file).
    pub fn pool(&self) -> &SqlitePool {
        &self.db.pool
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    fn upcast(&self, envelopes: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
        match &self.schema {
            Some(schema) => schema.upcast_read(envelopes),
            None => envelopes,
        }
    }

    async fn fetch_events<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        what: &str,
    ) -> Result<Vec<EventEnvelope>> {
        self.check_open()?;
        let rows = query
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| unavailable(what, e))?;
        let mut names = sql::Interner::default();
        let envelopes = rows
            .iter()
            .map(|row| event_row(row, &mut names).map(EventRow::into_envelope))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.upcast(envelopes))
    }

    async fn stream_version(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        stream: &str,
    ) -> Result<u64> {
        let version: Option<i64> = sqlx::query_scalar(&self.db.sql.version)
            .bind(stream)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| unavailable(&format!("reading the version of stream `{stream}`"), e))?;
        Ok(version.map_or(0, to_u64))
    }

    /// If the first event's id is stored, the result of the original append (or an error when
    /// this is not an exact retry).
    async fn previous_append(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
    ) -> Result<Option<AppendResult>> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let found: Option<(String, i64)> = sqlx::query_as(&self.db.sql.find_id)
            .bind(first.event_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| unavailable("looking up an event id", e))?;
        let Some((first_stream, first_version)) = found else {
            return Ok(None);
        };
        let Some((start, end)) = crate::store::retry_span(expected, to_u64(first_version), events.len())
        else {
            return Err(crate::store::not_a_retry(
                stream,
                first.event_id,
                &first_stream,
                to_u64(first_version),
            ));
        };
        let rows = sqlx::query(&self.db.sql.slots)
            .bind(stream)
            .bind(to_i64(start))
            .bind(to_i64(end))
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| unavailable("reading stored events for a retry", e))?;
        // A damaged slot reads as a stand-in that matches no event, so the append is then
        // refused as "not an exact retry" rather than failing on the row.
        let mut ignored = Vec::new();
        let stored: Vec<StoredSlot> = rows
            .iter()
            .map(|row| StoredSlot {
                version: to_u64(integer(row, 0, "stream_version", &mut ignored)),
                event_id: sql::parse_event_id(text(row, 1, "event_id", &mut ignored), &mut ignored),
                position: to_u64(integer(row, 2, "global_position", &mut ignored)),
                recorded_at: from_micros(integer(row, 3, "recorded_at", &mut ignored)),
            })
            .collect();
        sql::retry_result(
            stream,
            events,
            start,
            &first_stream,
            to_u64(first_version),
            &stored,
        )
        .map(Some)
    }
}

/// Reads one event row (columns in [`COLUMNS`] order).
///
/// SQLite lets any column hold any type, so a row written behind the store's back may hold a
/// blob where text belongs: each such column is reported as a defect of the row (and read
/// the way SQLite converts it, or as a stand-in), never as a failed read.
fn event_row<'r>(row: &'r SqliteRow, names: &mut sql::Interner) -> Result<EventRow<'r>> {
    let mut defects = Vec::new();
    let global_position: i64 = row
        .try_get(0)
        .map_err(|e| unavailable("decoding an event row", e))?;
    let stream_id = text(row, 1, "stream_id", &mut defects);
    let stream_version = integer(row, 2, "stream_version", &mut defects);
    let event_id = sql::parse_event_id(text(row, 3, "event_id", &mut defects), &mut defects);
    let event_type = text(row, 4, "event_type", &mut defects);
    let event_version = integer(row, 5, "event_version", &mut defects);
    let payload = text(row, 6, "payload", &mut defects);
    let metadata = text(row, 7, "metadata", &mut defects);
    let micros = integer(row, 8, "recorded_at", &mut defects);
    let recorded_at = DateTime::from_timestamp_micros(micros).unwrap_or_else(|| {
        defects.push(format!("`recorded_at` {micros} is out of range"));
        DateTime::default()
    });
    Ok(EventRow {
        global_position,
        stream_id: names.stream(stream_id),
        stream_version,
        event_id,
        event_type: names.event_type(event_type),
        event_version,
        payload,
        metadata,
        recorded_at,
        defects,
    })
}

/// A text column, or (when it holds another type) SQLite's conversion of it and a defect.
fn text<'r>(row: &'r SqliteRow, index: usize, column: &str, defects: &mut Vec<String>) -> &'r str {
    row.try_get(index).unwrap_or_else(|err| {
        defects.push(format!("`{column}` is not text ({err})"));
        row.try_get_unchecked(index).unwrap_or_default()
    })
}

/// An integer column, or (when it holds another type) 0 and a defect.
fn integer(row: &SqliteRow, index: usize, column: &str, defects: &mut Vec<String>) -> i64 {
    row.try_get(index).unwrap_or_else(|err| {
        defects.push(format!("`{column}` is not an integer ({err})"));
        0
    })
}

/// Microseconds since the epoch, as stored.
pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Now, at the microsecond precision the store keeps.
pub(crate) fn now_micros() -> (DateTime<Utc>, i64) {
    let micros = Utc::now().timestamp_micros();
    (from_micros(micros), micros)
}

pub(crate) fn unavailable(what: &str, err: sqlx::Error) -> Error {
    if matches!(err, sqlx::Error::PoolClosed) {
        return closed();
    }
    Error::StoreConnection {
        backend: BACKEND,
        reason: format!(
            "{what} failed ({err}); check that the database file exists, is writable, and is not locked by another program for longer than `busy_timeout`"
        ),
        source: Some(Box::new(err)),
    }
}

pub(crate) fn closed() -> Error {
    Error::StoreClosed { backend: BACKEND }
}

fn is_unique_violation(err: &sqlx::Error, column: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation && db.message().contains(column)
        }
        _ => false,
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(
        name = "lexigram.append",
        level = "debug",
        skip_all,
        fields(backend = "sqlite", stream = stream, events = events.len(), expected = %expected)
    )]
    async fn append(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        sql::check_batch(stream, &events)?;
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            metadata.push(sql::metadata_text(stream, event)?);
        }
        let (_guard, mut tx) = self.db.begin_write().await?;
        if let Some(previous) = self
            .previous_append(&mut tx, stream, &events, expected)
            .await?
        {
            return Ok(previous);
        }
        let actual = self.stream_version(&mut tx, stream).await?;
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
        sqlx::query(&self.db.sql.upsert_stream)
            .bind(stream)
            .bind(to_i64(version))
            .bind(now_micros)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&format!("updating stream `{stream}`"), e))?;
        let hash = i64::from(stream_hash(stream));
        let mut positions = Vec::with_capacity(events.len());
        for ((event, metadata), stream_version) in events.iter().zip(metadata).zip(actual + 1..) {
            let done = sqlx::query(&self.db.sql.insert)
                .bind(stream)
                .bind(to_i64(stream_version))
                .bind(hash)
                .bind(event.event_id.to_string())
                .bind(&*event.event_type)
                .bind(i64::from(event.event_version))
                .bind(event.payload.as_str())
                .bind(metadata)
                .bind(now_micros)
                .execute(&mut *tx)
                .await
                .map_err(|err| {
                    if is_unique_violation(&err, "event_id") {
                        sql::duplicate_id(stream, event.event_id, Some(Box::new(err)))
                    } else if sql::is_transient(&err) {
                        unavailable(&format!("appending to stream `{stream}`"), err)
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
        tx.commit().await.map_err(|err| {
            if sql::is_transient(&err) {
                unavailable(&format!("committing an append to stream `{stream}`"), err)
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

    #[tracing::instrument(name = "lexigram.read", level = "debug", skip_all, fields(backend = "sqlite", stream = stream, from = range.from))]
    async fn read(&self, stream: &str, range: VersionRange) -> Result<Vec<EventEnvelope>> {
        crate::store::check_stream_id(stream)?;
        if range.is_empty() {
            self.check_open()?;
            return Ok(Vec::new());
        }
        let query = sqlx::query(&self.db.sql.read)
            .bind(stream)
            .bind(to_i64(range.start()))
            .bind(to_i64(range.to.unwrap_or(u64::MAX)))
            .bind(range.limit.map_or(-1, sql::limit_i64));
        self.fetch_events(query, &format!("reading stream `{stream}`"))
            .await
    }

    async fn version(&self, stream: &str) -> Result<u64> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let version: Option<i64> = sqlx::query_scalar(&self.db.sql.version)
            .bind(stream)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("reading the version of stream `{stream}`"), e))?;
        Ok(version.map_or(0, to_u64))
    }

    async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let row: Option<(i64, i64, i64, i64, Option<i64>, Option<i64>)> =
            sqlx::query_as(&self.db.sql.info)
                .bind(stream)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(|e| unavailable(&format!("reading stream `{stream}`"), e))?;
        Ok(row.map(|(version, created, updated, count, first, last)| {
            StreamInfo::new(
                StreamId::from(stream),
                to_u64(version),
                to_u64(count),
                first.map(to_u64),
                last.map(to_u64),
                from_micros(created),
                from_micros(updated),
            )
        }))
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<StreamId>> {
        self.check_open()?;
        let ids: Vec<String> = sqlx::query_scalar(&self.db.sql.list)
            .bind(after)
            .bind(sql::limit_i64(limit))
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| unavailable("listing streams", e))?;
        Ok(ids.into_iter().map(StreamId::from).collect())
    }

    async fn count(&self, stream: Option<&str>) -> Result<u64> {
        self.check_open()?;
        let query = match stream {
            None => sqlx::query_scalar(&self.db.sql.count_all),
            Some(stream) => sqlx::query_scalar(&self.db.sql.count_stream).bind(stream),
        };
        let count: i64 = query
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| unavailable("counting events", e))?;
        Ok(to_u64(count))
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
        partition: Option<Partition>,
    ) -> Result<Vec<EventEnvelope>> {
        let (index, total) = partition.map_or((0, 0), |p| (p.index(), p.total()));
        let query = sqlx::query(&self.db.sql.read_all)
            .bind(to_i64(after))
            .bind(i64::from(total))
            .bind(i64::from(index))
            .bind(sql::limit_i64(limit));
        self.fetch_events(query, "reading the global log").await
    }

    async fn read_by_type(
        &self,
        event_type: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let query = sqlx::query(&self.db.sql.read_by_type)
            .bind(event_type)
            .bind(to_i64(after))
            .bind(sql::limit_i64(limit));
        self.fetch_events(query, &format!("reading events of type `{event_type}`"))
            .await
    }

    async fn find_by_type(
        &self,
        event_type: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let query = sqlx::query(&self.db.sql.find_by_type)
            .bind(event_type)
            .bind(sql::limit_i64(limit))
            .bind(sql::limit_i64(offset));
        self.fetch_events(query, &format!("finding events of type `{event_type}`"))
            .await
    }

    async fn last_position(&self) -> Result<u64> {
        self.check_open()?;
        let last: i64 = sqlx::query_scalar(&self.db.sql.last_position)
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| unavailable("reading the last position", e))?;
        Ok(to_u64(last))
    }

    async fn delete_stream(&self, stream: &str) -> Result<bool> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let what = format!("deleting stream `{stream}`");
        let (_guard, mut tx) = self.db.begin_write().await?;
        // Events, then the aggregate's snapshots, then the stream, in one transaction: a
        // stream created again under this id starts from nothing.
        for statement in [&self.db.sql.delete_events, &self.db.sql.snapshot_delete_all] {
            sqlx::query(statement)
                .bind(stream)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(&what, e))?;
        }
        let gone = sqlx::query(&self.db.sql.delete_stream)
            .bind(stream)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?
            .rows_affected();
        tx.commit().await.map_err(|e| unavailable(&what, e))?;
        Ok(gone > 0)
    }

    async fn purge(&self, stream: &str, up_to_version: u64) -> Result<u64> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let what = format!("purging stream `{stream}`");
        let (_guard, mut tx) = self.db.begin_write().await?;
        let removed = sqlx::query(&self.db.sql.purge)
            .bind(stream)
            .bind(to_i64(up_to_version))
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?
            .rows_affected();
        tx.commit().await.map_err(|e| unavailable(&what, e))?;
        Ok(removed)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.db.pool.close().await;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        sqlx::query("SELECT 1")
            .execute(&self.db.pool)
            .await
            .map(drop)
            .map_err(|e| unavailable("ping", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_older_schema_is_upgraded_and_rerunning_is_a_no_op() -> Result<()> {
        let config = SqliteConfig::in_memory();
        let db = SqliteDb {
            pool: SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect("sqlite::memory:")
                .await
                .map_err(|e| unavailable("test", e))?,
            sql: Arc::new(Statements::new(&config.table_prefix)),
            write: Arc::default(),
            prefix: config.table_prefix.clone(),
        };
        db.migrate(Some(1)).await?;
        let tables = |db: SqliteDb| async move {
            sqlx::query_scalar::<_, String>(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'lexigram_%' ORDER BY name",
            )
            .fetch_all(&db.pool)
            .await
            .map_err(|e| unavailable("test", e))
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
                .map_err(|e| unavailable("test", e))?;
        assert_eq!(versions, [1, 2]);
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
