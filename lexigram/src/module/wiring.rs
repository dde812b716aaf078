//! How handlers found through `inventory` (or registered by hand) are wired to the buses, and
//! how their parameters are resolved from the container.

use std::any::TypeId;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use super::{Container, Dep, Problem};
use crate::aggregate::Aggregate;
use crate::command::{CommandBus, CommandContext, CommandHandler};
use crate::event::{EventBus, EventContext, EventHandler, SubscribeOptions};
use crate::message::{Command, Event, MessageMetadata, Query};
use crate::query::{CachePolicy, QueryBus, QueryContext, QueryHandler};
use crate::registration::Location;
use crate::repository::{EventPublisher, Repository};
use crate::schema::SchemaRegistry;
use crate::snapshot::SnapshotManager;
use crate::store::EventStore;
use crate::subscription::{ReactionContext, ReactionDecl, ReactionHandler, ReactionRegistry};

/// What a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandlerKind {
    /// A command handler (exactly one per command type).
    Command,
    /// A query handler (exactly one per query type).
    Query,
    /// An event handler (any number per event type).
    Event,
    /// A durable reaction (`#[reaction]`): any number per event type, grouped by name.
    Reaction,
}

impl HandlerKind {
    /// `command`, `query` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Query => "query",
            Self::Event => "event",
            Self::Reaction => "reaction",
        }
    }

    /// Whether a message type has exactly one handler of this kind (commands and queries).
    pub(crate) fn is_exclusive(self) -> bool {
        matches!(self, Self::Command | Self::Query)
    }
}

/// A handler registered by `#[command_handler]`, `#[query_handler]`, `#[event_handler]` or
/// `#[reaction]`.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// What it serves.
    pub kind: HandlerKind,
    /// The handler's path (`bank::handlers::deposit`).
    pub name: &'static str,
    /// The module it is declared in (`module_path!()`), for `handler_modules` filters.
    pub module_path: &'static str,
    /// Where it is declared.
    pub location: Location,
    message_type: fn() -> &'static str,
    message_id: fn() -> TypeId,
    wire: fn(&mut Wiring<'_>),
}

/// Where a handler is declared: its path, module and `file:line`.
#[derive(Debug, Clone, Copy)]
pub struct HandlerSite {
    name: &'static str,
    module_path: &'static str,
    location: Location,
}

impl HandlerSite {
    /// The handler `name` (its full path), declared in `module_path` at `file:line`.
    pub const fn new(
        name: &'static str,
        module_path: &'static str,
        file: &'static str,
        line: u32,
    ) -> Self {
        Self {
            name,
            module_path,
            location: Location { file, line },
        }
    }
}

impl HandlerRegistration {
    /// A command handler for `C`; `wire` registers it on the bus.
    pub const fn command<C: Command>(site: HandlerSite, wire: fn(&mut Wiring<'_>)) -> Self {
        Self::new(
            HandlerKind::Command,
            site,
            C::command_name,
            TypeId::of::<C>,
            wire,
        )
    }

    /// A query handler for `Q`.
    pub const fn query<Q: Query>(site: HandlerSite, wire: fn(&mut Wiring<'_>)) -> Self {
        Self::new(
            HandlerKind::Query,
            site,
            Q::query_name,
            TypeId::of::<Q>,
            wire,
        )
    }

    /// An event handler for `E`.
    pub const fn event<E: Event>(site: HandlerSite, wire: fn(&mut Wiring<'_>)) -> Self {
        Self::new(
            HandlerKind::Event,
            site,
            event_name::<E>,
            TypeId::of::<E>,
            wire,
        )
    }

    /// A durable reaction to `E`.
    pub const fn reaction<E: Event>(site: HandlerSite, wire: fn(&mut Wiring<'_>)) -> Self {
        Self::new(
            HandlerKind::Reaction,
            site,
            event_name::<E>,
            TypeId::of::<E>,
            wire,
        )
    }

    const fn new(
        kind: HandlerKind,
        site: HandlerSite,
        message_type: fn() -> &'static str,
        message_id: fn() -> TypeId,
        wire: fn(&mut Wiring<'_>),
    ) -> Self {
        Self {
            kind,
            name: site.name,
            module_path: site.module_path,
            location: site.location,
            message_type,
            message_id,
            wire,
        }
    }

    /// The message type's name.
    pub fn message_type(&self) -> &'static str {
        (self.message_type)()
    }

    /// The message type's id.
    pub fn message_id(&self) -> TypeId {
        (self.message_id)()
    }

    /// Whether the handler lives under one of `prefixes` (all handlers when empty).
    pub fn is_under(&self, prefixes: &[String]) -> bool {
        prefixes.is_empty()
            || prefixes.iter().any(|p| {
                self.module_path == p
                    || self
                        .module_path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
    }

    pub(crate) fn wire(&'static self, wiring: &mut Wiring<'_>) {
        wiring.current = Some(self);
        (self.wire)(wiring);
        wiring.current = None;
    }
}

fn event_name<E: Event>() -> &'static str {
    E::NAME
}

inventory::collect!(HandlerRegistration);

/// Every handler registered in the linked program.
pub fn handlers() -> impl Iterator<Item = &'static HandlerRegistration> {
    inventory::iter::<HandlerRegistration>.into_iter()
}

/// The stores and schema repositories are built from; the events module provides it.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// Snapshots, if a policy is configured.
    pub snapshots: Option<SnapshotManager>,
    /// Event types and upcasters.
    pub schema: Arc<SchemaRegistry>,
    /// Where saved events are published (the event bus).
    pub publisher: Option<Arc<dyn EventPublisher>>,
}

impl Stores {
    /// A repository for `A` over these stores.
    pub fn repository<A: Aggregate>(&self) -> Repository<A> {
        let mut repo =
            Repository::from_store(Arc::clone(&self.events)).with_schema(Arc::clone(&self.schema));
        if let Some(manager) = &self.snapshots {
            repo = repo.with_snapshot_manager(manager.clone());
        }
        if let Some(publisher) = &self.publisher {
            repo = repo.with_publisher(Arc::clone(publisher));
        }
        repo
    }
}

/// Wires handlers: resolves their parameters from the container and registers them on the
/// buses, collecting every problem instead of stopping at the first.
pub struct Wiring<'a> {
    container: &'a Container,
    commands: &'a CommandBus,
    queries: &'a QueryBus,
    events: &'a EventBus,
    problems: &'a mut Vec<Problem>,
    current: Option<&'static HandlerRegistration>,
    /// Resolve parameters (reporting what is missing) but register nothing.
    dry_run: bool,
}

impl std::fmt::Debug for Wiring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("handler", &self.current.map(|h| h.name))
            .finish_non_exhaustive()
    }
}

