//! Event handler traits, the context handlers receive, and subscription options.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::BoxFuture;
use crate::error::{BoxError, EventLoadError};
use crate::message::{CorrelationId, Event, EventEnvelope, EventId, MessageMetadata, StreamId};

/// What an event handler knows about the event it handles: the stored envelope (stream,
/// version, global position, metadata) and which attempt this is. Cheap to clone.
#[derive(Clone)]
pub struct EventContext {
    pub(crate) envelope: Arc<EventEnvelope>,
    pub(crate) handler: Arc<str>,
    pub(crate) attempt: u32,
}

impl EventContext {
    /// The event as stored.
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }

    /// Decodes the payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, EventLoadError> {
        self.envelope.decode()
    }

    /// The event's metadata.
    pub fn metadata(&self) -> &MessageMetadata {
        &self.envelope.metadata
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.envelope.event_id
    }

    /// The event type's stable name.
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> &StreamId {
        &self.envelope.stream_id
    }

    /// The event's version within its stream (0 for an event published without storing it).
    pub fn stream_version(&self) -> u64 {
        self.envelope.stream_version
    }

    /// The event's global position (0 for an event published without storing it).
    pub fn global_position(&self) -> u64 {
        self.envelope.global_position
    }

    /// The correlation id of the conversation the event belongs to.
    pub fn correlation_id(&self) -> CorrelationId {
        self.envelope.metadata.correlation_id()
    }

    /// The name of the handler being called.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// 1 for the first call, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Debug for EventContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventContext")
            .field("event_type", &self.envelope.event_type)
            .field("stream_id", &self.envelope.stream_id)
            .field("stream_version", &self.envelope.stream_version)
            .field("global_position", &self.envelope.global_position)
            .field("handler", &self.handler)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Handles events of type `E`, decoded from their envelope.
///
/// Implement it on a type, or pass an async closure `|event: E, ctx: EventContext| async move { .. }`,
/// which implements it already. Implementors may write `async fn handle(..)`. A payload that
/// does not decode as `E` is a failure of this handler (retried, then dead-lettered).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle event `{E}`",
    label = "not an event handler for `{E}`",
    note = "implement `EventHandler<{E}>`, or pass an async closure `|event: {E}, ctx: EventContext| async move {{ .. }}` returning `Result<(), E>`"
)]
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// The handler's error.
    type Error: Into<BoxError>;

    /// Handles one event.
    fn handle(
        &self,
        event: E,
        ctx: EventContext,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The name used in dead letters, errors and traces. Defaults to the Rust type name.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }
}

impl<E, F, Fut, Er> EventHandler<E> for F
where
    E: Event,
    F: Fn(E, EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Er>> + Send + 'static,
    Er: Into<BoxError>,
{
    type Error = Er;

    fn handle(&self, event: E, ctx: EventContext) -> impl Future<Output = Result<(), Er>> + Send {
        self(event, ctx)
    }
}

/// Handles stored envelopes without decoding them: for handlers of every event
/// ([`EventBus::subscribe_all`](super::EventBus::subscribe_all)) or of an event type named at
/// run time ([`EventBus::subscribe_type`](super::EventBus::subscribe_type)).
///
/// An async closure `|ctx: EventContext| async move { .. }` implements it already.
pub trait EnvelopeHandler: Send + Sync + 'static {
    /// The handler's error.
    type Error: Into<BoxError>;

    /// Handles one event; the envelope is `ctx.envelope()`.
    fn handle(&self, ctx: EventContext) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The name used in dead letters, errors and traces. Defaults to the Rust type name.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }
}

impl<F, Fut, Er> EnvelopeHandler for F
where
    F: Fn(EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Er>> + Send + 'static,
    Er: Into<BoxError>,
{
    type Error = Er;

    fn handle(&self, ctx: EventContext) -> impl Future<Output = Result<(), Er>> + Send {
        self(ctx)
    }
}

/// The object-safe form the bus stores. `call` must not run the user's code before the future
/// is polled (the bus guards the poll, and guards the call too in case).
pub(crate) trait ErasedEventHandler: Send + Sync + 'static {
    fn call(&self, ctx: EventContext) -> BoxFuture<'_, Result<(), BoxError>>;
}

pub(crate) struct Typed<E, H> {
    pub(crate) handler: H,
    pub(crate) _event: PhantomData<fn(E)>,
}

impl<E: Event, H: EventHandler<E>> ErasedEventHandler for Typed<E, H> {
    fn call(&self, ctx: EventContext) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let event = ctx.envelope.decode::<E>().map_err(BoxError::from)?;
            self.handler.handle(event, ctx).await.map_err(Into::into)
        })
    }
}

pub(crate) struct Untyped<H> {
    pub(crate) handler: H,
}

impl<H: EnvelopeHandler> ErasedEventHandler for Untyped<H> {
    fn call(&self, ctx: EventContext) -> BoxFuture<'_, Result<(), BoxError>> {
        // Lazy, like `Typed`: the handler is called when the bus first polls, inside its
        // panic guard and the event's scope.
        Box::pin(async move { self.handler.handle(ctx).await.map_err(Into::into) })
    }
}

/// A handler's name and priority.
///
/// ```
/// use lexigram::event::SubscribeOptions;
/// let options = SubscribeOptions::new().priority(10).name("audit");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) priority: i32,
}

impl SubscribeOptions {
    /// Priority 0, the handler's own name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher runs first (default 0). Handlers of every event run before those of one type;
    /// equal priorities run in subscription order.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The name used in dead letters, errors and traces.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Identifies one subscription; give it to [`EventBus::unsubscribe`](super::EventBus::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub(crate) u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscription-{}", self.0)
    }
}

/// A handler was not called because an earlier handler of the same event failed and
/// `continue_on_error` is off (sequential dispatch).
#[derive(Debug, Clone, thiserror::Error)]
#[error("not called: handler `{failed}` failed before it and `continue_on_error` is off")]
pub struct HandlerSkipped {
    /// The handler that failed.
    pub failed: Arc<str>,
}
