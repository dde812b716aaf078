//! The macros generate a few lines per item and call these generic functions, each at the span
//! of the token it checks: a handler parameter is resolved by
//! [`prepare`](crate::__private::prepare) at the parameter's type, its result is converted by
//! [`handler_result`](crate::__private::handler_result) at its return type, a
//! `#[derive(FromContainer)]` field by [`field`](crate::__private::field) at the field's type,
//! an `#[apply]` method's event by [`applied`](crate::__private::applied) at the event's type.
//! Each bound a user can get
//! wrong is written once, on a trait with a lexigram sentence, and nothing else in the
//! expansion depends on it, so one mistake is one error.

use std::fmt;
use std::sync::Arc;

pub use crate::module::{
    FromContainer, HandlerParam, HandlerRegistration, HandlerSite, Injected, Wiring, inject_field,
};
pub use crate::registration::{AggregateRegistration, EventRegistration, MessageRegistration};
pub use inventory;

use crate::aggregate::{Aggregate, Apply, Route};
use crate::error::{BoxError, EventLoadError};
use crate::message::{Event, EventEnvelope};
use crate::module::{Container, Missing};

/// A handler parameter resolved when the app is built: produces its value for each call.
///
/// It names no bound on `P`, so the closure the macros register does not repeat the
/// `P: HandlerParam<Ctx>` check [`prepare`](crate::__private::prepare) made at the parameter.
pub struct Prepared<P, Ctx>(Arc<dyn Fn(&Ctx) -> P + Send + Sync>);

impl<P, Ctx> Prepared<P, Ctx> {
    /// The parameter's value for one call.
    pub fn produce(&self, ctx: &Ctx) -> P {
        (self.0)(ctx)
    }
}

impl<P, Ctx> Clone for Prepared<P, Ctx> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<P, Ctx> fmt::Debug for Prepared<P, Ctx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Prepared")
            .field(&std::any::type_name::<P>())
            .finish()
    }
}

/// Resolves parameter `P` of a handler called with context `Ctx`; a missing one is recorded
/// as a bootstrap problem and gives `None`.
pub fn prepare<P: HandlerParam<Ctx>, Ctx: 'static>(w: &mut Wiring<'_>) -> Option<Prepared<P, Ctx>> {
    let prepared = w.prepare::<P, Ctx>()?;
    Some(Prepared(Arc::new(move |ctx| P::produce(&prepared, ctx))))
}

/// Builds the `self` of a `#[handlers(inject)]` method from its fields.
pub fn inject<T: FromContainer, Ctx: 'static>(
    w: &mut Wiring<'_>,
) -> Option<Prepared<Injected<T>, Ctx>> {
    prepare::<Injected<T>, Ctx>(w)
}

/// What a handler of message `M` returns: `Result<O, E>`, `O` the message's output.
#[diagnostic::on_unimplemented(
    message = "a handler of `{M}` returns `Result<{O}, E>`, not `{Self}`",
    label = "expected `Result<{O}, E>` here",
    note = "`{O}` is what `{M}` declares as its output (`#[command(output = ..)]`, `#[query(output = ..)]`; an event handler returns `Result<(), E>`); `E` is any error, such as `lexigram::Error` or your own `std::error::Error` type"
)]
pub trait HandlerResult<M, O> {
    /// The handler's error, checked on its own by [`HandlerError`].
    type Error;
    /// The result itself.
    fn into_result(self) -> Result<O, Self::Error>;
}

impl<M, O, E> HandlerResult<M, O> for Result<O, E> {
    type Error = E;
    fn into_result(self) -> Self {
        self
    }
}

/// The error of a handler: anything that converts into a [`BoxError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a lexigram handler",
    label = "`{Self}` does not convert into `Box<dyn std::error::Error + Send + Sync>`",
    note = "implement `std::error::Error` for `{Self}` (for example with `#[derive(thiserror::Error)]`), or return `lexigram::Error`"
)]
pub trait HandlerError {
    /// The error, boxed.
    fn into_box_error(self) -> BoxError;
}

#[diagnostic::do_not_recommend]
impl<E: Into<BoxError>> HandlerError for E {
    fn into_box_error(self) -> BoxError {
        self.into()
    }
}

/// The result of a handler of `M` whose output is `O` (`M::Output`, or `()` for an event), with
/// its error boxed.
pub fn handler_result<M, O>(
    result: impl HandlerResult<M, O, Error: HandlerError>,
) -> Result<O, BoxError> {
    result.into_result().map_err(HandlerError::into_box_error)
}

/// A field of a `#[derive(FromContainer)]` struct: a handler parameter that needs no message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a `#[derive(FromContainer)]` struct",
    label = "lexigram cannot resolve `{Self}` from the container",
    note = "a field is resolved once, when the app is built: make it `Dep<T>` (provide `T` with `.provide(..)`), `Repository<A>`, `CommandBus`, `QueryBus` or `EventBus`; what belongs to one message (`MessageMetadata`, a context) is a parameter of the handler method instead"
)]
pub trait ContainerField: Sized {
    /// Resolves the field.
    fn resolve(container: &Container) -> Result<Self, Missing>;
}

#[diagnostic::do_not_recommend]
impl<T: HandlerParam<()>> ContainerField for T {
    fn resolve(container: &Container) -> Result<Self, Missing> {
        inject_field::<T>(container)
    }
}

/// Resolves one field of a `#[derive(FromContainer)]` struct.
pub fn field<T: ContainerField>(container: &Container) -> Result<T, Missing> {
    T::resolve(container)
}

/// The event an `#[apply]` method takes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lexigram event, so an `#[apply]` method cannot take it",
    label = "this type must implement `lexigram::Event`",
    note = "derive it with `#[derive(Event)]` and `#[event(name = \"...\", version = 1)]`, or implement `Event` by hand"
)]
pub trait AppliedEvent: Event {}

#[diagnostic::do_not_recommend]
impl<E: Event> AppliedEvent for E {}

/// One `#[apply]` event of aggregate `A`: its name and how a stored event of that name is
/// applied.
///
/// It names no bound on the event, so the `apply_stored` and the registration the macro
/// writes with it do not repeat the check [`applied`] made at the event's type.
pub struct Applied<A> {
    name: &'static str,
    route: for<'a> fn(Route<'a, A>) -> Route<'a, A>,
}

impl<A> fmt::Debug for Applied<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Applied").field(&self.name).finish()
    }
}

/// Checks that the event `E` of an `#[apply]` method is an [`Event`], and routes it.
pub const fn applied<A: Apply<E>, E: AppliedEvent>() -> Applied<A> {
    fn route<A: Apply<E>, E: Event>(route: Route<'_, A>) -> Route<'_, A> {
        route.on::<E>()
    }
    Applied {
        name: E::NAME,
        route: route::<A, E>,
    }
}

/// The names of the events in `applied`, for the aggregate's registration.
pub const fn event_names<A, const N: usize>(applied: &[Applied<A>; N]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = applied[i].name;
        i += 1;
    }
    names
}

/// [`Aggregate::apply_stored`] of an `#[aggregate]`: routes `event` to the `#[apply]` method
/// of its type ([`Route`]).
pub fn apply_stored<A: Aggregate>(
    state: &mut A,
    event: &EventEnvelope,
    applied: &[Applied<A>],
) -> Result<(), EventLoadError> {
    applied
        .iter()
        .fold(Route::new(state, event), |route, applied| {
            (applied.route)(route)
        })
        .finish()
}
