//! Wiring: the dependency container, modules, and the app that runs them.
//!
//! Handlers take their dependencies as parameters (`Dep<T>`, `Repository<A>`, bus handles);
//! the [`Container`] holds what modules and the app builder provide. Building the app checks
//! the whole wiring at once and reports every problem together ([`BootstrapReport`]).

mod container;
mod problems;

pub use container::{Container, Dep};
pub use problems::{BootstrapReport, Problem};
