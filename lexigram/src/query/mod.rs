//! The query bus: one handler per query type, typed execution, optional result cache.
//!
//! The same shape as the [command bus](crate::command): [`QueryBus::register`] /
//! [`QueryBus::register_fn`] (a second handler is
//! [`Error::DuplicateHandler`](crate::Error::DuplicateHandler) unless
//! [replaced](QueryBus::replace)), [`execute`](QueryBus::execute) returns `Q::Output`, and a
//! handler's error is always wrapped in [`Error::QueryExecution`](crate::Error::QueryExecution)
//! naming the query type and handler, with the handler's error as `source`.
//!
//! # Caching
//!
//! A handler registered with [`register_cached`](QueryBus::register_cached) keeps its results
//! under a [`CachePolicy`]: each result lives for `ttl` (a TTL too long for the clock, such as
//! `Duration::MAX`, never expires), and at most `max_entries` are kept (the oldest goes first
//! when full; expired ones before that). Lookups, stores and evictions cost the same whatever
//! the cache holds. **The key is the query value itself**, so cached queries must be
//! `Hash + Eq + Clone` and their output `Clone`: two equal queries share one result.
//!
//! Concurrent misses of one query call the handler **once**: the first caller calls it, and
//! the others wait and get a clone of its result (counted as hits in
//! [`cache_stats`](QueryBus::cache_stats)). Errors are never cached or shared: the caller whose
//! call failed gets the error (its `source` is the handler's own error), and the waiters try
//! again, one of them calling the handler while the rest wait on that call. The same happens
//! when the calling caller is cancelled or its handler panics, so a waiter is never stranded.
//!
//! Invalidate explicitly with [`invalidate`](QueryBus::invalidate) (one query value),
//! [`invalidate_all`](QueryBus::invalidate_all) (one query type) or
//! [`clear_caches`](QueryBus::clear_caches) (everything); a call already running when its
//! query is invalidated still answers its callers but does not store its result. The cache
//! sits inside the middleware chain, so middleware sees cache hits too. Time is tokio's clock
//! (paused-clock tests see exact TTLs).
//!
//! # Examples
//!
//! ```
//! use lexigram::query::{CachePolicy, QueryBus, QueryContext};
//! use lexigram::Query;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! struct Balance { account: String }
//! impl Query for Balance { type Output = u64; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let bus = QueryBus::new();
//! bus.register_cached(
//!     move |_q: Balance, _ctx: QueryContext| {
//!         counter.fetch_add(1, Ordering::SeqCst);
//!         async { Ok::<_, std::convert::Infallible>(42) }
//!     },
//!     CachePolicy::new(Duration::from_secs(30), 1000),
//! )?;
//!
//! let q = Balance { account: "a-1".into() };
//! assert_eq!(bus.execute(q.clone()).await?, 42);
//! assert_eq!(bus.execute(q.clone()).await?, 42); // from the cache
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//!
//! assert!(bus.invalidate(&q));
//! bus.execute(q).await?;
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # Ok(()) }
//! ```

mod cache;

pub use cache::{CachePolicy, CacheStats};

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

use cache::{ErasedCache, Lookup, QueryCache};

use crate::BoxFuture;
use crate::bus::{Call, Mode, Registry};
use crate::context::Scope;
use crate::error::{BoxError, Result};
use crate::message::{CorrelationId, MessageId, MessageMetadata, Query};
use crate::middleware::cloner;
use crate::middleware::{MessageKind, Middleware};

/// What a query handler knows about the query it handles.
#[derive(Clone)]
pub struct QueryContext {
    scope: Arc<Scope>,
}

impl QueryContext {
    /// The query's metadata.
    pub fn metadata(&self) -> &MessageMetadata {
        self.scope.metadata()
    }

    /// The query's message id.
    pub fn message_id(&self) -> MessageId {
        self.metadata().message_id()
    }

    /// The correlation id of the conversation the query belongs to.
    pub fn correlation_id(&self) -> CorrelationId {
        self.metadata().correlation_id()
    }
}

impl fmt::Debug for QueryContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryContext")
            .field("metadata", &self.metadata())
            .finish()
    }
}

/// Handles queries of type `Q`.
///
/// Implement it on a type, or pass an async closure `|q: Q, ctx: QueryContext| async move { .. }`,
/// which implements it already. Implementors may write `async fn handle(..)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle query `{Q}`",
    label = "not a query handler for `{Q}`",
    note = "implement `QueryHandler<{Q}>`, or pass an async closure `|q: {Q}, ctx: QueryContext| async move {{ .. }}` returning `Result<{Q}::Output, E>`"
)]
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// The handler's error; the bus wraps it in
    /// [`Error::QueryExecution`](crate::Error::QueryExecution).
    type Error: Into<BoxError>;

    /// Answers one query.
    fn handle(
        &self,
        query: Q,
        ctx: QueryContext,
    ) -> impl Future<Output = Result<Q::Output, Self::Error>> + Send;

    /// The name used in errors and traces. Defaults to the Rust type name.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }
}

