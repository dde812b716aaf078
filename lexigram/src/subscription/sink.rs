//! Exactly-once effects in the events' own SQL database: a [`TransactionalReactor`] writes
//! through the transaction that also commits its partition's checkpoint, so each event's
//! writes land exactly once, together with the progress past it.
//!
//! A batch runs in one write transaction, its events' writes one after another in it (no
//! savepoint per event, which would cost two round trips each). A failing event ends the
//! batch: the transaction is rolled back with its writes, what came before it is written again
//! in a new one that commits, then the failing event is tried again alone, each attempt in a
//! transaction of its own, under the subscription's retry policy, and parked (with the
//! checkpoint moving past it in the same transaction) after the last. Nothing is held across
//! the waits between attempts.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::checkpoint::{Lease, ParkedEvent, RunStatus};
use super::reactor::ReactionContext;
use crate::error::{BoxError, Result};
use crate::message::{EventEnvelope, EventId};

/// A reaction whose writes go to the events' own SQL database, in the transaction that
/// commits its partition's checkpoint: a read model, a ledger, an outbox table. A crash, a
/// lost lease or a failing event rolls its writes back with the checkpoint, so after any
/// restart the database holds each event's writes exactly once.
///
/// `DB` is `sqlx::Sqlite` or `sqlx::Postgres`; run it with [`ExactlyOnce::sqlite`] or
/// [`ExactlyOnce::postgres`]. Write with `&mut *conn` as the executor; do not commit or roll
/// back yourself, and keep slow I/O out of it (the batch's transaction is open meanwhile).
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use lexigram::async_trait;
/// use lexigram::error::BoxError;
/// use lexigram::message::EventEnvelope;
/// use lexigram::subscription::{ReactionContext, TransactionalReactor};
///
/// struct Ledger;
///
/// #[async_trait]
/// impl TransactionalReactor<sqlx::Sqlite> for Ledger {
///     async fn react(
///         &self,
///         conn: &mut sqlx::SqliteConnection,
///         event: &EventEnvelope,
///         ctx: &ReactionContext,
///     ) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO ledger (event_id, stream) VALUES (?1, ?2)")
///             .bind(ctx.event_id().to_string())
///             .bind(event.stream_id.as_str())
///             .execute(&mut *conn)
///             .await?;
///         Ok(())
///     }
/// }
/// # let _ = Ledger;
/// # }
/// ```
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[async_trait]
pub trait TransactionalReactor<DB: sqlx::Database>: Send + Sync + 'static {
    /// Writes the effects of one event through `conn` (the batch's transaction). After an
    /// `Err` the whole transaction is rolled back and the events before this one are written
    /// again, so `react` must not keep state of its own about what it wrote.
    async fn react(
        &self,
        conn: &mut DB::Connection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError>;

    /// Writes what the batch's events need in as few statements as the reactor likes (one
    /// `INSERT .. SELECT FROM UNNEST(..)` for all of them, say), once per batch, after their
    /// `react` and before the checkpoint, in the batch's transaction. `events` are the ones
    /// `react` accepted, in order (parked events are not among them). A reactor that writes
    /// here usually only checks the event in `react`.
    ///
    /// An `Err` rolls the batch back; its events are then written one per transaction (`react`
    /// and `flush` of that event alone), so the one that fails is retried and parked alone.
    /// The default does nothing.
    async fn flush(
        &self,
        conn: &mut DB::Connection,
        events: &[Arc<EventEnvelope>],
    ) -> std::result::Result<(), BoxError> {
        let _ = (conn, events);
        Ok(())
    }

    /// Creates the read model's tables if they do not exist yet (`CREATE TABLE IF NOT
    /// EXISTS ..`), once when the subscription starts on a node, in a transaction of its
    /// own, before any event. The default does nothing.
    async fn setup(&self, conn: &mut DB::Connection) -> std::result::Result<(), BoxError> {
        let _ = conn;
        Ok(())
    }

    /// Empties the read model for a rebuild ([`Reactions::rebuild`](super::Reactions::rebuild)),
    /// in the transaction that also sets every partition's checkpoint back to the origin: the
    /// model and the checkpoints start over together or not at all. Create the tables here
    /// too if they may not exist (`CREATE TABLE IF NOT EXISTS`, then `DELETE FROM`).
    ///
    /// The default refuses: a reactor that cannot start over cannot be rebuilt.
    async fn reset(&self, conn: &mut DB::Connection) -> std::result::Result<(), BoxError> {
        let _ = conn;
        Err("this reactor has no `reset`, so it cannot be rebuilt".into())
    }
}

