//! Identifier newtypes.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

uuid_id!(
    /// Identifies one message (command, query or event) for its whole life.
    MessageId
);
uuid_id!(
    /// Identifies one stored event. Appending an event whose id is already stored at the same
    /// place is an idempotent retry, not a duplicate.
    EventId
);
uuid_id!(
    /// Ties together every message caused, directly or not, by one original request.
    CorrelationId
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                Self(Arc::from(s.as_str()))
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(Arc::from(uuid.to_string()))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

string_id!(
    /// Names an event stream. Cheap to clone (reference counted).
    StreamId
);
string_id!(
    /// Identifies an aggregate instance: a UUID or any string. Its events live in the stream of
    /// the same name.
    AggregateId
);

impl AggregateId {
    /// A new random (UUIDv7) aggregate id.
    pub fn new() -> Self {
        Self::from(Uuid::now_v7())
    }

    /// The stream this aggregate's events are stored in.
    pub fn stream_id(&self) -> StreamId {
        StreamId(Arc::clone(&self.0))
    }
}

impl Default for AggregateId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<StreamId> for AggregateId {
    fn from(stream: StreamId) -> Self {
        Self(stream.0)
    }
}

impl From<&AggregateId> for AggregateId {
    fn from(id: &AggregateId) -> Self {
        id.clone()
    }
}

impl From<&StreamId> for StreamId {
    fn from(id: &StreamId) -> Self {
        id.clone()
    }
}

impl From<&AggregateId> for StreamId {
    fn from(id: &AggregateId) -> Self {
        id.stream_id()
    }
}

impl From<AggregateId> for StreamId {
    fn from(id: AggregateId) -> Self {
        StreamId(id.0)
    }
}

/// The longest stream id (and aggregate id) a store accepts, in bytes of UTF-8.
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// Refuses a stream id no backend can hold (a NUL character, which PostgreSQL text cannot
/// store, or more than [`MAX_STREAM_ID_BYTES`] bytes) before any I/O, with an error that shows
/// only its start.
pub(crate) fn check_stream_id(stream: &str) -> crate::error::Result<()> {
    let reason = if stream.contains('\0') {
        "it contains a NUL character".to_owned()
    } else if stream.len() > MAX_STREAM_ID_BYTES {
        format!("it is {} bytes long", stream.len())
    } else {
        return Ok(());
    };
    Err(crate::error::Error::InvalidStreamId {
        preview: preview(stream),
        reason,
    })
}

/// The first 64 characters of `text`, NULs shown as `\0`, with `…` when cut.
fn preview(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = text
        .chars()
        .take(SHOWN)
        .flat_map(|c| match c {
            '\0' => vec!['\\', '0'],
            c => vec![c],
        })
        .collect();
    if text.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_compare_with_str_and_share_storage() {
        let id = AggregateId::from("order-1");
        let stream = id.stream_id();
        assert_eq!(stream, "order-1");
        assert_eq!(stream.to_string(), "order-1");
        assert_eq!(format!("{stream:?}"), "StreamId(\"order-1\")");
    }

    #[test]
    fn uuid_ids_serialize_as_plain_strings() {
        let a = EventId::new();
        assert_ne!(a, EventId::new());
        assert_eq!(serde_json::to_string(&a).ok(), Some(format!("\"{a}\"")));
    }
}
