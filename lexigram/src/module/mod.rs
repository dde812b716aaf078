//! Wiring: the dependency container, modules, and the app that runs them.
//!
//! Handlers take their dependencies as parameters (`Dep<T>`, `Repository<A>`, bus handles);
//! the [`Container`] holds what modules and the app builder provide. Building the app checks
//! the whole wiring at once and reports every problem together ([`BootstrapReport`]).

mod app;
mod container;
mod events;
mod projection;
mod wiring;

pub use crate::error::{BootstrapReport, Problem};
pub use app::{App, AppBuilder, ComponentHealth, HealthReport, HealthStatus, Module};
pub use container::{Container, Dep};
pub use events::{EventsModule, HandlerScope};
pub use wiring::{
    FromContainer, HandlerContext, HandlerKind, HandlerParam, Missing, Stores, Wiring,
};
// What the macros register and call: public for generated code (through `__private`), not
// part of the documented API.
#[doc(hidden)]
pub use wiring::{HandlerRegistration, HandlerSite, Injected, handlers, inject_field};
