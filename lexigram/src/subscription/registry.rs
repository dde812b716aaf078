//! Reactions declared by name while an app is wired (by `#[reaction]`, or by hand through
//! the wiring): each name becomes one [`Subscription`] whose reactor routes an event to the
//! handlers of its type.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use super::definition::{StartFrom, Subscription, SubscriptionBuilder};
use super::reactor::{ReactionContext, Reactor};
use crate::BoxFuture;
use crate::error::{BoxError, Location, Result};
use crate::message::{Event, EventEnvelope};

/// What one declaration says about its reaction: the subscription's name and the settings
/// it fixes in code. Every setting left out takes the `[reactions]` configuration or the
/// default; two declarations of one name must not disagree on a setting they both give.
///
/// ```
/// use lexigram::subscription::{ReactionDecl, StartFrom};
///
/// let decl = ReactionDecl::new("bank.welcome-mail").partitions(4).start_from(StartFrom::Now);
/// assert_eq!(decl.name(), "bank.welcome-mail");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionDecl {
    name: Arc<str>,
    partitions: Option<u32>,
    batch_size: Option<usize>,
    version: Option<u32>,
    start: Option<StartFrom>,
}

impl ReactionDecl {
    /// A declaration of the reaction `name` (it keys the checkpoints: keep it stable).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            partitions: None,
            batch_size: None,
            version: None,
            start: None,
        }
    }

    /// The reaction's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many partitions the log is split into for it.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Events per page and per checkpoint at most.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// The checkpoint version: a new version starts over from its start point.
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Where a new reaction starts reading.
    #[must_use]
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = Some(start);
        self
    }

    /// Takes the settings `other` gives that `self` leaves out; a setting both give with
    /// different values is a sentence in `conflicts`.
    fn merge(&mut self, other: &Self, conflicts: &mut Vec<String>) {
        fn one<T: PartialEq + Copy + fmt::Debug>(
            key: &str,
            mine: &mut Option<T>,
            theirs: Option<T>,
            conflicts: &mut Vec<String>,
        ) {
            match (*mine, theirs) {
                (Some(a), Some(b)) if a != b => {
                    let mut values = [format!("{a:?}"), format!("{b:?}")];
                    values.sort();
                    let [a, b] = values;
                    conflicts.push(format!(
                        "`{key}` is {a} in one declaration and {b} in another; set it once"
                    ));
                }
                (None, Some(b)) => *mine = Some(b),
                _ => {}
            }
        }
        one(
            "partitions",
            &mut self.partitions,
            other.partitions,
            conflicts,
        );
        one(
            "batch_size",
            &mut self.batch_size,
            other.batch_size,
            conflicts,
        );
        one("version", &mut self.version, other.version, conflicts);
        one("start", &mut self.start, other.start, conflicts);
    }

    /// A builder with the settings this declaration gives.
    fn builder(&self) -> SubscriptionBuilder {
        let mut builder = Subscription::builder(Arc::clone(&self.name));
        if let Some(partitions) = self.partitions {
            builder = builder.partitions(partitions);
        }
        if let Some(batch_size) = self.batch_size {
            builder = builder.batch_size(batch_size);
        }
        if let Some(version) = self.version {
            builder = builder.version(version);
        }
        if let Some(start) = self.start {
            builder = builder.start_from(start);
        }
        builder
    }
}

/// A typed reaction to events of type `E`: an async function of the decoded event and its
/// [`ReactionContext`]. Closures `Fn(E, ReactionContext) -> impl Future<Output = Result<(),
/// Err>>` are reaction handlers; `#[reaction]` registers one for each function it marks.
pub trait ReactionHandler<E>: Send + Sync + 'static {
    /// Reacts to one event.
    fn react(
        &self,
        event: E,
        ctx: ReactionContext,
    ) -> impl Future<Output = std::result::Result<(), BoxError>> + Send + 'static;
}

impl<E, F, Fut, Err> ReactionHandler<E> for F
where
    F: Fn(E, ReactionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), Err>> + Send + 'static,
    Err: Into<BoxError>,
{
    fn react(
        &self,
        event: E,
        ctx: ReactionContext,
    ) -> impl Future<Output = std::result::Result<(), BoxError>> + Send + 'static {
        let call = self(event, ctx);
        async move { call.await.map_err(Into::into) }
    }
}

/// One handler with its event type erased: decodes the envelope, then reacts.
type Erased = Arc<
    dyn Fn(&EventEnvelope, ReactionContext) -> BoxFuture<'static, std::result::Result<(), BoxError>>
        + Send
        + Sync,
>;

