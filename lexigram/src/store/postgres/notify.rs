//! Wake-ups: a coalesced `pg_notify` after appends commit, and listeners for them.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use super::{PostgresDialect, PostgresEventStore};
use crate::error::Result;
use crate::store::WeakNotifier;
use crate::store::sql::Dialect;

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
        listen_with(&self.listen_target()).await
    }

    /// What a listener needs to connect on its own, without holding the store.
    pub(super) fn listen_target(&self) -> ListenTarget {
        ListenTarget {
            options: (*self.log.db.pool.connect_options()).clone(),
            acquire_timeout: self.log.db.pool.options().get_acquire_timeout(),
            channel: self.log.db.sql.own.channel.clone(),
        }
    }

    /// Starts, once, the task that announces appends of other processes (and other pools):
    /// it listens on [`channel`](Self::channel) with a connection of its own and announces
    /// each notification's position. Nothing starts outside a tokio runtime.
    pub(super) fn watch_other_processes(&self) {
        let target = self.listen_target();
        let notifier = self.log.appended.downgrade();
        self.log
            .watcher
            .start_once(move || watch_notifications(target, notifier));
    }
}

/// Where a listener connects: the store's server and credentials, and its channel.
#[derive(Debug, Clone)]
pub(super) struct ListenTarget {
    options: PgConnectOptions,
    acquire_timeout: Duration,
    channel: String,
}

/// A listener on `target`'s channel, on a dedicated connection.
async fn listen_with(target: &ListenTarget) -> Result<Wakeups> {
    // A pool of its own with one connection, outside the store's pool (a listener holds
    // its connection for its whole life); the listener reconnects through it.
    let dedicated = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(target.acquire_timeout)
        .connect_lazy_with(target.options.clone());
    let mut listener = PgListener::connect_with(&dedicated)
        .await
        .map_err(|e| PostgresDialect::unavailable("opening a listener connection", e))?;
    listener
        .listen(&target.channel)
        .await
        .map_err(|e| PostgresDialect::unavailable(&format!("LISTEN on `{}`", target.channel), e))?;
    Ok(Wakeups { listener })
}

/// The longest pause between two attempts to listen again after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Announces the position of every notification on `target`'s channel, listening again
/// after a failure with a pause that doubles from 50 ms up to [`MAX_BACKOFF`]. Ends when the
/// store (every clone) is dropped, or is aborted when it is closed.
async fn watch_notifications(target: ListenTarget, notifier: WeakNotifier) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if notifier.upgrade().is_none() {
            return;
        }
        match listen_with(&target).await {
            Ok(mut wakeups) => loop {
                match wakeups.next().await {
                    Ok(position) => {
                        backoff = Duration::from_millis(50);
                        let Some(notifier) = notifier.upgrade() else {
                            return;
                        };
                        notifier.announce(position);
                    }
                    Err(err) => {
                        tracing::debug!(%err, channel = target.channel, "lost the listener connection; listening again");
                        break;
                    }
                }
            },
            Err(err) => {
                tracing::debug!(%err, channel = target.channel, ?backoff, "could not listen for appends of other processes; trying again");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
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
            .map_err(|e| PostgresDialect::unavailable("waiting for a notification", e))?;
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