impl<'a> Wiring<'a> {
    pub(crate) fn new(
        container: &'a Container,
        buses: (&'a CommandBus, &'a QueryBus, &'a EventBus),
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        Self {
            container,
            commands: buses.0,
            queries: buses.1,
            events: buses.2,
            problems,
            current: None,
            dry_run: false,
        }
    }

    /// Runs `wire` for a handler that must not be registered (it is part of a reported
    /// conflict), so its missing parameters are still reported.
    pub(crate) fn dry_run(&mut self, handler: &'static HandlerRegistration) {
        self.dry_run = true;
        handler.wire(self);
        self.dry_run = false;
    }

    /// The container handlers draw from.
    pub fn container(&self) -> &Container {
        self.container
    }

    /// Resolves parameter `P` of a handler taking context `Ctx`, or records why it cannot.
    pub fn prepare<P: HandlerParam<Ctx>, Ctx>(&mut self) -> Option<P::Prepared> {
        match P::prepare(self.container) {
            Ok(prepared) => Some(prepared),
            Err(missing) => {
                let mut problem = Problem::new(match self.current {
                    Some(h) => format!(
                        "handler `{}` needs `{}`, but no module provides it",
                        h.name, missing.what
                    ),
                    None => format!(
                        "a handler needs `{}`, but no module provides it",
                        missing.what
                    ),
                })
                .help(missing.help);
                if let Some(h) = self.current {
                    problem = problem.at(h.location, h.name);
                }
                self.problems.push(problem);
                None
            }
        }
    }

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.current.map_or("handler", |h| h.name))
    }

    fn report(&mut self, err: &crate::Error) {
        let mut problem = Problem::new(err.to_string());
        if let Some(h) = self.current {
            problem = problem.at(h.location, h.name);
        }
        self.problems.push(problem);
    }

    /// Registers a command handler for `C`.
    pub fn command<C: Command, H: CommandHandler<C>>(&mut self, handler: H) {
        if self.dry_run {
            return;
        }
        let named = Named {
            name: self.name(),
            inner: handler,
        };
        if let Err(err) = self.commands.register::<C, _>(named) {
            self.report(&err);
        }
    }

    /// Registers a query handler for `Q`.
    pub fn query<Q: Query, H: QueryHandler<Q>>(&mut self, handler: H) {
        if self.dry_run {
            return;
        }
        let named = Named {
            name: self.name(),
            inner: handler,
        };
        if let Err(err) = self.queries.register::<Q, _>(named) {
            self.report(&err);
        }
    }

    /// Registers a query handler for `Q` whose results are cached.
    pub fn cached_query<Q, H>(&mut self, handler: H, policy: CachePolicy)
    where
        Q: Query + std::hash::Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
        H: QueryHandler<Q>,
    {
        if self.dry_run {
            return;
        }
        let named = Named {
            name: self.name(),
            inner: handler,
        };
        if let Err(err) = self.queries.register_cached::<Q, _>(named, policy) {
            self.report(&err);
        }
    }

    /// Subscribes an event handler for `E` with `priority` (higher first).
    pub fn event<E: Event, H: EventHandler<E>>(
        &mut self,
        handler: H,
        priority: i32,
        name: Option<&'static str>,
    ) {
        if self.dry_run {
            return;
        }
        let name = name.map_or_else(|| self.name(), Cow::Borrowed);
        let options = SubscribeOptions::new()
            .priority(priority)
            .name(name.into_owned());
        self.events.subscribe_with::<E, _>(handler, options);
    }

    /// Adds a durable reaction to `E` to the reaction `decl` names (declarations of one name
    /// form one subscription; the events module starts it with the app).
    pub fn reaction<E: Event, H: ReactionHandler<E>>(&mut self, handler: H, decl: ReactionDecl) {
        if self.dry_run {
            return;
        }
        let Some(registry) = self.container.get::<ReactionRegistry>() else {
            let mut problem = Problem::new(format!(
                "reaction `{}` has nowhere to run: the events module is missing",
                decl.name()
            ))
            .help("add `.module(EventsModule::configure(config))` to the app");
            if let Some(h) = self.current {
                problem = problem.at(h.location, h.name);
            }
            self.problems.push(problem);
            return;
        };
        let name = self.name();
        let site = self.current.map(|h| h.location);
        if let Err(conflict) = registry.add::<E, H>(decl, handler, name.into_owned(), site) {
            for sentence in conflict.sentences {
                let mut problem = Problem::new(sentence)
                    .help("give the setting in one declaration only, or move it to `[reactions]`");
                for (handler, location) in &conflict.earlier {
                    if let Some(location) = location {
                        problem = problem.at(*location, handler.to_string());
                    }
                }
                if let Some(h) = self.current {
                    problem = problem.at(h.location, h.name);
                }
                self.problems.push(problem);
            }
        }
    }
}

