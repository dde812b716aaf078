//! `EventsConfig`: the one configuration of the events module.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which event and snapshot store backs the app.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
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
        allow(unused_variables)
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Snapshot once this many events were applied since the last snapshot.
    pub every_events: Option<u64>,
    /// Snapshot at most once per this many milliseconds (combined with `every_events`, both
    /// must hold).
    pub interval_ms: Option<u64>,
    /// How many snapshots to keep per aggregate (at least 1).
    pub keep: usize,
}

impl SnapshotConfig {
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
/// Build it in code, read it from TOML, and override any field from the environment with
/// `LEXIGRAM__<SECTION>__<FIELD>` variables (values are parsed as JSON when they can be, so
/// `LEXIGRAM__SNAPSHOTS__EVERY_EVENTS=100` is a number). [`validate`](Self::validate) lists
/// every problem at once; secrets print as `***`.
///
/// ```
/// use lexigram::config::EventsConfig;
///
/// let config = EventsConfig::from_toml_str(r#"
///     handler_modules = ["bank::handlers"]
///     [snapshots]
///     every_events = 100
///     keep = 2
/// "#)?;
/// assert_eq!(config.handler_modules, ["bank::handlers"]);
/// assert_eq!(config.snapshots.every_events, Some(100));
/// assert!(config.validate().is_empty());
///
/// let err = EventsConfig::from_toml_str("[snapshots]\nevery_event = 1").unwrap_err();
/// assert!(err.to_string().contains("unknown field `every_event`"));
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            service_name: "lexigram".into(),
            store: StoreConfig::Memory,
            snapshots: SnapshotConfig {
                every_events: None,
                interval_ms: None,
                keep: 3,
            },
            event_bus: crate::event::EventBusConfig::default(),
            shutdown_timeout_ms: 30_000,
            handler_modules: Vec::new(),
        }
    }
}

const ENV_PREFIX: &str = "LEXIGRAM__";

impl EventsConfig {
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

    /// Reads a TOML document. Unknown keys are errors.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            problems: vec![format!("invalid TOML configuration: {e}")],
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
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

    /// Applies `LEXIGRAM__*` environment variables on top of this configuration.
    pub fn with_env(self) -> Result<Self> {
        self.with_vars(std::env::vars())
    }

    /// Applies `LEXIGRAM__SECTION__FIELD=value` pairs (from any source) on top of this
    /// configuration. Every bad variable is reported.
    pub fn with_vars(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut tree = serde_json::to_value(&self).map_err(|e| Error::Config {
            problems: vec![format!("cannot represent the configuration: {e}")],
        })?;
        let mut names = Vec::new();
        for (name, raw) in vars {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let value = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
            set_path(&mut tree, &keys, value);
            names.push(name);
        }
        serde_json::from_value(tree).map_err(|e| Error::Config {
            problems: vec![format!(
                "environment variables {} do not fit the configuration: {e}",
                names.join(", ")
            )],
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

fn set_path(tree: &mut serde_json::Value, keys: &[String], value: serde_json::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut node = tree;
    for key in parents {
        if !node.get(key).is_some_and(serde_json::Value::is_object) {
            node[key.as_str()] = serde_json::json!({});
        }
        node = &mut node[key.as_str()];
    }
    node[last.as_str()] = value;
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

    #[cfg(feature = "sqlite")]
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
