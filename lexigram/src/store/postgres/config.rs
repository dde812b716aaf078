//! How to reach PostgreSQL and where to keep the tables.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::statements::Statements;
use super::{PgDb, PostgresDialect};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::store::sql;
use crate::store::sql::Dialect;

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
    /// `postgres://user:password@host:port/database?options`. `?sslmode=require` (or
    /// `verify-ca`, `verify-full`) needs the `postgres-tls` cargo feature.
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
    /// Sends wake-ups for [`PostgresEventStore::listen`](super::PostgresEventStore::listen) after appends (coalesced, from a
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

    sql::setters! {
        /// Sets the schema.
        schema(schema: impl Into<String>) = schema.into();
        /// Sets the table prefix.
        table_prefix(prefix: impl Into<String>) = prefix.into();
        /// Sets the least number of open connections.
        min_connections(min: u32);
        /// Sets the most connections open at once.
        max_connections(max: u32);
        /// Sets how long a call waits for a connection.
        acquire_timeout(timeout: Duration);
        /// Sets when idle connections close (`None`: never).
        idle_timeout(timeout: Option<Duration>);
        /// Serialises writers; see [`strict_ordering`](Self::strict_ordering).
        strict_ordering(strict: bool);
        /// Pings connections before use; see [`test_before_acquire`](Self::test_before_acquire).
        test_before_acquire(test: bool);
        /// Turns the per-append notification on or off.
        notify(notify: bool);
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
        } else if let Some(problem) = tls_unavailable(dsn) {
            problems.push(problem);
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
    ///
    /// A DSN that asks for TLS fails in [`validate`](Self::validate), before any I/O, when
    /// the `postgres-tls` feature is off (sqlx would fail the connection anyway, as a retryable
    /// outage that names sqlx's features instead of ours).
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
            .map_err(|e| PostgresDialect::unavailable("connecting", e))?;
        let db = PgDb::new(pool, Statements::all(self));
        db.migrate(None).await?;
        Ok(db)
    }
}

/// The problem with a DSN whose `sslmode` (or, without one, `PGSSLMODE`) insists on TLS when
/// this build has no TLS (the `postgres-tls` feature is off). Never quotes the DSN.
fn tls_unavailable(dsn: &str) -> Option<String> {
    use sqlx::postgres::PgSslMode;
    if cfg!(feature = "postgres-tls") {
        return None;
    }
    // A DSN that does not parse is reported by `open`, with sqlx's reason.
    let options: PgConnectOptions = dsn.parse().ok()?;
    let mode = match options.get_ssl_mode() {
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
        // `prefer` (the default) and `allow` fall back to a plain connection.
        _ => return None,
    };
    let asker = if dsn.contains("sslmode=") || dsn.contains("ssl-mode=") {
        format!("postgres.dsn asks for TLS (`sslmode={mode}`)")
    } else {
        format!("`PGSSLMODE={mode}` in the environment asks for TLS on postgres.dsn")
    };
    Some(format!(
        "{asker}, but lexigram-events was built without TLS support: enable its \
         `postgres-tls` cargo feature (`features = [\"postgres-tls\"]`)"
    ))
}
