//! What every SQL append checks before it writes, and how it recognises a retry.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::message::{EventId, NewEvent, StreamId};
use crate::store::{AppendResult, not_a_retry};

/// Whether `err` is about the connection or the server's state, so that repeating the same
/// call may succeed, rather than about the statement or its data (which a retry repeats).
///
/// PostgreSQL: connection exceptions (class `08`), insufficient resources (`53`), operator
/// intervention such as a terminated backend (`57P01`..) or a cancelled statement (`57014`),
/// serialization failures and deadlocks (`40001`, `40P01`), lock timeouts (`55P03`). SQLite:
/// `SQLITE_BUSY` and `SQLITE_LOCKED` (with their extended codes). Any backend: I/O, TLS and
/// protocol errors, an exhausted pool, a crashed worker.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            if let Ok(sqlite) = code.parse::<u32>() {
                // SQLite's result codes are numbers; the low byte is the primary code.
                return matches!(sqlite & 0xff, 5 | 6);
            }
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(&*code, "57014" | "40001" | "40P01" | "55P03")
        }),
        _ => false,
    }
}

/// Serializes an event's metadata for storage.
pub(crate) fn metadata_text(stream: &str, event: &NewEvent) -> Result<String> {
    serde_json::to_string(&event.metadata).map_err(|err| Error::EventPersistence {
        stream: StreamId::from(stream),
        reason: format!(
            "could not serialize the metadata of event `{}` ({})",
            event.event_type, event.event_id
        ),
        source: Some(Box::new(err)),
    })
}

/// An event already stored: what a retry is compared against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredSlot {
    pub(crate) version: u64,
    pub(crate) event_id: EventId,
    pub(crate) position: u64,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// Decides whether an append whose first event id is already stored (in `first_stream` at
/// `first_version`) is an exact retry: every event stored, in order, in `stream`, at the
/// versions the append would have given them (`start + 1 ..`, from
/// [`retry_span`](crate::store::retry_span)). `stored` holds the stream's events in that range.
pub(crate) fn retry_result(
    stream: &str,
    events: &[NewEvent],
    start: u64,
    first_stream: &str,
    first_version: u64,
    stored: &[StoredSlot],
) -> Result<AppendResult> {
    let mut positions = Vec::with_capacity(events.len());
    let mut recorded_at = None;
    let mut version = start;
    for event in events {
        version = version.saturating_add(1);
        match stored.iter().find(|s| s.version == version) {
            Some(slot) if slot.event_id == event.event_id && first_stream == stream => {
                positions.push(slot.position);
                recorded_at.get_or_insert(slot.recorded_at);
            }
            _ => {
                let id = events.first().map_or(event.event_id, |e| e.event_id);
                return Err(not_a_retry(stream, id, first_stream, first_version));
            }
        }
    }
    Ok(AppendResult::new(
        version,
        positions,
        recorded_at.unwrap_or_else(Utc::now),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_and_bad_statements_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
