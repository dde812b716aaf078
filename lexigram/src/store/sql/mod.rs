//! What the SQL backends share: identifier validation, the migration list type, batch checks,
//! idempotent-retry detection, and turning stored rows back into envelopes.
//!
//! Nothing here is public: each backend (`sqlite`, `postgres`) runs its own migrations with
//! its own locking, but both describe them with [`Migration`] and hold the same rules.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::AppendResult;
use crate::error::{BoxError, Error, Result};
use crate::message::{EventEnvelope, EventId, MessageMetadata, NewEvent, Payload, StreamId};

/// The longest identifier (table prefix, schema) accepted from configuration.
pub(crate) const MAX_IDENTIFIER: usize = 41;

/// Whether `value` matches `^[a-z_][a-z0-9_]{0,40}$`: safe to splice into SQL unquoted.
pub(crate) fn is_identifier(value: &str) -> bool {
    let mut bytes = value.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    first_ok
        && value.len() <= MAX_IDENTIFIER
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Adds a problem to `problems` unless `value` is a valid identifier (or, when `allow_empty`,
/// empty).
pub(crate) fn check_identifier(
    what: &str,
    value: &str,
    allow_empty: bool,
    problems: &mut Vec<String>,
) {
    if (allow_empty && value.is_empty()) || is_identifier(value) {
        return;
    }
    problems.push(format!(
        "{what} `{value}` is not a valid SQL identifier: use 1 to {MAX_IDENTIFIER} lowercase ASCII letters, digits or `_`, not starting with a digit"
    ));
}

/// One step of a backend's schema. Steps run in `version` order, each once, each in its own
/// transaction, and are recorded in the `<prefix>migrations` table.
#[derive(Debug)]
pub(crate) struct Migration {
    /// 1-based, dense.
    pub(crate) version: i64,
    /// What the step does, recorded beside its version.
    pub(crate) name: &'static str,
    /// The statements, run in order.
    pub(crate) statements: Vec<String>,
}

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

/// Checks a batch before it is written: valid JSON payloads, no id twice.
pub(crate) fn check_batch(stream: &str, events: &[NewEvent]) -> Result<()> {
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(event.payload.as_str()) {
            return Err(Error::EventPersistence {
                stream: StreamId::from(stream),
                reason: format!(
                    "the payload of event `{}` ({}) is not valid JSON; encode events with `Payload::encode`",
                    event.event_type, event.event_id
                ),
                source: Some(Box::new(err)),
            });
        }
        if !seen.insert(event.event_id) {
            return Err(duplicate_id(stream, event.event_id, None));
        }
    }
    Ok(())
}

/// The error for an event id that is stored already (or twice in one batch).
pub(crate) fn duplicate_id(stream: &str, id: EventId, source: Option<BoxError>) -> Error {
    Error::EventPersistence {
        stream: StreamId::from(stream),
        reason: format!(
            "event id {id} appears twice or is already stored, and this append is not an exact retry of the one that stored it; give every new event its own id"
        ),
        source,
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
/// [`retry_span`](super::retry_span)). `stored` holds the stream's events in that range.
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
                return Err(super::not_a_retry(stream, id, first_stream, first_version));
            }
        }
    }
    Ok(AppendResult::new(
        version,
        positions,
        recorded_at.unwrap_or_else(Utc::now),
    ))
}

/// An event row as read from a SQL table, before it becomes an envelope.
#[derive(Debug)]
pub(crate) struct EventRow<'r> {
    pub(crate) global_position: i64,
    pub(crate) stream_id: StreamId,
    pub(crate) stream_version: i64,
    pub(crate) event_id: EventId,
    pub(crate) event_type: Arc<str>,
    pub(crate) event_version: i64,
    pub(crate) payload: &'r str,
    pub(crate) metadata: &'r str,
    pub(crate) recorded_at: DateTime<Utc>,
    /// What the backend could not read as stored (a column per entry); the fields above hold
    /// stand-ins for those columns.
    pub(crate) defects: Vec<String>,
}

