//! The in-process event bus: immediate reactions to events, with backpressure, retries and a
//! dead-letter queue.
//!
//! - [`publish`](EventBus::publish) puts an event in the bounded queue of its event type
//!   ([`queue_capacity`](EventBusConfig::queue_capacity)) and returns once it is accepted; a
//!   full queue makes `publish` wait (backpressure). Events of one type are handled in the
//!   order they were published (FIFO), by one background task per event type. An event no
//!   handler is subscribed to is dropped with `Ok`, or refused when
//!   [`allow_no_handlers`](EventBusConfig::allow_no_handlers) is off.
//! - Handlers of every event ([`subscribe_all`](EventBus::subscribe_all)) run first, then
//!   those of the event's type, each group by priority (higher first), then in subscription
//!   order. [`unsubscribe`](EventBus::unsubscribe) removes one.
//! - The handlers of one event run concurrently, never more than
//!   [`max_concurrent_handlers`](EventBusConfig::max_concurrent_handlers) at once across the
//!   whole bus, or one after another with `parallel_dispatch` off.
//! - Each attempt is cancelled after [`handler_timeout`](EventBusConfig::handler_timeout). A
//!   failed attempt (error, timeout or panic — panics are caught) is retried after 100 ms,
//!   200 ms, 400 ms (by default; `tokio::time::sleep`, so it really waits). After the last
//!   attempt the event goes to the **dead-letter queue** with the handler's name, the attempt
//!   count and the error: [`dead_letters`](EventBus::dead_letters),
//!   [`dead_letter_count`](EventBus::dead_letter_count),
//!   [`replay_dead_letter`](EventBus::replay_dead_letter),
//!   [`delete_dead_letter`](EventBus::delete_dead_letter).
//! - [`drain`](EventBus::drain) waits (without polling) until every queue is empty and no
//!   handler runs; [`shutdown`](EventBus::shutdown) refuses new events, drains with a deadline,
//!   then stops and joins every background task.
//! - Hooks: [`on_published`](EventBus::on_published), [`on_handled`](EventBus::on_handled),
//!   [`on_failed`](EventBus::on_failed). Each event is handled in a `lexigram.event` `tracing`
//!   span with its type, stream id, stream version and global position.
//! - `EventBus` implements [`EventPublisher`], so `Repository::with_publisher(Arc::new(bus))`
//!   hands it every saved event with its stream id, version and global position.
//!
//! Commands and queries dispatched from an event handler are caused by the event (same
//! correlation id, the event's message id as causation id).
//!
//! # Examples
//!
//! ```
//! use lexigram::event::{EventBus, EventContext, SubscribeOptions};
//! use lexigram::Event;
//! use serde::{Deserialize, Serialize};
//! use std::sync::{Arc, Mutex};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//! impl Event for Deposited { const NAME: &'static str = "bank.Deposited"; const VERSION: u32 = 1; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let bus = EventBus::new();
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! bus.subscribe_with(
//!     move |event: Deposited, ctx: EventContext| {
//!         log.lock().unwrap().push((ctx.stream_id().to_string(), event.amount));
//!         async { Ok::<_, std::convert::Infallible>(()) }
//!     },
//!     SubscribeOptions::new().name("audit").priority(10),
//! );
//!
//! bus.publish_event("account-1", &Deposited { amount: 5 }).await?;
//! bus.drain().await;
//! assert_eq!(*seen.lock().unwrap(), vec![("account-1".to_owned(), 5)]);
//! bus.shutdown(std::time::Duration::from_secs(5)).await?;
//! assert!(bus.publish_event("account-1", &Deposited { amount: 1 }).await.is_err());
//! # Ok(()) }
//! ```

mod config;
mod handler;

pub use config::EventBusConfig;
pub use handler::{
    EnvelopeHandler, EventContext, EventHandler, HandlerPanicked, HandlerSkipped, HandlerTimedOut,
    SubscribeOptions, SubscriptionId,
};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use handler::{ErasedEventHandler, Typed, Untyped};

use crate::bus::{self, Parent, in_scope};
use crate::error::{BoxError, Error, Result};
use crate::message::{Event, EventEnvelope, NewEvent, StreamId};
use crate::repository::EventPublisher;

/// Identifies one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterId(u64);

impl DeadLetterId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An event one handler failed on after its last attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter queue.
    pub id: DeadLetterId,
    /// The event.
    pub envelope: Arc<EventEnvelope>,
    /// The handler that failed.
    pub handler: Arc<str>,
    /// The handler's subscription (replay calls it again).
    pub subscription: SubscriptionId,
    /// How many attempts were made (0 when the handler was skipped).
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the last attempt failed.
    pub failed_at: DateTime<Utc>,
}

