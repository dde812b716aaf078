//! `EventsConfig`: the one configuration of the events module.

use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::source::{Node, NodeDeserializer, Origin, Replay, quotable_key};
use crate::error::{Error, Result};
use crate::schema::SchemaRegistry;
use crate::snapshot::SnapshotStore;
use crate::store::{EventStore, InMemoryEventStore};

/// Which event and snapshot store backs the app.
///
/// Written as a table whose `backend` key picks the variant and whose other keys are that
/// backend's settings (`[store]` / `backend = "sqlite"` / `path = "bank.db"`). A missing
/// `backend` means `memory`, the default; a key the chosen backend does not have is an error
/// (the memory store has none), as is an unknown backend.
///
/// ```
/// # #[cfg(feature = "toml")] { // the `toml` cargo feature (on by default)
/// use lexigram::config::{EventsConfig, StoreConfig};
///
/// assert_eq!(EventsConfig::from_toml_str("[store]")?.store, StoreConfig::Memory);
/// let err = EventsConfig::from_toml_str("[store]\npath = \"bank.db\"").unwrap_err();
/// assert!(err.to_string().contains("unknown key `path`"), "{err}");
/// # }
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreConfig {
    /// In memory: nothing survives a restart. The default, and what tests use.
    #[default]
    Memory,
    /// A SQLite file (or private in-memory database): the embedded durable default.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(crate::store::SqliteConfig),
    /// PostgreSQL, shared by many processes.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(crate::store::PostgresConfig),
}

/// The `backend` key of a store table.
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Backend;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a store backend name (`memory`, `sqlite` or `postgres`)")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Backend, E> {
                match name {
                    "memory" => Ok(Backend::Memory),
                    "sqlite" => Ok(Backend::Sqlite),
                    "postgres" => Ok(Backend::Postgres),
                    // Not repeated: whatever was written may be a secret pasted in the wrong place.
                    _ => Err(E::custom(
                        "unknown store `backend`; expected `memory`, `sqlite` or `postgres`",
                    )),
                }
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Deserialized by hand rather than as a serde internally tagged enum: that buffers the table
/// into serde's private `Content`, which loses the type-directed parsing of environment text
/// (`LEXIGRAM__STORE__MAX_CONNECTIONS=20` must reach a `u32` as text) and, for the unit
/// `Memory` variant, silently ignores every other key. Here the `backend` key is read first
/// (keys before it are buffered, which only a foreign deserializer needs: lexigram's own yields
/// `backend` first), then the rest of the table goes straight to the chosen backend's config,
/// whose `deny_unknown_fields` rejects typos.
impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("StoreConfig", &["backend"], StoreVisitor)
    }
}

struct StoreVisitor;

impl<'de> Visitor<'de> for StoreVisitor {
    type Value = StoreConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a store table (`backend` and that backend's settings)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoreConfig, A::Error> {
        let mut before = Vec::new();
        let backend = loop {
            match map.next_key::<String>()? {
                None => break Backend::Memory,
                Some(key) if key == "backend" => break map.next_value::<Backend>()?,
                Some(key) => {
                    let value = map.next_value::<Node>()?;
                    before.push((key, value));
                }
            }
        };
        let mut rest = Replay::new(before, map);
        match backend {
            Backend::Memory => match rest.next_key_seed(NoMemoryKey)? {
                Some(never) => match never {},
                None => Ok(StoreConfig::Memory),
            },
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                crate::store::SqliteConfig::deserialize(de::value::MapAccessDeserializer::new(rest))
                    .map(StoreConfig::Sqlite)
            }
            #[cfg(not(feature = "sqlite"))]
            Backend::Sqlite => Err(missing_feature("sqlite")),
            #[cfg(feature = "postgres")]
            Backend::Postgres => crate::store::PostgresConfig::deserialize(
                de::value::MapAccessDeserializer::new(rest),
            )
            .map(StoreConfig::Postgres),
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres => Err(missing_feature("postgres")),
        }
    }
}

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn missing_feature<E: de::Error>(name: &str) -> E {
    E::custom(format!(
        "the `{name}` store needs lexigram's `{name}` cargo feature; enable it in Cargo.toml"
    ))
}

/// A key of the memory store: there are none, so every key is an error (raised while the key
/// is read, so the error points at it).
struct NoMemoryKey;

