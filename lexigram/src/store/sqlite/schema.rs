//! The SQLite schema: its migrations, and how they are applied (one writer, without a write
//! lock when the file is up to date).

use chrono::Utc;

use super::{SqliteDb, SqliteDialect};
use crate::error::Result;
use crate::store::sql::Dialect;
use crate::store::sql::{Migration, run_migrations};

impl SqliteDb {
    /// The schema version recorded in the file (0 for a new file), read without a write lock.
    async fn schema_version(&self) -> Result<i64> {
        let p = &self.sql.prefix;
        let table: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind(format!("{p}migrations"))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| SqliteDialect::unavailable("reading the schema version", e))?;
        if table.is_none() {
            return Ok(0);
        }
        sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {p}migrations"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| SqliteDialect::unavailable("reading the schema version", e))
    }

    /// Applies pending migrations, up to `target` (all when `None`). Re-running is a no-op,
    /// and a file already at the latest version is not locked for writing at all.
    pub(crate) async fn migrate(&self, target: Option<i64>) -> Result<()> {
        let latest = migrations(&self.sql.prefix).last().map_or(0, |m| m.version);
        if self.schema_version().await? >= target.unwrap_or(latest) {
            return Ok(());
        }
        let mut write = self.begin_write("starting a write transaction").await?;
        let p = &self.sql.prefix;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {p}migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        ))
        .execute(&mut *write.tx)
        .await
        .map_err(|e| SqliteDialect::unavailable("creating the migrations table", e))?;
        let current: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {p}migrations"
        ))
        .fetch_one(&mut *write.tx)
        .await
        .map_err(|e| SqliteDialect::unavailable("reading the schema version", e))?;
        // The time is spliced in (it is a number) so that recording a step binds only its
        // version and name, as in every dialect.
        let applied_at = Utc::now().timestamp_micros();
        let record = format!(
            "INSERT INTO {p}migrations (version, name, applied_at) VALUES (?1, ?2, {applied_at})"
        );
        let tables = format!("the `{p}` tables");
        run_migrations::<SqliteDialect>(
            &mut write.tx,
            &migrations(p),
            current,
            target,
            &record,
            &tables,
        )
        .await?;
        write.commit("committing migrations").await
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
        Migration {
            version: 3,
            name: "subscription checkpoints, members and parked events",
            // Times are microseconds since the Unix epoch on SQLite's clock.
            statements: vec![
                format!(
                    "CREATE TABLE {p}subscriptions (
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        partition INTEGER NOT NULL,
                        partitions INTEGER NOT NULL,
                        position INTEGER NOT NULL DEFAULT 0,
                        status TEXT NOT NULL DEFAULT 'running',
                        owner TEXT,
                        epoch INTEGER NOT NULL DEFAULT 0,
                        lease_until INTEGER,
                        last_error TEXT,
                        updated_at INTEGER NOT NULL,
                        PRIMARY KEY (name, version, partition)
                    ) WITHOUT ROWID"
                ),
                format!(
                    "CREATE TABLE {p}members (
                        node TEXT PRIMARY KEY NOT NULL,
                        alive_until INTEGER NOT NULL
                    ) WITHOUT ROWID"
                ),
                format!(
                    "CREATE TABLE {p}parked (
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        event_id TEXT NOT NULL,
                        position INTEGER NOT NULL,
                        stream TEXT NOT NULL,
                        stream_hash INTEGER NOT NULL,
                        stream_version INTEGER NOT NULL,
                        event_type TEXT NOT NULL,
                        attempts INTEGER NOT NULL,
                        error TEXT,
                        parked_at INTEGER NOT NULL,
                        PRIMARY KEY (name, version, event_id)
                    ) WITHOUT ROWID"
                ),
                format!(
                    "CREATE INDEX {p}parked_by_stream ON {p}parked (name, version, stream, position)"
                ),
            ],
        },
        Migration {
            version: 4,
            name: "subscription control requests",
            statements: vec![
                format!(
                    "CREATE TABLE {p}requests (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        kind TEXT NOT NULL,
                        stream TEXT NOT NULL,
                        stream_hash INTEGER NOT NULL,
                        requested_at INTEGER NOT NULL,
                        finished_at INTEGER,
                        served_by TEXT,
                        replayed INTEGER,
                        still_parked INTEGER,
                        error TEXT
                    )"
                ),
                format!(
                    "CREATE INDEX {p}requests_open ON {p}requests (name, version) WHERE finished_at IS NULL"
                ),
            ],
        },
        Migration {
            version: 5,
            name: "subscription rebuilds",
            statements: vec![
                format!("ALTER TABLE {p}subscriptions ADD COLUMN rebuild_target INTEGER"),
                format!("ALTER TABLE {p}subscriptions ADD COLUMN rebuild_started_at INTEGER"),
            ],
        },
    ]
}
