//! The PostgreSQL event store: many processes, one log, a global order that never skips.
//!
//! # How an append works
//!
//! [`append`](EventStore::append) is one call of a server-side function (created by the
//! migrations), so any number of events costs one round trip, and the function runs as one
//! transaction: all events or none, even if the connection dies half-way. Inside it:
//!
//! 1. an empty append only checks the expected version;
//! 2. global positions are taken from a sequence **in transaction-id order** (see below);
//! 3. the stream's row in `<prefix>streams` is claimed with a conditional update that checks
//!    the expected version and serialises writers of the same stream; a stale writer gets a
//!    [`ConcurrencyError`] and writes nothing (its positions stay unused, which is allowed), as
//!    does any unique-key race — never a raw driver error;
//! 4. the events are inserted with one `INSERT ... SELECT` over the argument arrays.
//!
//! A retry is recognised by the client when the append conflicts or hits the unique key on
//! event ids: if every event is stored where this append would have put it, the original
//! [`AppendResult`] comes back and nothing is written.
//!
//! # Wake-ups
//!
//! After appends commit, a background task of the store sends one `pg_notify` on
//! [`PostgresEventStore::channel`] for all the appends that finished while the previous
//! notification was in flight (at most one per append, never a trigger per row).
//! [`PostgresEventStore::listen`] receives them. The notification is sent from its own short
//! transaction on purpose: PostgreSQL holds its notification-queue lock from `NOTIFY` until
//! commit, so notifying inside the append would serialise the commits of all writers.
//!
//! # Global order
//!
//! Each row stores the id of the transaction that wrote it (`xact_id xid8`). Positions are
//! handed out inside a short critical section that also assigns the transaction id, so a
//! transaction with a lower id always holds lower positions. Readers of the global log
//! ([`read_all`](EventStore::read_all), [`read_by_type`](EventStore::read_by_type),
//! [`find_by_type`](EventStore::find_by_type), [`last_position`](EventStore::last_position))
//! return only rows whose transaction id is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`). Every transaction below that line has
//! finished, and every transaction that may still commit holds higher positions than any
//! row returned, so a reader that continues after the last position it saw never misses an
//! event and never needs a timeout. The proof, and what it costs (a long-running transaction
//! anywhere in the cluster delays readers; it never reorders them), is in
//! `docs/postgres-ordering.md`. [`PostgresConfig::strict_ordering`] serialises writers
//! completely instead, so positions also follow commit order.
//!
//! # Examples
//!
//! ```no_run
//! use lexigram::config::Secret;
//! use lexigram::message::{MessageMetadata, NewEvent, Payload};
//! use lexigram::store::{EventStore, ExpectedVersion, PostgresConfig, PostgresEventStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let config = PostgresConfig::new(Secret::new("postgres://app@localhost/app"))
//!     .schema("bank")
//!     .max_connections(20);
//! let store = PostgresEventStore::connect(&config).await?;
//! let mut wakeups = store.listen().await?;
//!
//! let event = NewEvent::new("bank.Deposited", 1, Payload::from_json_text("5"), MessageMetadata::new());
//! store.append("acc-1", vec![event], ExpectedVersion::Any).await?;
//!
//! let up_to = wakeups.next().await?; // a new event is readable, up to this position
//! let events = store.read_all(0, 100, None).await?;
//! # let _ = (up_to, events);
//! # Ok(()) }
//! ```

pub(crate) mod snapshot;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::watch;
use uuid::Uuid;

use crate::store::sql::{self, EventRow, Migration, StoredSlot, to_i64, to_u64};
use crate::store::{
    AppendResult, EventStore, ExpectedVersion, Partition, StreamInfo, VersionRange, stream_hash,
};
use crate::config::Secret;
use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{EventEnvelope, EventId, NewEvent, StreamId};
use crate::schema::SchemaRegistry;

const BACKEND: &str = "postgres";

/// The first key of every advisory lock lexigram takes (`lxg1`); the second names the tables.
const LOCK_CLASS: i32 = 0x6c78_6731;

