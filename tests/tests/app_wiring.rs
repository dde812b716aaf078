//! Handler parameters, the handler macros end to end, lifecycle and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use lexigram::error::Error;
use lexigram::module::HealthStatus;
use lexigram::prelude::*;
use lexigram::store::{EventStore, VersionRange};
use lexigram::{
    App, CommandBus, Dep, EventContext, EventsConfig, EventsModule, MessageMetadata, Repository,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "tally.Counted", version = 1)]
struct Counted {
    by: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    total: u32,
}

#[aggregate]
impl Tally {
    #[apply]
    fn counted(&mut self, e: &Counted) {
        self.total += e.by;
    }
}

#[derive(Debug, Command)]
#[command(output = u32)]
struct Count {
    id: String,
    by: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Query)]
#[query(output = u32)]
struct Total {
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Query)]
#[query(output = u32)]
struct Calls;

/// Shared state the handlers record into.
#[derive(Debug, Default)]
struct Journal {
    lines: std::sync::Mutex<Vec<String>>,
    query_calls: AtomicU32,
}

impl Journal {
    fn write(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

trait Clock: Send + Sync {
    fn now(&self) -> u64;
}
struct Fixed;
impl Clock for Fixed {
    fn now(&self) -> u64 {
        7
    }
}

#[command_handler]
async fn count(
    cmd: Count,
    tallies: Repository<Tally>,
    meta: MessageMetadata,
    clock: Dep<dyn Clock>,
    journal: &Dep<Journal>,
) -> lexigram::Result<u32> {
    let mut tally = tallies.load(cmd.id.as_str()).await?;
    tally.record(Counted { by: cmd.by })?;
    // Recorded inside the handler, the event is caused by the command without passing it.
    if tally.pending()[0].metadata.causation_id() != Some(meta.message_id()) {
        return Err(Error::Config {
            problems: vec!["the event is not caused by the command".into()],
        });
    }
    tallies.save(&mut tally).await?;
    journal.write(format!("count {} at {}", cmd.by, clock.now()));
    Ok(tally.state().total)
}

#[query_handler(cache_ttl = "1h", cache_size = 10)]
async fn total(
    q: Total,
    tallies: Repository<Tally>,
    journal: Dep<Journal>,
) -> lexigram::Result<u32> {
    journal.query_calls.fetch_add(1, Ordering::SeqCst);
    Ok(tallies.load(q.id.as_str()).await?.state().total)
}

#[event_handler(priority = 1)]
async fn low(event: &Counted, journal: Dep<Journal>) -> lexigram::Result<()> {
    journal.write(format!("low {}", event.by));
    Ok(())
}

#[event_handler(priority = 9, name = "audit")]
async fn high(event: Counted, ctx: EventContext, journal: Dep<Journal>) -> lexigram::Result<()> {
    journal.write(format!(
        "high {} v{} {}",
        event.by,
        ctx.stream_version(),
        ctx.handler()
    ));
    Ok(())
}

/// Handlers as methods of a provided struct.
struct Reports {
    prefix: &'static str,
}

#[handlers]
impl Reports {
    #[query_handler]
    async fn calls(
        &self,
        _q: Calls,
        journal: Dep<Journal>,
        commands: CommandBus,
    ) -> lexigram::Result<u32> {
        let _ = (self.prefix, commands.handler_count());
        Ok(journal.query_calls.load(Ordering::SeqCst))
    }
}

/// Handlers as methods of a struct built from its injected fields.
#[derive(FromContainer)]
struct Auditor {
    journal: Dep<Journal>,
    tallies: Repository<Tally>,
}

#[handlers(inject)]
impl Auditor {
    #[event_handler(priority = 5)]
    async fn seen(&self, event: &Counted, ctx: EventContext) -> lexigram::Result<()> {
        let tally = self.tallies.load(ctx.stream_id().as_str()).await?;
        self.journal
            .write(format!("mid {} total {}", event.by, tally.state().total));
        Ok(())
    }
}

async fn app() -> Result<App, Error> {
    App::builder()
        .module(EventsModule::configure(EventsConfig::memory().event_bus(
            lexigram::event::EventBusConfig::default().parallel_dispatch(false),
        )))
        .provide(Journal::default())
        .provide_arc::<dyn Clock>(Arc::new(Fixed))
        .provide(Reports { prefix: "r" })
        .build()
        .await
}

#[tokio::test]
async fn handlers_get_their_parameters_and_run_in_priority_order() -> Result<(), Error> {
    let app = app().await?;
    // Publishing only enqueues: drain so the journal order is deterministic.
    assert_eq!(
        app.commands()
            .dispatch(Count {
                id: "t-1".into(),
                by: 2
            })
            .await?,
        2
    );
    app.events().drain().await;
    assert_eq!(
        app.commands()
            .dispatch(Count {
                id: "t-1".into(),
                by: 3
            })
            .await?,
        5
    );
    app.events().drain().await;
    let journal = app.get::<Journal>().map(|j| j.lines()).unwrap_or_default();
    assert_eq!(
        journal,
        [
            "count 2 at 7",
            "high 2 v1 audit",
            "mid 2 total 2",
            "low 2",
            "count 3 at 7",
            "high 3 v2 audit",
            "mid 3 total 5",
            "low 3"
        ]
    );
    assert_eq!(
        app.commands().handler_name::<Count>().as_deref(),
        Some("app_wiring::count")
    );
    app.shutdown().await
}

#[tokio::test]
async fn events_recorded_by_a_command_are_caused_by_it() -> Result<(), Error> {
    let app = app().await?;
    let meta = MessageMetadata::new().with_user_id("ada");
    app.commands()
        .dispatch_with(
            Count {
                id: "t-2".into(),
                by: 1,
            },
            meta.clone(),
        )
        .await?;
    let store = app.get::<dyn EventStore>().ok_or(Error::Config {
        problems: vec!["no store".into()],
    })?;
    let stored = store.read("t-2", VersionRange::all()).await?;
    assert_eq!(stored[0].metadata.causation_id(), Some(meta.message_id()));
    assert_eq!(stored[0].metadata.correlation_id(), meta.correlation_id());
    assert_eq!(stored[0].metadata.user_id(), Some("ada"));
    app.shutdown().await
}

#[tokio::test]
async fn a_cached_query_handler_runs_once_per_value() -> Result<(), Error> {
    let app = app().await?;
    app.commands()
        .dispatch(Count {
            id: "t-3".into(),
            by: 4,
        })
        .await?;
    for _ in 0..3 {
        assert_eq!(app.queries().execute(Total { id: "t-3".into() }).await?, 4);
    }
    assert_eq!(
        app.queries().execute(Calls).await?,
        1,
        "two of three answered from the cache"
    );
    app.queries().invalidate(&Total { id: "t-3".into() });
    app.queries().execute(Total { id: "t-3".into() }).await?;
    assert_eq!(app.queries().execute(Calls).await?, 2);
    assert_eq!(
        app.queries().handler_name::<Calls>().as_deref(),
        Some("app_wiring::Reports::calls")
    );
    app.shutdown().await
}

#[tokio::test]
async fn health_reports_components_and_shutdown_stops_everything() -> Result<(), Error> {
    let app = app().await?;
    let health = app.health().await;
    assert_eq!(health.status, HealthStatus::Healthy);
    let names: Vec<_> = health.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["event_store", "event_bus"]);

    let store = app.get::<dyn EventStore>().ok_or(Error::Config {
        problems: vec!["no store".into()],
    })?;
    let bus = app.events().clone();
    app.shutdown().await?;
    assert!(bus.is_shut_down());
    assert_eq!(bus.live_tasks(), 0, "no bus task outlives shutdown");
    assert!(
        matches!(store.ping().await, Err(Error::StoreClosed { .. })),
        "the store is closed"
    );
    Ok(())
}

#[tokio::test]
async fn overrides_replace_what_modules_provide() -> Result<(), Error> {
    let app = App::builder()
        .module(EventsModule::stub())
        .provide(Journal::default())
        .provide_arc::<dyn Clock>(Arc::new(Fixed))
        .provide(Reports { prefix: "r" })
        .replace(EventsConfig::memory().service_name("overridden"))
        .build()
        .await?;
    assert_eq!(
        app.get::<EventsConfig>()
            .map(|c| c.service_name.clone())
            .as_deref(),
        Some("overridden")
    );
    app.shutdown().await
}