/// A handler with the name of the function it came from.
struct Named<H> {
    name: Cow<'static, str>,
    inner: H,
}

impl<C: Command, H: CommandHandler<C>> CommandHandler<C> for Named<H> {
    type Error = H::Error;
    fn handle(
        &self,
        command: C,
        ctx: CommandContext,
    ) -> impl Future<Output = Result<C::Output, H::Error>> + Send {
        self.inner.handle(command, ctx)
    }
    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

impl<Q: Query, H: QueryHandler<Q>> QueryHandler<Q> for Named<H> {
    type Error = H::Error;
    fn handle(
        &self,
        query: Q,
        ctx: QueryContext,
    ) -> impl Future<Output = Result<Q::Output, H::Error>> + Send {
        self.inner.handle(query, ctx)
    }
    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

/// Why a parameter cannot be resolved: what is missing and how to provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The missing parameter type.
    pub what: String,
    /// How to provide it.
    pub help: String,
}

/// The context a handler is called with: [`CommandContext`], [`QueryContext`],
/// [`EventContext`] or [`ReactionContext`].
pub trait HandlerContext: Clone + Send + Sync + 'static {
    /// The metadata of the message being handled.
    fn message_metadata(&self) -> &MessageMetadata;
}

impl HandlerContext for CommandContext {
    fn message_metadata(&self) -> &MessageMetadata {
        self.metadata()
    }
}

impl HandlerContext for QueryContext {
    fn message_metadata(&self) -> &MessageMetadata {
        self.metadata()
    }
}

impl HandlerContext for EventContext {
    fn message_metadata(&self) -> &MessageMetadata {
        self.metadata()
    }
}

impl HandlerContext for ReactionContext {
    fn message_metadata(&self) -> &MessageMetadata {
        self.metadata()
    }
}

/// A handler parameter lexigram can supply (every parameter after the message).
///
/// Resolution happens once, when the app is built ([`prepare`](Self::prepare)); each call then
/// only clones what was prepared ([`produce`](Self::produce)), so dispatch does no lookups.
#[diagnostic::on_unimplemented(
    message = "lexigram cannot supply `{Self}` to a handler",
    label = "not a handler parameter",
    note = "to take your own `{Self}`, write `Dep<{Self}>` and provide it with `App::builder().provide(..)`",
    note = "after the message, a handler takes `Dep<T>`, `Repository<A>`, `CommandBus`, `QueryBus`, `EventBus`, `MessageMetadata`, or its context (`CommandContext`, `QueryContext`, `EventContext` or `ReactionContext`)"
)]
pub trait HandlerParam<Ctx>: Sized + Send + 'static {
    /// What is resolved once, when the app is built.
    type Prepared: Clone + Send + Sync + 'static;

    /// Resolves the parameter from the container.
    fn prepare(container: &Container) -> Result<Self::Prepared, Missing>;

    /// The value for one call.
    fn produce(prepared: &Self::Prepared, ctx: &Ctx) -> Self;
}

