//! The command bus: one handler per command type, typed dispatch.
//!
//! Register a handler per [`Command`] type with [`CommandBus::register`] (a type implementing
//! [`CommandHandler`]) or [`CommandBus::register_fn`] (an async closure). A second handler for
//! the same type is [`Error::DuplicateHandler`](crate::Error::DuplicateHandler) unless you [`replace`](CommandBus::replace) it
//! explicitly. [`dispatch`](CommandBus::dispatch) returns the command's `Output`, or
//! [`Error::HandlerNotFound`](crate::Error::HandlerNotFound) when no handler is registered.
//!
//! **One rule for errors:** whatever a handler returns as error is wrapped in
//! [`Error::CommandExecution`](crate::Error::CommandExecution), which names the command type and the handler; the handler's
//! own error is its `source`, reachable with `downcast_ref`. Errors made by the bus or its
//! middleware (not found, timeout, validation) are returned as they are.
//!
//! Every command travels with [`MessageMetadata`]. A command dispatched while another command,
//! query or event is being handled (in the same task) is its child: same correlation id, the
//! parent's message id as causation id — nothing to pass by hand. The handler sees its
//! metadata through [`CommandContext`]. The metadata is created on first use, so handlers that
//! never look at it do not pay for fresh ids.
//!
//! The bus is cheap to clone (the clones share handlers), so handlers can capture it to send
//! further commands.
//!
//! # Examples
//!
//! ```
//! use lexigram::command::{CommandBus, CommandContext};
//! use lexigram::{Command, Error};
//!
//! #[derive(Debug, Clone)]
//! struct Deposit { amount: u64 }
//! impl Command for Deposit { type Output = u64; }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("amount too large")]
//! struct TooLarge;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let bus = CommandBus::new();
//! bus.register_fn(|cmd: Deposit, _ctx: CommandContext| async move {
//!     if cmd.amount > 100 { return Err(TooLarge); }
//!     Ok(cmd.amount * 2)
//! })?;
//!
//! assert_eq!(bus.dispatch(Deposit { amount: 21 }).await?, 42);
//!
//! let err = bus.dispatch(Deposit { amount: 1000 }).await.unwrap_err();
//! let Error::CommandExecution { source, .. } = &err else { panic!("{err}") };
//! assert!(source.downcast_ref::<TooLarge>().is_some());
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

use crate::BoxFuture;
use crate::bus::{Call, Mode, Registry};
use crate::context::Scope;
use crate::error::{BoxError, Result};
use crate::message::{Command, CorrelationId, MessageId, MessageMetadata};
use crate::middleware::cloner;
use crate::middleware::{MessageKind, Middleware};

/// What a command handler knows about the command it handles.
#[derive(Clone)]
pub struct CommandContext {
    scope: Arc<Scope>,
}

impl CommandContext {
    /// The command's metadata. Events recorded with it
    /// ([`AggregateRoot::set_metadata`](crate::AggregateRoot::set_metadata)) are caused by the
    /// command.
    pub fn metadata(&self) -> &MessageMetadata {
        self.scope.metadata()
    }

    /// The command's message id.
    pub fn message_id(&self) -> MessageId {
        self.metadata().message_id()
    }

    /// The correlation id of the conversation the command belongs to.
    pub fn correlation_id(&self) -> CorrelationId {
        self.metadata().correlation_id()
    }
}

impl fmt::Debug for CommandContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandContext")
            .field("metadata", &self.metadata())
            .finish()
    }
}

/// Handles commands of type `C`.
///
/// Implement it on a type (which may hold dependencies), or pass an async closure
/// `|cmd: C, ctx: CommandContext| async move { .. }`, which implements it already.
/// Implementors may write `async fn handle(..)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle command `{C}`",
    label = "not a command handler for `{C}`",
    note = "implement `CommandHandler<{C}>`, or pass an async closure `|cmd: {C}, ctx: CommandContext| async move {{ .. }}` returning `Result<{C}::Output, E>`"
)]
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// The handler's error; the bus wraps it in
    /// [`Error::CommandExecution`](crate::Error::CommandExecution)(crate::Error::CommandExecution).
    type Error: Into<BoxError>;

    /// Handles one command.
    fn handle(
        &self,
        command: C,
        ctx: CommandContext,
    ) -> impl Future<Output = Result<C::Output, Self::Error>> + Send;

    /// The name used in errors and traces. Defaults to the Rust type name.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }
}

impl<C, F, Fut, E> CommandHandler<C> for F
where
    C: Command,
    F: Fn(C, CommandContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Output, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Error = E;

    fn handle(
        &self,
        command: C,
        ctx: CommandContext,
    ) -> impl Future<Output = Result<C::Output, E>> + Send {
        self(command, ctx)
    }
}

/// Adapts a [`CommandHandler`] to the object-safe form the bus stores.
struct Adapter<C, H> {
    handler: H,
    _command: PhantomData<fn(C)>,
}

