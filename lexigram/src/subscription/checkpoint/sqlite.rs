//! The SQLite checkpoint store: the checkpoint tables in the event store's file, written
//! through its writer's turn.

use std::fmt;
use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;

use super::sql::{CheckpointSpelling, CheckpointSql, SqlCheckpoints, sql_checkpoint_store};
use super::{Lease, ParkedEvent};
use crate::error::Result;
use crate::store::SqliteEventStore;
use crate::store::sqlite::SqliteDialect;

/// The database's time in microseconds since the Unix epoch, to the millisecond
/// (`julianday('now')` is the same for every use in one statement).
const NOW: &str = "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)";

fn later(micros: &str) -> String {
    format!("({NOW} + {micros})")
}

fn micros_until(column: &str) -> String {
    format!("({column} - {NOW})")
}

/// Checkpoints, leases, parked events and members in the tables of a
/// [`SqliteEventStore`]'s database (its table prefix, its migrations), on its pool. Every
/// write takes the store's writer turn, as appends do, so checkpoints never fail with
/// `SQLITE_BUSY` behind an append. Lease times are SQLite's clock. Clones share the pool.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use lexigram::store::{SqliteConfig, SqliteEventStore};
/// use lexigram::subscription::{
///     CheckpointStore, NodeId, PartitionKey, SqliteCheckpointStore, SubscriptionSpec,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let events = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
/// let checkpoints = SqliteCheckpointStore::new(&events);
/// checkpoints.register(&SubscriptionSpec::new("bank.mailer".into(), 1, 4, 0)).await?;
/// let key = PartitionKey { subscription: Arc::from("bank.mailer"), version: 1, partition: 0 };
/// let me = NodeId::generate();
/// if let Some(lease) = checkpoints.claim(&key, &me, Duration::from_secs(10)).await? {
///     checkpoints.commit(&lease, 42, &[]).await?;
///     checkpoints.release(&lease).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteCheckpointStore {
    core: SqlCheckpoints<SqliteDialect>,
}

impl fmt::Debug for SqliteCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteCheckpointStore")
            .field("table_prefix", &self.core.db.sql.prefix)
            .finish_non_exhaustive()
    }
}

impl SqliteCheckpointStore {
    /// The checkpoint store in `events`' database (its tables are created by the event
    /// store's migrations).
    pub fn new(events: &SqliteEventStore) -> Self {
        let db = events.db().clone();
        let spelling = CheckpointSpelling {
            placeholder: '?',
            now: NOW,
            later,
            micros_until,
            greatest: "MAX",
            by_bytes: "",
            event_id_text: "event_id",
            // Writers take turns (the writer's lock, then `BEGIN IMMEDIATE`).
            lock: None,
        };
        let sql = CheckpointSql::new("", &db.sql.prefix, &spelling);
        Self {
            core: SqlCheckpoints {
                db,
                sql: Arc::new(sql),
            },
        }
    }

    /// [`commit`](super::CheckpointStore::commit) inside the caller's write transaction
    /// (one from [`SqliteEventStore::write_tx`], which holds the writer's turn): fenced by
    /// the lease, so on [`Error::LeaseLost`](crate::Error::LeaseLost) the caller must roll
    /// back (drop the transaction) and nothing of its own writes lands either.
    #[allow(dead_code)] // for the exactly-once SQL sink
    pub(crate) async fn commit_in(
        &self,
        conn: &mut SqliteConnection,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> Result<()> {
        self.core.commit_in(conn, lease, position, parked).await
    }
}

sql_checkpoint_store!(SqliteCheckpointStore, SqliteDialect);
