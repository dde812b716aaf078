//! The in-process event bus: immediate reactions to events, with backpressure, retries and a
//! dead-letter queue.
//!
//! - [`publish`](EventBus::publish) puts an event in the bounded queue of its event type
//!   ([`queue_capacity`](EventBusConfig::queue_capacity)) and returns once it is accepted; a
//!   full queue makes `publish` wait (backpressure); a `publish` cancelled while it waits
//!   leaves nothing behind. Events of one type are handled in the order they were published
//!   (FIFO), by one background task per event type, started by its first event and ended
//!   once its queue has been empty for
//!   [`worker_idle_timeout`](EventBusConfig::worker_idle_timeout) (the next event starts a
//!   new one; order and backpressure hold across the change). An event no
//!   handler is subscribed to is dropped with `Ok`, or refused when
//!   [`allow_no_handlers`](EventBusConfig::allow_no_handlers) is off.
//! - Handlers of every event ([`subscribe_all`](EventBus::subscribe_all)) run first, then
//!   those of the event's type, each group by priority (higher first), then in subscription
//!   order. [`unsubscribe`](EventBus::unsubscribe) removes one.
//! - The handlers of one event run concurrently, never more than
//!   [`max_concurrent_handlers`](EventBusConfig::max_concurrent_handlers) at once across the
//!   whole bus, or one after another with `parallel_dispatch` off.
//! - Each attempt is cancelled after [`handler_timeout`](EventBusConfig::handler_timeout). A
//!   failed attempt (error, timeout or panic — panics are caught, including one raised before
//!   the handler returns its future) is retried after 100 ms, 200 ms, 400 ms (by default;
//!   `tokio::time::sleep`, so it really waits; never longer than
//!   [`retry_max_backoff`](EventBusConfig::retry_max_backoff)). After the last
//!   attempt the event goes to the **dead-letter queue** with the handler's name, the attempt
//!   count and the error: [`dead_letters`](EventBus::dead_letters),
//!   [`dead_letter_count`](EventBus::dead_letter_count),
//!   [`replay_dead_letter`](EventBus::replay_dead_letter),
//!   [`delete_dead_letter`](EventBus::delete_dead_letter).
//! - [`drain`](EventBus::drain) waits (without polling) until every queue is empty and no
//!   handler runs; [`shutdown`](EventBus::shutdown) refuses new events, drains, then stops
//!   and joins every background task, all within one deadline.
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
mod dead_letter;
mod dispatch;
mod handler;
mod hooks;
mod routes;
mod worker;

pub use crate::delivery::{HandlerPanicked, HandlerTimedOut};
pub use config::EventBusConfig;
pub use dead_letter::{DeadLetter, DeadLetterId};
pub use handler::{
    EnvelopeHandler, EventContext, EventHandler, HandlerSkipped, SubscribeOptions, SubscriptionId,
};
pub use hooks::HandlerReport;

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use handler::{ErasedEventHandler, Typed, Untyped};

use crate::context;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::message::{Event, EventEnvelope, NewEvent, StreamId};
use crate::repository::EventPublisher;
use dead_letter::DeadLetterQueue;
use dispatch::Shared;
use hooks::publish_hooks;
use routes::{Subscriber, Subscriptions};
use worker::{Lane, Queued, Worker, join_until, within};

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    /// The last clone is gone: the workers handle what is queued, then end.
    fn drop(&mut self) {
        self.shared.tasks.lock().detach_all();
        let lanes = std::mem::take(&mut *self.shared.lanes.write());
        for lane in lanes.into_values() {
            lane.state.lock().retired = true;
            lane.wake.notify_one();
        }
    }
}