/// A shared reactor writes as the reactor it shares.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[async_trait]
impl<DB: sqlx::Database, R: TransactionalReactor<DB>> TransactionalReactor<DB> for Arc<R> {
    async fn react(
        &self,
        conn: &mut DB::Connection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError> {
        R::react(self, conn, event, ctx).await
    }

    async fn setup(&self, conn: &mut DB::Connection) -> std::result::Result<(), BoxError> {
        R::setup(self, conn).await
    }

    async fn flush(
        &self,
        conn: &mut DB::Connection,
        events: &[Arc<EventEnvelope>],
    ) -> std::result::Result<(), BoxError> {
        R::flush(self, conn, events).await
    }

    async fn reset(&self, conn: &mut DB::Connection) -> std::result::Result<(), BoxError> {
        R::reset(self, conn).await
    }
}

/// What a subscription with exactly-once effects runs: a [`TransactionalReactor`] and the
/// database its writes and its checkpoints share. Give it to
/// [`SubscriptionBuilder::exactly_once`](super::SubscriptionBuilder::exactly_once), and run
/// the subscription with the checkpoint store of the same database
/// (`SqliteCheckpointStore::new(&store)`, `PostgresCheckpointStore::new(&store)`).
#[derive(Clone)]
pub struct ExactlyOnce(pub(crate) Arc<dyn Sink>);

impl fmt::Debug for ExactlyOnce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExactlyOnce")
            .field(&self.0.backend())
            .finish()
    }
}

impl ExactlyOnce {
    /// Writes and checkpoints in `events`' SQLite database (each batch holds the store's
    /// writer turn while it runs, as an append does).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(
        events: &crate::store::SqliteEventStore,
        reactor: impl TransactionalReactor<sqlx::Sqlite>,
    ) -> Self {
        Self(Arc::new(SqlSink {
            db: events.db().clone(),
            checkpoints: super::SqliteCheckpointStore::new(events),
            reactor,
        }))
    }

    /// Writes and checkpoints in `events`' PostgreSQL database. While a batch runs its
    /// transaction holds back every reader of the log (the settled watermark): keep batches
    /// short (`max_batch_time`).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(
        events: &crate::store::PostgresEventStore,
        reactor: impl TransactionalReactor<sqlx::Postgres>,
    ) -> Self {
        Self(Arc::new(SqlSink {
            db: events.db().clone(),
            checkpoints: super::PostgresCheckpointStore::new(events),
            reactor,
        }))
    }
}

/// Where the batches of an exactly-once subscription run.
#[async_trait]
pub(crate) trait Sink: Send + Sync + 'static {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// Opens a batch: a write transaction.
    async fn begin(&self) -> Result<Box<dyn SinkTx + '_>>;

    /// Starts a rebuild in one transaction: the reactor's reset, then every partition of
    /// `name` (version `version`) back to the origin, fenced ([`CheckpointStore::rebuild`]).
    ///
    /// [`CheckpointStore::rebuild`]: super::CheckpointStore::rebuild
    async fn rebuild(&self, name: &str, version: u32, target: u64) -> Result<u32>;

    /// Runs the reactor's `setup` in a transaction of its own.
    async fn setup(&self, name: &str) -> Result<()>;
}

/// One batch's transaction.
#[async_trait]
pub(crate) trait SinkTx: Send {
    /// Runs the reactor for one event in the batch's transaction. After an error the caller
    /// drops the transaction (rolling back every write of the batch).
    async fn react(
        &mut self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError>;

    /// Runs the reactor's `flush` of `written` (the events whose `react` succeeded in this
    /// transaction), then commits the checkpoint at `position` (fenced by `lease`), the newly
    /// parked events and the removal of replayed ones in this transaction, then the
    /// transaction. On any error nothing of the batch is kept; a failing `flush` is
    /// [`Error::ReadModel`](crate::Error::ReadModel) with the step `flush`.
    async fn commit(
        self: Box<Self>,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
        unparked: &[EventId],
        written: &[Arc<EventEnvelope>],
    ) -> Result<RunStatus>;
}

/// The sink over one SQL backend: its database, its checkpoint store, the user's reactor.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct SqlSink<D: crate::store::sql::Dialect, C, R> {
    db: crate::store::sql::SqlDb<D>,
    checkpoints: C,
    reactor: R,
}