/// How to reach PostgreSQL and where to keep the tables.
///
/// The DSN is a [`Secret`]: `Debug` never shows it, and it serializes as `***` (set it from
/// [`Secret::expose`] where a file must hold it). Durations serialize as milliseconds. A
/// missing key takes its default (the same as [`PostgresConfig::default`]); an unknown key is
/// an error.
///
/// ```
/// use std::time::Duration;
/// use lexigram::config::Secret;
/// use lexigram::store::PostgresConfig;
///
/// let config = PostgresConfig::new(Secret::new("postgres://app:hunter2@db/app"))
///     .schema("orders")
///     .table_prefix("es_")
///     .max_connections(16)
///     .acquire_timeout(Duration::from_secs(5));
/// assert!(config.validate().is_empty());
/// assert!(!format!("{config:?}").contains("hunter2"));
/// assert_eq!(PostgresConfig::default().validate().len(), 1); // no DSN
/// assert!(!serde_json::to_string(&config)?.contains("hunter2"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?options`.
    pub dsn: Secret,
    /// The schema holding the tables (created if missing). Default `public`.
    pub schema: String,
    /// Prefix of every table name; may be empty. Default `lexigram_`.
    pub table_prefix: String,
    /// Connections kept open even when idle. Default 0.
    pub min_connections: u32,
    /// Most connections open at once. Default 10.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing. Default 30 s.
    #[serde(with = "sql::duration_ms")]
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` close after this long. Default 10 min.
    #[serde(with = "sql::option_duration_ms")]
    pub idle_timeout: Option<Duration>,
    /// Serialises writers (a transaction-level advisory lock held until commit), so positions
    /// also follow commit order. Correct either way; slower under concurrent writers.
    /// Default `false`.
    pub strict_ordering: bool,
    /// Sends wake-ups for [`PostgresEventStore::listen`] after appends (coalesced, from a
    /// background task). Default `true`.
    pub notify: bool,
    /// Pings a pooled connection before every use. Off by default: the ping is a round trip
    /// of its own, so with it an append costs two round trips instead of one. Without it, a
    /// connection the server dropped while it sat idle fails the one call that uses it (an
    /// append then fails atomically, and retrying it is safe) and is discarded. Default
    /// `false`.
    pub test_before_acquire: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            dsn: Secret::default(),
            schema: "public".into(),
            table_prefix: "lexigram_".into(),
            min_connections: 0,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            strict_ordering: false,
            notify: true,
            test_before_acquire: false,
        }
    }
}

impl PostgresConfig {
    /// The defaults, with this DSN.
    pub fn new(dsn: impl Into<Secret>) -> Self {
        Self {
            dsn: dsn.into(),
            ..Self::default()
        }
    }

    /// Sets the schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the table prefix.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets the least number of open connections.
    #[must_use]
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// Sets the most connections open at once.
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets how long a call waits for a connection.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets when idle connections close (`None`: never).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Serialises writers; see [`strict_ordering`](Self::strict_ordering).
    #[must_use]
    pub fn strict_ordering(mut self, strict: bool) -> Self {
        self.strict_ordering = strict;
        self
    }

    /// Pings connections before use; see [`test_before_acquire`](Self::test_before_acquire).
    #[must_use]
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = test;
        self
    }

    /// Turns the per-append notification on or off.
    #[must_use]
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// The LISTEN/NOTIFY channel appends signal on: `<schema>_<prefix>events`.
    pub fn channel(&self) -> String {
        format!("{}_{}events", self.schema, self.table_prefix)
    }

    /// Every problem with this configuration (empty when it is usable), sorted.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let dsn = self.dsn.expose();
        if dsn.is_empty() {
            problems.push(
                "postgres.dsn is empty: set it to `postgres://user:password@host:port/database`"
                    .into(),
            );
        } else if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
            problems.push(
                "postgres.dsn must start with `postgres://` or `postgresql://` (the value is not shown: it is a secret)"
                    .into(),
            );
        }
        sql::check_identifier("postgres.schema", &self.schema, false, &mut problems);
        sql::check_identifier(
            "postgres.table_prefix",
            &self.table_prefix,
            true,
            &mut problems,
        );
        if self.channel().len() > 63 {
            problems.push(format!(
                "postgres.schema and postgres.table_prefix together are too long: the notification channel `{}` must fit in 63 bytes",
                self.channel()
            ));
        }
        if self.max_connections == 0 {
            problems.push("postgres.max_connections must be at least 1".into());
        }
        if self.min_connections > self.max_connections {
            problems.push(format!(
                "postgres.min_connections ({}) is above postgres.max_connections ({})",
                self.min_connections, self.max_connections
            ));
        }
        if self.acquire_timeout.is_zero() {
            problems.push("postgres.acquire_timeout must be above zero".into());
        }
        problems.sort();
        problems
    }

    /// Connects a pool and brings the schema up to date.
    pub(crate) async fn open(&self) -> Result<PgDb> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        let options: PgConnectOptions = self.dsn.expose().parse().map_err(|e| Error::Config {
            problems: vec![format!("postgres.dsn does not parse: {e}")],
        })?;
        let pool = PgPoolOptions::new()
            .min_connections(self.min_connections)
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .test_before_acquire(self.test_before_acquire)
            .connect_with(options)
            .await
            .map_err(|e| unavailable("connecting", e))?;
        let db = PgDb {
            pool,
            names: Arc::new(Names::new(self)),
            strict: self.strict_ordering,
        };
        db.migrate(None).await?;
        Ok(db)
    }
}

/// Table names, lock keys and statements for one schema and prefix.
#[derive(Debug)]
pub(crate) struct Names {
    schema: String,
    prefix: String,
    channel: String,
    lock_key: i32,
    pub(crate) append: String,
    read: String,
    read_all: String,
    read_partition: String,
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
    pub(crate) snapshot_save: String,
    pub(crate) snapshot_latest: String,
    pub(crate) snapshot_by_version: String,
    pub(crate) snapshot_delete_old: String,
    pub(crate) snapshot_delete_all: String,
}

const COLUMNS: &str = "global_position, stream_id, stream_version, event_id, event_type, event_version, payload, metadata, recorded_at";

/// Rows every transaction below this line has finished writing: see the module docs.
const SETTLED: &str = "xact_id < pg_snapshot_xmin(pg_current_snapshot())";

