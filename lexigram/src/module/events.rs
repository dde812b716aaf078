//! `EventsModule`: stores, buses and discovered handlers, wired from an `EventsConfig`.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::projection::DeclaredProjection;
use super::wiring::{self, HandlerKind, HandlerRegistration, Stores, Wiring};
use super::{ComponentHealth, Container, HealthStatus, Module, Problem};
use crate::command::CommandBus;
use crate::config::{ConcreteStore, EventsConfig};
use crate::error::{Result, SchemaError};
use crate::event::EventBus;
use crate::query::QueryBus;
use crate::registration;
use crate::repository::EventPublisher;
use crate::schema::SchemaRegistry;
use crate::snapshot::{InMemorySnapshotStore, SnapshotManager, SnapshotPolicy, SnapshotStore};
use crate::store::{EventStore, InMemoryEventStore};
use crate::subscription::{
    CheckpointStore, InMemoryCheckpointStore, ReactionRegistry, Reactions, RunStatus,
};

type ManualWiring = Box<dyn Fn(&mut Wiring<'_>) + Send + Sync>;
type SchemaSetup =
    Box<dyn Fn(&mut SchemaRegistry) -> std::result::Result<(), SchemaError> + Send + Sync>;

/// The events module: builds the event and snapshot stores and the three buses from an
/// [`EventsConfig`], wires every discovered handler (those under `handler_modules`, or all),
/// checks the whole wiring, and drains and closes everything on shutdown.
///
/// ```
/// use lexigram::config::EventsConfig;
/// use lexigram::module::{App, EventsModule};
/// use lexigram::message::Command;
///
/// struct Ping;
/// impl Command for Ping { type Output = &'static str; }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let app = App::builder()
///     .module(EventsModule::configure(EventsConfig::memory()).handlers(|w| {
///         w.command::<Ping, _>(|_: Ping, _ctx: lexigram::command::CommandContext| async {
///             Ok::<_, std::convert::Infallible>("pong")
///         });
///     }))
///     .build()
///     .await?;
/// assert_eq!(app.commands().dispatch(Ping).await?, "pong");
/// app.shutdown().await
/// # }
/// ```
pub struct EventsModule {
    config: EventsConfig,
    manual: Vec<ManualWiring>,
    schema: Vec<SchemaSetup>,
    projections: Vec<DeclaredProjection>,
}

impl fmt::Debug for EventsModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsModule")
            .field("config", &self.config)
            .field("manual_registrations", &self.manual.len())
            .field("schema_setups", &self.schema.len())
            .field("projections", &self.projections)
            .finish()
    }
}

impl EventsModule {
    /// The module for `config`.
    pub fn configure(config: EventsConfig) -> Self {
        Self {
            config,
            manual: Vec::new(),
            schema: Vec::new(),
            projections: Vec::new(),
        }
    }

    /// In-memory stores and default buses, with no external connection: for tests.
    pub fn stub() -> Self {
        Self::configure(EventsConfig::memory())
    }

    /// Only wires discovered handlers declared under these module paths (the seed's
    /// `handler_modules`); replaces the configured list.
    #[must_use]
    pub fn handler_modules<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.handler_modules = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Adds to the schema the stores read with: upcasters for old event versions, snapshot
    /// upcasters, event types not declared with `#[derive(Event)]`. Errors are reported at
    /// `build()` with the rest.
    ///
    /// ```
    /// use lexigram::module::EventsModule;
    /// let events = EventsModule::stub().schema(|s| {
    ///     s.upcaster("bank.Deposited", 1, 2, |mut v| {
    ///         v["currency"] = "EUR".into();
    ///         Ok(v)
    ///     })?;
    ///     Ok(())
    /// });
    /// # let _ = events;
    /// ```
    #[must_use]
    pub fn schema(
        mut self,
        setup: impl Fn(&mut SchemaRegistry) -> std::result::Result<(), SchemaError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.schema.push(Box::new(setup));
        self
    }