impl<Q, F, Fut, E> QueryHandler<Q> for F
where
    Q: Query,
    F: Fn(Q, QueryContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Q::Output, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Error = E;

    fn handle(
        &self,
        query: Q,
        ctx: QueryContext,
    ) -> impl Future<Output = Result<Q::Output, E>> + Send {
        self(query, ctx)
    }
}

struct Adapter<Q, H> {
    handler: H,
    _query: PhantomData<fn(Q)>,
}

impl<Q: Query, H: QueryHandler<Q>> Call<Q, Q::Output> for Adapter<Q, H> {
    fn call(&self, input: Q, scope: Arc<Scope>) -> BoxFuture<'_, Result<Q::Output, BoxError>> {
        let future = self.handler.handle(input, QueryContext { scope });
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

struct CachedAdapter<Q: Query, H> {
    handler: H,
    cache: Arc<QueryCache<Q, Q::Output>>,
}

impl<Q, H> Call<Q, Q::Output> for CachedAdapter<Q, H>
where
    Q: Query + Hash + Eq + Clone + Sync,
    Q::Output: Clone + Sync,
    H: QueryHandler<Q>,
{
    fn call(&self, input: Q, scope: Arc<Scope>) -> BoxFuture<'_, Result<Q::Output, BoxError>> {
        Box::pin(async move {
            let leader = loop {
                match self.cache.lookup(&input) {
                    Lookup::Hit(hit) => return Ok(hit),
                    Lookup::Wait(running) => {
                        if let Some(output) = running.result().await {
                            self.cache.count_hit();
                            return Ok(output);
                        }
                        // The call we waited for failed or was cancelled: look again (one
                        // of the waiters calls the handler next).
                    }
                    Lookup::Lead(leader) => break leader,
                }
            };
            let output = self
                .handler
                .handle(input, QueryContext { scope })
                .await
                .map_err(Into::into)?;
            leader.complete(output.clone());
            Ok(output)
        })
    }
}

/// Sends each query to its one handler, through the cache when the handler has one. Cheap to
/// clone; clones share handlers, caches and middleware. See the [module docs](self).
#[derive(Clone)]
pub struct QueryBus {
    registry: Arc<Registry>,
}

