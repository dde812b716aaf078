//! What holds readers of the global log back: committed events they cannot see yet because an
//! older transaction is still open (PostgreSQL; see `docs/postgres-ordering.md`).

use std::fmt;
use std::time::Duration;

/// Committed events that readers of the log cannot see yet, and the open transaction that
/// holds them back: the oldest transaction with an id on the database server (ids are
/// cluster-wide, so it may be in another database). From
/// [`EventStore::held_back`](crate::store::EventStore::held_back).
///
/// It names the server process, never its statement (which may hold a secret); look it up
/// with `SELECT * FROM pg_stat_activity WHERE pid = ..`, and end it with
/// `pg_terminate_backend(pid)` if it is stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBack {
    /// Events committed but not readable yet (an upper bound: positions, some of which may
    /// belong to transactions that rolled back).
    pub unsettled: u64,
    /// The server process of the oldest open transaction (`pg_stat_activity.pid`).
    pub pid: i32,
    /// Its database.
    pub database: Option<String>,
    /// Its `application_name`.
    pub application: Option<String>,
    /// Its state (`active`, `idle in transaction`, ...).
    pub state: Option<String>,
    /// How long its transaction has been open.
    pub open_for: Duration,
}

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} committed event(s) wait behind server process {} ({}{}, open for {:.1?}, {})",
            self.unsettled,
            self.pid,
            self.database.as_deref().unwrap_or("no database"),
            self.application
                .as_deref()
                .filter(|a| !a.is_empty())
                .map(|a| format!(", {a}"))
                .unwrap_or_default(),
            self.open_for,
            self.state.as_deref().unwrap_or("state unknown"),
        )
    }
}
