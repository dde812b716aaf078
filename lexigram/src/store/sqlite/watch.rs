//! Appends by other processes: `PRAGMA data_version` polled on a connection of its own.

use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::time::MissedTickBehavior;

use crate::store::WeakNotifier;
use crate::store::sql::to_u64;

/// The longest pause after a failed check (the file is missing, locked for long, ...).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Every `interval`, reads `PRAGMA data_version` (which moves whenever another connection
/// commits to the file) on one dedicated connection, never one of the pool's; when it moved,
/// reads the last position with `last_position` and announces it. Runs until the store is
/// dropped (the notifier is gone) or the task is aborted (the store was closed). Failures
/// drop the connection and wait, doubling up to [`MAX_BACKOFF`].
pub(super) async fn data_version(
    options: SqliteConnectOptions,
    last_position: String,
    interval: Duration,
    notifier: WeakNotifier,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn: Option<SqliteConnection> = None;
    let mut seen: Option<i64> = None;
    let mut backoff = interval;
    loop {
        ticker.tick().await;
        if notifier.upgrade().is_none() {
            return;
        }
        match check(&mut conn, &options, &last_position, &mut seen).await {
            Ok(None) => backoff = interval,
            Ok(Some(position)) => {
                backoff = interval;
                let Some(notifier) = notifier.upgrade() else {
                    return;
                };
                notifier.announce(position);
            }
            Err(err) => {
                conn = None;
                tracing::debug!(%err, ?backoff, "could not check the SQLite file for appends by other processes; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One check: `Some(last position)` when the file changed since the last check (or on the
/// first one, so that nothing committed before the watcher started goes unannounced).
async fn check(
    conn: &mut Option<SqliteConnection>,
    options: &SqliteConnectOptions,
    last_position: &str,
    seen: &mut Option<i64>,
) -> Result<Option<u64>, sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(SqliteConnection::connect_with(options).await?),
    };
    let version: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await?;
    if *seen == Some(version) {
        return Ok(None);
    }
    let last: i64 = sqlx::query_scalar(last_position)
        .fetch_one(&mut *conn)
        .await?;
    *seen = Some(version);
    Ok(Some(to_u64(last)))
}