impl<'de> de::DeserializeSeed<'de> for NoMemoryKey {
    type Value = std::convert::Infallible;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for NoMemoryKey {
    type Value = std::convert::Infallible;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no key (the memory store has no settings)")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let known = other_store_keys();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let key = quotable_key(key, &known)
            .map_or_else(|| "unknown key".into(), |k| format!("unknown key `{k}`"));
        Err(E::custom(format!(
            "{key}: the `memory` store has no settings; set `backend` to `sqlite` or `postgres` to use a durable store"
        )))
    }
}

/// The keys of the other store backends (read from their serialized defaults, so the list
/// cannot go stale), to name one set by mistake under the memory store.
fn other_store_keys() -> Vec<String> {
    #[allow(unused_mut)]
    let mut keys = Vec::new();
    #[cfg(feature = "sqlite")]
    keys.extend(object_keys(serde_json::to_value(
        crate::store::SqliteConfig::default(),
    )));
    #[cfg(feature = "postgres")]
    keys.extend(object_keys(serde_json::to_value(
        crate::store::PostgresConfig::default(),
    )));
    keys
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn object_keys(value: serde_json::Result<serde_json::Value>) -> Vec<String> {
    match value {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

impl StoreConfig {
    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
        }
    }

    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres")),
        allow(unused_variables, clippy::ptr_arg)
    )]
    fn validate(&self, problems: &mut Vec<String>) {
        match self {
            Self::Memory => {}
            #[cfg(feature = "sqlite")]
            Self::Sqlite(config) => problems.extend(
                config
                    .validate()
                    .into_iter()
                    .map(|p| format!("`store` (sqlite): {p}")),
            ),
            #[cfg(feature = "postgres")]
            Self::Postgres(config) => problems.extend(
                config
                    .validate()
                    .into_iter()
                    .map(|p| format!("`store` (postgres): {p}")),
            ),
        }
    }
}

/// When repositories take snapshots. Unset fields never fire; both unset means no snapshots.
///
/// | field | default |
/// |---|---|
/// | `every_events` | unset |
/// | `interval_ms` | unset |
/// | `keep` | 3 |
///
/// A key left out of a `[snapshots]` table takes its default; an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SnapshotConfig {
    /// Snapshot once this many events were applied since the last snapshot.
    pub every_events: Option<u64>,
    /// Snapshot at most once per this many milliseconds (combined with `every_events`, both
    /// must hold).
    pub interval_ms: Option<u64>,
    /// How many snapshots to keep per aggregate (at least 1). Default 3.
    pub keep: usize,
}

impl Default for SnapshotConfig {
    /// No snapshots, and 3 kept per aggregate once a policy takes them.
    fn default() -> Self {
        Self {
            every_events: None,
            interval_ms: None,
            keep: 3,
        }
    }
}

impl SnapshotConfig {
    /// Sets `every_events`: snapshot once this many events were applied since the last one.
    #[must_use]
    pub fn every_events(mut self, every_events: Option<u64>) -> Self {
        self.every_events = every_events;
        self
    }

    /// Sets `interval_ms`: snapshot at most once per this many milliseconds.
    #[must_use]
    pub fn interval_ms(mut self, interval_ms: Option<u64>) -> Self {
        self.interval_ms = interval_ms;
        self
    }

    /// Sets `keep`: how many snapshots to keep per aggregate.
    #[must_use]
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// The policy these settings describe.
    pub fn policy(&self) -> crate::snapshot::SnapshotPolicy {
        use crate::snapshot::SnapshotPolicy;
        let every = self.every_events.map(SnapshotPolicy::EveryEvents);
        let interval = self
            .interval_ms
            .map(|ms| SnapshotPolicy::Interval(std::time::Duration::from_millis(ms)));
        match (every, interval) {
            (None, None) => SnapshotPolicy::Never,
            (Some(p), None) | (None, Some(p)) => p,
            (Some(a), Some(b)) => SnapshotPolicy::all([a, b]),
        }
    }
}