impl Names {
    fn new(config: &PostgresConfig) -> Self {
        let (s, p) = (&config.schema, &config.table_prefix);
        let events = format!("{s}.{p}events");
        let streams = format!("{s}.{p}streams");
        let snapshots = format!("{s}.{p}snapshots");
        let select = format!("SELECT {COLUMNS} FROM {events}");
        let snap_cols = "aggregate_id, version, aggregate_type, state, schema_version, created_at";
        let lock_key = i32::from_ne_bytes(stream_hash(&format!("{s}.{p}")).to_ne_bytes());
        Self {
            schema: s.clone(),
            prefix: p.clone(),
            channel: config.channel(),
            lock_key,
            append: format!(
                "SELECT o_status, o_version, o_positions, o_recorded_at FROM {s}.{p}append($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            read: format!(
                "{select} WHERE stream_id = $1 AND stream_version >= $2 AND stream_version <= $3 ORDER BY stream_version LIMIT $4"
            ),
            read_all: format!(
                "{select} WHERE global_position > $1 AND {SETTLED} ORDER BY global_position LIMIT $2"
            ),
            read_partition: format!(
                "{select} WHERE global_position > $1 AND {SETTLED} AND stream_hash % $3 = $4 ORDER BY global_position LIMIT $2"
            ),
            read_by_type: format!(
                "{select} WHERE event_type = $1 AND global_position > $2 AND {SETTLED} ORDER BY global_position LIMIT $3"
            ),
            find_by_type: format!(
                "{select} WHERE event_type = $1 AND {SETTLED} ORDER BY global_position LIMIT $2 OFFSET $3"
            ),
            version: format!("SELECT version FROM {streams} WHERE stream_id = $1"),
            info: format!(
                "SELECT s.version, s.created_at, s.updated_at, COUNT(e.global_position), MIN(e.global_position), MAX(e.global_position)
                 FROM {streams} s LEFT JOIN {events} e ON e.stream_id = s.stream_id
                 WHERE s.stream_id = $1 GROUP BY s.stream_id, s.version, s.created_at, s.updated_at"
            ),
            list: format!(
                "SELECT stream_id FROM {streams} WHERE $1::text IS NULL OR stream_id > $1 ORDER BY stream_id LIMIT $2"
            ),
            count_all: format!("SELECT COUNT(*) FROM {events}"),
            count_stream: format!("SELECT COUNT(*) FROM {events} WHERE stream_id = $1"),
            last_position: format!(
                "SELECT COALESCE(MAX(global_position), 0) FROM {events} WHERE {SETTLED}"
            ),
            delete_events: format!("DELETE FROM {events} WHERE stream_id = $1"),
            delete_stream: format!("DELETE FROM {streams} WHERE stream_id = $1"),
            purge: format!("DELETE FROM {events} WHERE stream_id = $1 AND stream_version <= $2"),
            find_id: format!("SELECT stream_id, stream_version FROM {events} WHERE event_id = $1"),
            slots: format!(
                "SELECT stream_version, event_id, global_position, recorded_at FROM {events}
                 WHERE stream_id = $1 AND stream_version > $2 AND stream_version <= $3"
            ),
            snapshot_save: format!(
                "INSERT INTO {snapshots} ({snap_cols}) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (aggregate_id, version) DO UPDATE SET aggregate_type = excluded.aggregate_type,
                 state = excluded.state, schema_version = excluded.schema_version, created_at = excluded.created_at"
            ),
            snapshot_latest: format!(
                "SELECT {snap_cols} FROM {snapshots} WHERE aggregate_id = $1 ORDER BY version DESC LIMIT 1"
            ),
            snapshot_by_version: format!(
                "SELECT {snap_cols} FROM {snapshots} WHERE aggregate_id = $1 AND version = $2"
            ),
            snapshot_delete_old: format!(
                "DELETE FROM {snapshots} WHERE aggregate_id = $1 AND version NOT IN
                 (SELECT version FROM {snapshots} WHERE aggregate_id = $1 ORDER BY version DESC LIMIT $2)"
            ),
            snapshot_delete_all: format!("DELETE FROM {snapshots} WHERE aggregate_id = $1"),
        }
    }
}

/// The schema, one step per version. Never edit a released step: add a new one.
fn migrations(names: &Names) -> Vec<Migration> {
    let (s, p, key) = (&names.schema, &names.prefix, names.lock_key);
    let events = format!("{s}.{p}events");
    let streams = format!("{s}.{p}streams");
    let seq = format!("{s}.{p}positions");
    vec![
        Migration {
            version: 1,
            name: "events, streams and the append function",
            statements: vec![
                // CACHE 1 (the default) matters: a cached block per session would break the
                // order of positions against transaction ids.
                format!("CREATE SEQUENCE {seq} AS bigint MINVALUE 1 CACHE 1"),
                format!(
                    "CREATE TABLE {streams} (
                        stream_id text PRIMARY KEY,
                        version bigint NOT NULL,
                        created_at timestamptz NOT NULL,
                        updated_at timestamptz NOT NULL
                    )"
                ),
                format!(
                    "CREATE TABLE {events} (
                        global_position bigint PRIMARY KEY,
                        stream_id text NOT NULL,
                        stream_version bigint NOT NULL,
                        stream_hash bigint NOT NULL,
                        event_id uuid NOT NULL,
                        event_type text NOT NULL,
                        event_version integer NOT NULL,
                        payload text NOT NULL,
                        metadata text NOT NULL,
                        recorded_at timestamptz NOT NULL,
                        xact_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
                        CONSTRAINT {p}events_event_id_key UNIQUE (event_id),
                        CONSTRAINT {p}events_stream_version_key UNIQUE (stream_id, stream_version)
                    )"
                ),
                format!("CREATE INDEX {p}events_by_type ON {events} (event_type, global_position)"),
                append_function(s, p, &events, &streams, &seq, key),
            ],
        },
        Migration {
            version: 2,
            name: "snapshots",
            statements: vec![format!(
                "CREATE TABLE {s}.{p}snapshots (
                    aggregate_id text NOT NULL,
                    version bigint NOT NULL,
                    aggregate_type text NOT NULL,
                    state text NOT NULL,
                    schema_version integer NOT NULL,
                    created_at timestamptz NOT NULL,
                    PRIMARY KEY (aggregate_id, version)
                )"
            )],
        },
    ]
}