impl<T: ?Sized + Send + Sync + 'static, Ctx> HandlerParam<Ctx> for Dep<T> {
    type Prepared = Dep<T>;
    fn prepare(container: &Container) -> Result<Dep<T>, Missing> {
        container.get::<T>().ok_or_else(|| Missing {
            what: format!("Dep<{}>", std::any::type_name::<T>()),
            help: format!(
                "provide it with `App::builder().provide(..)` (or `.provide_arc::<{}>(..)` for a trait object)",
                std::any::type_name::<T>()
            ),
        })
    }
    fn produce(prepared: &Dep<T>, _: &Ctx) -> Self {
        prepared.clone()
    }
}

impl<A: Aggregate, Ctx> HandlerParam<Ctx> for Repository<A> {
    type Prepared = Repository<A>;
    fn prepare(container: &Container) -> Result<Repository<A>, Missing> {
        container
            .get::<Stores>()
            .map(|stores| stores.repository::<A>())
            .ok_or_else(|| Missing {
                what: format!("Repository<{}>", std::any::type_name::<A>()),
                help: "add the events module: `.module(EventsModule::configure(config))`".into(),
            })
    }
    fn produce(prepared: &Repository<A>, _: &Ctx) -> Self {
        prepared.clone()
    }
}

macro_rules! bus_param {
    ($bus:ty) => {
        #[diagnostic::do_not_recommend]
        impl<Ctx> HandlerParam<Ctx> for $bus {
            type Prepared = $bus;
            fn prepare(container: &Container) -> Result<$bus, Missing> {
                container
                    .get::<$bus>()
                    .map(|bus| (*bus).clone())
                    .ok_or_else(|| Missing {
                        what: stringify!($bus).into(),
                        help: "add the events module: `.module(EventsModule::configure(config))`"
                            .into(),
                    })
            }
            fn produce(prepared: &$bus, _: &Ctx) -> Self {
                prepared.clone()
            }
        }
    };
}

bus_param!(CommandBus);
bus_param!(QueryBus);
bus_param!(EventBus);

#[diagnostic::do_not_recommend]
impl<Ctx: HandlerContext> HandlerParam<Ctx> for MessageMetadata {
    type Prepared = ();
    fn prepare(_: &Container) -> Result<(), Missing> {
        Ok(())
    }
    fn produce((): &(), ctx: &Ctx) -> Self {
        ctx.message_metadata().clone()
    }
}

macro_rules! context_param {
    ($ctx:ty) => {
        #[diagnostic::do_not_recommend]
        impl HandlerParam<$ctx> for $ctx {
            type Prepared = ();
            fn prepare(_: &Container) -> Result<(), Missing> {
                Ok(())
            }
            fn produce((): &(), ctx: &$ctx) -> Self {
                ctx.clone()
            }
        }
    };
}

context_param!(CommandContext);
context_param!(QueryContext);
context_param!(EventContext);
context_param!(ReactionContext);

/// A type built from the container field by field: `#[derive(FromContainer)]` on a struct
/// whose fields are handler parameters that need no message context (`Dep<T>`,
/// `Repository<A>`, the buses). `#[handlers(inject)]` builds its `self` this way.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be built from the container",
    label = "`#[handlers(inject)]` needs `{Self}: FromContainer`",
    note = "add `#[derive(FromContainer)]` to `{Self}` (its fields must be `Dep<T>`, `Repository<A>` or bus handles), or drop `inject` and provide an instance with `.provide(..)`"
)]
pub trait FromContainer: Sized + Send + Sync + 'static {
    /// Builds the value, or says what is missing.
    fn from_container(container: &Container) -> Result<Self, Missing>;
}

/// A parameter of a handler method: the `self` it is called on, either provided
/// (`#[handlers]`) or built field by field (`#[handlers(inject)]`).
#[derive(Debug)]
pub struct Injected<T>(Arc<T>);

impl<T> Clone for Injected<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> std::ops::Deref for Injected<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[diagnostic::do_not_recommend]
impl<T: FromContainer, Ctx> HandlerParam<Ctx> for Injected<T> {
    type Prepared = Injected<T>;
    fn prepare(container: &Container) -> Result<Injected<T>, Missing> {
        T::from_container(container).map(|value| Injected(Arc::new(value)))
    }
    fn produce(prepared: &Injected<T>, _: &Ctx) -> Self {
        prepared.clone()
    }
}

/// Used by `#[derive(FromContainer)]`: one field, resolved without a message context.
pub fn inject_field<T: HandlerParam<()>>(container: &Container) -> Result<T, Missing> {
    T::prepare(container).map(|prepared| T::produce(&prepared, &()))
}
