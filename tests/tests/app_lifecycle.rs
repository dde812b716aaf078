//! The app's lifecycle outside handlers: a module that fails to start leaves nothing running,
//! and programs reach repositories without wiring types.

use std::sync::Arc;

use lexigram::error::Error;
use lexigram::module::{Container, Module};
use lexigram::prelude::*;
use lexigram::{App, EventsModule};
use serde::{Deserialize, Serialize};

/// Records what happens to it, and fails to start when told to.
#[derive(Debug)]
struct Probe {
    name: &'static str,
    fail_start: bool,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Probe {
    fn note(&self, what: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{} {what}", self.name));
        }
    }
}

#[lexigram::async_trait]
impl Module for Probe {
    fn name(&self) -> &str {
        self.name
    }

    async fn start(&self, _: &Container) -> lexigram::Result<()> {
        self.note("start");
        if self.fail_start {
            return Err(Error::InvalidArgument {
                reason: format!("{} cannot start", self.name),
            });
        }
        Ok(())
    }

    async fn shutdown(&self, _: &Container) -> lexigram::Result<()> {
        self.note("shutdown");
        Ok(())
    }
}

#[tokio::test]
async fn a_module_that_fails_to_start_shuts_down_itself_and_every_module_started_before_it() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = |name, fail_start| Probe {
        name,
        fail_start,
        log: Arc::clone(&log),
    };
    let built = App::builder()
        .module(probe("first", false))
        .module(probe("second", true))
        .module(probe("third", false))
        .build()
        .await;
    let err = built.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "invalid argument: second cannot start");
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(
        log,
        [
            "first start",
            "second start",
            "second shutdown",
            "first shutdown"
        ],
        "the third never starts; the started ones stop in reverse order"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "lifecycle.Ticked", version = 1)]
struct Ticked;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Clock {
    ticks: u32,
}

#[aggregate(name = "lifecycle.Clock")]
impl Clock {
    #[apply]
    fn ticked(&mut self, _: &Ticked) {
        self.ticks += 1;
    }
}

#[tokio::test]
async fn a_program_gets_a_repository_from_the_app() -> Result<(), Error> {
    let app = App::builder().module(EventsModule::stub()).build().await?;
    let clocks = app
        .repository::<Clock>()
        .ok_or_else(|| Error::InvalidArgument {
            reason: "the events module provides repositories".into(),
        })?;
    let mut clock = clocks.load("c-1").await?;
    clock.record(Ticked)?;
    clocks.save(&mut clock).await?;
    assert_eq!(clocks.load("c-1").await?.state().ticks, 1);
    app.shutdown().await?;

    let bare = App::builder().build().await?;
    assert!(
        bare.repository::<Clock>().is_none(),
        "no events module, no repository"
    );
    bare.shutdown().await
}
