//! What a durable subscription calls: a [`Reactor`], and the [`ReactionContext`] it gets.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::context::CurrentEvent;
use crate::error::{BoxError, EventLoadError};
use crate::message::{Event, EventEnvelope, EventId, MessageMetadata, StreamId};

/// A durable, at-least-once reaction to stored events: a side effect outside the event
/// store (an e-mail, a call to another service, a message on a broker).
///
/// The runner calls [`react`](Reactor::react) once per event, in global order within a
/// partition, and again after a crash for the events of the batch that was not committed.
/// A reaction must therefore be idempotent: use [`ReactionContext::event_id`] as the
/// idempotency key of whatever it does.
///
/// An `Err` is retried under the subscription's retry policy; after the last attempt the
/// event is parked together with every later event of its stream, while other streams go on.
/// An [`EventLoadError`] (the event does not decode) is parked at once.
///
/// Implement it with an `async fn` (no macro needed); the runner is compiled for the concrete
/// reactor, so a reaction that finishes without waiting costs no allocation per event.
///
/// ```
/// use lexigram::error::BoxError;
/// use lexigram::message::EventEnvelope;
/// use lexigram::subscription::{ReactionContext, Reactor};
///
/// struct Audit;
///
/// impl Reactor for Audit {
///     async fn react(&self, event: &EventEnvelope, ctx: &ReactionContext) -> Result<(), BoxError> {
///         println!("{} {} (attempt {})", event.global_position, event.event_type, ctx.attempt());
///         Ok(())
///     }
/// }
/// # fn is_reactor(_: &impl Reactor) {}
/// # is_reactor(&Audit);
/// ```
pub trait Reactor: Send + Sync + 'static {
    /// Reacts to one event.
    fn react(
        &self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A shared reactor reacts as the reactor it shares.
impl<R: Reactor> Reactor for Arc<R> {
    fn react(
        &self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        R::react(self, event, ctx)
    }
}

/// A [`Reactor`] made of an async closure, from [`reactor_fn`].
pub struct FnReactor<F>(F);

impl<F> fmt::Debug for FnReactor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnReactor").finish_non_exhaustive()
    }
}

/// A [`Reactor`] from an async closure taking the event and its context (both owned, so the
/// future may keep them).
///
/// ```
/// use lexigram::subscription::{reactor_fn, Reactor};
///
/// let mailer = reactor_fn(|event, ctx| async move {
///     println!("{} at {}", event.event_type, ctx.event_id());
///     Ok(())
/// });
/// # fn is_reactor(_: &impl Reactor) {}
/// # is_reactor(&mailer);
/// ```
pub fn reactor_fn<F, Fut>(f: F) -> FnReactor<F>
where
    F: Fn(Arc<EventEnvelope>, ReactionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FnReactor(f)
}

impl<F, Fut> Reactor for FnReactor<F>
where
    F: Fn(Arc<EventEnvelope>, ReactionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn react(
        &self,
        _event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (self.0)(Arc::clone(ctx.shared()), ctx.clone())
    }
}

/// The events of one batch of one partition, shared by the contexts of its reactions and by
/// the causal scope the batch runs in (which follows the event being handled).
pub(crate) struct Batch {
    events: Vec<Arc<EventEnvelope>>,
    /// The event being handled, for messages the reaction sends.
    current: AtomicUsize,
    subscription: Arc<str>,
    partition: u32,
}

impl Batch {
    /// A batch of `events`; `None` when there are none.
    pub(crate) fn new(
        events: Vec<Arc<EventEnvelope>>,
        subscription: Arc<str>,
        partition: u32,
    ) -> Option<Arc<Self>> {
        (!events.is_empty()).then(|| {
            Arc::new(Self {
                events,
                current: AtomicUsize::new(0),
                subscription,
                partition,
            })
        })
    }

    /// A batch of one event.
    pub(crate) fn one(
        envelope: Arc<EventEnvelope>,
        subscription: Arc<str>,
        partition: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            events: vec![envelope],
            current: AtomicUsize::new(0),
            subscription,
            partition,
        })
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The context of attempt `attempt` at event `index` (which the causal scope follows
    /// from now on); an index past the end is the last event.
    pub(crate) fn context(
        self: &Arc<Self>,
        index: usize,
        attempt: u32,
        replay: bool,
    ) -> ReactionContext {
        let index = index.min(self.events.len() - 1);
        self.current.store(index, Ordering::Relaxed);
        ReactionContext {
            batch: Arc::clone(self),
            index,
            attempt,
            replay,
        }
    }
}

impl CurrentEvent for Batch {
    fn current(&self) -> Option<&EventEnvelope> {
        self.events
            .get(self.current.load(Ordering::Relaxed))
            .map(|e| &**e)
    }

    fn current_shared(&self) -> Option<Arc<EventEnvelope>> {
        self.events
            .get(self.current.load(Ordering::Relaxed))
            .cloned()
    }
}

/// What a reaction knows about the event it handles. Cheap to clone.
#[derive(Clone)]
pub struct ReactionContext {
    batch: Arc<Batch>,
    index: usize,
    attempt: u32,
    replay: bool,
}

impl ReactionContext {
    /// Moves the context to event `index` of its batch, attempt 1 (an index past the end is
    /// the last event).
    pub(crate) fn move_to(&mut self, index: usize) {
        let index = index.min(self.batch.events.len() - 1);
        self.batch.current.store(index, Ordering::Relaxed);
        self.index = index;
        self.attempt = 1;
    }

    /// The same event, attempt `attempt`.
    pub(crate) fn attempt_at(&self, attempt: u32) -> Self {
        self.batch.current.store(self.index, Ordering::Relaxed);
        Self {
            attempt,
            ..self.clone()
        }
    }

    /// The event, shared.
    pub(crate) fn shared(&self) -> &Arc<EventEnvelope> {
        // A batch is never empty, and `index` is below its length (see `Batch::context`).
        &self.batch.events[self.index]
    }

    /// The event as stored.
    pub fn envelope(&self) -> &EventEnvelope {
        self.shared()
    }

    /// Decodes the payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, EventLoadError> {
        self.envelope().decode()
    }

    /// The event's metadata (correlation, causation, trace context).
    pub fn metadata(&self) -> &MessageMetadata {
        &self.envelope().metadata
    }

    /// The event's id: the idempotency key of the reaction's side effects.
    pub fn event_id(&self) -> EventId {
        self.envelope().event_id
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> &StreamId {
        &self.envelope().stream_id
    }

    /// The event's global position.
    pub fn global_position(&self) -> u64 {
        self.envelope().global_position
    }

    /// The subscription's name.
    pub fn subscription(&self) -> &str {
        &self.batch.subscription
    }

    /// The partition handling the event.
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is a replay of a parked event.
    pub fn is_replay(&self) -> bool {
        self.replay
    }
}

impl fmt::Debug for ReactionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let envelope = self.envelope();
        f.debug_struct("ReactionContext")
            .field("subscription", &self.batch.subscription)
            .field("partition", &self.batch.partition)
            .field("event_id", &envelope.event_id)
            .field("stream_id", &envelope.stream_id)
            .field("global_position", &envelope.global_position)
            .field("attempt", &self.attempt)
            .field("replay", &self.replay)
            .finish()
    }
}
