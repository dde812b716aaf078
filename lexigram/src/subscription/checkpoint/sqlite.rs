//! The SQLite checkpoint store: the checkpoint tables in the event store's file, written
//! through its writer's turn.

use std::fmt;

use super::sql::{CheckpointSpelling, SqlCheckpoints, sql_checkpoint_store};
use crate::store::SqliteEventStore;
use crate::store::sqlite::SqliteDialect;

/// The database's time in microseconds since the Unix epoch, to the millisecond
/// (`julianday('now')` is the same for every use in one statement).
const NOW: &str = "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)";

sql_checkpoint_store! {
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
            later: |micros| format!("({NOW} + {micros})"),
            micros_until: |column| format!("({column} - {NOW})"),
            greatest: "MAX",
            by_bytes: "",
            event_id_text: "event_id",
            // Writers take turns (the writer's lock, then `BEGIN IMMEDIATE`).
            lock: None,
            relaxed_commit: "",
        };
        Self {
            core: SqlCheckpoints::new(db, "", &spelling),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::Error;
    use crate::error::Result;
    use crate::store::SqliteConfig;
    use crate::store::sql::Dialect;
    use crate::subscription::{CheckpointStore, NodeId, PartitionKey, SubscriptionSpec};

    #[tokio::test]
    async fn commit_in_lands_with_the_callers_writes_or_not_at_all() -> Result<()> {
        let events = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
        let store = SqliteCheckpointStore::new(&events);
        store
            .register(&SubscriptionSpec::new("s".into(), 1, 1, 0))
            .await?;
        let key = PartitionKey {
            subscription: Arc::from("s"),
            version: 1,
            partition: 0,
        };
        let me = NodeId::new("a")?;
        let ttl = Duration::from_secs(60);
        let old = store.claim(&key, &me, ttl).await?;
        let new = store.claim(&key, &me, ttl).await?;
        let (Some(old), Some(new)) = (old, new) else {
            return Err(Error::InvalidArgument {
                reason: "both claims succeed".into(),
            });
        };
        let db = events.db();
        sqlx::query("CREATE TABLE balances (n INTEGER)")
            .execute(&db.pool)
            .await
            .map_err(|e| SqliteDialect::unavailable("test", e))?;
        for (lease, n) in [(&new, 1), (&old, 2)] {
            let mut write = db.begin_write("test").await?;
            sqlx::query("INSERT INTO balances (n) VALUES (?1)")
                .bind(n)
                .execute(&mut *write.tx)
                .await
                .map_err(|e| SqliteDialect::unavailable("test", e))?;
            match store
                .commit_in(&mut write.tx, lease, n as u64 * 10, &[])
                .await
            {
                Ok(_) => write
                    .tx
                    .commit()
                    .await
                    .map_err(|e| SqliteDialect::unavailable("test", e))?,
                Err(Error::LeaseLost { epoch, .. }) => assert_eq!(epoch, old.epoch),
                Err(other) => return Err(other),
            }
        }
        let written: Vec<i64> = sqlx::query_scalar("SELECT n FROM balances")
            .fetch_all(&db.pool)
            .await
            .map_err(|e| SqliteDialect::unavailable("test", e))?;
        assert_eq!(written, [1], "the fenced-out transaction wrote nothing");
        assert_eq!(store.states(None).await?[0].position, 10);
        Ok(())
    }
}