    /// Registers handlers by hand (no macros), checked with the rest at `build()`.
    #[must_use]
    pub fn handlers(mut self, wire: impl Fn(&mut Wiring<'_>) + Send + Sync + 'static) -> Self {
        self.manual.push(Box::new(wire));
        self
    }

    /// A feature module wiring the discovered handlers under `prefixes` into the app's buses
    /// (the seed's `scope`), for apps whose events module only names its own modules.
    pub fn scope<I, S>(name: impl Into<String>, prefixes: I) -> HandlerScope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        HandlerScope {
            name: name.into(),
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// Runs an exactly-once projection over the configured SQLite store: `reactor` writes its
    /// read model in the events' database, in the transaction that commits its checkpoint
    /// (see [`ExactlyOnce`](crate::subscription::ExactlyOnce)). `subscription` names it and
    /// sets its options (`Subscription::builder("bank.balances").event_type::<Opened>()`);
    /// the module adds the sink, runs the reactor's `setup`, and starts it with the
    /// reactions (the `[reactions]` settings of its name apply, and it shows in `health()`).
    /// A store of another backend, or a name another projection or reaction has, is a
    /// bootstrap problem.
    ///
    /// ```
    /// use lexigram::async_trait;
    /// use lexigram::error::BoxError;
    /// use lexigram::message::EventEnvelope;
    /// use lexigram::subscription::{ReactionContext, Subscription, TransactionalReactor};
    /// use lexigram::{EventsConfig, EventsModule};
    ///
    /// struct Seen;
    ///
    /// #[async_trait]
    /// impl TransactionalReactor<sqlx::Sqlite> for Seen {
    ///     async fn setup(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), BoxError> {
    ///         sqlx::query("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")
    ///             .execute(&mut *conn)
    ///             .await?;
    ///         Ok(())
    ///     }
    ///
    ///     async fn react(
    ///         &self,
    ///         conn: &mut sqlx::SqliteConnection,
    ///         _event: &EventEnvelope,
    ///         ctx: &ReactionContext,
    ///     ) -> Result<(), BoxError> {
    ///         sqlx::query("INSERT INTO seen (event_id) VALUES (?1)")
    ///             .bind(ctx.event_id().to_string())
    ///             .execute(&mut *conn)
    ///             .await?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let module = EventsModule::configure(EventsConfig::sqlite("app.db"))
    ///     .sqlite_projection(Subscription::builder("app.seen").partitions(2), Seen);
    /// # let _ = module;
    /// ```
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    #[must_use]
    pub fn sqlite_projection(
        mut self,
        subscription: crate::subscription::SubscriptionBuilder,
        reactor: impl crate::subscription::TransactionalReactor<sqlx::Sqlite>,
    ) -> Self {
        self.projections
            .push(DeclaredProjection::sqlite(subscription, reactor));
        self
    }

    /// Runs an in-memory projection over the configured memory store (for tests and small
    /// programs): `projection` is the handle that reads the model (keep a clone of it), its
    /// checkpoints live in the memory checkpoint store, and each batch's effect on the model
    /// commits with its checkpoint (see
    /// [`ExactlyOnce::memory`](crate::subscription::ExactlyOnce::memory)). Another backend than
    /// memory is a bootstrap problem: use `sqlite_projection` or `postgres_projection` there.
    ///
    /// ```
    /// use lexigram::error::BoxError;
    /// use lexigram::message::EventEnvelope;
    /// use lexigram::subscription::{
    ///     InMemoryProjection, MemoryProjection, ReactionContext, Subscription,
    /// };
    /// use lexigram::{EventsConfig, EventsModule};
    ///
    /// #[derive(Clone, Default)]
    /// struct Count(u64);
    ///
    /// impl MemoryProjection for Count {
    ///     fn apply(&mut self, _event: &EventEnvelope, _ctx: &ReactionContext) -> Result<(), BoxError> {
    ///         self.0 += 1;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let count = InMemoryProjection::<Count>::new();
    /// let module = EventsModule::configure(EventsConfig::memory())
    ///     .memory_projection(Subscription::builder("app.count"), count.clone());
    /// # let _ = module;
    /// ```
    #[must_use]
    pub fn memory_projection<P: crate::subscription::MemoryProjection>(
        mut self,
        subscription: crate::subscription::SubscriptionBuilder,
        projection: crate::subscription::InMemoryProjection<P>,
    ) -> Self {
        self.projections
            .push(DeclaredProjection::memory(subscription, projection));
        self
    }

    /// The same over the configured PostgreSQL store (see
    /// [`sqlite_projection`](Self::sqlite_projection)).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[must_use]
    pub fn postgres_projection(
        mut self,
        subscription: crate::subscription::SubscriptionBuilder,
        reactor: impl crate::subscription::TransactionalReactor<sqlx::Postgres>,
    ) -> Self {
        self.projections
            .push(DeclaredProjection::postgres(subscription, reactor));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EventsConfig {
        &self.config
    }
}

#[async_trait]
impl Module for EventsModule {
    fn name(&self) -> &str {
        "events"
    }

    async fn provide(&self, container: &mut Container, problems: &mut Vec<Problem>) {
        problems.extend(
            self.config
                .validate()
                .into_iter()
                .map(|p| Problem::new(format!("invalid events configuration: {p}"))),
        );
        let mut schema = registration::discover_schema(problems);
        for setup in &self.schema {
            if let Err(err) = setup(&mut schema) {
                problems.push(Problem::new(format!("invalid schema setup: {err}")));
            }
        }
        aggregate_name_clashes(problems);
        unregistered_aggregate_events(&schema, problems);
        let schema = Arc::new(schema);
        // An invalid bus configuration is reported by `validate` above.
        let bus = EventBus::with_config(self.config.event_bus.clone()).unwrap_or_default();
        let (events, snapshot_store, checkpoints, concrete) =
            match self.config.open_stores(Arc::clone(&schema)).await {
                Ok(stores) => {
                    projection_backends(&self.projections, &stores.concrete, problems);
                    (
                        stores.events,
                        stores.snapshots,
                        stores.checkpoints,
                        stores.concrete,
                    )
                }
                Err(err) => {
                    // A report line has no source chain: the causes go into the sentence.
                    let mut causes = String::new();
                    let mut cause = std::error::Error::source(&err);
                    while let Some(source) = cause {
                        causes.push_str(&format!(" ({source})"));
                        cause = source.source();
                    }
                    problems.push(
                        Problem::new(format!(
                            "cannot open the {} store: {err}{causes}",
                            self.config.store.backend()
                        ))
                        .help(
                            "check `store` in the configuration and that the database is reachable",
                        ),
                    );
                    // Keep wiring over in-memory stores, to report every other problem too.
                    let checkpoints = InMemoryCheckpointStore::new();
                    (
                        Arc::new(InMemoryEventStore::new().with_schema(Arc::clone(&schema)))
                            as Arc<dyn EventStore>,
                        Arc::new(InMemorySnapshotStore::new()) as Arc<dyn SnapshotStore>,
                        Arc::new(checkpoints.clone()) as Arc<dyn CheckpointStore>,
                        ConcreteStore::Memory(checkpoints),
                    )
                }
            };
        // The store as its own type too, for handlers that query its database (a
        // projection's read model): `Dep<SqliteEventStore>`, `Dep<PostgresEventStore>`.
        match &concrete {
            ConcreteStore::Memory(_) => {}
            #[cfg(feature = "sqlite")]
            ConcreteStore::Sqlite(store) => {
                container.provide(store.clone());
            }
            #[cfg(feature = "postgres")]
            ConcreteStore::Postgres(store) => {
                container.provide(store.clone());
            }
        }
        container.provide(concrete);
        let policy = self.config.snapshots.policy();
        let snapshots = (!matches!(policy, SnapshotPolicy::Never)).then(|| {
            SnapshotManager::shared(Arc::clone(&snapshot_store), policy)
                .with_schema(Arc::clone(&schema))
        });
        let publisher: Arc<dyn EventPublisher> = Arc::new(bus.clone());
        container.provide(Stores {
            events: Arc::clone(&events),
            snapshots,
            schema: Arc::clone(&schema),
            publisher: Some(publisher),
        });
        container.provide(Reactions::with_node(
            Arc::clone(&events),
            Arc::clone(&checkpoints),
            self.config.reactions.node(),
        ));
        container.provide(ReactionRegistry::new());
        container.provide_arc::<dyn CheckpointStore>(checkpoints);
        container.provide_arc::<dyn EventStore>(events);
        container.provide_arc::<dyn SnapshotStore>(snapshot_store);
        container.provide_arc(schema);
        container.provide(self.config.clone());
        container.provide(CommandBus::new());
        container.provide(QueryBus::new());
        container.provide(bus);
    }

    fn wire(&self, container: &Container, problems: &mut Vec<Problem>) {
        let selected: Vec<_> = wiring::handlers()
            .filter(|h| h.is_under(&self.config.handler_modules))
            .collect();
        wire_handlers(container, &selected, problems, |w| {
            for manual in &self.manual {
                manual(w);
            }
        });
    }

    fn verify(&self, container: &Container, problems: &mut Vec<Problem>) {
        // After every module wired: handler scopes may handle what this module did not.
        unhandled_messages(container, problems);
        if let Some(registry) = container.get::<ReactionRegistry>() {
            check_reactions(
                &registry,
                &self.projections,
                &self.config.reactions,
                problems,
            );
        }
    }

    async fn start(&self, container: &Container) -> Result<()> {
        let (Some(registry), Some(reactions)) = (
            container.get::<ReactionRegistry>(),
            container.get::<Reactions>(),
        ) else {
            return Ok(());
        };
        let config = &self.config.reactions;
        let subscriptions =
            registry.subscriptions(|name, builder| config.configure(name, builder))?;
        for subscription in subscriptions {
            if config.runs(subscription.name()) {
                tracing::info!(
                    target: "lexigram::subscription",
                    subscription = subscription.name(),
                    partitions = subscription.partitions(),
                    node = %reactions.node(),
                    "starting a durable reaction"
                );
                reactions.start(subscription).await?;
            }
        }
        let Some(store) = container.get::<ConcreteStore>() else {
            return Ok(());
        };
        for projection in &self.projections {
            if !config.runs(projection.name()) {
                continue;
            }
            // Another backend was reported at build.
            if let Some(subscription) =
                projection.subscription(&store, |name, builder| config.configure(name, builder))
            {
                tracing::info!(
                    target: "lexigram::subscription",
                    subscription = projection.name(),
                    node = %reactions.node(),
                    "starting a projection"
                );
                reactions.start(subscription?).await?;
            }
        }
        Ok(())
    }

    async fn shutdown(&self, container: &Container) -> Result<()> {
        let deadline = Duration::from_millis(self.config.shutdown_timeout_ms);
        let mut first = None;
        // Reactions first: their batches in flight commit while the store is still open.
        if let Some(reactions) = container.get::<Reactions>()
            && !reactions.running().is_empty()
            && let Err(err) = reactions.shutdown().await
        {
            first.get_or_insert(err);
        }
        if let Some(bus) = container.get::<EventBus>()
            && !bus.is_shut_down()
            && let Err(err) = bus.shutdown(deadline).await
        {
            first.get_or_insert(err);
        }
        if let Some(store) = container.get::<dyn EventStore>()
            && let Err(err) = store.close().await
        {
            first.get_or_insert(err);
        }
        if let Some(store) = container.get::<dyn SnapshotStore>()
            && let Err(err) = store.close().await
        {
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), Err)
    }

    async fn health(&self, container: &Container) -> Vec<ComponentHealth> {
        let mut components = Vec::new();
        if let Some(store) = container.get::<dyn EventStore>() {
            components.push(match store.ping().await {
                Ok(()) => ComponentHealth::new(
                    "event_store",
                    HealthStatus::Healthy,
                    format!("{} store answers", store.backend()),
                ),
                Err(err) => {
                    ComponentHealth::new("event_store", HealthStatus::Unhealthy, err.to_string())
                }
            });
        }
        if let Some(bus) = container.get::<EventBus>() {
            let dead = bus.dead_letter_count();
            components.push(if bus.is_shut_down() {
                ComponentHealth::new("event_bus", HealthStatus::Unhealthy, "shut down")
            } else if dead > 0 {
                ComponentHealth::new(
                    "event_bus",
                    HealthStatus::Degraded,
                    format!("{dead} dead letter(s) waiting; inspect and replay them"),
                )
            } else {
                ComponentHealth::new(
                    "event_bus",
                    HealthStatus::Healthy,
                    format!("{} event(s) queued", bus.pending()),
                )
            });
        }
        if let Some(reactions) = container.get::<Reactions>()
            && !reactions.running().is_empty()
        {
            components.push(reactions_health(&reactions).await);
        }
        components
    }
}

/// Settings for reactions no code declares (a typo would change nothing, silently), and
/// every definition problem of the declared ones, each at its declarations.
/// A projection whose backend is not the store's.
fn projection_backends(
    projections: &[DeclaredProjection],
    store: &ConcreteStore,
    problems: &mut Vec<Problem>,
) {
    for projection in projections {
        if projection.backend() != store.backend() {
            problems.push(
                Problem::new(format!(
                    "projection `{}` writes to {} but the store is {}",
                    projection.name(),
                    projection.backend(),
                    store.backend()
                ))
                .help(format!(
                    "an exactly-once projection writes in the events' own database: configure a {} store, or register it with `{}_projection`",
                    projection.backend(),
                    store.backend()
                )),
            );
        }
    }
}

fn check_reactions(
    registry: &ReactionRegistry,
    projections: &[DeclaredProjection],
    config: &crate::config::ReactionsConfig,
    problems: &mut Vec<Problem>,
) {
    let declared = registry.names();
    let mut seen = std::collections::BTreeSet::new();
    for projection in projections {
        let name = projection.name();
        if declared.iter().any(|d| d == name) || !seen.insert(name) {
            problems.push(
                Problem::new(format!(
                    "projection `{name}` has the name of another projection or reaction"
                ))
                .help("give every projection and reaction its own name: the name keys its checkpoints"),
            );
        }
    }
    let mut names = declared;
    names.extend(projections.iter().map(|p| p.name().to_owned()));
    for name in config.subscriptions.keys() {
        if !names.contains(name) {
            let known = if names.is_empty() {
                "no reaction is declared".to_owned()
            } else {
                format!("declared: {}", names.join(", "))
            };
            problems.push(
                Problem::new(format!(
                    "`reactions.subscriptions.{name}` configures a reaction no code declares ({known})"
                ))
                .help("fix the name, or remove the section; `#[reaction(name = \"..\")]` declares one"),
            );
        }
    }
    if let Err(crate::Error::Config { problems: invalid }) =
        registry.subscriptions(|name, builder| config.configure(name, builder))
    {
        for sentence in invalid {
            let mut problem = Problem::new(sentence.clone());
            let name = names
                .iter()
                .find(|n| sentence.starts_with(&format!("subscription `{n}`")));
            for (handler, site) in name.map(|n| registry.sites(n)).unwrap_or_default() {
                if let Some(site) = site {
                    problem = problem.at(site, handler.to_string());
                }
            }
            problems.push(problem);
        }
    }
}

/// One line per reaction running here: lag, parked events, failed partitions, leases held.
async fn reactions_health(reactions: &Reactions) -> ComponentHealth {
    /// A transaction open this long while events wait behind it is no passing append.
    const LONG_HOLD: Duration = Duration::from_secs(10);
    let mut status = HealthStatus::Healthy;
    let mut lines = Vec::new();
    let mut held_back = None;
    for name in reactions.running() {
        match reactions.status(&name).await {
            Ok(s) => {
                if let Some(held) = &s.held_back_by {
                    held_back.get_or_insert_with(|| held.clone());
                }
                let failed = s
                    .partitions
                    .iter()
                    .filter(|p| p.status == RunStatus::Failed)
                    .count();
                let paused = s
                    .partitions
                    .iter()
                    .filter(|p| p.status == RunStatus::Paused)
                    .count();
                if failed > 0 {
                    status = HealthStatus::Unhealthy;
                } else if s.parked > 0 && status == HealthStatus::Healthy {
                    status = HealthStatus::Degraded;
                }
                let mut line = format!(
                    "{name}: lag {}, {} parked, holds {}/{} partitions",
                    s.lag,
                    s.parked,
                    s.held_here.len(),
                    s.partitions.len()
                );
                if failed > 0 {
                    line.push_str(&format!(", {failed} failed"));
                }
                if paused > 0 {
                    line.push_str(&format!(", {paused} paused"));
                }
                lines.push(line);
            }
            Err(err) => {
                status = HealthStatus::Unhealthy;
                lines.push(format!("{name}: status unavailable: {err}"));
            }
        }
    }
    if let Some(held) = held_back.filter(|h| h.open_for >= LONG_HOLD) {
        if status == HealthStatus::Healthy {
            status = HealthStatus::Degraded;
        }
        lines.push(format!("the log is held back: {held}"));
    }
    ComponentHealth::new("reactions", status, lines.join("; "))
}

/// Discovered handlers under some module paths, wired into the app's buses. Made by
/// [`EventsModule::scope`].
#[derive(Debug, Clone)]
pub struct HandlerScope {
    name: String,
    prefixes: Vec<String>,
}

#[async_trait]
impl Module for HandlerScope {
    fn name(&self) -> &str {
        &self.name
    }

    fn wire(&self, container: &Container, problems: &mut Vec<Problem>) {
        let selected: Vec<_> = wiring::handlers()
            .filter(|h| h.is_under(&self.prefixes))
            .collect();
        wire_handlers(container, &selected, problems, |_| {});
    }
}

/// Wires `selected` and then the manual registrations. Command or query types with several
/// handlers are reported once and none of their handlers is registered (their parameters are
/// still checked).
fn wire_handlers(
    container: &Container,
    selected: &[&'static HandlerRegistration],
    problems: &mut Vec<Problem>,
    manual: impl FnOnce(&mut Wiring<'_>),
) {
    let (Some(commands), Some(queries), Some(events)) = (
        container.get::<CommandBus>(),
        container.get::<QueryBus>(),
        container.get::<EventBus>(),
    ) else {
        problems.push(Problem::new(
            "the buses are missing; add `EventsModule` before handler scopes",
        ));
        return;
    };
    let mut by_message: BTreeMap<(HandlerKind, &'static str), Vec<&'static HandlerRegistration>> =
        BTreeMap::new();
    for h in selected.iter().filter(|h| h.kind.is_exclusive()) {
        by_message
            .entry((h.kind, h.message_type()))
            .or_default()
            .push(h);
    }
    let mut skip = Vec::new();
    for ((kind, message), handlers) in &by_message {
        if handlers.len() > 1 {
            let mut problem = Problem::new(format!(
                "{} `{message}` has {} handlers (a {} must have exactly one)",
                kind.as_str(),
                handlers.len(),
                kind.as_str()
            ));
            for h in handlers {
                problem = problem.at(h.location, h.name);
                skip.push(h.name);
            }
            problems.push(problem.help("remove all but one, or narrow `handler_modules`"));
        }
    }
    let mut wiring = Wiring::new(container, (&commands, &queries, &events), problems);
    for h in selected {
        if h.kind.is_exclusive() && skip.contains(&h.name) {
            wiring.dry_run(h);
        } else {
            h.wire(&mut wiring);
        }
    }
    manual(&mut wiring);
}

/// Two aggregates registered under one name.
fn aggregate_name_clashes(problems: &mut Vec<Problem>) {
    let mut by_name: BTreeMap<&'static str, Vec<&'static registration::AggregateRegistration>> =
        BTreeMap::new();
    for a in registration::aggregates() {
        by_name.entry(a.name).or_default().push(a);
    }
    for (name, all) in by_name.into_iter().filter(|(_, all)| all.len() > 1) {
        let mut problem = Problem::new(format!(
            "aggregate name `{name}` is used by {} types",
            all.len()
        ))
        .help("give each aggregate its own `#[aggregate(name = \"..\")]`");
        for a in all {
            problem = problem.at(a.location, a.rust_type());
        }
        problems.push(problem);
    }
}

/// Events an aggregate applies that the schema does not know: the stores could not check or
/// upcast them.
fn unregistered_aggregate_events(schema: &SchemaRegistry, problems: &mut Vec<Problem>) {
    for aggregate in registration::aggregates() {
        for event in aggregate
            .events
            .iter()
            .filter(|e| schema.event_type(e).is_none())
        {
            problems.push(
                Problem::new(format!(
                    "aggregate `{}` applies event `{event}`, which is not a registered event type",
                    aggregate.name
                ))
                .at(aggregate.location, aggregate.rust_type())
                .help("derive it with `#[derive(Event)]`, or register it with `EventsModule::schema(|s| s.register::<TheEvent>().map(drop))`"),
            );
        }
    }
}

/// Command and query types declared with the derives that ended up with no handler. Types
/// with several discovered handlers are skipped: the conflict is reported already, or all of
/// them were excluded on purpose.
fn unhandled_messages(container: &Container, problems: &mut Vec<Problem>) {
    let mut discovered: BTreeMap<TypeId, usize> = BTreeMap::new();
    for h in wiring::handlers() {
        *discovered.entry(h.message_id()).or_default() += 1;
    }
    let conflicted = |id: TypeId| discovered.get(&id).is_some_and(|n| *n > 1);
    let (Some(commands), Some(queries)) =
        (container.get::<CommandBus>(), container.get::<QueryBus>())
    else {
        return;
    };
    for message in registration::messages().filter(|m| !conflicted(m.type_id())) {
        let handled = match message.kind {
            "command" => commands.has_handler_id(message.type_id()),
            _ => queries.has_handler_id(message.type_id()),
        };
        if !handled {
            problems.push(
                Problem::new(format!("{} `{}` has no handler", message.kind, message.type_name()))
                    .at(message.location, message.type_name())
                    .help(format!(
                        "annotate a handler with `#[{}_handler]`; if it exists, its crate may not be linked (nothing references it: add `use that_crate as _;`), or `handler_modules` excludes it",
                        message.kind
                    )),
            );
        }
    }
}
