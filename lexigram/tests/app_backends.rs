//! `EventsModule` on the durable backends: the configured store is opened, used by
//! repositories, survives a restart, answers health checks, and a bad one is reported.

#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lexigram::EventEnvelope;
use lexigram::aggregate::Route;
use lexigram::config::{EventsConfig, StoreConfig};
use lexigram::error::Error;
use lexigram::error::EventLoadError;
use lexigram::module::{App, EventsModule, HealthStatus, Stores};
use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Noted {
    text: String,
}
impl Event for Noted {
    const NAME: &'static str = "notes.Noted";
    const VERSION: u32 = 1;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Notebook {
    notes: Vec<String>,
}
impl Aggregate for Notebook {
    const TYPE: &'static str = "Notebook";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Noted>().finish()
    }
}
impl Apply<Noted> for Notebook {
    fn apply(&mut self, event: &Noted) {
        self.notes.push(event.text.clone());
    }
}

async fn write_then_reopen(config: EventsConfig) -> Result<(), Error> {
    let backend = config.store.backend();
    let app = App::builder()
        .module(EventsModule::configure(config.clone()))
        .build()
        .await?;
    let notebooks = app
        .get::<Stores>()
        .map(|s| s.repository::<Notebook>())
        .expect("the events module provides stores");
    let mut book = notebooks.load("nb-1").await?;
    book.record(Noted {
        text: "first".into(),
    })?;
    book.record(Noted {
        text: "second".into(),
    })?;
    notebooks.save(&mut book).await?;
    let health = app.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(health.components[0].detail.contains(backend), "{health:?}");
    app.shutdown().await?;

    let again = App::builder()
        .module(EventsModule::configure(config))
        .build()
        .await?;
    let notebooks = again
        .get::<Stores>()
        .map(|s| s.repository::<Notebook>())
        .expect("stores");
    let book = notebooks.load_or_error("nb-1").await?;
    assert_eq!(
        book.state().notes,
        ["first", "second"],
        "the {backend} store kept the events across a restart"
    );
    again.shutdown().await
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_backed_app_persists_across_restarts() -> Result<(), Error> {
    let path =
        std::env::temp_dir().join(format!("lexigram-app-{}.db", uuid::Uuid::new_v4().simple()));
    let result = write_then_reopen(EventsConfig::sqlite(&path)).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    result
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_backed_app_persists_across_restarts() -> Result<(), Error> {
    let Some(db) = support::postgres::TestDb::create().await else {
        return Ok(());
    };
    let config = EventsConfig::memory().store(StoreConfig::Postgres(db.config()));
    write_then_reopen(config).await
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn an_unreachable_database_is_a_bootstrap_problem() {
    let config = EventsConfig::postgres("postgres://nobody@127.0.0.1:1/none?connect_timeout=1");
    let mut config = config;
    if let StoreConfig::Postgres(pg) = &mut config.store {
        pg.acquire_timeout = std::time::Duration::from_secs(2);
    }
    let err = App::builder()
        .module(EventsModule::configure(config))
        .build()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cannot open the postgres store"), "{err}");
    assert!(
        !err.contains("nobody@"),
        "the DSN is a secret and stays out of errors: {err}"
    );
}
