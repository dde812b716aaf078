//! Middleware for the command and query buses: code that runs around every handler.
//!
//! A [`Middleware`] receives the [`Request`] and the rest of the chain as [`Next`]. It can run
//! code before and after `next.run(request)`, return without calling `next` at all
//! (short-circuit), or replace or wrap the [`Response`]. Middleware added first is the
//! outermost layer, like an onion:
//!
//! ```text
//! add_middleware(A); add_middleware(B);
//! A before → B before → handler → B after → A after
//! ```
//!
//! Middleware is type-erased (one chain serves every message type): the message is reached
//! with [`Request::message`] and the result with [`Response::downcast_ref`]. A middleware may
//! change values, not their types; doing so is reported as
//! [`Error::MiddlewareType`](crate::Error::MiddlewareType).
//!
//! Ready-made middleware: [`TracingMiddleware`], [`TimingMiddleware`] (a metrics hook),
//! [`TimeoutMiddleware`], [`RetryMiddleware`] (exponential backoff that really waits),
//! [`ValidationMiddleware`] (with the [`Validate`] trait) and [`CorrelationMiddleware`].
//! With no middleware, a bus calls the handler directly.
//!
//! # Examples
//!
//! ```
//! use lexigram::command::{CommandBus, CommandContext};
//! use lexigram::middleware::{self, Response};
//! use lexigram::Command;
//! use std::sync::{Arc, Mutex};
//!
//! struct Ping;
//! impl Command for Ping { type Output = &'static str; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let bus = CommandBus::new();
//! bus.register_fn(|_: Ping, _: CommandContext| async { Ok::<_, std::convert::Infallible>("pong") })?;
//!
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let seen = log.clone();
//! bus.add_middleware(middleware::from_fn(move |request, next| {
//!     let seen = seen.clone();
//!     async move {
//!         seen.lock().unwrap().push(format!("before {}", request.message_type()));
//!         let response = next.run(request).await;
//!         seen.lock().unwrap().push("after".to_owned());
//!         response
//!     }
//! }));
//! // Short-circuits: answers without calling the handler.
//! bus.add_middleware(middleware::from_fn(|_request, _next| async {
//!     Ok(Response::new("cached pong"))
//! }));
//!
//! assert_eq!(bus.dispatch(Ping).await?, "cached pong");
//! assert_eq!(log.lock().unwrap().len(), 2);
//! # Ok(()) }
//! ```

mod builtin;

pub use builtin::{
    CorrelationMiddleware, RetryMiddleware, TimeoutMiddleware, Timing, TimingMiddleware,
    TracingMiddleware, Validate, ValidationMiddleware,
};

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::BoxFuture;
use crate::context::Scope;
use crate::error::Result;
use crate::message::MessageMetadata;

/// Whether a message is a command or a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A [`Command`](crate::Command).
    Command,
    /// A [`Query`](crate::Query).
    Query,
}

impl MessageKind {
    /// `command` or `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Command => "command",
            MessageKind::Query => "query",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Code that runs around every handler of a bus. See the [module docs](self).
///
/// Implementors may write `async fn handle(&self, request: Request, next: Next) -> Result<Response>`.
pub trait Middleware: Send + Sync + 'static {
    /// Handles `request`, usually by calling `next.run(request)` somewhere in between.
    fn handle(&self, request: Request, next: Next)
    -> impl Future<Output = Result<Response>> + Send;
}

/// The object-safe twin of [`Middleware`] the buses store.
pub(crate) trait DynMiddleware: Send + Sync + 'static {
    fn handle_boxed(&self, request: Request, next: Next) -> BoxFuture<'_, Result<Response>>;
}

impl<M: Middleware> DynMiddleware for M {
    fn handle_boxed(&self, request: Request, next: Next) -> BoxFuture<'_, Result<Response>> {
        Box::pin(self.handle(request, next))
    }
}

/// A middleware made of an async closure; see [`from_fn`].
pub struct FnMiddleware<F> {
    f: F,
}

impl<F> fmt::Debug for FnMiddleware<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnMiddleware")
            .field("fn", &std::any::type_name::<F>())
            .finish()
    }
}

/// Makes a middleware of an async closure `|request, next| async move { .. }`.
pub fn from_fn<F, Fut>(f: F) -> FnMiddleware<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    FnMiddleware { f }
}

impl<F, Fut> Middleware for FnMiddleware<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    fn handle(
        &self,
        request: Request,
        next: Next,
    ) -> impl Future<Output = Result<Response>> + Send {
        (self.f)(request, next)
    }
}