/// The server-side append: one round trip, one transaction. See the module docs for the steps
/// and `docs/postgres-ordering.md` for why positions are taken the way they are.
///
/// PL/pgSQL runs a statement that reads no table as a "simple expression" (no executor
/// start-up) and every other statement through the executor, which on a small server costs
/// tens of microseconds each. So a one-event append (the common case) takes its position with
/// `ARRAY[nextval(..)]` instead of `ARRAY(SELECT .. FROM generate_series(..))`, and inserts
/// with `VALUES` instead of `INSERT .. SELECT .. FROM generate_series(..)`; larger appends keep
/// the set-based statements.
fn append_function(s: &str, p: &str, events: &str, streams: &str, seq: &str, key: i32) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION {s}.{p}append(
    p_stream text, p_hash bigint, p_expected bigint,
    p_ids uuid[], p_types text[], p_versions integer[], p_payloads text[], p_metadata text[],
    p_strict boolean,
    OUT o_status integer, OUT o_version bigint, OUT o_positions bigint[], OUT o_recorded_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
BEGIN
    o_recorded_at := now();
    -- 1. An empty append only checks the version. (A non-empty one checks it in step 3, where
    --    it also claims it; a stale writer then leaves a hole in the positions, which is fine.
    --    Retries are recognised by the client: on a conflict, or on the event-id key.)
    IF n = 0 THEN
        SELECT st.version INTO o_version FROM {streams} st WHERE st.stream_id = p_stream;
        o_version := coalesce(o_version, 0);
        o_status := CASE WHEN p_expected >= 0 AND o_version <> p_expected THEN 1 ELSE 0 END;
        o_positions := '{{}}';
        RETURN;
    END IF;
    -- 2. Positions in transaction-id order: the transaction id is assigned in the same
    --    critical section that takes the positions. (For one event every statement of the
    --    section is a simple expression: no executor run while the lock is held.)
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'a lexigram append must be the first write of its transaction'
            USING ERRCODE = 'LXG01';
    END IF;
    IF p_strict THEN
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {key});
        PERFORM pg_current_xact_id();
        IF n = 1 THEN
            o_positions := ARRAY[nextval('{seq}')];
        ELSE
            o_positions := ARRAY(SELECT nextval('{seq}') FROM generate_series(1, n));
        END IF;
    ELSE
        BEGIN
            PERFORM pg_advisory_lock({LOCK_CLASS}, {key});
            PERFORM pg_current_xact_id();
            IF n = 1 THEN
                o_positions := ARRAY[nextval('{seq}')];
            ELSE
                o_positions := ARRAY(SELECT nextval('{seq}') FROM generate_series(1, n));
            END IF;
            PERFORM pg_advisory_unlock({LOCK_CLASS}, {key});
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            PERFORM pg_advisory_unlock({LOCK_CLASS}, {key});
            RAISE;
        END;
    END IF;
    -- 3. Claim the versions; the stream's row lock orders the writers of one stream.
    IF p_expected < 0 THEN
        INSERT INTO {streams} AS st (stream_id, version, created_at, updated_at)
        VALUES (p_stream, n, o_recorded_at, o_recorded_at)
        ON CONFLICT (stream_id) DO UPDATE SET version = st.version + n, updated_at = o_recorded_at
        RETURNING st.version INTO o_version;
    ELSIF p_expected = 0 THEN
        INSERT INTO {streams} AS st (stream_id, version, created_at, updated_at)
        VALUES (p_stream, n, o_recorded_at, o_recorded_at)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING st.version INTO o_version;
    ELSE
        UPDATE {streams} AS st SET version = st.version + n, updated_at = o_recorded_at
        WHERE st.stream_id = p_stream AND st.version = p_expected
        RETURNING st.version INTO o_version;
    END IF;
    IF NOT FOUND THEN
        SELECT st.version INTO o_version FROM {streams} st WHERE st.stream_id = p_stream;
        o_version := coalesce(o_version, 0);
        o_positions := NULL;
        o_status := 1;
        RETURN;
    END IF;
    -- 4. The events, in one statement.
    IF n = 1 THEN
        INSERT INTO {events} (global_position, stream_id, stream_version, stream_hash, event_id,
                              event_type, event_version, payload, metadata, recorded_at)
        VALUES (o_positions[1], p_stream, o_version, p_hash, p_ids[1],
                p_types[1], p_versions[1], p_payloads[1], p_metadata[1], o_recorded_at);
    ELSE
        INSERT INTO {events} (global_position, stream_id, stream_version, stream_hash, event_id,
                              event_type, event_version, payload, metadata, recorded_at)
        SELECT o_positions[i], p_stream, o_version - n + i, p_hash, p_ids[i],
               p_types[i], p_versions[i], p_payloads[i], p_metadata[i], o_recorded_at
        FROM generate_series(1, n) AS g(i);
    END IF;
    o_status := 0;
