//! `#[reaction]` through `EventsModule`: declared reactions start with the app, keep their
//! checkpoints across a restart on a durable store, take injected parameters, carry the causal
//! context into the commands they send, show in `health()`, drain at shutdown, and every
//! mistake in their declaration or configuration is a bootstrap problem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use lexigram::config::{EventsConfig, ReactionSettings, ReactionsConfig};
use lexigram::message::{ExpectedVersion, MessageMetadata, NewEvent};
use lexigram::module::{App, Dep, EventsModule, HealthStatus};
use lexigram::prelude::*;
use lexigram::subscription::{ReactionContext, Reactions};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, lexigram::Event)]
#[event(name = "test.reactions.Opened")]
struct Opened {
    account: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, lexigram::Event)]
#[event(name = "test.reactions.Closed")]
struct Closed {
    account: String,
}

/// What the reactions of one test saw.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

async fn append(app: &App, stream: &str, event: NewEvent) -> u64 {
    let store = app
        .get::<dyn EventStore>()
        .expect("the events module provides the store");
    store
        .append(stream, vec![event], ExpectedVersion::Any)
        .await
        .unwrap()
        .last_position()
        .unwrap()
}

fn opened(account: &str) -> NewEvent {
    NewEvent::from_event(
        &Opened {
            account: account.into(),
        },
        MessageMetadata::new(),
    )
    .unwrap()
}

fn closed(account: &str) -> NewEvent {
    NewEvent::from_event(
        &Closed {
            account: account.into(),
        },
        MessageMetadata::new(),
    )
    .unwrap()
}

async fn wait(app: &App, name: &str, position: u64) {
    let reactions = app
        .get::<Reactions>()
        .expect("the events module provides reactions");
    reactions
        .wait_for(name, position, Duration::from_secs(20))
        .await
        .unwrap();
}

/// Two functions under one name form one reaction reading both event types.
mod mailer {
    use super::*;

    #[lexigram::reaction(name = "test.mailer", partitions = 2)]
    async fn welcome(event: Opened, seen: Dep<Seen>) -> Result<(), lexigram::Error> {
        seen.0.lock().push(format!("welcome {}", event.account));
        Ok(())
    }

    #[lexigram::reaction(name = "test.mailer")]
    async fn farewell(
        event: &Closed,
        ctx: ReactionContext,
        seen: Dep<Seen>,
    ) -> Result<(), lexigram::Error> {
        assert_eq!(ctx.subscription(), "test.mailer");
        seen.0.lock().push(format!("farewell {}", event.account));
        Ok(())
    }
}

