//! The PostgreSQL checkpoint store: the checkpoint tables in the event store's schema.

use std::fmt;

use super::sql::{CheckpointSpelling, SqlCheckpoints, sql_checkpoint_store};
use crate::store::PostgresEventStore;
use crate::store::postgres::PostgresDialect;

sql_checkpoint_store! {
    /// Checkpoints, leases, parked events and members in the tables of a
    /// [`PostgresEventStore`]'s schema (its table prefix, its migrations), on its pool. Claims
    /// and renewals are one autocommit statement each; lease times are the server's clock
    /// (`now()`), so the nodes' clocks never have to agree. Clones share the pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use lexigram::config::Secret;
    /// use lexigram::store::{PostgresConfig, PostgresEventStore};
    /// use lexigram::subscription::{
    ///     CheckpointStore, NodeId, PartitionKey, PostgresCheckpointStore, SubscriptionSpec,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lexigram::Error> {
    /// let config = PostgresConfig::new(Secret::new("postgres://app@localhost/app"));
    /// let events = PostgresEventStore::connect(&config).await?;
    /// let checkpoints = PostgresCheckpointStore::new(&events);
    /// checkpoints.register(&SubscriptionSpec::new("bank.mailer".into(), 1, 4, 0)).await?;
    /// let key = PartitionKey { subscription: Arc::from("bank.mailer"), version: 1, partition: 0 };
    /// if let Some(lease) = checkpoints.claim(&key, &NodeId::generate(), Duration::from_secs(10)).await? {
    ///     checkpoints.commit(&lease, 42, &[]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub struct PostgresCheckpointStore {
        core: SqlCheckpoints<PostgresDialect>,
    }
}

impl fmt::Debug for PostgresCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCheckpointStore")
            .field("schema", &self.core.db.sql.own.schema)
            .field("table_prefix", &self.core.db.sql.prefix)
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpointStore {
    /// The checkpoint store in `events`' schema (its tables are created by the event store's
    /// migrations).
    pub fn new(events: &PostgresEventStore) -> Self {
        let db = events.db().clone();
        let (s, p) = (&db.sql.own.schema, &db.sql.prefix);
        let spelling = CheckpointSpelling {
            placeholder: '$',
            now: "now()",
            later: |micros| format!("(now() + {micros} * interval '1 microsecond')"),
            micros_until: |column| {
                format!("CAST(EXTRACT(EPOCH FROM ({column} - now())) * 1000000 AS bigint)")
            },
            greatest: "GREATEST",
            by_bytes: r#" COLLATE "C""#,
            event_id_text: "event_id::text",
            // Registering and splitting run concurrently on many nodes: one at a time per
            // subscription version (names are hashed; a collision only makes two wait).
            lock: Some(format!(
                "SELECT pg_advisory_xact_lock(hashtext('lexigram checkpoints {s}.{p}'), hashtext($1 || '/' || $2))"
            )),
            // A checkpoint's commit need not wait for the WAL to reach the disk: a server
            // crash can lose only whole transactions (a projection's writes with their
            // checkpoint), which are then handled again; a worker crash loses nothing.
            relaxed_commit: " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL",
        };
        let qualifier = format!("{s}.");
        Self {
            core: SqlCheckpoints::new(db, &qualifier, &spelling),
        }
    }
}