/// Everything declared under one name.
struct Declared {
    decl: ReactionDecl,
    /// Handlers by event type name, in declaration order.
    routes: BTreeMap<&'static str, Vec<(Arc<str>, Erased)>>,
    /// Where it is declared: handler name and `file:line` (none for a hand-written one).
    sites: Vec<(Arc<str>, Option<Location>)>,
}

/// Declarations of one reaction that disagree on a setting, from [`ReactionRegistry::add`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReactionConflict {
    /// One sentence per setting given differently.
    pub sentences: Vec<String>,
    /// The declarations made before this one: handler name and `file:line`.
    pub earlier: Vec<(Arc<str>, Option<Location>)>,
}

/// The reactions of an app, collected by name while it is wired; the events module starts
/// each as a durable subscription when the app starts.
#[derive(Default)]
pub struct ReactionRegistry {
    declared: Mutex<BTreeMap<Arc<str>, Declared>>,
}

impl fmt::Debug for ReactionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactionRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl ReactionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler`, called `handler_name` and declared at `site`, to the reaction `decl`
    /// names. A setting this declaration gives that an earlier one of the same name gave
    /// differently is an `Err`: one sentence per setting, and where the earlier declarations
    /// are (the handler is added anyway, so every other problem is still found).
    pub fn add<E: Event, H: ReactionHandler<E>>(
        &self,
        decl: ReactionDecl,
        handler: H,
        handler_name: impl Into<Arc<str>>,
        site: Option<Location>,
    ) -> std::result::Result<(), ReactionConflict> {
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |envelope: &EventEnvelope, ctx: ReactionContext| {
            let decoded = envelope.decode::<E>();
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let event = decoded?;
                handler.react(event, ctx).await
            })
        });
        let handler_name = handler_name.into();
        let name = Arc::clone(&decl.name);
        let mut conflicts = Vec::new();
        let mut declared = self.declared.lock();
        let entry = match declared.entry(Arc::clone(&name)) {
            std::collections::btree_map::Entry::Vacant(vacant) => vacant.insert(Declared {
                decl,
                routes: BTreeMap::new(),
                sites: Vec::new(),
            }),
            std::collections::btree_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                entry.decl.merge(&decl, &mut conflicts);
                entry
            }
        };
        let earlier = entry.sites.clone();
        entry
            .routes
            .entry(E::NAME)
            .or_default()
            .push((Arc::clone(&handler_name), erased));
        entry.sites.push((handler_name, site));
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(ReactionConflict {
                sentences: conflicts
                    .into_iter()
                    .map(|c| format!("reaction `{name}`: {c}"))
                    .collect(),
                earlier,
            })
        }
    }

    /// The names declared, in order.
    pub fn names(&self) -> Vec<String> {
        self.declared
            .lock()
            .keys()
            .map(|name| name.to_string())
            .collect()
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.declared.lock().is_empty()
    }

    /// Where the reaction `name` is declared: each handler's name and `file:line`.
    pub fn sites(&self, name: &str) -> Vec<(Arc<str>, Option<Location>)> {
        self.declared
            .lock()
            .get(name)
            .map(|d| d.sites.clone())
            .unwrap_or_default()
    }

    /// One subscription per declared name, reading exactly the event types it handles.
    /// `configure` applies the `[reactions]` settings on top of the declaration's (an
    /// operator's setting wins over the code's). Every definition problem of every reaction
    /// is in the error.
    pub(crate) fn subscriptions(
        &self,
        configure: impl Fn(&str, SubscriptionBuilder) -> SubscriptionBuilder,
    ) -> Result<Vec<Subscription>> {
        let declared = self.declared.lock();
        let mut subscriptions = Vec::new();
        let mut problems = Vec::new();
        for (name, declared) in declared.iter() {
            let routes: BTreeMap<&'static str, Vec<Erased>> = declared
                .routes
                .iter()
                .map(|(event_type, handlers)| {
                    (
                        *event_type,
                        handlers.iter().map(|(_, h)| Arc::clone(h)).collect(),
                    )
                })
                .collect();
            let builder = configure(name, declared.decl.builder())
                .event_type_names(routes.keys().copied())
                .reactor(Routes(routes));
            match builder.build() {
                Ok(subscription) => subscriptions.push(subscription),
                Err(crate::Error::Config { problems: more }) => problems.extend(more),
                Err(other) => problems.push(other.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(subscriptions)
        } else {
            Err(crate::Error::Config { problems })
        }
    }
}

/// The reactor of a declared reaction: the handlers of the event's type, in declaration
/// order (a retry calls them all again, so each must be idempotent on its own).
struct Routes(BTreeMap<&'static str, Vec<Erased>>);

impl Reactor for Routes {
    async fn react(
        &self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError> {
        if let Some(handlers) = self.0.get(&*event.event_type) {
            for handler in handlers {
                handler(event, ctx.clone()).await?;
            }
        }
        Ok(())
    }
}