END
$fn$"#
    )
}

/// A pool with its migrated schema, shared by the event and snapshot stores.
#[derive(Clone)]
pub(crate) struct PgDb {
    pub(crate) pool: PgPool,
    pub(crate) names: Arc<Names>,
    strict: bool,
}

impl PgDb {
    /// Applies pending migrations up to `target` (all when `None`), under an advisory lock so
    /// processes starting together do not race. Re-running is a no-op.
    pub(crate) async fn migrate(&self, target: Option<i64>) -> Result<()> {
        let (s, p) = (&self.names.schema, &self.names.prefix);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| unavailable("starting the migration transaction", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS + 1)
            .bind(self.names.lock_key)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable("locking the schema for migration", e))?;
        for statement in [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s}.{p}migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(&format!("preparing schema `{s}`"), e))?;
        }
        let current: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {s}.{p}migrations"
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unavailable("reading the schema version", e))?;
        for migration in migrations(&self.names) {
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
                                "migration {} ({}) of `{s}.{p}*`",
                                migration.version, migration.name
                            ),
                            e,
                        )
                    })?;
            }
            sqlx::query(&format!(
                "INSERT INTO {s}.{p}migrations (version, name) VALUES ($1, $2)"
            ))
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable("recording a migration", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| unavailable("committing migrations", e))
    }
}

/// An [`EventStore`] in PostgreSQL. Clones share the pool. See the [module docs](crate::store::postgres).
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PostgresEventStore {
    db: PgDb,
    closed: Arc<AtomicBool>,
    schema: Option<Arc<SchemaRegistry>>,
    /// The highest position appended, for the notifier task (when notifications are on).
    wake: Option<Arc<watch::Sender<u64>>>,
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("schema", &self.db.names.schema)
            .field("table_prefix", &self.db.names.prefix)
            .field("strict_ordering", &self.db.strict)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// Connects, creates the schema if needed and applies pending migrations.
    ///
    /// Fails with [`Error::Config`] for an invalid configuration (every problem listed), or
    /// [`Error::StoreConnection`] when the server cannot be reached or migrated.
    pub async fn connect(config: &PostgresConfig) -> Result<Self> {
        let db = config.open().await?;
        let wake = config.notify.then(|| {
            let (sender, receiver) = watch::channel(0);
            tokio::spawn(notifier(db.pool.clone(), config.channel(), receiver));
            Arc::new(sender)
        });
        Ok(Self {
            db,
            closed: Arc::new(AtomicBool::new(false)),
            schema: None,
            wake,
        })
    }

    /// Upcasts old events with `schema` on every read.
    #[must_use]
    pub fn with_schema(mut self, schema: Arc<SchemaRegistry>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// A snapshot store in the same schema, sharing this store's connections.
    pub fn snapshot_store(&self) -> crate::snapshot::PostgresSnapshotStore {
        crate::snapshot::PostgresSnapshotStore::from_db(self.db.clone(), false)
    }

    /// The connection pool, for queries of your own (projections in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// The notification channel appends signal on.
    pub fn channel(&self) -> &str {
        &self.db.names.channel
    }

    /// Listens for appends: each [`Wakeups::next`] resolves once at least one transaction
    /// that appended events has committed since the previous call (signals that arrive
    /// together are coalesced). Uses a dedicated connection of its own, never one of the
    /// store's pool (`max_connections` bounds the store's queries only); read with
    /// [`read_all`](EventStore::read_all) from your checkpoint after each wake-up.
    ///
    /// Notifications are a hint, not a log: one is lost if the connection drops, so a live
    /// reader should also poll now and then.
    pub async fn listen(&self) -> Result<Wakeups> {
        self.check_open()?;
        // A pool of its own with one connection, outside the store's pool (a listener holds
        // its connection for its whole life); the listener reconnects through it.
        let options = (*self.db.pool.connect_options()).clone();
        let dedicated = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(self.db.pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&dedicated)
            .await
            .map_err(|e| unavailable("opening a listener connection", e))?;
        listener
            .listen(&self.db.names.channel)
            .await
            .map_err(|e| unavailable(&format!("LISTEN on `{}`", self.db.names.channel), e))?;
        Ok(Wakeups { listener })
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
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        what: &str,
    ) -> Result<Vec<EventEnvelope>> {
        self.check_open()?;
        let rows = query
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| unavailable(what, e))?;
        let mut envelopes = Vec::with_capacity(rows.len());
        let mut names = sql::Interner::default();
        for row in &rows {
            envelopes.push(event_row(row, &mut names)?.into_envelope());
        }
        Ok(self.upcast(envelopes))
    }

    async fn current_version(&self, stream: &str) -> Result<u64> {
        let version: Option<i64> = sqlx::query_scalar(&self.db.names.version)
            .bind(stream)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("reading the version of stream `{stream}`"), e))?;
        Ok(version.map_or(0, to_u64))
    }

    /// The original result of an append whose first event id is stored already, or an error
    /// when this append is not an exact retry of it.
    async fn previous_append(
        &self,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
    ) -> Result<Option<AppendResult>> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let found: Option<(String, i64)> = sqlx::query_as(&self.db.names.find_id)
            .bind(first.event_id.as_uuid())
            .fetch_optional(&self.db.pool)
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
        let rows: Vec<(i64, Uuid, i64, PgTime)> = sqlx::query_as(&self.db.names.slots)
            .bind(stream)
            .bind(to_i64(start))
            .bind(to_i64(end))
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| unavailable("reading stored events for a retry", e))?;
        let stored: Vec<StoredSlot> = rows
            .into_iter()
            .map(|(version, id, position, recorded_at)| StoredSlot {
                version: to_u64(version),
                event_id: EventId::from_uuid(id),
                position: to_u64(position),
                recorded_at: recorded_at.or_epoch("recorded_at"),
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

    /// Turns a failed append call into what the contract promises: the original result when
    /// a concurrent copy of this very append won, a [`ConcurrencyError`] for a unique-key
    /// race on the stream, a typed error otherwise.
    async fn recover(
        &self,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
        err: sqlx::Error,
    ) -> Result<AppendResult> {
        let constraint = match &err {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                db.constraint().map(str::to_owned)
            }
            _ => None,
        };
        let Some(constraint) = constraint else {
            // A lost connection or a terminated backend is an outage, safe to retry; anything
            // else the server refused is about this append.
            let transient = sql::is_transient(&err);
            return Err(match err {
                sqlx::Error::Database(db) if !transient => Error::EventPersistence {
                    stream: StreamId::from(stream),
                    reason: format!(
                        "the server refused the append ({}); nothing was written",
                        db.message()
                    ),
                    source: Some(Box::new(sqlx::Error::Database(db))),
                },
                other => Error::StoreConnection {
                    backend: BACKEND,
                    reason: format!(
                        "appending to stream `{stream}` failed ({other}); the append is atomic, so it wrote all its events or none: retrying it with the same event ids is safe"
                    ),
                    source: Some(Box::new(other)),
                },
            });
        };
        if constraint.ends_with("events_event_id_key") {
            return match self.previous_append(stream, events, expected).await? {
                Some(previous) => Ok(previous),
                None => Err(sql::duplicate_id(
                    stream,
                    events.first().map(|e| e.event_id).unwrap_or_default(),
                    Some(Box::new(err)),
                )),
            };
        }
        let actual = self.current_version(stream).await?;
        Err(ConcurrencyError {
            stream: StreamId::from(stream),
            expected,
            actual,
        }
        .into())
    }
}

