//! Stored rows back into envelopes: the decoded row, the strings shared between the rows
//! of one read, and the integer conversions SQL needs.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::message::{EventEnvelope, EventId, MessageMetadata, NewEvent, Payload, StreamId};

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
