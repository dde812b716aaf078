//! A throw-away PostgreSQL database per test.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use lexigram::store::PostgresConfig;
use sqlx::Connection;

/// The variable naming the server the PostgreSQL tests and benchmarks use.
pub(crate) const URL_VAR: &str = "LEXIGRAM_TEST_POSTGRES_URL";

/// A database created for one test and dropped (even after a panic) when this is dropped.
pub(crate) struct TestDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
    schemas: AtomicU32,
}

impl TestDb {
    /// Creates a database on the server named by `LEXIGRAM_TEST_POSTGRES_URL`. Without the
    /// variable: fails under CI (where the server must be tested), otherwise says the test is
    /// skipped and returns `None`.
    pub(crate) async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(URL_VAR) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{URL_VAR} is not set, and CI must test PostgreSQL: set it to e.g. \
                 postgres://postgres@127.0.0.1:5432/postgres (the server on this machine)"
            );
            eprintln!("skipped: {URL_VAR} not set");
            return None;
        };
        let name = format!("lexigram_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the server in {URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
            schemas: AtomicU32::new(0),
        })
    }

    /// A config for this database, in the default schema.
    pub(crate) fn config(&self) -> PostgresConfig {
        PostgresConfig::new(self.url.as_str()).max_connections(20)
    }

    /// A config for a new, empty schema of this database.
    pub(crate) fn fresh_schema(&self) -> PostgresConfig {
        let n = self.schemas.fetch_add(1, Ordering::Relaxed);
        self.config().schema(format!("t{n}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// `url` with its database replaced by `name`.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let rest_start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(rest_start);
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{head}{authority}/{name}{query}")
}

/// `url` with query parameter `key` set to `value` (replacing it if present).
pub(crate) fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(key))
        .collect();
    let param = format!("{key}={value}");
    pairs.push(&param);
    format!("{base}?{}", pairs.join("&"))
}