impl Default for QueryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl QueryBus {
    /// A bus with no handlers and no middleware.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Registry::new(MessageKind::Query)),
        }
    }

    /// Registers the handler of `Q`, without cache. Fails with
    /// [`Error::DuplicateHandler`](crate::Error::DuplicateHandler) if `Q` has one.
    #[track_caller]
    pub fn register<Q, H>(&self, handler: H) -> Result<()>
    where
        Q: Query,
        H: QueryHandler<Q>,
    {
        let adapter = Adapter {
            handler,
            _query: PhantomData,
        };
        let name: Arc<str> = Arc::from(adapter.handler.name());
        self.insert::<Q>(
            Box::new(adapter),
            name,
            None,
            Location::caller(),
            Mode::Unique,
        )
        .map(|_| ())
    }

    /// Registers an async closure `|q: Q, ctx: QueryContext| async move { .. }` as the handler
    /// of `Q`. The same as [`register`](Self::register), spelled for closures.
    #[track_caller]
    pub fn register_fn<Q, F, Fut, E>(&self, handler: F) -> Result<()>
    where
        Q: Query,
        F: Fn(Q, QueryContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Q::Output, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.register::<Q, F>(handler)
    }

    /// Registers the handler of `Q` with a result cache (see [Caching](self#caching)).
    /// Also makes `Q` [cloneable](Self::cloneable).
    #[track_caller]
    pub fn register_cached<Q, H>(&self, handler: H, policy: CachePolicy) -> Result<()>
    where
        Q: Query + Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
        H: QueryHandler<Q>,
    {
        self.insert_cached(handler, policy, Location::caller(), Mode::Unique)
            .map(|_| ())
    }

    /// Registers the handler of `Q`, replacing any (and its cache). Returns whether one was
    /// replaced.
    #[track_caller]
    pub fn replace<Q, H>(&self, handler: H) -> bool
    where
        Q: Query,
        H: QueryHandler<Q>,
    {
        let adapter = Adapter {
            handler,
            _query: PhantomData,
        };
        let name: Arc<str> = Arc::from(adapter.handler.name());
        self.insert::<Q>(
            Box::new(adapter),
            name,
            None,
            Location::caller(),
            Mode::Replace,
        )
        .unwrap_or(false)
    }

    /// Like [`replace`](Self::replace), with a result cache.
    #[track_caller]
    pub fn replace_cached<Q, H>(&self, handler: H, policy: CachePolicy) -> bool
    where
        Q: Query + Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
        H: QueryHandler<Q>,
    {
        self.insert_cached(handler, policy, Location::caller(), Mode::Replace)
            .unwrap_or(false)
    }

    /// Removes the handler of `Q` (and its cache). Returns whether there was one.
    pub fn unregister<Q: Query>(&self) -> bool {
        self.registry.remove::<Q>()
    }

    /// Whether `Q` has a handler.
    pub fn has_handler<Q: Query>(&self) -> bool {
        self.registry.contains::<Q>()
    }

    /// Whether the message type with this `TypeId` has a handler (for bootstrap checks).
    pub(crate) fn has_handler_id(&self, id: std::any::TypeId) -> bool {
        self.registry.contains_id(id)
    }

    /// The name of the handler of `Q`, if any.
    pub fn handler_name<Q: Query>(&self) -> Option<Arc<str>> {
        self.registry.handler_name::<Q>()
    }

    /// Lets middleware clone queries of type `Q` (needed by
    /// [`RetryMiddleware`](crate::middleware::RetryMiddleware)).
    pub fn cloneable<Q: Query + Clone>(&self) {
        self.registry.set_cloner::<Q>(cloner::<Q>());
    }

    /// Adds a middleware inside those added before (the first added runs outermost).
    pub fn add_middleware<M: Middleware>(&self, middleware: M) {
        self.registry
            .add_middleware(Arc::new(middleware), std::any::type_name::<M>());
    }

    /// Answers `query`, from the cache when its handler has one holding a fresh result.
    pub async fn execute<Q: Query>(&self, query: Q) -> Result<Q::Output> {
        self.registry
            .dispatch(query, Q::query_name(), Scope::child_of_current())
            .await
    }

    /// Answers `query` with the given metadata.
    pub async fn execute_with<Q: Query>(
        &self,
        query: Q,
        metadata: MessageMetadata,
    ) -> Result<Q::Output> {
        self.registry
            .dispatch(query, Q::query_name(), Scope::with_metadata(metadata))
            .await
    }

    /// Drops the cached result of `query`. Returns whether there was one.
    pub fn invalidate<Q>(&self, query: &Q) -> bool
    where
        Q: Query + Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
    {
        self.cache::<Q>().is_some_and(|cache| cache.remove(query))
    }

    /// Drops every cached result of query type `Q`. Returns how many there were.
    pub fn invalidate_all<Q: Query>(&self) -> usize {
        self.registry
            .extra::<Q>()
            .and_then(|extra| extra.downcast::<Box<dyn ErasedCache>>().ok())
            .map_or(0, |cache| cache.clear())
    }

    /// Drops every cached result of every query type.
    pub fn clear_caches(&self) {
        for extra in self.registry.all_extras() {
            if let Ok(cache) = extra.downcast::<Box<dyn ErasedCache>>() {
                cache.clear();
            }
        }
    }

    /// Hits, misses and size of the cache of `Q`, if its handler has one.
    pub fn cache_stats<Q: Query>(&self) -> Option<CacheStats> {
        self.registry
            .extra::<Q>()
            .and_then(|extra| extra.downcast::<Box<dyn ErasedCache>>().ok())
            .map(|cache| cache.stats())
    }

    fn cache<Q>(&self) -> Option<Arc<QueryCache<Q, Q::Output>>>
    where
        Q: Query + Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
    {
        let extra = self.registry.extra::<Q>()?;
        let erased = extra.downcast::<Box<dyn ErasedCache>>().ok()?;
        erased
            .as_any_arc()
            .downcast::<QueryCache<Q, Q::Output>>()
            .ok()
    }

    fn insert_cached<Q, H>(
        &self,
        handler: H,
        policy: CachePolicy,
        location: &'static Location<'static>,
        mode: Mode,
    ) -> Result<bool>
    where
        Q: Query + Hash + Eq + Clone + Sync,
        Q::Output: Clone + Sync,
        H: QueryHandler<Q>,
    {
        let cache = Arc::new(QueryCache::<Q, Q::Output>::new(policy));
        let name: Arc<str> = Arc::from(handler.name());
        let erased: Box<dyn ErasedCache> = Box::new(Arc::clone(&cache));
        let replaced = self.insert::<Q>(
            Box::new(CachedAdapter { handler, cache }),
            name,
            Some(Arc::new(erased)),
            location,
            mode,
        )?;
        self.cloneable::<Q>();
        Ok(replaced)
    }

    fn insert<Q: Query>(
        &self,
        call: Box<dyn Call<Q, Q::Output>>,
        name: Arc<str>,
        extra: Option<Arc<dyn std::any::Any + Send + Sync>>,
        location: &'static Location<'static>,
        mode: Mode,
    ) -> Result<bool> {
        self.registry
            .insert::<Q, Q::Output>(call, name, location, Q::query_name(), extra, mode)
    }
}

impl fmt::Debug for QueryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryBus")
            .field("registry", &self.registry)
            .finish()
    }
}
