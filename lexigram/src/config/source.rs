//! Where configuration values come from, and the one deserializer that reads them all.
//!
//! A TOML document, `LEXIGRAM__*` environment variables and a configuration built in code all
//! become one tree of [`Node`]s, each remembering where it came from ([`Origin`]).
//! [`NodeDeserializer`] turns that tree into the typed configuration, so every source follows
//! the same rules:
//!
//! - text from the environment is parsed by the type of the field it sets: a string field takes
//!   it as it is (`LEXIGRAM__SERVICE_NAME=2024` is the name "2024"), a number or boolean field
//!   parses it;
//! - an error names where the bad value is (`line 3, column 7`, or the variable) and its key
//!   path, and never repeats a value, because any value may be a secret. [`ConfigError`]
//!   overrides every serde error constructor that would otherwise quote the value.

use std::fmt;

use serde::de::{self, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A position in a TOML document, both 1-based.
    #[cfg(feature = "toml")]
    Toml { line: usize, column: usize },
    /// An environment variable, by name.
    Env(String),
    /// The configuration the environment was applied on top of.
    Code,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "toml")]
            Self::Toml { line, column } => write!(f, "line {line}, column {column}"),
            Self::Env(name) => write!(f, "`{name}`"),
            Self::Code => f.write_str("the configuration the environment was applied to"),
        }
    }
}

/// A configuration value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    value: Value,
    at: Origin,
}

#[derive(Debug, Clone)]
enum Value {
    /// An unset optional field of a configuration built in code.
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// A TOML date or time: no configuration field takes one.
    #[cfg(feature = "toml")]
    Datetime,
    /// An environment variable's value: parsed by the type of the field it sets.
    Text(String),
    List(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    key_at: Origin,
    node: Node,
}

impl Node {
    /// An empty table.
    pub(crate) fn table(at: Origin) -> Self {
        Self {
            value: Value::Table(Vec::new()),
            at,
        }
    }

    /// A tree from a serialized configuration.
    pub(crate) fn from_json(value: serde_json::Value, at: &Origin) -> Self {
        use serde_json::Value as Json;
        let value = match value {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(b),
            Json::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Value::UInt(u),
                (None, Some(i)) => Value::Int(i),
                (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s),
            Json::Array(items) => {
                Value::List(items.into_iter().map(|v| Self::from_json(v, at)).collect())
            }
            Json::Object(map) => Value::Table(
                map.into_iter()
                    .map(|(key, v)| Entry {
                        key,
                        key_at: at.clone(),
                        node: Self::from_json(v, at),
                    })
                    .collect(),
            ),
        };
        Self {
            value,
            at: at.clone(),
        }
    }

    /// The string at `keys` (a path of table keys), if there is one.
    pub(crate) fn str_at(&self, keys: &[&str]) -> Option<&str> {
        let mut node = self;
        for key in keys {
            let Value::Table(entries) = &node.value else {
                return None;
            };
            node = &entries.iter().find(|e| e.key == *key)?.node;
        }
        match &node.value {
            Value::Str(s) | Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Replaces the value at `key` (in this table) with an empty table from `at`.
    pub(crate) fn reset(&mut self, key: &str, at: &Origin) {
        if let Value::Table(entries) = &mut self.value {
            entries.retain(|e| e.key != key);
            entries.push(Entry {
                key: key.to_owned(),
                key_at: at.clone(),
                node: Self::table(at.clone()),
            });
        }
    }

    /// Sets `keys` (a path of table keys) to the text of environment variable `var`, creating
    /// the tables on the way (and replacing values that were not tables).
    pub(crate) fn set_text(&mut self, keys: &[String], var: &str, text: String) {
        let at = Origin::Env(var.to_owned());
        let Some((last, parents)) = keys.split_last() else {
            return;
        };
        let mut node = self;
        for key in parents {
            let Some(child) = node.entry(key, &at) else {
                return;
            };
            node = child;
        }
        if let Some(leaf) = node.entry(last, &at) {
            *leaf = Self {
                value: Value::Text(text),
                at,
            };
        }
    }

    /// The node at `key` in this table (made a table first if it is not one), inserted as an
    /// empty table if missing. The key counts as written at `at` from now on. `None` never
    /// happens: `self` is a table by then.
    fn entry(&mut self, key: &str, at: &Origin) -> Option<&mut Self> {
        if !matches!(self.value, Value::Table(_)) {
            *self = Self::table(at.clone());
        }
        let Value::Table(entries) = &mut self.value else {
            return None;
        };
        let index = match entries.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    key: key.to_owned(),
                    key_at: at.clone(),
                    node: Self::table(at.clone()),
                });
                entries.len() - 1
            }
        };
        let entry = entries.get_mut(index)?;
        entry.key_at = at.clone();
        Some(&mut entry.node)
    }
}