/// One handler's outcome on one event, given to the [`on_handled`](EventBus::on_handled)
/// and [`on_failed`](EventBus::on_failed) hooks.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerReport<'a> {
    /// The event.
    pub envelope: &'a EventEnvelope,
    /// The handler's name.
    pub handler: &'a str,
    /// How many attempts were made.
    pub attempts: u32,
    /// From the first attempt to the outcome, retries included.
    pub elapsed: Duration,
    /// The last error, for a failure.
    pub error: Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
}

type PublishedHook = Arc<dyn Fn(&EventEnvelope) + Send + Sync>;
type ReportHook = Arc<dyn Fn(&HandlerReport<'_>) + Send + Sync>;

#[derive(Clone, Default)]
struct Hooks {
    published: Vec<PublishedHook>,
    handled: Vec<ReportHook>,
    failed: Vec<ReportHook>,
}

/// Calls a hook; a panicking hook is logged, never fatal.
fn call_hook(name: &str, hook: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(hook)).is_err() {
        tracing::error!(
            hook = name,
            "an event bus hook panicked; the bus keeps running"
        );
    }
}

struct Subscriber {
    id: SubscriptionId,
    name: Arc<str>,
    priority: i32,
    handler: Box<dyn ErasedEventHandler>,
}

type Handlers = Arc<[Arc<Subscriber>]>;

/// What the dispatch path reads: handlers per event type (already merged and ordered) and
/// hooks. Replaced as a whole on every change.
struct Routes {
    by_type: HashMap<Arc<str>, Handlers>,
    all: Handlers,
    hooks: Hooks,
}

impl Routes {
    fn handlers_for(&self, event_type: &str) -> &Handlers {
        self.by_type.get(event_type).unwrap_or(&self.all)
    }
}

#[derive(Default)]
struct Subscriptions {
    by_type: HashMap<Arc<str>, Vec<Arc<Subscriber>>>,
    all: Vec<Arc<Subscriber>>,
    hooks: Hooks,
    next_id: u64,
}

fn ordered(subscribers: &[Arc<Subscriber>]) -> Vec<Arc<Subscriber>> {
    let mut list = subscribers.to_vec();
    list.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    list
}

impl Subscriptions {
    fn routes(&self) -> Routes {
        let all = ordered(&self.all);
        let by_type = self
            .by_type
            .iter()
            .map(|(event_type, subscribers)| {
                let mut list = all.clone();
                list.extend(ordered(subscribers));
                (Arc::clone(event_type), Handlers::from(list))
            })
            .collect();
        Routes {
            by_type,
            all: Handlers::from(all),
            hooks: self.hooks.clone(),
        }
    }

    fn find(&self, id: SubscriptionId) -> Option<Arc<Subscriber>> {
        self.all
            .iter()
            .chain(self.by_type.values().flatten())
            .find(|s| s.id == id)
            .cloned()
    }
}

/// The state the background tasks share with the bus.
struct Shared {
    config: EventBusConfig,
    routes: RwLock<Arc<Routes>>,
    subscriptions: Mutex<Subscriptions>,
    permits: Semaphore,
    /// Events accepted by `publish` and not yet handled.
    pending: AtomicU64,
    idle: Notify,
    closed: AtomicBool,
    dead_letters: Mutex<BTreeMap<DeadLetterId, DeadLetter>>,
    next_dead_letter: AtomicU64,
    live_tasks: AtomicUsize,
}

/// A failure after the last attempt.
struct Failure {
    attempts: u32,
    error: BoxError,
}