/// Wake-ups for live readers, from [`PostgresEventStore::listen`].
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct Wakeups {
    listener: PgListener,
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

impl Wakeups {
    /// Waits until an append commits, then returns the highest position announced by the
    /// notifications received so far (coalesced). Events up to it become readable with
    /// [`read_all`](EventStore::read_all) once older transactions finish.
    pub async fn next(&mut self) -> Result<u64> {
        let first = self
            .listener
            .recv()
            .await
            .map_err(|e| unavailable("waiting for a notification", e))?;
        let mut last = first.payload().parse::<u64>().unwrap_or(0);
        while let Some(more) = self.listener.next_buffered() {
            last = last.max(more.payload().parse::<u64>().unwrap_or(0));
        }
        Ok(last)
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The least time between two wake-ups of one store. An append after a quiet spell is
/// announced at once; under a steady stream of appends this bounds the notifications (each
/// is a transaction of its own, competing with the appends for the server) to a few hundred
/// per second, at the price of at most this much extra latency for a live reader.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);

/// Sends one `pg_notify` per batch of appends that finished while the previous one was in
/// flight or within [`NOTIFY_INTERVAL`] of it, from its own short transaction: the append
/// itself never takes PostgreSQL's notification-queue lock, which is held until commit and
/// would serialise every writer's commit. Ends when the store (every clone) is dropped.
async fn notifier(pool: PgPool, channel: String, mut appended: watch::Receiver<u64>) {
    while appended.changed().await.is_ok() {
        let started = tokio::time::Instant::now();
        let position = *appended.borrow_and_update();
        // A hint, not data: its commit need not wait for the WAL flush.
        let sent =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(&channel)
                .bind(position.to_string())
                .execute(&pool)
                .await;
        match sent {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => tracing::warn!(
                %err,
                channel,
                "could not send a wake-up; listeners catch up at their next poll"
            ),
        }
        // Appends finishing meanwhile are coalesced into the next notification.
        tokio::time::sleep_until(started + NOTIFY_INTERVAL).await;
    }
}

/// Reads one event row (columns in [`COLUMNS`] order). The columns are typed, so what can be
/// damaged is their content: metadata that is not JSON (reported by
/// [`EventRow::into_envelope`]) or a timestamp that is not finite.
fn event_row<'r>(row: &'r PgRow, names: &mut sql::Interner) -> Result<EventRow<'r>> {
    let get = |e: sqlx::Error| unavailable("decoding an event row", e);
    let event_version: i32 = row.try_get(5).map_err(get)?;
    let mut defects = Vec::new();
    let recorded_at = PgTime::read(row, 8, "recorded_at", &mut defects)?;
    Ok(EventRow {
        global_position: row.try_get(0).map_err(get)?,
        stream_id: names.stream(row.try_get(1).map_err(get)?),
        stream_version: row.try_get(2).map_err(get)?,
        event_id: EventId::from_uuid(row.try_get(3).map_err(get)?),
        event_type: names.event_type(row.try_get(4).map_err(get)?),
        event_version: i64::from(event_version),
        payload: row.try_get(6).map_err(get)?,
        metadata: row.try_get(7).map_err(get)?,
        recorded_at,
        defects,
    })
}

/// A `timestamptz` as the server sends it: microseconds since 2000-01-01, or `i64::MAX` /
/// `i64::MIN` for `infinity` / `-infinity`. Decoded by hand because sqlx's chrono conversion
/// panics on those.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgTime(i64);

/// 2000-01-01T00:00:00Z in microseconds since the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl PgTime {
    /// The time, or `None` when it is infinite or beyond what `DateTime` holds.
    pub(crate) fn finite(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0.checked_add(PG_EPOCH_MICROS)?)
    }

    /// The time, or (when it is not finite) the Unix epoch with a warning: for timestamps
    /// that only describe a row (when a stream or snapshot was written).
    pub(crate) fn or_epoch(self, what: &str) -> DateTime<Utc> {
        self.finite().unwrap_or_else(|| {
            tracing::warn!(
                what,
                "a stored timestamp is not finite; shown as 1970-01-01"
            );
            DateTime::default()
        })
    }

    /// Reads column `index` of an event row; a time that is not finite is a defect of the row.
    fn read(
        row: &PgRow,
        index: usize,
        column: &str,
        defects: &mut Vec<String>,
    ) -> Result<DateTime<Utc>> {
        let time: PgTime = row
            .try_get(index)
            .map_err(|e| unavailable("decoding an event row", e))?;
        Ok(time.finite().unwrap_or_else(|| {
            defects.push(format!("`{column}` is not a finite timestamp"));
            DateTime::default()
        }))
    }
}

