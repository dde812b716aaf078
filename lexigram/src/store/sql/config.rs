//! Configuration rules the SQL backends share: identifiers spliced into SQL, durations
//! written as milliseconds.

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

/// Builder setters for a backend config's public fields, each `#[must_use]` and with the
/// doc comment written above it: `name(arg: Type);` sets the field `name` to `arg`, and
/// `name(arg: Type) = value;` sets it to `value` (`prefix.into()`).
macro_rules! setters {
    ($(
        $(#[$attr:meta])*
        $name:ident($arg:ident: $ty:ty) $(= $value:expr)?;
    )*) => {
        $(
            $(#[$attr])*
            #[must_use]
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.$name = $crate::store::sql::setters!(@value $arg $(, $value)?);
                self
            }
        )*
    };
    (@value $arg:ident) => {
        $arg
    };
    (@value $arg:ident, $value:expr) => {
        $value
    };
}
pub(crate) use setters;

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

#[cfg(test)]
mod tests {
    use super::*;

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