/// Reading TOML documents: the `toml` cargo feature.
#[cfg(feature = "toml")]
mod toml_text {
    use super::{Entry, Node, Origin, Value, quotable_key};

    impl Origin {
        /// The line and column of byte `offset` in `text`.
        fn in_toml(text: &str, offset: usize) -> Self {
            let mut end = offset.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let before = text.get(..end).unwrap_or_default();
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            Self::Toml {
                line: before.matches('\n').count() + 1,
                column: before.get(line_start..).unwrap_or_default().chars().count() + 1,
            }
        }
    }

    impl Node {
        /// Parses a TOML document. Syntax errors are reported by position with toml's message,
        /// never with the source line (which may hold a secret).
        pub(crate) fn from_toml(text: &str) -> Result<Self, Vec<String>> {
            let (root, errors) = toml::de::DeTable::parse_recoverable(text);
            if !errors.is_empty() {
                return Err(errors.iter().map(|e| toml_syntax_error(text, e)).collect());
            }
            let mut problems = Vec::new();
            let node = from_toml_table(
                text,
                root.get_ref(),
                Origin::in_toml(text, 0),
                &mut problems,
            );
            if problems.is_empty() {
                Ok(node)
            } else {
                Err(problems)
            }
        }
    }

    /// A toml syntax error as `line L, column C: message`, with the key named for a duplicate key.
    fn toml_syntax_error(text: &str, err: &toml::de::Error) -> String {
        let span = err.span();
        let at = span
            .as_ref()
            .map_or(Origin::Toml { line: 1, column: 1 }, |s| {
                Origin::in_toml(text, s.start)
            });
        let mut message = err.message().to_owned();
        if message == "duplicate key"
            && let Some(key) = span
                .and_then(|s| text.get(s))
                .and_then(|key| quotable_key(key, KNOWN_KEYS))
        {
            message = format!("`{key}` is given twice; keep one");
        }
        format!("{at}: {message}")
    }

    /// Every key of every section, to name a duplicated one (any other key is not repeated).
    const KNOWN_KEYS: &[&str] = &[
        "service_name",
        "store",
        "snapshots",
        "event_bus",
        "shutdown_timeout_ms",
        "handler_modules",
        "backend",
        "path",
        "dsn",
        "schema",
        "table_prefix",
        "min_connections",
        "max_connections",
        "busy_timeout",
        "acquire_timeout",
        "idle_timeout",
        "every_events",
        "interval_ms",
        "keep",
    ];

    fn from_toml_table(
        text: &str,
        table: &toml::de::DeTable<'_>,
        at: Origin,
        problems: &mut Vec<String>,
    ) -> Node {
        let entries = table
            .iter()
            .map(|(key, value)| Entry {
                key: key.get_ref().to_string(),
                key_at: Origin::in_toml(text, key.span().start),
                node: from_toml_value(text, value, problems),
            })
            .collect();
        Node {
            value: Value::Table(entries),
            at,
        }
    }

