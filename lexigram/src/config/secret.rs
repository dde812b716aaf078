//! A string that never shows itself in logs, errors or serialized configurations.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text a secret is shown and serialized as.
const REDACTED: &str = "***";

/// A secret string (a DSN with its password, a webhook secret).
///
/// `Debug` and `Display` print `***`, and so does `Serialize`: a configuration written to a log
/// line with `serde_json::to_string(&config)` shows `"dsn":"***"`. (An empty secret serializes
/// as `""`, so a missing value stays visible as missing.) Serializing is therefore one-way: to
/// write a secret somewhere on purpose, take its value with [`expose`](Secret::expose). Reading
/// `***` back is refused with an error, so a redacted configuration cannot silently become
/// one whose DSN is `***`.
///
/// # Examples
///
/// ```
/// use lexigram::config::Secret;
///
/// let dsn = Secret::new("postgres://app:hunter2@db/app");
/// assert_eq!(format!("{dsn:?} {dsn}"), "Secret(***) ***");
/// assert_eq!(serde_json::to_string(&dsn)?, r#""***""#);
/// assert_eq!(dsn.expose(), "postgres://app:hunter2@db/app");
///
/// let read: Secret = serde_json::from_str(r#""postgres://app:hunter2@db/app""#)?;
/// assert_eq!(read, dsn);
/// assert!(serde_json::from_str::<Secret>(r#""***""#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

thread_local! {
    /// Set while [`revealed`] runs on this thread.
    static REVEAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with secrets serializing as their plain values on this thread.
///
/// Only for the serialization a configuration makes of itself to apply environment variables
/// on top (`EventsConfig::with_vars`), whose result never leaves lexigram. A thread-local
/// flag, because `Serialize` cannot tell that serializer from any other.
pub(crate) fn revealed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEAL.with(|reveal| reveal.set(self.0));
        }
    }
    let _restore = Restore(REVEAL.with(|reveal| reveal.replace(true)));
    f()
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() || REVEAL.with(Cell::get) {
            serializer.serialize_str(&self.0)
        } else {
            serializer.serialize_str(REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value == REDACTED {
            return Err(serde::de::Error::custom(
                "the secret is `***`, which is what a secret serializes as, not a real value; \
                 set the real value (a serialized configuration does not carry its secrets)",
            ));
        }
        Ok(Self(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}