/// Everything the events module needs: the store, snapshots, the buses, and which handlers to
/// discover.
///
/// Build it in code, read it from TOML ([`from_toml_str`](Self::from_toml_str),
/// [`from_file`](Self::from_file); the `toml` cargo feature, on by default), and override any field from the environment with
/// `LEXIGRAM__<SECTION>__<FIELD>` variables ([`with_env`](Self::with_env)).
/// [`validate`](Self::validate) lists every problem at once.
///
/// - **Unknown keys are errors**, at every depth and from every source: a typo such as
///   `pathh` in `[store]` or `LEXIGRAM__STORE__PATHH` is reported, never ignored.
/// - **Missing keys take their defaults**, the same as [`EventsConfig::default`] and each
///   section's `Default`: an empty `[snapshots]` table is `SnapshotConfig::default()`.
/// - **Environment values are parsed by the type of the field they set**: a string field takes
///   the text as it is (`LEXIGRAM__SERVICE_NAME=2024` is the name `"2024"`), a number or
///   `true`/`false` field parses it, a list takes `a,b` or a JSON array.
/// - **Errors say where and never repeat a value**: `line 3, column 1: ...` or the variable's
///   name, then the key; values are left out, since any of them may be a secret. A DSN is a
///   [`Secret`](crate::config::Secret): `***` in `Debug`, in errors and when serialized.
///
/// ```
/// # #[cfg(feature = "toml")] { // the `toml` cargo feature (on by default)
/// use lexigram::config::EventsConfig;
///
/// let config = EventsConfig::from_toml_str(r#"
///     handler_modules = ["bank::handlers"]
///     [snapshots]
///     every_events = 100
/// "#)?;
/// assert_eq!(config.handler_modules, ["bank::handlers"]);
/// assert_eq!(config.snapshots.every_events, Some(100));
/// assert_eq!(config.snapshots.keep, 3); // the default
/// assert!(config.validate().is_empty());
///
/// let err = EventsConfig::from_toml_str("[snapshots]\nevery_event = 1").unwrap_err();
/// assert!(err.to_string().contains("line 2, column 1: `snapshots`: unknown key `every_event`"));
///
/// let config = config.with_vars([("LEXIGRAM__SERVICE_NAME".to_owned(), "2024".to_owned())])?;
/// assert_eq!(config.service_name, "2024");
/// # }
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EventsConfig {
    /// The service's name, for logs and health reports.
    pub service_name: String,
    /// The event and snapshot store.
    pub store: StoreConfig,
    /// Snapshot policy for repositories.
    pub snapshots: SnapshotConfig,
    /// The in-process event bus.
    pub event_bus: crate::event::EventBusConfig,
    /// How long shutdown waits for the event bus to drain, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// Module path prefixes handlers must live under to be wired (`["bank::handlers"]`);
    /// empty means every discovered handler.
    pub handler_modules: Vec<String>,
    /// Durable reactions: whether they run here, as which node, and their settings.
    pub reactions: super::ReactionsConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            service_name: "lexigram".into(),
            store: StoreConfig::Memory,
            snapshots: SnapshotConfig::default(),
            event_bus: crate::event::EventBusConfig::default(),
            shutdown_timeout_ms: 30_000,
            handler_modules: Vec::new(),
            reactions: super::ReactionsConfig::default(),
        }
    }
}

const ENV_PREFIX: &str = "LEXIGRAM__";

