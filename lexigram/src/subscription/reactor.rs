//! What a durable subscription calls: a [`Reactor`], and the [`ReactionContext`] it gets.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

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
#[async_trait]
pub trait Reactor: Send + Sync + 'static {
    /// Reacts to one event.
    async fn react(&self, event: &EventEnvelope, ctx: &ReactionContext) -> Result<(), BoxError>;
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

#[async_trait]
impl<F, Fut> Reactor for FnReactor<F>
where
    F: Fn(Arc<EventEnvelope>, ReactionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn react(&self, _event: &EventEnvelope, ctx: &ReactionContext) -> Result<(), BoxError> {
        (self.0)(Arc::clone(&ctx.envelope), ctx.clone()).await
    }
}

/// What a reaction knows about the event it handles. Cheap to clone.
#[derive(Clone)]
pub struct ReactionContext {
    pub(crate) envelope: Arc<EventEnvelope>,
    pub(crate) subscription: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) attempt: u32,
    pub(crate) replay: bool,
}

impl ReactionContext {
    /// The event as stored.
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }

    /// Decodes the payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, EventLoadError> {
        self.envelope.decode()
    }

    /// The event's metadata (correlation, causation, trace context).
    pub fn metadata(&self) -> &MessageMetadata {
        &self.envelope.metadata
    }

    /// The event's id: the idempotency key of the reaction's side effects.
    pub fn event_id(&self) -> EventId {
        self.envelope.event_id
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> &StreamId {
        &self.envelope.stream_id
    }

    /// The event's global position.
    pub fn global_position(&self) -> u64 {
        self.envelope.global_position
    }

    /// The subscription's name.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The partition handling the event.
    pub fn partition(&self) -> u32 {
        self.partition
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
        f.debug_struct("ReactionContext")
            .field("subscription", &self.subscription)
            .field("partition", &self.partition)
            .field("event_id", &self.envelope.event_id)
            .field("stream_id", &self.envelope.stream_id)
            .field("global_position", &self.envelope.global_position)
            .field("attempt", &self.attempt)
            .field("replay", &self.replay)
            .finish()
    }
}