/// A batch of a [`SqlSink`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct SqlSinkTx<'a, D: crate::store::sql::Dialect, C, R> {
    write: crate::store::sql::Write<D>,
    sink: &'a SqlSink<D, C, R>,
}

/// The sink for one backend, written once for the concrete types (their bounds hold there).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! sql_sink {
    ($feature:literal, $dialect:ty, $checkpoints:ty, $db:ty) => {
        #[cfg(feature = $feature)]
        #[async_trait]
        impl<R: TransactionalReactor<$db>> Sink for SqlSink<$dialect, $checkpoints, R> {
            fn backend(&self) -> &'static str {
                <$dialect as crate::store::sql::Dialect>::BACKEND
            }

            async fn begin(&self) -> Result<Box<dyn SinkTx + '_>> {
                let write = self
                    .db
                    .begin_write("opening the transaction of an exactly-once batch")
                    .await?;
                Ok(Box::new(SqlSinkTx { write, sink: self }))
            }

            async fn setup(&self, name: &str) -> Result<()> {
                let what = format!("setting up the read model of subscription `{name}`");
                let mut write = self.db.begin_write(&what).await?;
                self.reactor.setup(&mut *write.tx).await.map_err(|source| {
                    crate::Error::ReadModel {
                        subscription: name.to_owned(),
                        step: "setup",
                        source,
                    }
                })?;
                write.commit(&what).await
            }

            async fn rebuild(&self, name: &str, version: u32, target: u64) -> Result<u32> {
                let what = format!("rebuilding subscription `{name}`");
                let mut write = self.db.begin_write(&what).await?;
                // The model first: a reset that waits for a batch in flight (a table lock)
                // then finds it committed, or sees it fenced out once the checkpoints move.
                self.reactor.reset(&mut *write.tx).await.map_err(|source| {
                    crate::Error::ReadModel {
                        subscription: name.to_owned(),
                        step: "reset",
                        source,
                    }
                })?;
                let partitions = self
                    .checkpoints
                    .rebuild_in(&mut write.tx, name, version, target)
                    .await?;
                write.commit(&what).await?;
                Ok(partitions)
            }
        }

        #[cfg(feature = $feature)]
        #[async_trait]
        impl<R: TransactionalReactor<$db>> SinkTx for SqlSinkTx<'_, $dialect, $checkpoints, R> {
            async fn react(
                &mut self,
                event: &EventEnvelope,
                ctx: &ReactionContext,
            ) -> std::result::Result<(), BoxError> {
                self.sink
                    .reactor
                    .react(&mut *self.write.tx, event, ctx)
                    .await
            }

            async fn commit(
                self: Box<Self>,
                lease: &Lease,
                position: u64,
                parked: &[ParkedEvent],
                unparked: &[EventId],
                written: &[Arc<EventEnvelope>],
            ) -> Result<RunStatus> {
                let mut this = *self;
                if !written.is_empty() {
                    this.sink
                        .reactor
                        .flush(&mut *this.write.tx, written)
                        .await
                        .map_err(|source| crate::Error::ReadModel {
                            subscription: lease.key.subscription.to_string(),
                            step: "flush",
                            source,
                        })?;
                }
                let status = this
                    .sink
                    .checkpoints
                    .commit_in(&mut this.write.tx, lease, position, parked)
                    .await?;
                if !unparked.is_empty() {
                    this.sink
                        .checkpoints
                        .unpark_in(&mut this.write.tx, lease, unparked)
                        .await?;
                }
                this.write
                    .commit("committing an exactly-once batch with its checkpoint")
                    .await?;
                Ok(status)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
sql_sink!(
    "sqlite",
    crate::store::sqlite::SqliteDialect,
    super::SqliteCheckpointStore,
    sqlx::Sqlite
);
#[cfg(feature = "postgres")]
sql_sink!(
    "postgres",
    crate::store::postgres::PostgresDialect,
    super::PostgresCheckpointStore,
    sqlx::Postgres
);
