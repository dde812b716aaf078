//! Events on their way into the store and as stored.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, EventId, MessageMetadata, StreamId};
use crate::error::{Error, EventLoadError, EventLoadErrorKind};

/// A JSON payload, kept as text so stores can hand it around without re-encoding.
///
/// Cloning is cheap (reference counted). A payload read from a store is not validated until
/// it is decoded, so one corrupt row cannot stop a whole read.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Serializes a value into a payload.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|s| Self(Arc::from(s)))
    }

    /// Wraps JSON text as stored. The text is not checked here; decoding reports problems.
    pub fn from_json_text(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// Wraps a JSON value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(Arc::from(value.to_string()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the payload into a JSON value.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// An event ready to be appended: its id, type, schema version, payload and metadata.
///
/// ```
/// use lexigram::message::{Event, MessageMetadata, NewEvent};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Opened { owner: String }
/// # impl Event for Opened { const NAME: &'static str = "bank.Opened"; const VERSION: u32 = 2; }
///
/// let event = NewEvent::from_event(&Opened { owner: "ada".into() }, MessageMetadata::new())?;
/// assert_eq!(&*event.event_type, "bank.Opened");
/// assert_eq!(event.event_version, 2);
/// assert_eq!(event.payload.as_str(), r#"{"owner":"ada"}"#);
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    /// The event's id; a retried append with the same ids does not duplicate.
    pub event_id: EventId,
    /// The stable event name ([`Event::NAME`]).
    pub event_type: Arc<str>,
    /// The payload's schema version ([`Event::VERSION`]).
    pub event_version: u32,
    /// The serialized event.
    pub payload: Payload,
    /// Who, when, and what caused it.
    pub metadata: MessageMetadata,
}

impl NewEvent {
    /// Serializes a typed event with a fresh event id.
    pub fn from_event<E: Event>(event: &E, metadata: MessageMetadata) -> Result<Self, Error> {
        let payload = Payload::encode(event).map_err(|source| Error::Serialization {
            what: format!("event `{}` (v{})", E::NAME, E::VERSION),
            source,
        })?;
        Ok(Self::new(E::NAME, E::VERSION, payload, metadata))
    }

    /// Builds an event from its parts, with a fresh event id.
    pub fn new(
        event_type: impl Into<Arc<str>>,
        event_version: u32,
        payload: Payload,
        metadata: MessageMetadata,
    ) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event_type.into(),
            event_version,
            payload,
            metadata,
        }
    }

    /// Replaces the event id (to make an append idempotent across retries).
    #[must_use]
    pub fn with_event_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }
}

/// An event as stored: the event plus where it lives.
///
/// Stream versions are 1-based and dense within a stream; global positions are 1-based and
/// strictly increasing across all streams (they may have holes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventEnvelope {
    /// The event's id.
    pub event_id: EventId,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// The event's 1-based version within its stream.
    pub stream_version: u64,
    /// The event's 1-based position in the store's global order.
    pub global_position: u64,
    /// The stable event name.
    pub event_type: Arc<str>,
    /// The payload's schema version (after any upcasting applied by the store).
    pub event_version: u32,
    /// The serialized event.
    pub payload: Payload,
    /// Who, when, and what caused it.
    pub metadata: MessageMetadata,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Why the stored row could not be read in full (see [`defect`](Self::defect)).
    #[serde(skip)]
    defect: Option<Arc<str>>,
}

impl EventEnvelope {
    /// Stores an event at a place; used by store backends and test fixtures.
    pub fn new(
        event: NewEvent,
        stream_id: StreamId,
        stream_version: u64,
        global_position: u64,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: event.event_id,
            stream_id,
            stream_version,
            global_position,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at,
            defect: None,
        }
    }

    /// Marks the envelope as read from a damaged row: `reason` names the column and what is
    /// wrong with it. Store backends use it so that one bad row neither stops a read nor
    /// passes for a good event.
    #[must_use]
    pub fn with_defect(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.defect = Some(reason.into());
        self
    }

    /// Why the stored row this envelope was read from is damaged, if it is: a column that is
    /// not what the store writes (metadata that is not JSON, an event id that is not a UUID,
    /// a timestamp out of range, a value of the wrong type), so some fields hold a stand-in.
    ///
    /// Such an envelope keeps its place in the log (its global position is right, so a reader
    /// following the log passes over it), but it never decodes: [`decode`](Self::decode), an
    /// aggregate's [`Route`](crate::aggregate::Route) and typed event handlers fail with an
    /// [`EventLoadError`] naming its stream and version. Repair or delete the row.
    pub fn defect(&self) -> Option<&str> {
        self.defect.as_deref()
    }

    /// The error for a damaged row, if this envelope was read from one.
    pub(crate) fn defect_error(&self) -> Option<EventLoadError> {
        self.defect.as_ref().map(|reason| {
            self.load_error(EventLoadErrorKind::DamagedRow {
                reason: Arc::clone(reason),
            })
        })
    }

    /// Whether this envelope holds an event of type `E` (by name).
    pub fn is<E: Event>(&self) -> bool {
        &*self.event_type == E::NAME
    }

    /// Decodes the payload as `E`.
    ///
    /// Fails with an [`EventLoadError`] naming the stream, version and type when the envelope
    /// was read from a damaged row ([`defect`](Self::defect)), holds another type, a schema version this binary cannot read (register an upcaster and
    /// attach the schema to the store), or a payload that does not deserialize.
    pub fn decode<E: Event>(&self) -> Result<E, EventLoadError> {
        if let Some(err) = self.defect_error() {
            return Err(err);
        }
        if !self.is::<E>() {
            return Err(self.load_error(EventLoadErrorKind::WrongType { expected: E::NAME }));
        }
        if self.event_version != E::VERSION {
            return Err(self.load_error(EventLoadErrorKind::VersionMismatch {
                stored: self.event_version,
                expected: E::VERSION,
            }));
        }
        serde_json::from_str(self.payload.as_str())
            .map_err(|source| self.load_error(EventLoadErrorKind::Corrupt(source)))
    }

    /// An error about this envelope.
    pub(crate) fn load_error(&self, kind: EventLoadErrorKind) -> EventLoadError {
        EventLoadError::new(
            self.stream_id.clone(),
            self.stream_version,
            self.event_type.clone(),
            kind,
        )
    }
}