impl<C: Command, H: CommandHandler<C>> Call<C, C::Output> for Adapter<C, H> {
    fn call(&self, input: C, scope: Arc<Scope>) -> BoxFuture<'_, Result<C::Output, BoxError>> {
        let future = self.handler.handle(input, CommandContext { scope });
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// Sends each command to its one handler. Cheap to clone; clones share handlers and
/// middleware. See the [module docs](self).
#[derive(Clone)]
pub struct CommandBus {
    registry: Arc<Registry>,
}

impl Default for CommandBus {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandBus {
    /// A bus with no handlers and no middleware.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Registry::new(MessageKind::Command)),
        }
    }

    /// Registers the handler of `C`. Fails with
    /// [`Error::DuplicateHandler`](crate::Error::DuplicateHandler)(crate::Error::DuplicateHandler) (naming the existing handler
    /// and where it was registered) if `C` has one.
    #[track_caller]
    pub fn register<C, H>(&self, handler: H) -> Result<()>
    where
        C: Command,
        H: CommandHandler<C>,
    {
        self.insert(handler, Location::caller(), Mode::Unique)
            .map(|_| ())
    }

    /// Registers an async closure `|cmd: C, ctx: CommandContext| async move { .. }` as the
    /// handler of `C`. The same as [`register`](Self::register), spelled for closures.
    #[track_caller]
    pub fn register_fn<C, F, Fut, E>(&self, handler: F) -> Result<()>
    where
        C: Command,
        F: Fn(C, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Output, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.insert(handler, Location::caller(), Mode::Unique)
            .map(|_| ())
    }

    /// Registers the handler of `C`, replacing any. Returns whether one was replaced.
    #[track_caller]
    pub fn replace<C, H>(&self, handler: H) -> bool
    where
        C: Command,
        H: CommandHandler<C>,
    {
        // `Mode::Replace` cannot fail.
        self.insert(handler, Location::caller(), Mode::Replace)
            .unwrap_or(false)
    }

    /// Removes the handler of `C`. Returns whether there was one.
    pub fn unregister<C: Command>(&self) -> bool {
        self.registry.remove::<C>()
    }

    /// Whether `C` has a handler.
    pub fn has_handler<C: Command>(&self) -> bool {
        self.registry.contains::<C>()
    }

    /// Whether the message type with this `TypeId` has a handler (for bootstrap checks).
    pub(crate) fn has_handler_id(&self, id: std::any::TypeId) -> bool {
        self.registry.contains_id(id)
    }

    /// The name of the handler of `C`, if any.
    pub fn handler_name<C: Command>(&self) -> Option<Arc<str>> {
        self.registry.handler_name::<C>()
    }

    /// How many command types have a handler.
    pub fn handler_count(&self) -> usize {
        self.registry.len()
    }

    /// Lets middleware clone commands of type `C` ([`Request::try_clone`]), which
    /// [`RetryMiddleware`](crate::middleware::RetryMiddleware) needs to run one again.
    ///
    /// [`Request::try_clone`]: crate::middleware::Request::try_clone
    pub fn cloneable<C: Command + Clone>(&self) {
        self.registry.set_cloner::<C>(cloner::<C>());
    }

    /// Adds a middleware inside those added before (the first added runs outermost).
    pub fn add_middleware<M: Middleware>(&self, middleware: M) {
        self.registry
            .add_middleware(Arc::new(middleware), std::any::type_name::<M>());
    }

    /// Sends `command` to its handler, with metadata caused by the message being handled in
    /// this task (or fresh metadata outside any handler).
    pub async fn dispatch<C: Command>(&self, command: C) -> Result<C::Output> {
        self.registry
            .dispatch(command, C::command_name(), Scope::child_of_current())
            .await
    }

    /// Sends `command` to its handler with the given metadata (for example from an incoming
    /// HTTP request).
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        metadata: MessageMetadata,
    ) -> Result<C::Output> {
        self.registry
            .dispatch(command, C::command_name(), Scope::with_metadata(metadata))
            .await
    }

    fn insert<C: Command, H: CommandHandler<C>>(
        &self,
        handler: H,
        location: &'static Location<'static>,
        mode: Mode,
    ) -> Result<bool> {
        let name: Arc<str> = Arc::from(handler.name());
        self.registry.insert::<C, C::Output>(
            Box::new(Adapter {
                handler,
                _command: PhantomData,
            }),
            name,
            location,
            C::command_name(),
            None,
            mode,
        )
    }
}

impl fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandBus")
            .field("registry", &self.registry)
            .finish()
    }
}

/// The metadata of the command, query or event being handled by the current task, if any.
///
/// Inside a handler (and anything it awaits) this is the message being handled; elsewhere it
/// is `None`. Useful for code far from the handler's context, such as a repository wrapper.
pub fn current_metadata() -> Option<MessageMetadata> {
    crate::context::current_metadata()
}
