//! The PostgreSQL event store: many processes, one log, a global order that never skips.
//!
//! # How an append works
//!
//! [`append`](crate::store::EventStore::append) is one call of a server-side function (created by the
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
//! [`append_signal`](crate::store::EventStore::append_signal) merges both: this store's own
//! appends wake its readers at once, and one background listener per store (started by the
//! first call, on a connection of its own, reconnecting with a backoff capped at 5 s)
//! announces every notification's position, so appends of other processes wake them too.
//!
//! # Global order
//!
//! Each row stores the id of the transaction that wrote it (`xact_id xid8`). Positions are
//! handed out inside a short critical section that also assigns the transaction id, so a
//! transaction with a lower id always holds lower positions. Readers of the global log
//! ([`read_all`](crate::store::EventStore::read_all), [`read_by_type`](crate::store::EventStore::read_by_type),
//! [`find_by_type`](crate::store::EventStore::find_by_type), [`last_position`](crate::store::EventStore::last_position))
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

mod config;
mod dialect;
mod notify;
mod schema;
pub(crate) mod snapshot;
mod statements;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use tokio::sync::watch;

use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{NewEvent, StreamId};
use crate::store::sql::{self, Dialect, EventLog, SqlDb, to_i64, to_u64};
use crate::store::{AppendResult, ExpectedVersion, stream_hash};

pub use config::PostgresConfig;
pub(crate) use dialect::PostgresDialect;
pub use notify::Wakeups;
use snapshot::PostgresSnapshotStore;

/// The database of a PostgreSQL store: its pool and statements.
pub(crate) type PgDb = SqlDb<PostgresDialect>;

/// An [`EventStore`](crate::store::EventStore) in PostgreSQL. Clones share the pool. See the [module docs](crate::store::postgres).
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PostgresEventStore {
    log: EventLog<PostgresDialect>,
    /// Serialise writers (see [`PostgresConfig::strict_ordering`]).
    strict: bool,
    /// The highest position appended, for the notifier task (when notifications are on).
    wake: Option<Arc<watch::Sender<u64>>>,
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("schema", &self.log.db.sql.own.schema)
            .field("table_prefix", &self.log.db.sql.prefix)
            .field("strict_ordering", &self.strict)
            .field("closed", &self.log.is_closed())
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
            tokio::spawn(notify::notifier(
                db.pool.clone(),
                config.channel(),
                receiver,
            ));
            Arc::new(sender)
        });
        Ok(Self {
            log: EventLog::new(db),
            strict: config.strict_ordering,
            wake,
        })
    }

    /// The notification channel appends signal on.
    pub fn channel(&self) -> &str {
        &self.log.db.sql.own.channel
    }

    /// [`EventStore::append`](crate::store::EventStore::append), the PostgreSQL way (the span and
    /// the checks every append makes are in the core).
    async fn append_events(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
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
        let mut conn = self.log.db.pool.acquire().await.map_err(|e| {
            PostgresDialect::unavailable(&format!("appending to stream `{stream}`"), e)
        })?;
        let outcome: std::result::Result<AppendRow, _> =
            sqlx::query_as(&self.log.db.sql.own.append)
                .bind(stream)
                .bind(i64::from(stream_hash(stream)))
                .bind(expected_arg)
                .bind(&ids)
                .bind(&types)
                .bind(&versions)
                .bind(&payloads)
                .bind(&metadata)
                .bind(self.strict)
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

    /// The original result of an append whose first event id is stored already, or an error
    /// when this append is not an exact retry of it.
    async fn previous_append(
        &self,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
    ) -> Result<Option<AppendResult>> {
        let mut conn = self
            .log
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| PostgresDialect::unavailable("looking up an event id", e))?;
        self.log
            .previous_append(&mut conn, stream, events, expected)
            .await
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
                    reason: "the server refused the append (the database error is the source); nothing was written".to_owned(),
                    source: Some(Box::new(sqlx::Error::Database(db))),
                },
                other => Error::StoreConnection {
                    backend: PostgresDialect::BACKEND,
                    reason: format!(
                        "appending to stream `{stream}` failed; the append is atomic, so it wrote all its events or none: retrying it with the same event ids is safe"
                    ),
                    source: Some(Box::new(other)),
                },
            });
        };
        if constraint.ends_with("events_event_id_key") {
            return match self.previous_append(stream, events, expected).await? {
                Some(previous) => Ok(previous),
                None => {
                    // The server names the stored id in its detail: `Key (event_id)=(<uuid>)
                    // already exists.`; the first event's id when it cannot be read.
                    let stored = duplicate_in_detail(&err)
                        .filter(|id| events.iter().any(|e| e.event_id == *id));
                    Err(sql::duplicate_id(
                        stream,
                        stored
                            .or_else(|| events.first().map(|e| e.event_id))
                            .unwrap_or_default(),
                        Some(Box::new(err)),
                    ))
                }
            };
        }
        let actual = self.log.stream_version(&self.log.db.pool, stream).await?;
        Err(ConcurrencyError {
            stream: StreamId::from(stream),
            expected,
            actual,
        }
        .into())
    }
}

/// What the server-side append returns: status (0 written, 1 conflict), the stream's
/// version, the positions written and when.
type AppendRow = (i32, Option<i64>, Option<Vec<i64>>, Option<DateTime<Utc>>);

/// The event id a unique-key violation names in its detail (`Key (event_id)=(<uuid>) already
/// exists.`).
fn duplicate_in_detail(err: &sqlx::Error) -> Option<crate::message::EventId> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let detail = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .detail()?;
    let start = detail.find("=(")? + 2;
    let end = start + detail[start..].find(')')?;
    let id = uuid::Uuid::parse_str(detail.get(start..end)?).ok()?;
    Some(crate::message::EventId::from_uuid(id))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

sql::sql_event_store!(PostgresEventStore, PostgresDialect, {
    /// A snapshot store in the same schema, sharing this store's connections.
    pub fn snapshot_store(&self) -> PostgresSnapshotStore;
    /// The connection pool, for queries of your own (projections in the same database).
    pub fn pool(&self) -> &PgPool;
});

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