impl EventsConfig {
    /// Sets `service_name`: the service's name, for logs and health reports.
    #[must_use]
    pub fn service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = service_name.into();
        self
    }

    /// Sets `store`: the event and snapshot store.
    #[must_use]
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// Sets `snapshots`: the snapshot policy of repositories.
    #[must_use]
    pub fn snapshots(mut self, snapshots: SnapshotConfig) -> Self {
        self.snapshots = snapshots;
        self
    }

    /// Sets `event_bus`: the in-process event bus.
    #[must_use]
    pub fn event_bus(mut self, event_bus: crate::event::EventBusConfig) -> Self {
        self.event_bus = event_bus;
        self
    }

    /// Sets `shutdown_timeout_ms`: how long shutdown waits for the event bus to drain.
    #[must_use]
    pub fn shutdown_timeout_ms(mut self, shutdown_timeout_ms: u64) -> Self {
        self.shutdown_timeout_ms = shutdown_timeout_ms;
        self
    }

    /// Sets `handler_modules`: module path prefixes handlers must live under to be wired.
    #[must_use]
    pub fn handler_modules(mut self, handler_modules: Vec<String>) -> Self {
        self.handler_modules = handler_modules;
        self
    }

    /// Sets `reactions`: whether durable reactions run here, as which node, and their
    /// settings.
    #[must_use]
    pub fn reactions(mut self, reactions: super::ReactionsConfig) -> Self {
        self.reactions = reactions;
        self
    }

    /// In-memory stores and default buses.
    pub fn memory() -> Self {
        Self::default()
    }

    /// A SQLite database file (created if missing) and default buses.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            store: StoreConfig::Sqlite(crate::store::SqliteConfig::file(path)),
            ..Self::default()
        }
    }

    /// PostgreSQL at `dsn` and default buses.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(dsn: impl Into<crate::config::Secret>) -> Self {
        Self {
            store: StoreConfig::Postgres(crate::store::PostgresConfig::new(dsn)),
            ..Self::default()
        }
    }

    /// Reads a TOML document. Unknown keys are errors; missing keys take their defaults.
    ///
    /// Every syntax error is reported, each as `line L, column C: message` (without the
    /// source line, which may hold a secret).
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let tree = Node::from_toml(text).map_err(|problems| Error::Config { problems })?;
        Self::from_tree(tree)
    }

    /// Reads a TOML file; each problem starts with the file's path.
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            problems: vec![format!(
                "cannot read configuration file `{}`: {e}",
                path.display()
            )],
        })?;
        Self::from_toml_str(&text).map_err(|err| match err {
            Error::Config { problems } => Error::Config {
                problems: problems
                    .into_iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect(),
            },
            other => other,
        })
    }

    /// The defaults with `LEXIGRAM__*` environment variables applied.
    pub fn from_env() -> Result<Self> {
        Self::default().with_env()
    }

    /// Applies `LEXIGRAM__*` environment variables on top of this configuration; see
    /// [`with_vars`](Self::with_vars). Variables whose name or value is not UTF-8 are skipped
    /// unless their name starts with `LEXIGRAM__`: then they are an error naming them.
    pub fn with_env(self) -> Result<Self> {
        let mut problems = Vec::new();
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            if !name.to_string_lossy().starts_with(ENV_PREFIX) {
                continue;
            }
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => vars.push((name, value)),
                (Ok(name), Err(_)) => problems.push(format!(
                    "`{name}` is not valid UTF-8; lexigram reads only UTF-8 values: fix or unset it"
                )),
                (Err(name), _) => problems.push(format!(
                    "`{}` has a name that is not valid UTF-8; rename or unset it",
                    name.to_string_lossy()
                )),
            }
        }
        self.apply_vars(vars, problems)
    }

    /// Applies `LEXIGRAM__SECTION__FIELD=value` pairs (from any source) on top of this
    /// configuration; other names are ignored.
    ///
    /// The name is the key path in upper case, `__` between keys
    /// (`LEXIGRAM__STORE__MAX_CONNECTIONS` sets `store.max_connections`). The value is parsed
    /// by the field's type: strings and paths take it as it is, numbers and `true`/`false`
    /// parse it, lists take `a,b` or a JSON array. Setting `LEXIGRAM__STORE__BACKEND` to another
    /// backend starts that store from its defaults. Every bad name is reported; a bad value is
    /// reported with its variable's name (never its value).
    pub fn with_vars(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        self.apply_vars(vars.into_iter().collect(), Vec::new())
    }

    fn apply_vars(self, vars: Vec<(String, String)>, mut problems: Vec<String>) -> Result<Self> {
        let mut paths: Vec<(String, Vec<String>, String)> = Vec::new();
        for (name, value) in vars {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                problems.push(format!(
                    "`{name}` has an empty key; write `LEXIGRAM__SECTION__FIELD`, with single `_` inside names"
                ));
                continue;
            }
            for (other, other_keys, _) in &paths {
                if keys.starts_with(other_keys) || other_keys.starts_with(&keys) {
                    let shared = if keys.len() <= other_keys.len() {
                        &keys
                    } else {
                        other_keys
                    };
                    problems.push(format!(
                        "`{other}` and `{name}` both set `{}`; keep one",
                        shared.join(".")
                    ));
                }
            }
            paths.push((name, keys, value));
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(Error::Config { problems });
        }
        if paths.is_empty() {
            return Ok(self);
        }
        let base =
            super::secret::revealed(|| serde_json::to_value(&self)).map_err(|e| Error::Config {
                problems: vec![format!("cannot represent the configuration: {e}")],
            })?;
        let mut tree = Node::from_json(base, &Origin::Code);
        let backend = paths
            .iter()
            .find(|(_, keys, _)| keys == &["store", "backend"]);
        if let Some((name, _, value)) = backend
            && tree.str_at(&["store", "backend"]) != Some(value.as_str())
        {
            // Another backend: its settings start from its defaults, not the old one's.
            tree.reset("store", &Origin::Env(name.clone()));
        }
        for (name, keys, value) in paths {
            tree.set_text(&keys, &name, value);
        }
        Self::from_tree(tree)
    }

    fn from_tree(tree: Node) -> Result<Self> {
        Self::deserialize(NodeDeserializer::new(tree)).map_err(|e| Error::Config {
            problems: vec![e.to_string()],
        })
    }

    /// Every problem with this configuration; empty when it is valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.service_name.trim().is_empty() {
            problems.push(
                "`service_name` is empty; name the service (it appears in logs and health)".into(),
            );
        }
        self.store.validate(&mut problems);
        if self.snapshots.every_events == Some(0) {
            problems.push(
                "`snapshots.every_events` is 0; use at least 1, or leave it unset to disable"
                    .into(),
            );
        }
        if self.snapshots.interval_ms == Some(0) {
            problems.push("`snapshots.interval_ms` is 0; use at least 1, or leave it unset".into());
        }
        if self.snapshots.keep == 0 {
            problems.push("`snapshots.keep` is 0; keep at least 1 snapshot per aggregate".into());
        }
        if let Err(Error::Config { problems: bus }) = self.event_bus.validate() {
            problems.extend(bus);
        }
        for (i, prefix) in self.handler_modules.iter().enumerate() {
            let valid = !prefix.is_empty()
                && prefix.split("::").all(|seg| {
                    !seg.is_empty() && seg.chars().all(|c| c.is_alphanumeric() || c == '_')
                });
            if !valid {
                problems.push(format!(
                    "`handler_modules[{i}]` = {prefix:?} is not a module path; write it like `my_crate::handlers`"
                ));
            }
        }
        self.reactions.validate(&mut problems);
        problems
    }

    /// `self` if valid, or an error listing every problem.
    pub fn validated(self) -> Result<Self> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(Error::Config { problems })
        }
    }
}