/// The in-process event bus. Cheap to clone; clones share everything. See the
/// [module docs](self).
///
/// Background tasks are started on the tokio runtime of the `publish` that finds its event
/// type without one, and end after
/// [`worker_idle_timeout`](EventBusConfig::worker_idle_timeout) without events. Dropping every
/// clone lets them finish the queued events and end; call [`shutdown`](Self::shutdown) to
/// stop them deterministically.
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
            delivery: Delivery::new(config.max_concurrent_handlers, config.handler_timeout),
            retry: config.retry_policy(),
            dead_letters: DeadLetterQueue::new(config.dead_letter_capacity),
            config,
            routes: RwLock::new(Arc::new(Subscriptions::default().routes())),
            subscriptions: Mutex::new(Subscriptions::default()),
            pending: AtomicU64::new(0),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            live_tasks: AtomicUsize::new(0),
            lanes: RwLock::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        };
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
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
        let new = NewEvent::from_event(event, context::caused_metadata())?;
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
        let hooked = (!routes.hooks.published.is_empty()).then(|| Arc::clone(&envelope));
        loop {
            let lane = self.lane(&envelope)?;
            // Waiting for room is the only await, and nothing is counted or queued before it
            // ends: a publish cancelled while it waits leaves no trace.
            let room = match lane.room.try_acquire() {
                Ok(room) => room,
                Err(tokio::sync::TryAcquireError::NoPermits) => match lane.room.acquire().await {
                    Ok(room) => room,
                    Err(_) => return Err(closed(&envelope)), // never closed
                },
                Err(tokio::sync::TryAcquireError::Closed) => return Err(closed(&envelope)),
            };
            let mut state = lane.state.lock();
            if state.retired {
                // Its worker ended meanwhile; the next lane starts a new one.
                continue;
            }
            // Counted before the closed check, so `shutdown` either sees this event or this
            // publish sees `closed`.
            shared.pending.fetch_add(1, Ordering::SeqCst);
            if shared.closed.load(Ordering::SeqCst) {
                drop(state);
                shared.finish(1);
                return Err(closed(&envelope));
            }
            let was_empty = state.events.is_empty();
            state.events.push_back(Queued {
                envelope,
                cause: tracing::Span::current(),
            });
            room.forget();
            drop(state);
            if was_empty {
                lane.wake.notify_one();
            }
            break;
        }
        if let Some(envelope) = hooked {
            publish_hooks(&routes.hooks, &envelope);
        }
        Ok(())
    }

    /// The lane of an event type, opened with its worker when it has none.
    fn lane(&self, envelope: &EventEnvelope) -> Result<Arc<Lane>> {
        let shared = &self.inner.shared;
        if let Some(lane) = shared.lanes.read().get(&envelope.event_type) {
            return Ok(Arc::clone(lane));
        }
        let mut lanes = shared.lanes.write();
        if let Some(lane) = lanes.get(&envelope.event_type) {
            return Ok(Arc::clone(lane));
        }
        if shared.closed.load(Ordering::SeqCst) {
            return Err(closed(envelope));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Publish {
            event_type: Arc::clone(&envelope.event_type),
            reason: "no tokio runtime is running; publish from inside a tokio runtime (the bus runs its handlers on it)".to_owned(),
        })?;
        let lane = Arc::new(Lane::new(
            Arc::clone(&envelope.event_type),
            shared.config.queue_capacity,
        ));
        lanes.insert(Arc::clone(&envelope.event_type), Arc::clone(&lane));
        // Spawned without the map's lock: a runtime shutting down drops the new task at once,
        // and the worker's `Drop` takes that lock.
        drop(lanes);
        let mut tasks = shared.tasks.lock();
        // Checked under the set's lock: `shutdown` takes the set after setting `closed`, so a
        // worker spawned here is in the set it joins. The lane (without a worker) is taken
        // by `shutdown` too, and refuses events since `closed` is set.
        if shared.closed.load(Ordering::SeqCst) {
            return Err(closed(envelope));
        }
        tasks.spawn_on(Worker::new(shared, &lane).run(), &runtime);
        Ok(lane)
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

    /// Stops the bus: refuses new events (`publish` fails from now on), waits for the accepted
    /// ones to be handled, then stops every background task and waits for each to end, all
    /// within `deadline` (a deadline too long for the clock is none).
    ///
    /// Fails with [`Error::ShutdownTimeout`] (after stopping everything) when the deadline
    /// passed first; the unhandled events are abandoned. A task cannot be stopped while it
    /// runs blocking code (a handler that blocks its thread): one still running at the
    /// deadline is aborted, so it ends at its next `.await` without handling anything more,
    /// and counted in [`live_tasks`](Self::live_tasks) until then; `shutdown` returns without
    /// waiting for it (logging a warning) and fails with [`Error::ShutdownTimeout`].
    pub async fn shutdown(&self, deadline: Duration) -> Result<()> {
        let shared = &self.inner.shared;
        let until = Instant::now().checked_add(deadline);
        shared.closed.store(true, Ordering::SeqCst);
        let drained = within(until, self.drain()).await.is_some();
        let abandoned = shared.pending.load(Ordering::Acquire);
        shared.stopped.store(true, Ordering::Release);
        let lanes = std::mem::take(&mut *shared.lanes.write());
        for lane in lanes.values() {
            lane.state.lock().retired = true;
        }
        let mut tasks = std::mem::take(&mut *shared.tasks.lock());
        tasks.abort_all();
        let running = join_until(&mut tasks, until).await;
        if running > 0 {
            tracing::warn!(
                running,
                ?deadline,
                "event bus tasks still running at the shutdown deadline (a handler blocking its thread?); they were aborted and end at their next await"
            );
        }
        shared.pending.store(0, Ordering::SeqCst);
        shared.idle.notify_waiters();
        if drained && running == 0 {
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

    /// How many background tasks of this bus are alive: one per event type with an event in
    /// its queue or handled within the last
    /// [`worker_idle_timeout`](EventBusConfig::worker_idle_timeout); 0 after shutdown (but for
    /// a task still stuck in blocking code, see [`shutdown`](Self::shutdown)).
    pub fn live_tasks(&self) -> usize {
        self.inner.shared.live_tasks.load(Ordering::SeqCst)
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.shared.dead_letters.list()
    }

    /// How many dead letters there are.
    pub fn dead_letter_count(&self) -> usize {
        self.inner.shared.dead_letters.len()
    }

    /// Deletes a dead letter. Returns whether it existed.
    pub fn delete_dead_letter(&self, id: DeadLetterId) -> bool {
        self.inner.shared.dead_letters.take(id).is_some()
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
            .take(id)
            .ok_or(Error::DeadLetterNotFound { id: id.get() })?;
        let Some(subscriber) = shared.subscriptions.lock().find(letter.subscription) else {
            let reason = format!(
                "handler `{}` ({}) is no longer subscribed; subscribe it again and replay the event yourself, or delete the dead letter",
                letter.handler, letter.subscription
            );
            shared.dead_letters.put_back(letter);
            return Err(Error::DeadLetterReplay {
                id: id.get(),
                reason,
            });
        };
        let routes = shared.routes();
        let envelope = letter.envelope;
        shared
            .run_handler(&subscriber, &envelope, &routes.hooks)
            .instrument(tracing::debug_span!("lexigram.replay", dead_letter = id.get(), event_type = %envelope.event_type))
            .await
            .map_err(|failure| Error::EventHandler {
                event_type: Arc::clone(&envelope.event_type),
                handler: Arc::clone(&subscriber.name),
                attempts: failure.attempts,
                source: failure.error,
            })
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
            .field("dead_letters", &shared.dead_letters.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: String) -> EventEnvelope {
        let new = NewEvent::new(
            event_type,
            1,
            crate::message::Payload::from_json_text("{}"),
            crate::message::MessageMetadata::new(),
        );
        EventEnvelope::new(new, "s".into(), 0, 0, Utc::now())
    }

    #[tokio::test(start_paused = true)]
    async fn idle_workers_leave_no_queue_and_no_task_behind() -> Result<()> {
        let bus = EventBus::new();
        bus.subscribe_all(|_: EventContext| async { Ok::<_, std::convert::Infallible>(()) });
        for i in 0..2000 {
            bus.publish(envelope(format!("test.Type{i}"))).await?;
        }
        bus.drain().await;
        assert_eq!(bus.inner.shared.lanes.read().len(), 2000);
        tokio::time::sleep(bus.config().worker_idle_timeout + Duration::from_millis(1)).await;
        assert_eq!(bus.live_tasks(), 0);
        assert!(
            bus.inner.shared.lanes.read().is_empty(),
            "every queue was freed"
        );
        let kept = bus.inner.shared.tasks.lock().len();
        assert!(kept <= 1, "{kept} ended tasks are still held");
        Ok(())
    }
}