    fn from_toml_value(
        text: &str,
        value: &toml::Spanned<toml::de::DeValue<'_>>,
        problems: &mut Vec<String>,
    ) -> Node {
        use toml::de::DeValue;
        let at = Origin::in_toml(text, value.span().start);
        let value = match value.get_ref() {
            DeValue::String(s) => Value::Str(s.to_string()),
            DeValue::Integer(i) => match (
                i64::from_str_radix(i.as_str(), i.radix()),
                u64::from_str_radix(i.as_str(), i.radix()),
            ) {
                (Ok(v), _) => Value::Int(v),
                (Err(_), Ok(v)) => Value::UInt(v),
                (Err(_), Err(_)) => {
                    problems.push(format!("{at}: integer too large for a 64-bit number"));
                    Value::Null
                }
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(v) => Value::Float(v),
                Err(_) => {
                    problems.push(format!("{at}: not a floating-point number"));
                    Value::Null
                }
            },
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(_) => Value::Datetime,
            DeValue::Array(items) => Value::List(
                items
                    .iter()
                    .map(|item| from_toml_value(text, item, problems))
                    .collect(),
            ),
            DeValue::Table(table) => return from_toml_table(text, table, at, problems),
        };
        Node { value, at }
    }
}

/// `key`, if it may be quoted in an error: when it is one of `known` or a near miss of one
/// (a typo). Any other key is left out, since it could be a secret pasted in the wrong place
/// (`"postgres://app:pw@db" = 1`); the error's position still points at it.
pub(crate) fn quotable_key<'k>(key: &'k str, known: &[&str]) -> Option<&'k str> {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain && (known.contains(&key) || did_you_mean(key, known).is_some())).then_some(key)
}

/// A configuration error: where, which key, what is wrong. It never holds a value.
#[derive(Debug)]
pub(crate) struct ConfigError {
    message: String,
    at: Option<Origin>,
    path: String,
}

impl ConfigError {
    fn new(message: String) -> Self {
        Self {
            message,
            at: None,
            path: String::new(),
        }
    }

    /// Records where the error is, unless a more precise place is known already.
    fn locate(mut self, at: &Origin, path: &str) -> Self {
        if self.at.is_none() {
            self.at = Some(at.clone());
            path.clone_into(&mut self.path);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "`{}`: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What kind of value `unexpected` is, without the value.
fn kind(unexpected: &Unexpected<'_>) -> String {
    match unexpected {
        Unexpected::Bool(_) => "a boolean".into(),
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer".into(),
        Unexpected::Float(_) => "a floating-point number".into(),
        Unexpected::Char(_) => "a character".into(),
        Unexpected::Str(_) => "a string".into(),
        Unexpected::Bytes(_) => "bytes".into(),
        Unexpected::Unit => "no value".into(),
        Unexpected::Option => "an optional value".into(),
        Unexpected::NewtypeStruct => "a newtype struct".into(),
        Unexpected::Seq => "an array".into(),
        Unexpected::Map => "a table".into(),
        Unexpected::Enum
        | Unexpected::UnitVariant
        | Unexpected::NewtypeVariant
        | Unexpected::TupleVariant
        | Unexpected::StructVariant => "an enum variant".into(),
        Unexpected::Other(what) => (*what).to_owned(),
    }
}

/// `one of `a`, `b``, for an error message.
fn one_of(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => "nothing".into(),
        1 => names.concat(),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// The expected name closest to `typed`, if it is a likely typo of it.
fn did_you_mean<'a>(typed: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|name| (edit_distance(typed, name), *name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::new(format!("expected {expected}, found {}", kind(&unexpected)))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::new(match unexpected {
            Unexpected::Unsigned(_) | Unexpected::Signed(_) | Unexpected::Float(_) => {
                format!("expected {expected}, found a number out of its range")
            }
            other => format!(
                "expected {expected}, found {} that is not one",
                kind(&other)
            ),
        })
    }