impl Shared {
    fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read())
    }

    fn change<R>(&self, change: impl FnOnce(&mut Subscriptions) -> R) -> R {
        let mut subscriptions = self.subscriptions.lock();
        let result = change(&mut subscriptions);
        *self.routes.write() = Arc::new(subscriptions.routes());
        result
    }

    /// One accepted event is done.
    fn finish_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Takes back the count of an event that was never queued.
    fn unaccept(&self) {
        let before = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.idle.notify_waiters();
        }
    }

    /// Hands one event to its handlers.
    async fn deliver(&self, envelope: &Arc<EventEnvelope>) {
        let routes = self.routes();
        let handlers = routes.handlers_for(&envelope.event_type);
        let span = tracing::debug_span!(
            "lexigram.event",
            event_type = %envelope.event_type,
            stream_id = %envelope.stream_id,
            stream_version = envelope.stream_version,
            global_position = envelope.global_position,
        );
        async {
            match &handlers[..] {
                [] => {}
                [only] => {
                    let _ = self.run_handler(only, envelope, &routes.hooks).await;
                }
                many if self.config.parallel_dispatch => {
                    futures_util::future::join_all(
                        many.iter()
                            .map(|sub| self.run_handler(sub, envelope, &routes.hooks)),
                    )
                    .await;
                }
                many => {
                    let mut failed: Option<&Arc<str>> = None;
                    for sub in many {
                        if let Some(failed) = failed {
                            let error: BoxError = Box::new(HandlerSkipped {
                                failed: Arc::clone(failed),
                            });
                            self.give_up(sub, envelope, &routes.hooks, 0, Duration::ZERO, &error);
                            continue;
                        }
                        let outcome = self.run_handler(sub, envelope, &routes.hooks).await;
                        if outcome.is_err() && !self.config.continue_on_error {
                            failed = Some(&sub.name);
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Calls one handler until it succeeds or runs out of attempts; then reports, and
    /// dead-letters a failure.
    async fn run_handler(
        &self,
        sub: &Arc<Subscriber>,
        envelope: &Arc<EventEnvelope>,
        hooks: &Hooks,
    ) -> std::result::Result<(), Failure> {
        let max_attempts = self.config.max_attempts();
        let timed = !hooks.handled.is_empty() || !hooks.failed.is_empty();
        let started = timed.then(tokio::time::Instant::now);
        let elapsed = || started.map_or(Duration::ZERO, |s| s.elapsed());
        let mut backoff = self.config.retry_initial_backoff;
        let mut attempt = 1;
        loop {
            let error = match self.attempt(sub, envelope, attempt).await {
                Ok(()) => {
                    if !hooks.handled.is_empty() {
                        let report = HandlerReport {
                            envelope,
                            handler: &sub.name,
                            attempts: attempt,
                            elapsed: elapsed(),
                            error: None,
                        };
                        for hook in &hooks.handled {
                            call_hook("on_handled", || hook(&report));
                        }
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            // An event that does not decode will not decode on a retry either.
            if attempt >= max_attempts || error.is::<crate::error::EventLoadError>() {
                self.give_up(sub, envelope, hooks, attempt, elapsed(), &error);
                return Err(Failure {
                    attempts: attempt,
                    error,
                });
            }
            tracing::debug!(handler = %sub.name, attempt, ?backoff, %error, "event handler failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = bus::next_backoff(
                backoff,
                self.config.retry_backoff_multiplier,
                self.config.retry_max_backoff,
            );
            attempt += 1;
        }
    }

    /// One call, under a concurrency permit and the timeout, with panics caught.
    async fn attempt(
        &self,
        sub: &Subscriber,
        envelope: &Arc<EventEnvelope>,
        attempt: u32,
    ) -> std::result::Result<(), BoxError> {
        // The semaphore is never closed, so `acquire` cannot fail; run unguarded if it did.
        let _permit = self.permits.acquire().await.ok();
        let ctx = EventContext {
            envelope: Arc::clone(envelope),
            handler: Arc::clone(&sub.name),
            attempt,
        };
        let call = in_scope(Parent::Event(Arc::clone(envelope)), sub.handler.call(ctx));
        let after = self.config.handler_timeout;
        let mut call = std::pin::pin!(AssertUnwindSafe(call).catch_unwind());
        // A handler that finishes in its first poll needs no timer: poll once before arming it.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(outcome) => Ok(outcome),
            Poll::Pending => tokio::time::timeout(after, call).await,
        };
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                Err(Box::new(HandlerPanicked { message }))
            }
            Err(_) => Err(Box::new(HandlerTimedOut { after })),
        }
    }

    /// Reports a handler's final failure and dead-letters the event for it.
    fn give_up(
        &self,
        sub: &Subscriber,
        envelope: &Arc<EventEnvelope>,
        hooks: &Hooks,
        attempts: u32,
        elapsed: Duration,
        error: &BoxError,
    ) {
        tracing::warn!(
            handler = %sub.name,
            event_type = %envelope.event_type,
            stream_id = %envelope.stream_id,
            global_position = envelope.global_position,
            attempts,
            %error,
            dead_lettered = self.config.enable_dead_letter,
            "event handler failed"
        );
        let report = HandlerReport {
            envelope,
            handler: &sub.name,
            attempts,
            elapsed,
            error: Some(&**error),
        };
        for hook in &hooks.failed {
            call_hook("on_failed", || hook(&report));
        }
        if self.config.enable_dead_letter {
            let id = DeadLetterId(self.next_dead_letter.fetch_add(1, Ordering::Relaxed) + 1);
            let mut letters = self.dead_letters.lock();
            while letters.len() >= self.config.dead_letter_capacity.max(1) {
                let Some((dropped, letter)) = letters.pop_first() else {
                    break;
                };
                tracing::warn!(
                    dead_letter = dropped.0, handler = %letter.handler, event_type = %letter.envelope.event_type,
                    capacity = self.config.dead_letter_capacity,
                    "dead-letter queue full; dropped the oldest dead letter"
                );
            }
            letters.insert(
                id,
                DeadLetter {
                    id,
                    envelope: Arc::clone(envelope),
                    handler: Arc::clone(&sub.name),
                    subscription: sub.id,
                    attempts,
                    error: error.to_string(),
                    failed_at: Utc::now(),
                },
            );
        }
    }
}

/// Counts a background task as alive until it ends (or is aborted).
struct LiveTask(Arc<Shared>);

impl LiveTask {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live_tasks.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.live_tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The background task of one event type: handles its events in order.
async fn drain_queue(mut queue: mpsc::Receiver<Arc<EventEnvelope>>, task: LiveTask) {
    let shared = &task.0;
    while let Some(envelope) = queue.recv().await {
        shared.deliver(&envelope).await;
        shared.finish_one();
    }
}

struct Inner {
    shared: Arc<Shared>,
    queues: RwLock<HashMap<Arc<str>, mpsc::Sender<Arc<EventEnvelope>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The in-process event bus. Cheap to clone; clones share everything. See the
/// [module docs](self).
///
/// Background tasks are started on the tokio runtime of the first `publish` of each event
/// type. Dropping every clone lets them finish the queued events and end; call
/// [`shutdown`](Self::shutdown) to stop them deterministically.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with the default [`EventBusConfig`].
    pub fn new() -> Self {
        Self::build(EventBusConfig::default())
    }

    /// A bus with `config`, or [`Error::Config`] listing every problem with it.
    pub fn with_config(config: EventBusConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: EventBusConfig) -> Self {
        let shared = Shared {
            permits: Semaphore::new(config.max_concurrent_handlers),
            config,
            routes: RwLock::new(Arc::new(Subscriptions::default().routes())),
            subscriptions: Mutex::new(Subscriptions::default()),
            pending: AtomicU64::new(0),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            dead_letters: Mutex::new(BTreeMap::new()),
            next_dead_letter: AtomicU64::new(0),
            live_tasks: AtomicUsize::new(0),
        };
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                queues: RwLock::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EventBusConfig {
        &self.inner.shared.config
    }

    fn add(
        &self,
        event_type: Option<Arc<str>>,
        handler: Box<dyn ErasedEventHandler>,
        default_name: std::borrow::Cow<'static, str>,
        options: SubscribeOptions,
    ) -> SubscriptionId {
        self.inner.shared.change(|subs| {
            subs.next_id += 1;
            let id = SubscriptionId(subs.next_id);
            let subscriber = Arc::new(Subscriber {
                id,
                name: options.name.unwrap_or_else(|| Arc::from(default_name)),
                priority: options.priority,
                handler,
            });
            match event_type {
                Some(event_type) => subs.by_type.entry(event_type).or_default().push(subscriber),
                None => subs.all.push(subscriber),
            }
            id
        })
    }

    /// Subscribes `handler` to events of type `E`, with priority 0.
    pub fn subscribe<E: Event, H: EventHandler<E>>(&self, handler: H) -> SubscriptionId {
        self.subscribe_with(handler, SubscribeOptions::new())
    }

    /// Subscribes `handler` to events of type `E` with a name and priority.
    pub fn subscribe_with<E: Event, H: EventHandler<E>>(
        &self,
        handler: H,
        options: SubscribeOptions,
    ) -> SubscriptionId {
        let name = handler.name();
        let typed = Typed {
            handler,
            _event: PhantomData::<fn(E)>,
        };
        self.add(Some(Arc::from(E::NAME)), Box::new(typed), name, options)
    }

    /// Subscribes `handler` to every event. Such handlers run before those of one type.
    pub fn subscribe_all<H: EnvelopeHandler>(&self, handler: H) -> SubscriptionId {
        self.subscribe_all_with(handler, SubscribeOptions::new())
    }

    /// Subscribes `handler` to every event, with a name and priority.
    pub fn subscribe_all_with<H: EnvelopeHandler>(
        &self,
        handler: H,
        options: SubscribeOptions,
    ) -> SubscriptionId {
        let name = handler.name();
        self.add(None, Box::new(Untyped { handler }), name, options)
    }

    /// Subscribes an envelope handler to the events named `event_type` (no decoding).
    pub fn subscribe_type<H: EnvelopeHandler>(
        &self,
        event_type: impl Into<Arc<str>>,
        handler: H,
    ) -> SubscriptionId {
        self.subscribe_type_with(event_type, handler, SubscribeOptions::new())
    }

    /// Like [`subscribe_type`](Self::subscribe_type), with a name and priority.
    pub fn subscribe_type_with<H: EnvelopeHandler>(
        &self,
        event_type: impl Into<Arc<str>>,
        handler: H,
        options: SubscribeOptions,
    ) -> SubscriptionId {
        let name = handler.name();
        self.add(
            Some(event_type.into()),
            Box::new(Untyped { handler }),
            name,
            options,
        )
    }

    /// Removes a subscription. Returns whether it existed. Events already being handled by it
    /// finish; queued ones no longer reach it.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.shared.change(|subs| {
            let before = subs.all.len();
            subs.all.retain(|s| s.id != id);
            let mut removed = subs.all.len() != before;
            for list in subs.by_type.values_mut() {
                let before = list.len();
                list.retain(|s| s.id != id);
                removed |= list.len() != before;
            }
            subs.by_type.retain(|_, list| !list.is_empty());
            removed
        })
    }

    /// How many handlers an event of `event_type` would reach.
    pub fn handler_count(&self, event_type: &str) -> usize {
        self.inner.shared.routes().handlers_for(event_type).len()
    }

    /// Calls `hook` for every event `publish` accepts.
    pub fn on_published(&self, hook: impl Fn(&EventEnvelope) + Send + Sync + 'static) {
        self.inner
            .shared
            .change(|subs| subs.hooks.published.push(Arc::new(hook)));
    }

    /// Calls `hook` each time a handler succeeds on an event.
    pub fn on_handled(&self, hook: impl Fn(&HandlerReport<'_>) + Send + Sync + 'static) {
        self.inner
            .shared
            .change(|subs| subs.hooks.handled.push(Arc::new(hook)));
    }

    /// Calls `hook` each time a handler fails on an event after its last attempt (or is
    /// skipped).
    pub fn on_failed(&self, hook: impl Fn(&HandlerReport<'_>) + Send + Sync + 'static) {
        self.inner
            .shared
            .change(|subs| subs.hooks.failed.push(Arc::new(hook)));
    }

    /// Publishes a stored event. Returns once the event is queued (waiting while its queue is
    /// full); its handlers run in the background.
    ///
    /// Fails with [`Error::Publish`] after [`shutdown`](Self::shutdown), when no handler is
    /// subscribed and `allow_no_handlers` is off, or outside a tokio runtime.
    ///
    /// A handler that publishes events of its *own* type into a full queue waits for itself;
    /// give such loops a queue large enough, or publish from another task.
    pub async fn publish(&self, envelope: EventEnvelope) -> Result<()> {
        self.publish_shared(Arc::new(envelope)).await
    }

    /// Publishes stored events in order.
    pub async fn publish_batch(&self, envelopes: &[EventEnvelope]) -> Result<()> {
        for envelope in envelopes {
            self.publish_shared(Arc::new(envelope.clone())).await?;
        }
        Ok(())
    }

    /// Publishes a typed event that is not stored: it gets fresh metadata (caused by the
    /// message being handled, if any), the given stream, and version and position 0.
    pub async fn publish_event<E: Event>(
        &self,
        stream: impl Into<StreamId>,
        event: &E,
    ) -> Result<()> {
        let new = NewEvent::from_event(event, bus::caused_metadata())?;
        self.publish(EventEnvelope::new(new, stream.into(), 0, 0, Utc::now()))
            .await
    }

    async fn publish_shared(&self, envelope: Arc<EventEnvelope>) -> Result<()> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(closed(&envelope));
        }
        let routes = shared.routes();
        if routes.handlers_for(&envelope.event_type).is_empty() {
            if shared.config.allow_no_handlers {
                publish_hooks(&routes.hooks, &envelope);
                return Ok(());
            }
            return Err(Error::Publish {
                event_type: Arc::clone(&envelope.event_type),
                reason: "no handler is subscribed to it and `allow_no_handlers` is off; subscribe a handler first, or turn `allow_no_handlers` on".to_owned(),
            });
        }
        // Counted before the closed check, so `shutdown` either sees this event or this
        // publish sees `closed`.
        shared.pending.fetch_add(1, Ordering::SeqCst);
        if shared.closed.load(Ordering::SeqCst) {
            shared.unaccept();
            return Err(closed(&envelope));
        }
        let hooked = (!routes.hooks.published.is_empty()).then(|| Arc::clone(&envelope));
        let sent = match self.try_send(envelope) {
            Ok(None) => Ok(()),
            Ok(Some((sender, envelope))) => sender.send(envelope).await.map_err(|e| e.0),
            Err(error) => {
                shared.unaccept();
                return Err(error);
            }
        };
        if let Err(envelope) = sent {
            shared.unaccept();
            return Err(closed(&envelope));
        }
        if let Some(envelope) = hooked {
            publish_hooks(&routes.hooks, &envelope);
        }
        Ok(())
    }

    /// Queues without waiting when there is room. Otherwise returns the queue to wait on.
    #[allow(clippy::type_complexity)]
    fn try_send(
        &self,
        envelope: Arc<EventEnvelope>,
    ) -> Result<Option<(mpsc::Sender<Arc<EventEnvelope>>, Arc<EventEnvelope>)>> {
        use mpsc::error::TrySendError;
        let envelope = {
            let queues = self.inner.queues.read();
            match queues.get(&envelope.event_type) {
                Some(sender) => match sender.try_send(envelope) {
                    Ok(()) => return Ok(None),
                    Err(TrySendError::Full(envelope)) => {
                        return Ok(Some((sender.clone(), envelope)));
                    }
                    Err(TrySendError::Closed(envelope)) => return Err(closed(&envelope)),
                },
                None => envelope,
            }
        };
        let sender = self.open_queue(&envelope)?;
        match sender.try_send(envelope) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(envelope)) => Ok(Some((sender, envelope))),
            Err(TrySendError::Closed(envelope)) => Err(closed(&envelope)),
        }
    }

    /// The queue of an event type, created with its background task on first use.
    fn open_queue(&self, envelope: &EventEnvelope) -> Result<mpsc::Sender<Arc<EventEnvelope>>> {
        let shared = &self.inner.shared;
        let mut queues = self.inner.queues.write();
        if let Some(sender) = queues.get(&envelope.event_type) {
            return Ok(sender.clone());
        }
        if shared.closed.load(Ordering::SeqCst) {
            return Err(closed(envelope));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Publish {
            event_type: Arc::clone(&envelope.event_type),
            reason: "no tokio runtime is running; publish from inside a tokio runtime (the bus runs its handlers on it)".to_owned(),
        })?;
        let (sender, receiver) = mpsc::channel(shared.config.queue_capacity);
        let task = runtime.spawn(drain_queue(receiver, LiveTask::new(shared)));
        self.inner.tasks.lock().push(task);
        queues.insert(Arc::clone(&envelope.event_type), sender.clone());
        Ok(sender)
    }

    /// Waits until every queue is empty and no handler is running (retries included). Does
    /// not poll: it sleeps until the last accepted event is done. Do not call it from a
    /// handler of this bus: the handler's own event is still pending.
    pub async fn drain(&self) {
        let shared = &self.inner.shared;
        loop {
            let mut notified = std::pin::pin!(shared.idle.notified());
            notified.as_mut().enable();
            if shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// How many accepted events are queued or being handled.
    pub fn pending(&self) -> u64 {
        self.inner.shared.pending.load(Ordering::Acquire)
    }

    /// Stops the bus: refuses new events (`publish` fails from now on), waits up to `deadline`
    /// for the accepted ones to be handled, then stops every background task and waits for
    /// each to end. No task of the bus outlives this call.
    ///
    /// Fails with [`Error::ShutdownTimeout`] (after stopping everything) when the deadline
    /// passed first; the unhandled events are abandoned.
    pub async fn shutdown(&self, deadline: Duration) -> Result<()> {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::SeqCst);
        let drained = tokio::time::timeout(deadline, self.drain()).await.is_ok();
        let abandoned = shared.pending.load(Ordering::Acquire);
        drop(std::mem::take(&mut *self.inner.queues.write()));
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Ends as cancelled (or finished); a drain task never panics (handlers' panics
            // are caught).
            let _ = task.await;
        }
        shared.pending.store(0, Ordering::SeqCst);
        shared.idle.notify_waiters();
        if drained {
            tracing::debug!("event bus shut down");
            Ok(())
        } else {
            Err(Error::ShutdownTimeout {
                component: "event bus",
                deadline,
                abandoned,
            })
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shared.closed.load(Ordering::Acquire)
    }

    /// How many background tasks of this bus are alive (one per event type published so far,
    /// 0 after shutdown).
    pub fn live_tasks(&self) -> usize {
        self.inner.shared.live_tasks.load(Ordering::SeqCst)
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner
            .shared
            .dead_letters
            .lock()
            .values()
            .cloned()
            .collect()
    }

    /// How many dead letters there are.
    pub fn dead_letter_count(&self) -> usize {
        self.inner.shared.dead_letters.lock().len()
    }

    /// Deletes a dead letter. Returns whether it existed.
    pub fn delete_dead_letter(&self, id: DeadLetterId) -> bool {
        self.inner.shared.dead_letters.lock().remove(&id).is_some()
    }

    /// Hands a dead letter's event again to the handler that failed on it (with the usual
    /// timeout and retries), in the calling task, and removes it from the queue.
    ///
    /// If the handler fails again, the event is dead-lettered again (under a new id) and
    /// [`Error::EventHandler`] is returned with the handler's error as source. Fails with
    /// [`Error::DeadLetterNotFound`] for an unknown id, and [`Error::DeadLetterReplay`]
    /// (keeping the dead letter) when its handler is no longer subscribed.
    pub async fn replay_dead_letter(&self, id: DeadLetterId) -> Result<()> {
        let shared = &self.inner.shared;
        let letter = shared
            .dead_letters
            .lock()
            .remove(&id)
            .ok_or(Error::DeadLetterNotFound { id: id.0 })?;
        let Some(subscriber) = shared.subscriptions.lock().find(letter.subscription) else {
            let reason = format!(
                "handler `{}` ({}) is no longer subscribed; subscribe it again and replay the event yourself, or delete the dead letter",
                letter.handler, letter.subscription
            );
            shared.dead_letters.lock().insert(id, letter);
            return Err(Error::DeadLetterReplay { id: id.0, reason });
        };
        let routes = shared.routes();
        let envelope = letter.envelope;
        shared
            .run_handler(&subscriber, &envelope, &routes.hooks)
            .instrument(tracing::debug_span!("lexigram.replay", dead_letter = id.0, event_type = %envelope.event_type))
            .await
            .map_err(|failure| Error::EventHandler {
                event_type: Arc::clone(&envelope.event_type),
                handler: Arc::clone(&subscriber.name),
                attempts: failure.attempts,
                source: failure.error,
            })
    }
}

fn publish_hooks(hooks: &Hooks, envelope: &EventEnvelope) {
    for hook in &hooks.published {
        call_hook("on_published", || hook(envelope));
    }
}

fn closed(envelope: &EventEnvelope) -> Error {
    Error::Publish {
        event_type: Arc::clone(&envelope.event_type),
        reason: "the event bus is shut down; publish before calling `shutdown`, or build a new bus"
            .to_owned(),
    }
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.inner.shared;
        let subscriptions = shared.subscriptions.lock();
        let mut event_types: Vec<&str> = subscriptions.by_type.keys().map(|t| &**t).collect();
        event_types.sort_unstable();
        f.debug_struct("EventBus")
            .field("config", &shared.config)
            .field("event_types", &event_types)
            .field("all_event_handlers", &subscriptions.all.len())
            .field("pending", &shared.pending.load(Ordering::Relaxed))
            .field("dead_letters", &shared.dead_letters.lock().len())
            .field("shut_down", &shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl EventPublisher for EventBus {
    /// Queues every envelope in order (see [`EventBus::publish`]).
    async fn publish(&self, envelopes: &[EventEnvelope]) -> Result<()> {
        self.publish_batch(envelopes).await
    }
}
