//! The SQLite dialect: how its rows and values read, and how its writers take turns.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqliteQueryResult, SqliteRow};

use super::statements::Statements;
use crate::error::Result;
use crate::message::EventId;
use crate::store::sql::{Dialect, EventRow, Interner, StoredSlot, to_u64};

/// SQLite, for the [SQL core](crate::store::sql).
#[derive(Debug)]
pub(crate) enum SqliteDialect {}

impl Dialect for SqliteDialect {
    type Db = sqlx::Sqlite;
    type Statements = Statements;
    /// Microseconds since the Unix epoch.
    type Time = i64;
    type SchemaVersion = i64;
    /// The UUID as text.
    type EventIdArg = String;

    const BACKEND: &'static str = "sqlite";
    const OUTAGE_HINT: &'static str = "check that the database file exists, is writable, and is not locked by another program for longer than `busy_timeout`";
    /// Takes the file's write lock at once, so that a writer of another process is waited
    /// for (up to `busy_timeout`) rather than failing the transaction half-way.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const ONE_WRITER: bool = true;

    fn time(value: i64, _column: &'static str) -> DateTime<Utc> {
        from_micros(value)
    }

    fn store_time(value: DateTime<Utc>) -> i64 {
        value.timestamp_micros()
    }

    fn schema_version(value: i64) -> u32 {
        u32::try_from(value).unwrap_or(0)
    }

    fn store_schema_version(value: u32) -> i64 {
        i64::from(value)
    }

    fn event_id(id: EventId) -> String {
        id.to_string()
    }

    fn event_row<'r>(row: &'r SqliteRow, names: &mut Interner) -> Result<EventRow<'r>> {
        event_row(row, names)
    }

    /// A damaged slot reads as a stand-in that matches no event, so the append is then
    /// refused as "not an exact retry" rather than failing on the row.
    fn stored_slot(row: &SqliteRow) -> Result<StoredSlot> {
        let mut ignored = Vec::new();
        Ok(StoredSlot {
            version: to_u64(integer(row, 0, "stream_version", &mut ignored)),
            event_id: parse_event_id(text(row, 1, "event_id", &mut ignored), &mut ignored),
            position: to_u64(integer(row, 2, "global_position", &mut ignored)),
            recorded_at: from_micros(integer(row, 3, "recorded_at", &mut ignored)),
        })
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Reads one event row (columns in [`COLUMNS`](crate::store::sql::COLUMNS) order).
///
/// SQLite lets any column hold any type, so a row written behind the store's back may hold a
/// blob where text belongs: each such column is reported as a defect of the row (and read
/// the way SQLite converts it, or as a stand-in), never as a failed read.
fn event_row<'r>(row: &'r SqliteRow, names: &mut Interner) -> Result<EventRow<'r>> {
    let mut defects = Vec::new();
    let global_position: i64 = row
        .try_get(0)
        .map_err(|e| SqliteDialect::unavailable("decoding an event row", e))?;
    let stream_id = text(row, 1, "stream_id", &mut defects);
    let stream_version = integer(row, 2, "stream_version", &mut defects);
    let event_id = parse_event_id(text(row, 3, "event_id", &mut defects), &mut defects);
    let event_type = text(row, 4, "event_type", &mut defects);
    let event_version = integer(row, 5, "event_version", &mut defects);
    let payload = text(row, 6, "payload", &mut defects);
    let metadata = text(row, 7, "metadata", &mut defects);
    let micros = integer(row, 8, "recorded_at", &mut defects);
    let recorded_at = DateTime::from_timestamp_micros(micros).unwrap_or_else(|| {
        defects.push(format!("`recorded_at` {micros} is out of range"));
        DateTime::default()
    });
    Ok(EventRow {
        global_position,
        stream_id: names.stream(stream_id),
        stream_version,
        event_id,
        event_type: names.event_type(event_type),
        event_version,
        payload,
        metadata,
        recorded_at,
        defects,
    })
}

/// A text column, or (when it holds another type) SQLite's conversion of it and a defect.
fn text<'r>(row: &'r SqliteRow, index: usize, column: &str, defects: &mut Vec<String>) -> &'r str {
    row.try_get(index).unwrap_or_else(|err| {
        defects.push(format!("`{column}` is not text ({err})"));
        row.try_get_unchecked(index).unwrap_or_default()
    })
}

/// An integer column, or (when it holds another type) 0 and a defect.
fn integer(row: &SqliteRow, index: usize, column: &str, defects: &mut Vec<String>) -> i64 {
    row.try_get(index).unwrap_or_else(|err| {
        defects.push(format!("`{column}` is not an integer ({err})"));
        0
    })
}

/// Microseconds since the epoch, as stored.
pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Now, at the microsecond precision the store keeps.
pub(crate) fn now_micros() -> (DateTime<Utc>, i64) {
    let micros = Utc::now().timestamp_micros();
    (from_micros(micros), micros)
}

/// Parses a stored event id (kept as text by SQLite); a value that is not a UUID gives the
/// nil id and a defect for the row.
pub(crate) fn parse_event_id(text: &str, defects: &mut Vec<String>) -> EventId {
    match uuid::Uuid::parse_str(text) {
        Ok(id) => EventId::from_uuid(id),
        Err(err) => {
            defects.push(format!("`event_id` is not a UUID ({err})"));
            EventId::from_uuid(uuid::Uuid::nil())
        }
    }
}