    fn invalid_length(len: usize, expected: &dyn Expected) -> Self {
        Self::new(format!("expected {expected}, found {len} elements"))
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(format!("unknown variant; expected {}", one_of(expected)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let key = match (quotable_key(field, expected), did_you_mean(field, expected)) {
            (Some(key), Some(near)) => format!("unknown key `{key}` (did you mean `{near}`?)"),
            _ => "unknown key".to_owned(),
        };
        Self::new(if expected.is_empty() {
            format!("{key}; this section takes no keys")
        } else {
            format!("{key}; expected {}", one_of(expected))
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(format!("missing key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::new(format!("`{field}` is given twice; keep one"))
    }
}

/// Deserializes a configuration from a [`Node`] tree.
#[derive(Debug)]
pub(crate) struct NodeDeserializer {
    node: Node,
    path: String,
}

impl NodeDeserializer {
    /// The deserializer of a whole tree.
    pub(crate) fn new(node: Node) -> Self {
        Self {
            node,
            path: String::new(),
        }
    }

    fn fail(&self, message: String) -> ConfigError {
        ConfigError::new(message).locate(&self.node.at, &self.path)
    }

    /// The error for text in place of a section.
    fn text_for_section(&self, expected: &dyn Expected) -> ConfigError {
        let hint = match &self.node.at {
            Origin::Env(var) => format!("; set its keys one by one, as `{var}__<KEY>`"),
            _ => String::new(),
        };
        self.fail(format!("expected {expected}, found text{hint}"))
    }

    fn visit_table<'de, V: Visitor<'de>>(
        at: &Origin,
        path: &str,
        entries: Vec<Entry>,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor
            .visit_map(TableAccess {
                entries: entries.into_iter(),
                value: None,
                path: path.to_owned(),
            })
            .map_err(|e| e.locate(at, path))
    }

    fn visit_list<'de, V: Visitor<'de>>(
        at: &Origin,
        path: &str,
        items: Vec<Node>,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor
            .visit_seq(ListAccess {
                items: items.into_iter().enumerate(),
                path: path.to_owned(),
            })
            .map_err(|e| e.locate(at, path))
    }

    /// An environment list: a JSON array (`["a","b"]`) or comma-separated (`a,b`).
    fn text_to_list(&self, text: &str) -> Result<Vec<Node>, ConfigError> {
        if text.trim_start().starts_with('[') {
            return match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Array(items)) => Ok(items
                    .into_iter()
                    .map(|item| match item {
                        // Items of a JSON list are typed by their field too.
                        serde_json::Value::String(s) => Node {
                            value: Value::Text(s),
                            at: self.node.at.clone(),
                        },
                        other => Node::from_json(other, &self.node.at),
                    })
                    .collect()),
                _ => Err(self.fail(
                    "expected a list, found text that starts with `[` but is not a JSON array"
                        .into(),
                )),
            };
        }
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Node {
                value: Value::Text(item.to_owned()),
                at: self.node.at.clone(),
            })
            .collect())
    }
}

macro_rules! integer {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            let Value::Text(text) = &self.node.value else {
                return self.deserialize_any(visitor);
            };
            let result: Result<V::Value, ConfigError> = if let Ok(n) = text.parse::<u64>() {
                visitor.visit_u64(n)
            } else if let Ok(n) = text.parse::<i64>() {
                visitor.visit_i64(n)
            } else {
                let message = format!("expected {}, found text that is not an integer", &visitor as &dyn Expected);
                return Err(self.fail(message));
            };
            result.map_err(|e| e.locate(&self.node.at, &self.path))
        }
    )*};
}