impl EventsConfig {
    /// Opens the configured event store, and the snapshot and checkpoint stores that belong
    /// to it (the same database; `snapshots.keep` snapshots kept per aggregate), reading
    /// events through `schema`: what [`EventsModule`](crate::module::EventsModule) does at
    /// startup, for a tool or a test that needs the stores without building an app. Pass
    /// [`registration::discovered_schema`](crate::registration::discovered_schema) for the
    /// program's event types.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lexigram::Error> {
    /// use lexigram::config::EventsConfig;
    /// let schema = std::sync::Arc::new(lexigram::registration::discovered_schema()?);
    /// let stores = EventsConfig::memory().open_stores(schema).await?;
    /// assert_eq!(stores.events.backend(), "memory");
    /// assert_eq!(stores.snapshots.backend(), "memory");
    /// assert_eq!(stores.checkpoints.backend(), "memory");
    /// # Ok(()) }
    /// ```
    pub async fn open_stores(&self, schema: Arc<SchemaRegistry>) -> Result<OpenStores> {
        let keep = self.snapshots.keep;
        Ok(match &self.store {
            StoreConfig::Memory => {
                let store = InMemoryEventStore::new().with_schema(schema);
                let checkpoints = crate::subscription::InMemoryCheckpointStore::new();
                OpenStores {
                    snapshots: Arc::new(store.snapshot_store().with_max_per_aggregate(keep)),
                    checkpoints: Arc::new(checkpoints.clone()),
                    events: Arc::new(store),
                    concrete: ConcreteStore::Memory(checkpoints),
                }
            }
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(config) => {
                let store = crate::store::SqliteEventStore::connect(config)
                    .await?
                    .with_schema(schema);
                OpenStores {
                    snapshots: Arc::new(store.snapshot_store().with_max_per_aggregate(keep)),
                    checkpoints: Arc::new(crate::subscription::SqliteCheckpointStore::new(&store)),
                    concrete: ConcreteStore::Sqlite(store.clone()),
                    events: Arc::new(store),
                }
            }
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(config) => {
                let store = crate::store::PostgresEventStore::connect(config)
                    .await?
                    .with_schema(schema);
                OpenStores {
                    snapshots: Arc::new(store.snapshot_store().with_max_per_aggregate(keep)),
                    checkpoints: Arc::new(crate::subscription::PostgresCheckpointStore::new(
                        &store,
                    )),
                    concrete: ConcreteStore::Postgres(store.clone()),
                    events: Arc::new(store),
                }
            }
        })
    }
}