/// The rest of the middleware chain, ending with the handler. Cheap to clone; run it more
/// than once to retry (with a [cloned](Request::try_clone) request).
#[derive(Clone)]
pub struct Next {
    chain: Arc<[Arc<dyn DynMiddleware>]>,
    index: usize,
    endpoint: Arc<dyn Endpoint>,
}

impl Next {
    pub(crate) fn new(chain: Arc<[Arc<dyn DynMiddleware>]>, endpoint: Arc<dyn Endpoint>) -> Self {
        Self {
            chain,
            index: 0,
            endpoint,
        }
    }

    /// Runs the rest of the chain and the handler on `request`.
    pub async fn run(self, request: Request) -> Result<Response> {
        match self.chain.get(self.index).cloned() {
            Some(middleware) => {
                let next = Next {
                    chain: self.chain,
                    index: self.index + 1,
                    endpoint: self.endpoint,
                };
                middleware.handle_boxed(request, next).await
            }
            None => self.endpoint.invoke_erased(request).await,
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("remaining_middleware", &(self.chain.len() - self.index))
            .finish()
    }
}

/// A command or query on its way to its handler, as middleware sees it.
pub struct Request {
    message: Box<dyn Any + Send>,
    kind: MessageKind,
    message_type: &'static str,
    handler: Arc<str>,
    scope: Arc<Scope>,
    cloner: Option<Cloner>,
}

impl Request {
    pub(crate) fn new(
        message: Box<dyn Any + Send>,
        kind: MessageKind,
        message_type: &'static str,
        handler: Arc<str>,
        scope: Arc<Scope>,
        cloner: Option<Cloner>,
    ) -> Self {
        Self {
            message,
            kind,
            message_type,
            handler,
            scope,
            cloner,
        }
    }

    pub(crate) fn message_any(&self) -> &(dyn Any + Send) {
        &*self.message
    }

    pub(crate) fn into_parts(self) -> (Box<dyn Any + Send>, Arc<Scope>) {
        (self.message, self.scope)
    }

    /// Command or query.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message's type name ([`Command::command_name`](crate::Command::command_name)).
    pub fn message_type(&self) -> &'static str {
        self.message_type
    }

    /// The name of the handler that will receive the message.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The message's metadata (ids, correlation, causation, user, tenant).
    pub fn metadata(&self) -> &MessageMetadata {
        self.scope.metadata()
    }

    /// Replaces the message's metadata; the handler, and what it sends, see the new one.
    pub fn set_metadata(&mut self, metadata: MessageMetadata) {
        self.scope = Scope::with_metadata(metadata);
    }

    /// The message, if it is a `T`.
    pub fn message<T: 'static>(&self) -> Option<&T> {
        self.message.downcast_ref()
    }

    /// The message, mutably, if it is a `T`.
    pub fn message_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.message.downcast_mut()
    }

    /// A copy of the request (same metadata), to run it again. `None` unless the message type
    /// was declared cloneable on its bus (`CommandBus::cloneable`, `QueryBus::cloneable`;
    /// cached queries always are).
    pub fn try_clone(&self) -> Option<Request> {
        let message = (self.cloner?)(&*self.message)?;
        Some(Self {
            message,
            kind: self.kind,
            message_type: self.message_type,
            handler: Arc::clone(&self.handler),
            scope: Arc::clone(&self.scope),
            cloner: self.cloner,
        })
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("message_type", &self.message_type)
            .field("handler", &self.handler)
            .field("metadata", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A handler's result, as middleware sees it.
pub struct Response(Box<dyn Any + Send>);

impl Response {
    /// Wraps a value. To stand in for a handler, it must be the message's `Output` type.
    pub fn new<T: Send + 'static>(value: T) -> Self {
        Self(Box::new(value))
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The value, mutably, if it is a `T`.
    pub fn downcast_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.downcast_mut()
    }

    /// Takes the value out, or gives the response back if it is not a `T`.
    pub fn into_inner<T: 'static>(self) -> std::result::Result<T, Self> {
        self.0.downcast::<T>().map(|b| *b).map_err(Self)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").finish_non_exhaustive()
    }
}

/// Clones a message behind `dyn Any`, for middleware that runs a message more than once.
pub(crate) type Cloner = fn(&(dyn Any + Send)) -> Option<Box<dyn Any + Send>>;

/// Clones a `T` behind `dyn Any`.
pub(crate) fn cloner<T: Clone + Send + 'static>() -> Cloner {
    |value| {
        value
            .downcast_ref::<T>()
            .map(|v| Box::new(v.clone()) as Box<dyn Any + Send>)
    }
}

/// The innermost step of a middleware chain: the handler itself.
pub(crate) trait Endpoint: Send + Sync + 'static {
    fn invoke_erased(&self, request: Request) -> BoxFuture<'_, Result<Response>>;
}
