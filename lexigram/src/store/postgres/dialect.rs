//! The PostgreSQL dialect: typed rows, timestamps decoded by hand, one writer's turn per
//! transaction (the server orders them).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgQueryResult, PgRow};
use uuid::Uuid;

use super::statements::Statements;
use crate::error::Result;
use crate::message::EventId;
use crate::store::sql::{Dialect, EventRow, Interner, StoredSlot, to_u64};

/// PostgreSQL, for the [SQL core](crate::store::sql).
#[derive(Debug)]
pub(crate) enum PostgresDialect {}

impl Dialect for PostgresDialect {
    type Db = sqlx::Postgres;
    type Statements = Statements;
    type Time = PgTime;
    /// An `integer` column.
    type SchemaVersion = i32;
    type EventIdArg = Uuid;

    const BACKEND: &'static str = "postgres";
    const OUTAGE_HINT: &'static str = "check that the server is reachable with the configured DSN and that its user may use the schema";
    const BEGIN_WRITE: Option<&'static str> = None;
    /// Writers run concurrently: the server's row locks order the writers of one stream.
    const ONE_WRITER: bool = false;

    fn time(value: PgTime, column: &'static str) -> DateTime<Utc> {
        value.or_epoch(column)
    }

    fn store_time(value: DateTime<Utc>) -> PgTime {
        PgTime::from_utc(value)
    }

    fn schema_version(value: i32) -> u32 {
        u32::try_from(value).unwrap_or(0)
    }

    fn store_schema_version(value: u32) -> i32 {
        i32::try_from(value).unwrap_or(i32::MAX)
    }

    fn event_id(id: EventId) -> Uuid {
        id.as_uuid()
    }

    fn event_row<'r>(row: &'r PgRow, names: &mut Interner) -> Result<EventRow<'r>> {
        event_row(row, names)
    }

    fn stored_slot(row: &PgRow) -> Result<StoredSlot> {
        let get =
            |e: sqlx::Error| PostgresDialect::unavailable("reading stored events for a retry", e);
        let recorded_at: PgTime = row.try_get(3).map_err(get)?;
        Ok(StoredSlot {
            version: to_u64(row.try_get(0).map_err(get)?),
            event_id: EventId::from_uuid(row.try_get(1).map_err(get)?),
            position: to_u64(row.try_get(2).map_err(get)?),
            recorded_at: recorded_at.or_epoch("recorded_at"),
        })
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Reads one event row (columns in [`COLUMNS`](crate::store::sql::COLUMNS) order). The columns are typed, so what can be
/// damaged is their content: metadata that is not JSON (reported by
/// [`EventRow::into_envelope`](crate::store::sql::EventRow::into_envelope)) or a timestamp that is not finite.
fn event_row<'r>(row: &'r PgRow, names: &mut Interner) -> Result<EventRow<'r>> {
    let get = |e: sqlx::Error| PostgresDialect::unavailable("decoding an event row", e);
    let event_version: i32 = row.try_get(5).map_err(get)?;
    let mut defects = Vec::new();
    let recorded_at = PgTime::read(row, 8, "recorded_at", &mut defects)?;
    Ok(EventRow {
        global_position: row.try_get(0).map_err(get)?,
        stream_id: names.stream(row.try_get(1).map_err(get)?),
        stream_version: row.try_get(2).map_err(get)?,
        event_id: EventId::from_uuid(row.try_get(3).map_err(get)?),
        event_type: names.event_type(row.try_get(4).map_err(get)?),
        event_version: i64::from(event_version),
        payload: row.try_get(6).map_err(get)?,
        metadata: row.try_get(7).map_err(get)?,
        recorded_at,
        defects,
    })
}

/// A `timestamptz` as the server sends it: microseconds since 2000-01-01, or `i64::MAX` /
/// `i64::MIN` for `infinity` / `-infinity`. Decoded by hand because sqlx's chrono conversion
/// panics on those.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgTime(i64);

/// 2000-01-01T00:00:00Z in microseconds since the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl PgTime {
    /// `time` as the server stores it (as sqlx's own conversion does: microseconds since
    /// 2000-01-01, saturating far outside the years any store holds).
    pub(crate) fn from_utc(time: DateTime<Utc>) -> Self {
        Self(time.timestamp_micros().saturating_sub(PG_EPOCH_MICROS))
    }

    /// The time, or `None` when it is infinite or beyond what `DateTime` holds.
    pub(crate) fn finite(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0.checked_add(PG_EPOCH_MICROS)?)
    }

    /// The time, or (when it is not finite) the Unix epoch with a warning: for timestamps
    /// that only describe a row (when a stream or snapshot was written).
    pub(crate) fn or_epoch(self, what: &str) -> DateTime<Utc> {
        self.finite().unwrap_or_else(|| {
            tracing::warn!(
                what,
                "a stored timestamp is not finite; shown as 1970-01-01"
            );
            DateTime::default()
        })
    }

    /// Reads column `index` of an event row; a time that is not finite is a defect of the row.
    fn read(
        row: &PgRow,
        index: usize,
        column: &str,
        defects: &mut Vec<String>,
    ) -> Result<DateTime<Utc>> {
        let time: PgTime = row
            .try_get(index)
            .map_err(|e| PostgresDialect::unavailable("decoding an event row", e))?;
        Ok(time.finite().unwrap_or_else(|| {
            defects.push(format!("`{column}` is not a finite timestamp"));
            DateTime::default()
        }))
    }
}

impl sqlx::Type<sqlx::Postgres> for PgTime {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for PgTime {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.extend_from_slice(&self.0.to_be_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for PgTime {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            sqlx::postgres::PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                Ok(Self(i64::from_be_bytes(bytes)))
            }
            sqlx::postgres::PgValueFormat::Text => {
                Err("a timestamp came back as text; lexigram reads them in binary".into())
            }
        }
    }
}
