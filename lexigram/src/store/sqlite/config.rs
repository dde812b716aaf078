//! Where and how to open a SQLite database.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::statements::Statements;
use super::{SqliteDb, SqliteDialect};
use crate::error::{Error, Result};
use crate::store::sql::{self, Dialect};

/// Where and how to open a SQLite database.
///
/// Serializes as `{ path, table_prefix, max_connections, busy_timeout, change_poll_interval }`
/// (durations in milliseconds); a missing `path` means an in-memory database. A missing key takes its
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
    /// How often a file database is checked for appends by other processes (`PRAGMA
    /// data_version` on one connection of its own), once a live reader asked for an
    /// [`append_signal`](crate::store::EventStore::append_signal). Appends through this
    /// store wake readers at once regardless. Must be above zero. Default 50 ms.
    #[serde(with = "sql::duration_ms")]
    pub change_poll_interval: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: None,
            table_prefix: "lexigram_".into(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            change_poll_interval: Duration::from_millis(50),
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

    sql::setters! {
        /// Sets the table prefix.
        table_prefix(prefix: impl Into<String>) = prefix.into();
        /// Sets the pool size.
        max_connections(max: u32);
        /// Sets how long a writer waits for a lock held by another process.
        busy_timeout(timeout: Duration);
        /// Sets how often a file database is checked for appends by other processes (see
        /// [`change_poll_interval`](Self::change_poll_interval)).
        change_poll_interval(interval: Duration);
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
        if self.change_poll_interval.is_zero() {
            problems.push("sqlite.change_poll_interval must be above zero (e.g. 50 ms)".into());
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

    /// Whether this is a private in-memory database (no other process can share it).
    pub(super) fn is_memory(&self) -> bool {
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
                .map_err(|e| SqliteDialect::unavailable("opening an in-memory database", e))?;
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
                SqliteDialect::unavailable(&format!("opening {target}"), e)
            })?;
        let db = SqliteDb::new(pool, Statements::all(&self.table_prefix));
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