impl sqlx::Type<sqlx::Postgres> for PgTime {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for PgTime {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            sqlx::postgres::PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                Ok(Self(i64::from_be_bytes(bytes)))
            }
            sqlx::postgres::PgValueFormat::Text => {
                Err("a timestamp came back as text; lexigram reads them in binary".into())
            }
        }
    }
}

pub(crate) fn unavailable(what: &str, err: sqlx::Error) -> Error {
    if matches!(err, sqlx::Error::PoolClosed) {
        return closed();
    }
    Error::StoreConnection {
        backend: BACKEND,
        reason: format!(
            "{what} failed ({err}); check that the server is reachable with the configured DSN and that its user may use the schema"
        ),
        source: Some(Box::new(err)),
    }
}

pub(crate) fn closed() -> Error {
    Error::StoreClosed { backend: BACKEND }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(
        name = "lexigram.append",
        level = "debug",
        skip_all,
        fields(backend = "postgres", stream = stream, events = events.len(), expected = %expected)
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
        let n = events.len();
        let (mut ids, mut types, mut versions, mut payloads, mut metadata) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for event in &events {
            ids.push(event.event_id.as_uuid());
            types.push(&*event.event_type);
            versions.push(i32::try_from(event.event_version).map_err(|_| {
                Error::EventPersistence {
                    stream: StreamId::from(stream),
                    reason: format!(
                        "event `{}` has schema version {}, above the largest storable ({})",
                        event.event_type,
                        event.event_version,
                        i32::MAX
                    ),
                    source: None,
                }
            })?);
            payloads.push(event.payload.as_str());
            metadata.push(sql::metadata_text(stream, event)?);
        }
        let expected_arg = match expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => to_i64(v),
        };
        let mut conn = self
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| unavailable(&format!("appending to stream `{stream}`"), e))?;
        let outcome: std::result::Result<
            (i32, Option<i64>, Option<Vec<i64>>, Option<DateTime<Utc>>),
            _,
        > = sqlx::query_as(&self.db.names.append)
            .bind(stream)
            .bind(i64::from(stream_hash(stream)))
            .bind(expected_arg)
            .bind(&ids)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata)
            .bind(self.db.strict)
            .fetch_one(&mut *conn)
            .await;
        let (status, version, positions, recorded_at) = match outcome {
            Ok(row) => row,
            Err(err) => {
                // Unless a unique key fired (after the critical section), this session must
                // not live on: one that failed inside the critical section could hold its
                // session-level lock, which dies with the session.
                if !is_unique_violation(&err) {
                    conn.close_on_drop();
                }
                drop(conn);
                return self.recover(stream, &events, expected, err).await;
            }
        };
        drop(conn);
        let version = version.unwrap_or(0);
        match status {
            0 => {
                let positions: Vec<u64> = positions
                    .unwrap_or_default()
                    .into_iter()
                    .map(to_u64)
                    .collect();
                tracing::debug!(version, first = ?positions.first(), "appended");
                if let (Some(wake), Some(last)) = (&self.wake, positions.last()) {
                    wake.send_modify(|announced| *announced = (*announced).max(*last));
                }
                Ok(AppendResult::new(
                    to_u64(version),
                    positions,
                    recorded_at.unwrap_or_else(Utc::now),
                ))
            }
            // A conflict, unless this is a retry of an append that is already stored.
            _ => match self.previous_append(stream, &events, expected).await? {
                Some(previous) => Ok(previous),
                None => Err(ConcurrencyError {
                    stream: StreamId::from(stream),
                    expected,
                    actual: to_u64(version),
                }
                .into()),
            },
        }
    }

    #[tracing::instrument(name = "lexigram.read", level = "debug", skip_all, fields(backend = "postgres", stream = stream, from = range.from))]
    async fn read(&self, stream: &str, range: VersionRange) -> Result<Vec<EventEnvelope>> {
        crate::store::check_stream_id(stream)?;
        if range.is_empty() {
            self.check_open()?;
            return Ok(Vec::new());
        }
        let query = sqlx::query(&self.db.names.read)
            .bind(stream)
            .bind(to_i64(range.start()))
            .bind(to_i64(range.to.unwrap_or(u64::MAX)))
            .bind(range.limit.map(sql::limit_i64));
        self.fetch_events(query, &format!("reading stream `{stream}`"))
            .await
    }

    async fn version(&self, stream: &str) -> Result<u64> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        self.current_version(stream).await
    }

    async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        #[allow(clippy::type_complexity)]
        let row: Option<(i64, PgTime, PgTime, i64, Option<i64>, Option<i64>)> =
            sqlx::query_as(&self.db.names.info)
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
                created.or_epoch("created_at"),
                updated.or_epoch("updated_at"),
            )
        }))
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<StreamId>> {
        self.check_open()?;
        let ids: Vec<String> = sqlx::query_scalar(&self.db.names.list)
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
            None => sqlx::query_scalar(&self.db.names.count_all),
            Some(stream) => sqlx::query_scalar(&self.db.names.count_stream).bind(stream),
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
        let query = match partition {
            None => sqlx::query(&self.db.names.read_all)
                .bind(to_i64(after))
                .bind(sql::limit_i64(limit)),
            Some(p) => sqlx::query(&self.db.names.read_partition)
                .bind(to_i64(after))
                .bind(sql::limit_i64(limit))
                .bind(i64::from(p.total()))
                .bind(i64::from(p.index())),
        };
        self.fetch_events(query, "reading the global log").await
    }

    async fn read_by_type(
        &self,
        event_type: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let query = sqlx::query(&self.db.names.read_by_type)
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
        let query = sqlx::query(&self.db.names.find_by_type)
            .bind(event_type)
            .bind(sql::limit_i64(limit))
            .bind(sql::limit_i64(offset));
        self.fetch_events(query, &format!("finding events of type `{event_type}`"))
            .await
    }

    /// The highest position a reader can safely continue after: the last settled event
    /// (see the [module docs](crate::store::postgres)).
    async fn last_position(&self) -> Result<u64> {
        self.check_open()?;
        let last: i64 = sqlx::query_scalar(&self.db.names.last_position)
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| unavailable("reading the last position", e))?;
        Ok(to_u64(last))
    }

    async fn delete_stream(&self, stream: &str) -> Result<bool> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let what = format!("deleting stream `{stream}`");
        let mut tx = self
            .db
            .pool
            .begin()
            .await
            .map_err(|e| unavailable(&what, e))?;
        // The stream's row first: deleting it waits for an append in flight on the stream
        // (which holds the row's lock until it commits), and an append that starts later waits
        // for this transaction. The events are deleted after that, by a statement whose
        // snapshot sees every append that committed before; then the aggregate's snapshots.
        let gone = sqlx::query(&self.db.names.delete_stream)
            .bind(stream)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&what, e))?
            .rows_affected();
        for statement in [
            &self.db.names.delete_events,
            &self.db.names.snapshot_delete_all,
        ] {
            sqlx::query(statement)
                .bind(stream)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(&what, e))?;
        }
        tx.commit().await.map_err(|e| unavailable(&what, e))?;
        Ok(gone > 0)
    }

    async fn purge(&self, stream: &str, up_to_version: u64) -> Result<u64> {
        crate::store::check_stream_id(stream)?;
        self.check_open()?;
        let removed = sqlx::query(&self.db.names.purge)
            .bind(stream)
            .bind(to_i64(up_to_version))
            .execute(&self.db.pool)
            .await
            .map_err(|e| unavailable(&format!("purging stream `{stream}`"), e))?
            .rows_affected();
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

    #[test]
    fn config_validation_lists_every_problem() {
        let config = PostgresConfig::new("mysql://x")
            .schema("Bad Schema")
            .table_prefix("x;")
            .min_connections(5)
            .max_connections(2);
        let problems = config.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let mut sorted = problems.clone();
        sorted.sort();
        assert_eq!(problems, sorted);
        assert!(
            PostgresConfig::new("postgres://localhost/app")
                .validate()
                .is_empty()
        );
    }

    #[test]
    fn config_serializes_without_the_dsn_and_round_trips_with_it() {
        let config = PostgresConfig::new("postgres://u:secret@h/db").strict_ordering(true);
        let mut json = serde_json::to_value(&config).unwrap_or_default();
        assert_eq!(json["acquire_timeout"], 30_000);
        assert_eq!(json["dsn"], "***");
        assert!(serde_json::from_value::<PostgresConfig>(json.clone()).is_err());
        json["dsn"] = config.dsn.expose().into();
        let back: PostgresConfig = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, config);
        assert!(!format!("{config:?}").contains("secret"));
    }
}
