//! Wake-ups: a coalesced `pg_notify` after appends commit, and listeners for them.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use super::{PostgresEventStore, unavailable};
use crate::error::Result;

impl PostgresEventStore {
    /// Listens for appends: each [`Wakeups::next`] resolves once at least one transaction
    /// that appended events has committed since the previous call (signals that arrive
    /// together are coalesced). Uses a dedicated connection of its own, never one of the
    /// store's pool (`max_connections` bounds the store's queries only); read with
    /// [`read_all`](crate::store::EventStore::read_all) from your checkpoint after each wake-up.
    ///
    /// Notifications are a hint, not a log: one is lost if the connection drops, so a live
    /// reader should also poll now and then.
    pub async fn listen(&self) -> Result<Wakeups> {
        self.log.check_open()?;
        // A pool of its own with one connection, outside the store's pool (a listener holds
        // its connection for its whole life); the listener reconnects through it.
        let options = (*self.log.db.pool.connect_options()).clone();
        let dedicated = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(self.log.db.pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&dedicated)
            .await
            .map_err(|e| unavailable("opening a listener connection", e))?;
        listener
            .listen(&self.log.db.sql.channel)
            .await
            .map_err(|e| unavailable(&format!("LISTEN on `{}`", self.log.db.sql.channel), e))?;
        Ok(Wakeups { listener })
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
    /// [`read_all`](crate::store::EventStore::read_all) once older transactions finish.
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

/// The least time between two wake-ups of one store. An append after a quiet spell is
/// announced at once; under a steady stream of appends this bounds the notifications (each
/// is a transaction of its own, competing with the appends for the server) to a few hundred
/// per second, at the price of at most this much extra latency for a live reader.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);

/// Sends one `pg_notify` per batch of appends that finished while the previous one was in
/// flight or within [`NOTIFY_INTERVAL`] of it, from its own short transaction: the append
/// itself never takes PostgreSQL's notification-queue lock, which is held until commit and
/// would serialise every writer's commit. Ends when the store (every clone) is dropped.
pub(super) async fn notifier(pool: PgPool, channel: String, mut appended: watch::Receiver<u64>) {
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