impl EventRow<'_> {
    /// The envelope. The payload is not parsed (a corrupt one fails when decoded). A damaged
    /// row (metadata that is not JSON, or anything the backend reported) still gives an
    /// envelope at its global position, marked with [`EventEnvelope::defect`], so a reader
    /// of the log passes over it and decoding it names the stream and version.
    pub(crate) fn into_envelope(self) -> EventEnvelope {
        let mut defects = self.defects;
        let metadata: MessageMetadata = match serde_json::from_str(self.metadata) {
            Ok(metadata) => metadata,
            Err(err) => {
                defects.push(format!(
                    "`metadata` is not the JSON of message metadata ({err})"
                ));
                MessageMetadata::new()
            }
        };
        let event_version = match u32::try_from(self.event_version) {
            Ok(version) => version,
            Err(_) => {
                defects.push(format!(
                    "`event_version` {} is not a schema version",
                    self.event_version
                ));
                0
            }
        };
        let stream_version = match u64::try_from(self.stream_version) {
            Ok(version) if version > 0 => version,
            _ => {
                defects.push(format!(
                    "`stream_version` {} is not a stream version",
                    self.stream_version
                ));
                0
            }
        };
        let event = NewEvent {
            event_id: self.event_id,
            event_type: self.event_type,
            event_version,
            payload: Payload::from_json_text(self.payload),
            metadata,
        };
        let envelope = EventEnvelope::new(
            event,
            self.stream_id,
            stream_version,
            to_u64(self.global_position),
            self.recorded_at,
        );
        if defects.is_empty() {
            envelope
        } else {
            envelope.with_defect(defects.join("; "))
        }
    }
}

/// Shares the stream id and event type strings between the rows of one read, so a page of
/// events of one stream holds one copy of each instead of one per row.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    stream: Option<StreamId>,
    types: Vec<Arc<str>>,
}

impl Interner {
    /// The stream id, shared with the previous row when it is the same.
    pub(crate) fn stream(&mut self, id: &str) -> StreamId {
        if let Some(last) = &self.stream
            && last.as_str() == id
        {
            return last.clone();
        }
        let stream = StreamId::from(id);
        self.stream = Some(stream.clone());
        stream
    }

    /// The event type, shared with earlier rows of the same type (up to 32 types).
    pub(crate) fn event_type(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.types.iter().find(|t| &***t == name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        if self.types.len() < 32 {
            self.types.push(Arc::clone(&name));
        }
        name
    }
}

/// A stored (non-negative) integer as `u64`.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A `u64` for a SQL `bigint`, saturating at `i64::MAX` (no store gets there).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `usize` limit for SQL, saturating.
pub(crate) fn limit_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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

    #[test]
    fn identifiers_are_strict() {
        for ok in ["a", "_", "lexigram_", "events2", &"a".repeat(41)] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "a-b",
            "a b",
            "a;drop table x",
            "\"a\"",
            "é",
            &"a".repeat(42),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
        let mut problems = Vec::new();
        check_identifier("table prefix", "", true, &mut problems);
        check_identifier("schema", "", false, &mut problems);
        check_identifier("schema", "Bad", false, &mut problems);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].contains("`Bad`"));
    }
}

/// Serde for a `Duration` written as whole milliseconds (`busy_timeout = 5000`).
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Serde for an optional `Duration` written as whole milliseconds (or `null`).
#[cfg(feature = "postgres")]
pub(crate) mod option_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|v| v.map(Duration::from_millis))
    }
}

/// Parses a stored event id (kept as text by SQLite); a value that is not a UUID gives the
/// nil id and a defect for the row.
#[cfg(feature = "sqlite")]
pub(crate) fn parse_event_id(text: &str, defects: &mut Vec<String>) -> EventId {
    match uuid::Uuid::parse_str(text) {
        Ok(id) => EventId::from_uuid(id),
        Err(err) => {
            defects.push(format!("`event_id` is not a UUID ({err})"));
            EventId::from_uuid(uuid::Uuid::nil())
        }
    }
}