/// The stores [`EventsConfig::open_stores`] opens, all on one database.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenStores {
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// Its snapshot store.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Its checkpoint store, for durable subscriptions.
    pub checkpoints: Arc<dyn crate::subscription::CheckpointStore>,
    /// The event store as its own type, for what needs its database (exactly-once sinks).
    pub(crate) concrete: ConcreteStore,
}

/// An opened event store as its own type.
#[derive(Debug, Clone)]
pub(crate) enum ConcreteStore {
    /// In memory, with the checkpoint store beside it (in-memory projections commit to it).
    Memory(crate::subscription::InMemoryCheckpointStore),
    /// A SQLite file or in-memory database.
    #[cfg(feature = "sqlite")]
    Sqlite(crate::store::SqliteEventStore),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(crate::store::PostgresEventStore),
}

impl ConcreteStore {
    /// The backend's name, as `EventStore::backend` gives it.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_override_nested_fields_with_typed_values() -> Result<()> {
        let vars = [
            (
                "LEXIGRAM__SNAPSHOTS__EVERY_EVENTS".to_string(),
                "50".to_string(),
            ),
            ("LEXIGRAM__SERVICE_NAME".to_string(), "bank".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let config = EventsConfig::default().with_vars(vars)?;
        assert_eq!(config.snapshots.every_events, Some(50));
        assert_eq!(config.service_name, "bank");
        Ok(())
    }

    #[test]
    fn a_bad_env_var_is_named() {
        let vars = [("LEXIGRAM__SNAPSHOTS__KEEP".to_string(), "many".to_string())];
        let err = EventsConfig::default()
            .with_vars(vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("LEXIGRAM__SNAPSHOTS__KEEP"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let config = EventsConfig {
            service_name: " ".into(),
            snapshots: SnapshotConfig {
                every_events: Some(0),
                interval_ms: None,
                keep: 0,
            },
            handler_modules: vec!["bank::".into(), "ok::handlers".into()],
            ..EventsConfig::default()
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(EventsConfig::default().validated().is_ok());
    }

    #[cfg(all(feature = "sqlite", feature = "toml"))]
    #[test]
    fn toml_selects_sqlite() -> Result<()> {
        let config = EventsConfig::from_toml_str(
            "[store]\nbackend = \"sqlite\"\npath = \"bank.db\"\nbusy_timeout = 2000\n",
        )?;
        let StoreConfig::Sqlite(sqlite) = &config.store else {
            return Err(Error::Config {
                problems: vec![format!("{:?}", config.store)],
            });
        };
        assert_eq!(
            sqlite.path.as_deref(),
            Some(std::path::Path::new("bank.db"))
        );
        assert_eq!(sqlite.busy_timeout, std::time::Duration::from_secs(2));
        Ok(())
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn env_selects_postgres_and_the_dsn_stays_secret() -> Result<()> {
        let vars = [
            (
                "LEXIGRAM__STORE__BACKEND".to_string(),
                "postgres".to_string(),
            ),
            (
                "LEXIGRAM__STORE__DSN".to_string(),
                "postgres://app:hunter2@db/app".to_string(),
            ),
            (
                "LEXIGRAM__STORE__MAX_CONNECTIONS".to_string(),
                "20".to_string(),
            ),
        ];
        let config = EventsConfig::default().with_vars(vars)?;
        assert_eq!(config.store.backend(), "postgres");
        assert!(!format!("{config:?}").contains("hunter2"));
        let StoreConfig::Postgres(pg) = &config.store else {
            return Err(Error::Config {
                problems: vec![format!("{:?}", config.store)],
            });
        };
        assert_eq!(pg.max_connections, 20);
        Ok(())
    }

    #[test]
    fn snapshot_settings_become_a_policy() {
        let mut s = SnapshotConfig::default();
        assert!(matches!(s.policy(), crate::snapshot::SnapshotPolicy::Never));
        s.every_events = Some(10);
        assert!(matches!(
            s.policy(),
            crate::snapshot::SnapshotPolicy::EveryEvents(10)
        ));
        s.interval_ms = Some(1_000);
        assert!(matches!(
            s.policy(),
            crate::snapshot::SnapshotPolicy::All(_)
        ));
    }
}