fn mailer_app(config: EventsConfig, seen: Arc<Seen>) -> lexigram::module::AppBuilder {
    App::builder()
        .module(EventsModule::configure(config).handler_modules(["reactions::mailer"]))
        .provide_arc(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_reaction_runs_with_the_app_and_reports_its_health() {
    let seen = Arc::new(Seen::default());
    let app = mailer_app(EventsConfig::memory(), seen.clone())
        .build()
        .await
        .unwrap();
    append(&app, "acc-1", opened("acc-1")).await;
    let last = append(&app, "acc-1", closed("acc-1")).await;
    wait(&app, "test.mailer", last).await;
    assert_eq!(seen.all(), ["welcome acc-1", "farewell acc-1"]);
    let status = app
        .get::<Reactions>()
        .unwrap()
        .status("test.mailer")
        .await
        .unwrap();
    assert_eq!(status.partitions.len(), 2, "partitions = 2: {status:?}");
    let health = app.health().await;
    let reactions = health
        .components
        .iter()
        .find(|c| c.name == "reactions")
        .expect("a reactions component");
    assert_eq!(reactions.status, HealthStatus::Healthy, "{health:?}");
    assert!(
        reactions
            .detail
            .contains("test.mailer: lag 0, 0 parked, holds 2/2"),
        "{reactions:?}"
    );
    app.shutdown().await.unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_reaction_goes_on_from_its_checkpoint() {
    let path = std::env::temp_dir().join(format!("lexigram-reactions-{}.db", uuid::Uuid::new_v4()));
    let config = EventsConfig::sqlite(&path);
    let seen = Arc::new(Seen::default());
    let app = mailer_app(config.clone(), seen.clone())
        .build()
        .await
        .unwrap();
    let first = append(&app, "acc-1", opened("acc-1")).await;
    wait(&app, "test.mailer", first).await;
    app.shutdown().await.unwrap();

    let again = mailer_app(config, seen.clone()).build().await.unwrap();
    let second = append(&again, "acc-2", opened("acc-2")).await;
    wait(&again, "test.mailer", second).await;
    again.shutdown().await.unwrap();
    assert_eq!(
        seen.all(),
        ["welcome acc-1", "welcome acc-2"],
        "the restarted app handled only the new event"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_reaction_does_not_run_here() {
    let seen = Arc::new(Seen::default());
    let mut reactions = ReactionsConfig::default();
    reactions.subscriptions.insert("test.mailer".into(), {
        let mut settings = ReactionSettings::default();
        settings.enabled = Some(false);
        settings
    });
    let app = mailer_app(EventsConfig::memory().reactions(reactions), seen.clone())
        .build()
        .await
        .unwrap();
    assert!(app.get::<Reactions>().unwrap().running().is_empty());
    assert!(
        app.health()
            .await
            .components
            .iter()
            .all(|c| c.name != "reactions")
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn settings_for_an_undeclared_reaction_are_a_bootstrap_problem() {
    let config =
        EventsConfig::from_toml_str("[reactions.subscriptions.\"test.mailr\"]\npartitions = 4\n")
            .unwrap();
    let err = mailer_app(config, Arc::new(Seen::default()))
        .build()
        .await
        .expect_err("a typo in a reaction's name is reported")
        .to_string();
    assert!(
        err.contains("`reactions.subscriptions.test.mailr` configures a reaction no code declares (declared: test.mailer)"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_settings_are_reported_with_their_key() {
    let config = EventsConfig::from_toml_str(
        "[reactions.subscriptions.\"test.mailer\"]\nlease_ttl_ms = 1000\nrenew_every_ms = 2000\nbatch_size = 0\n",
    )
    .unwrap();
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("`reactions.subscriptions.test.mailer`: `renew_every`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`batch_size` must be at least 1")),
        "{problems:?}"
    );
    let err = EventsConfig::from_toml_str("[reactions]\nnode_idd = \"a\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown key `node_idd` (did you mean `node_id`?)"),
        "{err}"
    );
}

/// Two declarations of one reaction that disagree on its partitions.
mod conflicting {
    use super::*;

    #[lexigram::reaction(name = "test.conflicting", partitions = 2)]
    async fn one(_event: Opened) -> Result<(), lexigram::Error> {
        Ok(())
    }

    #[lexigram::reaction(name = "test.conflicting", partitions = 4)]
    async fn two(_event: Closed) -> Result<(), lexigram::Error> {
        Ok(())
    }
}

#[tokio::test]
async fn declarations_that_disagree_are_a_bootstrap_problem_at_both() {
    let err = App::builder()
        .module(EventsModule::stub().handler_modules(["reactions::conflicting"]))
        .build()
        .await
        .expect_err("the conflict is reported")
        .to_string();
    assert!(
        err.contains("reaction `test.conflicting`: `partitions` is 2 in one declaration and 4 in another; set it once"),
        "{err}"
    );
    assert!(
        err.contains("reactions.rs"),
        "points at the declaration: {err}"
    );
}

/// Implemented by hand, not derived: a derived command is registered for the whole test
/// binary, and the apps of the other tests (which do not select its handler) would report it
/// unhandled.
#[derive(Debug, Clone)]
struct Notify {
    account: String,
}

impl lexigram::message::Command for Notify {
    type Output = ();
}

/// A reaction that sends a command, and the handler that records its metadata.
mod causal {
    use super::*;

    #[derive(Default)]
    pub(super) struct Recorded(pub(super) Mutex<Vec<(String, MessageMetadata)>>);

    #[lexigram::reaction(name = "test.causal")]
    async fn notify(
        event: Opened,
        commands: lexigram::command::CommandBus,
    ) -> Result<(), lexigram::Error> {
        commands
            .dispatch(Notify {
                account: event.account,
            })
            .await
    }

    #[lexigram::command_handler]
    async fn record(
        command: Notify,
        metadata: MessageMetadata,
        recorded: Dep<Recorded>,
    ) -> Result<(), lexigram::Error> {
        recorded.0.lock().push((command.account, metadata));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_by_a_reaction_is_caused_by_the_event() {
    let recorded = Arc::new(causal::Recorded::default());
    let app = App::builder()
        .module(EventsModule::stub().handler_modules(["reactions::causal"]))
        .provide_arc(recorded.clone())
        .build()
        .await
        .unwrap();
    // Three events in one append: one page, one batch; each command is caused by its own.
    let metadata: Vec<MessageMetadata> = (0..3).map(|_| MessageMetadata::new()).collect();
    let events = metadata
        .iter()
        .enumerate()
        .map(|(i, metadata)| {
            NewEvent::from_event(
                &Opened {
                    account: format!("acc-{i}"),
                },
                metadata.clone(),
            )
            .unwrap()
        })
        .collect();
    let store = app
        .get::<dyn EventStore>()
        .expect("the events module provides the store");
    let position = store
        .append("acc-9", events, ExpectedVersion::Any)
        .await
        .unwrap()
        .last_position()
        .unwrap();
    wait(&app, "test.causal", position).await;
    let recorded = recorded.0.lock().clone();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    for (i, ((account, caused), metadata)) in recorded.iter().zip(&metadata).enumerate() {
        assert_eq!(account, &format!("acc-{i}"));
        assert_eq!(caused.correlation_id(), metadata.correlation_id());
        assert_eq!(
            caused.causation_id(),
            Some(metadata.message_id()),
            "event {i}"
        );
    }
    app.shutdown().await.unwrap();
}

/// A projection over SQLite, for the wiring checks below.
#[cfg(feature = "sqlite")]
struct Counted;

#[cfg(feature = "sqlite")]
#[lexigram::async_trait]
impl lexigram::subscription::TransactionalReactor<sqlx::Sqlite> for Counted {
    async fn setup(
        &self,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), lexigram::error::BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY)")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn react(
        &self,
        conn: &mut sqlx::SqliteConnection,
        _event: &lexigram::message::EventEnvelope,
        ctx: &ReactionContext,
    ) -> Result<(), lexigram::error::BoxError> {
        sqlx::query("INSERT INTO counted (event_id) VALUES (?1)")
            .bind(ctx.event_id().to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_runs_with_the_app_and_its_wiring_mistakes_are_bootstrap_problems() {
    use lexigram::subscription::Subscription;

    // Another backend than the store's, and two projections with one name.
    let err = App::builder()
        .module(
            EventsModule::configure(EventsConfig::memory())
                .handler_modules(["reactions::none"])
                .sqlite_projection(Subscription::builder("test.counted"), Counted)
                .sqlite_projection(Subscription::builder("test.counted"), Counted),
        )
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("projection `test.counted` writes to sqlite but the store is memory"),
        "{err}"
    );
    assert!(
        err.contains("projection `test.counted` has the name of another projection or reaction"),
        "{err}"
    );

    // On its backend it runs with the app: `setup` made its table, every event counted once.
    let app = App::builder()
        .module(
            EventsModule::configure(EventsConfig::memory().store(
                lexigram::config::StoreConfig::Sqlite(lexigram::store::SqliteConfig::in_memory()),
            ))
            .handler_modules(["reactions::none"])
            .sqlite_projection(Subscription::builder("test.counted"), Counted),
        )
        .build()
        .await
        .unwrap();
    let mut position = 0;
    for account in ["a", "b", "c"] {
        position = append(&app, account, opened(account)).await;
    }
    wait(&app, "test.counted", position).await;
    let store = app.get::<lexigram::store::SqliteEventStore>().unwrap();
    let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counted")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(counted, 3);
    let health = app.health().await;
    assert!(
        health
            .components
            .iter()
            .any(|c| c.name == "reactions" && c.detail.contains("test.counted")),
        "{health:?}"
    );
    app.shutdown().await.unwrap();
}

/// An in-memory read model: events per stream, refusing the stream `poison`.
#[derive(Clone, Default)]
struct PerStream(std::collections::BTreeMap<String, u64>);

impl lexigram::subscription::MemoryProjection for PerStream {
    fn apply(
        &mut self,
        event: &lexigram::message::EventEnvelope,
        _ctx: &ReactionContext,
    ) -> Result<(), lexigram::error::BoxError> {
        if event.stream_id.as_str() == "poison" {
            return Err("poison cannot be counted".into());
        }
        *self.0.entry(event.stream_id.to_string()).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_projection_counts_each_event_once_parks_what_fails_and_rebuilds() {
    use lexigram::subscription::{InMemoryProjection, Subscription};

    let model = InMemoryProjection::<PerStream>::new();
    let app = App::builder()
        .module(
            EventsModule::configure(EventsConfig::memory())
                .handler_modules(["reactions::none"])
                .memory_projection(
                    Subscription::builder("test.per-stream")
                        .partitions(2)
                        .retry(
                            Duration::from_millis(1),
                            2.0,
                            Duration::from_millis(2),
                            0.0,
                            2,
                        ),
                    model.clone(),
                ),
        )
        .build()
        .await
        .unwrap();
    let mut position = 0;
    for account in ["a", "b", "a", "poison", "c", "a"] {
        position = append(&app, account, opened(account)).await;
    }
    wait(&app, "test.per-stream", position).await;
    let counts = model.read(|m| m.0.clone()).await;
    let expected: std::collections::BTreeMap<String, u64> =
        [("a".into(), 3), ("b".into(), 1), ("c".into(), 1)].into();
    assert_eq!(
        counts, expected,
        "each event once; the failing one left no trace"
    );
    let reactions = app.get::<Reactions>().unwrap();
    let parked = reactions.parked("test.per-stream").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].stream.as_str(), "poison");

    // A rebuild empties the model with the checkpoints and replays to the head.
    reactions.rebuild("test.per-stream").await.unwrap();
    let done = reactions
        .wait_rebuilt("test.per-stream", Duration::from_secs(10), |_| {})
        .await
        .unwrap();
    assert!(done.is_done());
    assert_eq!(
        model.read(|m| m.0.clone()).await,
        expected,
        "the same after a rebuild"
    );
    app.shutdown().await.unwrap();
}
