//! Configuration from TOML and the environment: unknown keys, defaults, typed environment values,
//! non-UTF-8 variables, and secrets that never reach an error or a serialized configuration.

use lexigram::config::EventsConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The error's `Display` and `Debug`, or a failure naming the configuration that was accepted.
fn rejected(result: lexigram::Result<EventsConfig>) -> Result<String, String> {
    match result {
        Ok(config) => Err(format!("accepted: {config:?}")),
        Err(err) => Ok(format!("{err}\n{err:?}")),
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn from_vars(pairs: &[(&str, &str)]) -> lexigram::Result<EventsConfig> {
    EventsConfig::default().with_vars(vars(pairs))
}

// 6. Unknown keys are errors, at every depth, from TOML and from the environment.

#[cfg(all(feature = "sqlite", feature = "toml"))]
#[test]
fn a_typo_inside_the_store_section_is_an_error() -> TestResult {
    let err = rejected(EventsConfig::from_toml_str(
        "[store]\nbackend = \"sqlite\"\npathh = \"bank.db\"\n",
    ))?;
    assert!(err.contains("pathh"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    Ok(())
}

#[cfg(feature = "sqlite")]
#[test]
fn a_typo_in_a_store_environment_variable_is_an_error() -> TestResult {
    let err = rejected(from_vars(&[
        ("LEXIGRAM__STORE__BACKEND", "sqlite"),
        ("LEXIGRAM__STORE__PATHH", "bank.db"),
    ]))?;
    assert!(err.contains("LEXIGRAM__STORE__PATHH"), "{err}");
    Ok(())
}

#[cfg(all(feature = "sqlite", feature = "postgres", feature = "toml"))]
#[test]
fn a_typo_in_the_table_prefix_key_is_an_error_for_both_sql_backends() -> TestResult {
    for store in [
        "backend = \"sqlite\"",
        "backend = \"postgres\"\ndsn = \"postgres://app@db/app\"",
    ] {
        let err = rejected(EventsConfig::from_toml_str(&format!(
            "[store]\n{store}\ntabel_prefix = \"bank_\"\n"
        )))?;
        assert!(err.contains("tabel_prefix"), "{err}");
    }
    Ok(())
}

/// (The keys of the SQL stores are named only when their backends are compiled in: an unknown
/// key is never echoed, in case it holds a secret.)
#[test]
#[cfg(feature = "sqlite")]
fn a_key_the_memory_store_does_not_have_is_an_error() -> TestResult {
    #[cfg(feature = "toml")]
    for text in [
        "[store]\nbackend = \"memory\"\npath = \"bank.db\"\n",
        "[store]\npath = \"bank.db\"\n",
    ] {
        let err = rejected(EventsConfig::from_toml_str(text))?;
        assert!(err.contains("path"), "{err}");
    }
    let err = rejected(from_vars(&[("LEXIGRAM__STORE__PATH", "bank.db")]))?;
    assert!(err.contains("LEXIGRAM__STORE__PATH"), "{err}");
    Ok(())
}

#[cfg(feature = "toml")]
#[test]
fn an_unknown_key_is_an_error_in_every_toml_section() -> TestResult {
    let mut documents = vec![
        "service_nam = \"bank\"\n".to_owned(),
        "[snapshots]\nkeeep = 2\n".to_owned(),
        "[event_bus]\nqueue_capacityy = 2\n".to_owned(),
        "[store]\nbackend = \"memory\"\nmax_connections = 2\n".to_owned(),
        "[stor]\nbackend = \"memory\"\n".to_owned(),
    ];
    if cfg!(feature = "sqlite") {
        documents.push("[store]\nbackend = \"sqlite\"\nbusy_timeoutt = 1\n".to_owned());
    }
    if cfg!(feature = "postgres") {
        documents.push(
            "[store]\nbackend = \"postgres\"\ndsn = \"postgres://db/app\"\nmax_conections = 2\n"
                .to_owned(),
        );
    }
    for text in &documents {
        let err = rejected(EventsConfig::from_toml_str(text))?;
        assert!(err.contains("unknown key"), "{text}: {err}");
    }
    Ok(())
}

#[test]
fn an_unknown_key_is_an_error_in_every_environment_section() -> TestResult {
    let mut cases = vec![
        vec![("LEXIGRAM__SERVICE_NAM", "bank")],
        vec![("LEXIGRAM__SNAPSHOTS__KEEEP", "2")],
        vec![("LEXIGRAM__EVENT_BUS__QUEUE_CAPACITYY", "2")],
        vec![("LEXIGRAM__STORE__MAX_CONNECTIONS", "2")],
        vec![("LEXIGRAM__STOR__PATH", "bank.db")],
    ];
    if cfg!(feature = "sqlite") {
        cases.push(vec![
            ("LEXIGRAM__STORE__BACKEND", "sqlite"),
            ("LEXIGRAM__STORE__BUSY_TIMEOUTT", "1"),
        ]);
    }
    if cfg!(feature = "postgres") {
        cases.push(vec![
            ("LEXIGRAM__STORE__BACKEND", "postgres"),
            ("LEXIGRAM__STORE__DSN", "postgres://db/app"),
            ("LEXIGRAM__STORE__MAX_CONECTIONS", "2"),
        ]);
    }
    for case in &cases {
        let err = rejected(from_vars(case))?;
        let Some((typo, _)) = case.last() else {
            continue;
        };
        assert!(err.contains(typo), "{case:?}: {err}");
    }
    Ok(())
}

// 7. A section's serde default is its documented default.

#[cfg(feature = "toml")]
#[test]
fn every_section_read_from_an_empty_table_equals_its_default() -> TestResult {
    use lexigram::config::{SnapshotConfig, StoreConfig};
    use lexigram::event::EventBusConfig;

    assert_eq!(EventsConfig::from_toml_str("")?, EventsConfig::default());
    let config = EventsConfig::from_toml_str("[snapshots]\n[event_bus]\n[store]\n")?;
    assert_eq!(config, EventsConfig::default());
    assert_eq!(config.snapshots, SnapshotConfig::default());
    assert_eq!(config.snapshots.keep, 3);
    assert_eq!(config.event_bus, EventBusConfig::default());
    assert_eq!(config.store, StoreConfig::default());
    #[cfg(feature = "sqlite")]
    {
        let config = EventsConfig::from_toml_str("[store]\nbackend = \"sqlite\"\n")?;
        let default = StoreConfig::Sqlite(lexigram::store::SqliteConfig::default());
        assert_eq!(config.store, default);
    }
    #[cfg(feature = "postgres")]
    {
        let config = EventsConfig::from_toml_str("[store]\nbackend = \"postgres\"\n")?;
        let default = StoreConfig::Postgres(lexigram::store::PostgresConfig::default());
        assert_eq!(config.store, default);
    }
    Ok(())
}

#[test]
fn a_snapshots_section_without_keep_is_valid() -> TestResult {
    #[cfg(feature = "toml")]
    {
        let config = EventsConfig::from_toml_str("[snapshots]\nevery_events = 100\n")?;
        assert_eq!(config.validate(), Vec::<String>::new());
    }
    let config = from_vars(&[("LEXIGRAM__SNAPSHOTS__EVERY_EVENTS", "100")])?;
    assert_eq!(config.validate(), Vec::<String>::new());
    Ok(())
}

// 8. Environment values are parsed by the type of the field they set.

#[test]
fn environment_values_that_look_like_json_stay_text_in_string_fields() -> TestResult {
    for text in ["2024", "true", "null", "[1]", "{}", "\"quoted\"", "-1.5"] {
        let config = from_vars(&[("LEXIGRAM__SERVICE_NAME", text)])?;
        assert_eq!(config.service_name, text);
    }
    #[cfg(feature = "sqlite")]
    {
        let config = from_vars(&[
            ("LEXIGRAM__STORE__BACKEND", "sqlite"),
            ("LEXIGRAM__STORE__PATH", "1"),
            ("LEXIGRAM__STORE__TABLE_PREFIX", "true"),
        ])?;
        let lexigram::config::StoreConfig::Sqlite(sqlite) = &config.store else {
            return Err(format!("not sqlite: {:?}", config.store).into());
        };
        assert_eq!(sqlite.path.as_deref(), Some(std::path::Path::new("1")));
        assert_eq!(sqlite.table_prefix, "true");
    }
    Ok(())
}

#[test]
fn number_and_boolean_fields_parse_environment_text() -> TestResult {
    let config = from_vars(&[
        ("LEXIGRAM__SNAPSHOTS__EVERY_EVENTS", "50"),
        ("LEXIGRAM__SNAPSHOTS__KEEP", "7"),
        ("LEXIGRAM__EVENT_BUS__PARALLEL_DISPATCH", "false"),
        ("LEXIGRAM__EVENT_BUS__RETRY_BACKOFF_MULTIPLIER", "1.5"),
        ("LEXIGRAM__EVENT_BUS__HANDLER_TIMEOUT_MS", "250"),
        ("LEXIGRAM__HANDLER_MODULES", "bank::handlers,shop::handlers"),
    ])?;
    assert_eq!(config.snapshots.every_events, Some(50));
    assert_eq!(config.snapshots.keep, 7);
    assert!(!config.event_bus.parallel_dispatch);
    assert!((config.event_bus.retry_backoff_multiplier - 1.5).abs() < f64::EPSILON);
    assert_eq!(
        config.event_bus.handler_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(config.handler_modules, ["bank::handlers", "shop::handlers"]);
    Ok(())
}

#[test]
fn a_bad_environment_value_names_the_variable_and_the_expected_type() -> TestResult {
    let err = rejected(from_vars(&[("LEXIGRAM__SNAPSHOTS__KEEP", "many")]))?;
    assert!(err.contains("LEXIGRAM__SNAPSHOTS__KEEP"), "{err}");
    assert!(err.contains("integer"), "{err}");
    let err = rejected(from_vars(&[(
        "LEXIGRAM__EVENT_BUS__PARALLEL_DISPATCH",
        "yes",
    )]))?;
    assert!(
        err.contains("LEXIGRAM__EVENT_BUS__PARALLEL_DISPATCH"),
        "{err}"
    );
    assert!(err.contains("`true` or `false`"), "{err}");
    Ok(())
}

// 9. Non-UTF-8 environment variables.

/// Runs this test binary again, only `test`, with `name=value` in its environment, and returns
/// what it printed. The child sees `CHILD` set and prints what `EventsConfig::from_env` gave.
#[cfg(unix)]
fn from_env_in_a_child(test: &str, name: &str, value: &[u8]) -> Result<String, String> {
    use std::os::unix::ffi::OsStringExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env(name, std::ffi::OsString::from_vec(value.to_vec()))
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("the child failed: {stdout}\n{stderr}"))
    }
}

#[cfg(unix)]
const CHILD: &str = "LEXIGRAM_CONFIG_TEST_CHILD";

#[cfg(unix)]
#[test]
fn a_non_utf8_environment_variable_is_ignored_unless_it_is_lexigrams() -> TestResult {
    const TEST: &str = "a_non_utf8_environment_variable_is_ignored_unless_it_is_lexigrams";
    if std::env::var_os(CHILD).is_some() {
        match EventsConfig::from_env() {
            Ok(config) => println!("from_env: ok {}", config.service_name),
            Err(err) => println!("from_env: err {err}\n{err:?}"),
        }
        return Ok(());
    }
    let unrelated = from_env_in_a_child(TEST, "SOME_OTHER_TOOL", b"caf\xe9")?;
    assert!(unrelated.contains("from_env: ok lexigram"), "{unrelated}");
    let ours = from_env_in_a_child(TEST, "LEXIGRAM__SERVICE_NAME", b"caf\xe9")?;
    assert!(ours.contains("from_env: err"), "{ours}");
    assert!(ours.contains("LEXIGRAM__SERVICE_NAME"), "{ours}");
    assert!(ours.contains("UTF-8"), "{ours}");
    Ok(())
}

// 10. Secrets never reach an error or a serialized configuration.

const PASSWORD: &str = "pw-S3CRET-4711";

fn assert_no_password(what: &str, text: &str) -> TestResult {
    if text.contains(PASSWORD) || text.contains("S3CRET") {
        return Err(format!("{what} shows the password: {text}").into());
    }
    Ok(())
}

#[cfg(feature = "toml")]
#[test]
fn a_toml_error_never_shows_the_dsn_password() -> TestResult {
    let dsn = format!("postgres://app:{PASSWORD}@db/app");
    let documents = [
        format!("[store]\nbackend = \"postgres\"\ndsn = {dsn}\n"),
        format!("[store]\nbackend = \"postgres\"\ndsn = \"{dsn}\n"),
        format!("[store]\nbackend = \"postgres\"\ndsn = \"{dsn}\"\ndsn = \"{dsn}\"\n"),
        format!("store = {{ backend = \"postgres\", dsn = \"{dsn}\", max_connections = x }}\n"),
        format!("store = {{ backend = \"postgres\", dsn = \"{dsn}\", max_connections = \"x\" }}\n"),
        format!("[snapshots]\ndsn = \"{dsn}\"\n"),
        format!("[store]\nbackend = \"{PASSWORD}\"\n"),
        format!("[store]\nbackend = \"postgres\"\nmax_connections = \"{dsn}\"\n"),
        format!("service_name = [\"{dsn}\"]\n"),
    ];
    for text in &documents {
        let err = rejected(EventsConfig::from_toml_str(text))?;
        assert_no_password(text, &err)?;
        assert!(err.contains("line "), "{err}");
    }
    Ok(())
}

#[test]
fn an_environment_error_never_shows_the_value() -> TestResult {
    let dsn = format!("postgres://app:{PASSWORD}@db/app");
    let cases = [
        vec![("LEXIGRAM__STORE__BACKEND", PASSWORD)],
        vec![("LEXIGRAM__SNAPSHOTS__KEEP", dsn.as_str())],
        vec![
            ("LEXIGRAM__STORE__BACKEND", "postgres"),
            ("LEXIGRAM__STORE__MAX_CONNECTIONS", dsn.as_str()),
        ],
        vec![("LEXIGRAM__STORE", dsn.as_str())],
    ];
    for case in &cases {
        let err = rejected(from_vars(case))?;
        assert_no_password(&format!("{case:?}"), &err)?;
    }
    Ok(())
}

#[cfg(feature = "postgres")]
#[test]
fn a_serialized_configuration_never_shows_the_dsn() -> TestResult {
    let config = EventsConfig::postgres(format!("postgres://app:{PASSWORD}@db/app"));
    let json = serde_json::to_string(&config)?;
    assert_no_password("serde_json", &json)?;
    assert!(json.contains("\"dsn\":\"***\""), "{json}");
    // What it serialized to does not read back as a DSN of `***`.
    let err = serde_json::from_str::<EventsConfig>(&json)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("***"), "{err}");
    // Applying the environment keeps the real DSN, which is not printed.
    let config = config.with_vars(vars(&[("LEXIGRAM__STORE__MAX_CONNECTIONS", "3")]))?;
    let lexigram::config::StoreConfig::Postgres(pg) = &config.store else {
        return Err(format!("not postgres: {:?}", config.store).into());
    };
    assert_eq!(pg.dsn.expose(), format!("postgres://app:{PASSWORD}@db/app"));
    assert_eq!(pg.max_connections, 3);
    Ok(())
}

// Property: no input makes configuration loading panic, or print or serialize a secret.

mod never_a_secret {
    use lexigram::config::EventsConfig;
    use proptest::prelude::*;

    /// Keys of every section, and typos of them.
    const KEYS: &[&str] = &[
        "service_name",
        "handler_modules",
        "shutdown_timeout_ms",
        "backend",
        "path",
        "table_prefix",
        "max_connections",
        "min_connections",
        "busy_timeout",
        "dsn",
        "schema",
        "acquire_timeout",
        "idle_timeout",
        "strict_ordering",
        "notify",
        "test_before_acquire",
        "every_events",
        "interval_ms",
        "keep",
        "queue_capacity",
        "handler_timeout_ms",
        "parallel_dispatch",
        "retry_backoff_multiplier",
        "pathh",
        "tabel_prefix",
        "dssn",
        "kep",
    ];

    const SECTIONS: &[&str] = &["", "store", "snapshots", "event_bus", "stor", "store.pool"];

    fn password() -> impl Strategy<Value = String> {
        "[a-z0-9]{6}".prop_map(|tail| format!("pw-S3CRET-{tail}"))
    }

    /// A TOML value (or a malformed one), some holding the password.
    fn toml_value(pw: &str) -> impl Strategy<Value = String> + use<> {
        let dsn = format!("postgres://user:{pw}@host/db");
        prop_oneof![
            Just(format!("\"{dsn}\"")),
            Just(format!("'{dsn}'")),
            Just(format!("\"\"\"{pw}\"\"\"")),
            Just(format!("\"{pw}\"")),
            Just(format!("[\"{dsn}\", 1]")),
            Just(format!("{{ dsn = \"{dsn}\", max_connections = x }}")),
            Just(format!("{{ backend = \"postgres\", dsn = \"{dsn}\" }}")),
            Just(dsn.clone()),
            Just(format!("\"{dsn}")),
            Just(format!("\"{dsn}\" \"{pw}\"")),
            prop_oneof![Just("memory"), Just("sqlite"), Just("postgres")]
                .prop_map(|b| format!("\"{b}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f:?}")),
            Just("1979-05-27T07:32:00Z".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
        ]
    }

    /// One line of a TOML document: a section header, a key, or a malformed fragment.
    fn toml_line(pw: &str) -> impl Strategy<Value = String> + use<> {
        let pw = pw.to_owned();
        prop_oneof![
            3 => prop::sample::select(SECTIONS).prop_map(|s| if s.is_empty() {
                String::new()
            } else {
                format!("[{s}]")
            }),
            6 => (prop::sample::select(KEYS), toml_value(&pw))
                .prop_map(|(k, v)| format!("{k} = {v}")),
            1 => (prop::sample::select(KEYS), toml_value(&pw))
                .prop_map(|(k, v)| format!("store.{k} = {v}")),
            3 => prop_oneof![
                Just(format!("\"{pw}\" = 1")),
                Just(format!("[store]\n\"{pw}\" = 1")),
                Just(format!("[\"{pw}\"]")),
                Just("[".to_owned()),
                Just("[store".to_owned()),
                Just("= 1".to_owned()),
                Just("dsn =".to_owned()),
                Just("[[store]]".to_owned()),
                Just(format!("\"{pw}\" = 1")),
                Just(format!("dsn = = \"{pw}\"")),
                "[ -~]{0,20}",
            ],
        ]
    }

    fn toml_document() -> impl Strategy<Value = (String, String)> {
        password().prop_flat_map(|pw| {
            let lines = prop::collection::vec(toml_line(&pw), 0..12);
            (Just(pw), lines.prop_map(|lines| lines.join("\n")))
        })
    }

    const VARS: &[&str] = &[
        "LEXIGRAM__SERVICE_NAME",
        "LEXIGRAM__HANDLER_MODULES",
        "LEXIGRAM__STORE",
        "LEXIGRAM__STORE__BACKEND",
        "LEXIGRAM__STORE__BACKEND",
        "LEXIGRAM__STORE__DSN",
        "LEXIGRAM__STORE__DSN",
        "LEXIGRAM__STORE__PATH",
        "LEXIGRAM__STORE__MAX_CONNECTIONS",
        "LEXIGRAM__STORE__IDLE_TIMEOUT",
        "LEXIGRAM__STORE__PATHH",
        "LEXIGRAM__store__dsn",
        "LEXIGRAM__SNAPSHOTS__KEEP",
        "LEXIGRAM__SNAPSHOTS__EVERY_EVENTS",
        "LEXIGRAM__SNAPSHOTS",
        "LEXIGRAM__EVENT_BUS__PARALLEL_DISPATCH",
        "LEXIGRAM__EVENT_BUS__RETRY_BACKOFF_MULTIPLIER",
        "LEXIGRAM__EVENT_BUS__QUEUE_CAPACITY__X",
        "LEXIGRAM____DSN",
        "LEXIGRAM__",
        "PATH",
    ];

    fn env_value(pw: &str) -> impl Strategy<Value = String> + use<> {
        let dsn = format!("postgres://user:{pw}@host/db");
        prop_oneof![
            Just(dsn.clone()),
            Just(pw.to_owned()),
            Just(format!("[\"{dsn}\"]")),
            Just(format!("[{pw}")),
            Just(format!("{{\"dsn\": \"{dsn}\"}}")),
            Just(format!("{dsn},{pw}")),
            prop_oneof![
                Just("memory"),
                Just("sqlite"),
                Just("postgres"),
                Just("***")
            ]
            .prop_map(str::to_owned),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("null".to_owned()),
            Just(String::new()),
            "\\PC{0,12}",
        ]
    }

    fn env_map() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
        password().prop_flat_map(|pw| {
            let vars = prop::collection::vec(
                (
                    prop::sample::select(VARS).prop_map(str::to_owned),
                    env_value(&pw),
                ),
                0..8,
            );
            (Just(pw), vars)
        })
    }

    /// The loaded configuration (or its error) does not show `pw` where it should not.
    fn check(pw: &str, result: &lexigram::Result<EventsConfig>) -> Result<(), TestCaseError> {
        match result {
            Err(err) => {
                let shown = format!("{err}\n{err:?}");
                prop_assert!(!shown.contains(pw), "an error shows the secret: {}", shown);
                prop_assert!(
                    !shown.contains("S3CRET"),
                    "an error shows the secret: {}",
                    shown
                );
            }
            Ok(config) => {
                let json =
                    serde_json::to_value(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Some(dsn) = json["store"].get("dsn") {
                    prop_assert!(dsn == "***" || dsn == "", "dsn serialized as {}", dsn);
                }
                // Nothing secret is serialized that `Debug` (which redacts the DSN) does not show
                // in a plain field as well.
                let debug = format!("{config:?}");
                prop_assert!(!json.to_string().contains(pw) || debug.contains(pw));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[cfg(feature = "toml")]
        #[test]
        fn no_toml_document_panics_or_shows_a_secret((pw, text) in toml_document()) {
            check(&pw, &EventsConfig::from_toml_str(&text))?;
        }

        #[test]
        fn no_environment_panics_or_shows_a_secret(
            (pw, vars) in env_map(),
            (_, text) in toml_document(),
        ) {
            check(&pw, &EventsConfig::default().with_vars(vars.clone()))?;
            #[cfg(feature = "toml")]
            if let Ok(base) = EventsConfig::from_toml_str(&text) {
                check(&pw, &base.with_vars(vars))?;
            }
            #[cfg(not(feature = "toml"))]
            let _ = (text, vars);
        }
    }
}