macro_rules! untyped {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDeserializer {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let result: Result<V::Value, ConfigError> = match self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::UInt(u) => visitor.visit_u64(u),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(ref s) | Value::Text(ref s) => visitor.visit_str(s),
            #[cfg(feature = "toml")]
            Value::Datetime => Err(de::Error::invalid_type(
                Unexpected::Other("a date-time"),
                &visitor,
            )),
            Value::List(items) => {
                return Self::visit_list(&self.node.at, &self.path, items, visitor);
            }
            Value::Table(entries) => {
                return Self::visit_table(&self.node.at, &self.path, entries, visitor);
            }
        };
        result.map_err(|e| e.locate(&self.node.at, &self.path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let Value::Text(text) = &self.node.value else {
            return self.deserialize_any(visitor);
        };
        let value = match text.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(self.fail("expected `true` or `false`, found other text".into()));
            }
        };
        let result: Result<V::Value, ConfigError> = visitor.visit_bool(value);
        result.map_err(|e| e.locate(&self.node.at, &self.path))
    }

    integer!(
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let Value::Text(text) = &self.node.value else {
            return self.deserialize_any(visitor);
        };
        let Ok(value) = text.parse::<f64>() else {
            let message = format!(
                "expected {}, found text that is not a number",
                &visitor as &dyn Expected
            );
            return Err(self.fail(message));
        };
        let result: Result<V::Value, ConfigError> = visitor.visit_f64(value);
        result.map_err(|e| e.locate(&self.node.at, &self.path))
    }

    untyped!(
        deserialize_char deserialize_str deserialize_string deserialize_identifier
        deserialize_bytes deserialize_byte_buf deserialize_unit
    );

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let (at, path) = (self.node.at.clone(), self.path.clone());
        if matches!(self.node.value, Value::Null) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
        .map_err(|e| e.locate(&at, &path))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        let (at, path) = (self.node.at.clone(), self.path.clone());
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.locate(&at, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let Value::Text(text) = &self.node.value else {
            return self.deserialize_any(visitor);
        };
        let items = self.text_to_list(text)?;
        Self::visit_list(&self.node.at, &self.path, items, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        if matches!(self.node.value, Value::Text(_)) {
            return Err(self.text_for_section(&visitor));
        }
        self.deserialize_any(visitor)
    }

    /// A table's entries in the order of `fields` first, so a tag field (`backend`) comes
    /// before the keys it decides the meaning of.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self.node.value {
            Value::Text(_) => Err(self.text_for_section(&visitor)),
            Value::Table(mut entries) => {
                entries.sort_by_key(|e| {
                    fields
                        .iter()
                        .position(|f| *f == e.key)
                        .unwrap_or(usize::MAX)
                });
                Self::visit_table(&self.node.at, &self.path, entries, visitor)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        let (at, path) = (self.node.at.clone(), self.path.clone());
        match self.node.value {
            Value::Str(name) | Value::Text(name) => visitor
                .visit_enum(IntoDeserializer::<ConfigError>::into_deserializer(name))
                .map_err(|e| e.locate(&at, &path)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }
}

/// The entries of a table, for a visitor.
struct TableAccess {
    entries: std::vec::IntoIter<Entry>,
    value: Option<NodeDeserializer>,
    path: String,
}

impl<'de> de::MapAccess<'de> for TableAccess {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        let path = if self.path.is_empty() {
            entry.key.clone()
        } else {
            format!("{}.{}", self.path, entry.key)
        };
        let key = seed
            .deserialize(IntoDeserializer::<ConfigError>::into_deserializer(
                entry.key.as_str(),
            ))
            .map_err(|e| e.locate(&entry.key_at, &self.path))?;
        self.value = Some(NodeDeserializer {
            node: entry.node,
            path,
        });
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(ConfigError::new("a value was read before its key".into())),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The items of a list, for a visitor.
struct ListAccess {
    items: std::iter::Enumerate<std::vec::IntoIter<Node>>,
    path: String,
}

impl<'de> de::SeqAccess<'de> for ListAccess {
    type Error = ConfigError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConfigError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        seed.deserialize(NodeDeserializer { node, path }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// Buffers any self-describing value, for a map whose tag comes after other keys.
impl<'de> de::Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|v| Self::from_json(v, &Origin::Code))
    }
}

/// A map whose first entries were read already (and buffered), followed by the rest of a live
/// map: what a tagged section's variant reads once the tag is known.
pub(crate) struct Replay<A> {
    buffered: std::vec::IntoIter<(String, Node)>,
    value: Option<Node>,
    live: A,
}

impl<A> Replay<A> {
    /// `buffered` entries first, then `live`.
    pub(crate) fn new(buffered: Vec<(String, Node)>, live: A) -> Self {
        Self {
            buffered: buffered.into_iter(),
            value: None,
            live,
        }
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.buffered.next() {
            Some((key, node)) => {
                self.value = Some(node);
                seed.deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                    .map(Some)
            }
            None => self.live.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(node) => seed
                .deserialize(NodeDeserializer::new(node))
                .map_err(<A::Error as de::Error>::custom),
            None => self.live.next_value_seed(seed),
        }
    }
}

impl<A> fmt::Debug for Replay<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}
