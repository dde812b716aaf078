//! Configuration: [`EventsConfig`] (from code, TOML or the environment) and [`Secret`].
//!
//! Every source follows the same rules (see [`EventsConfig`]): unknown keys are errors at every
//! depth, missing keys take their documented defaults, environment values are parsed by the
//! type of the field they set, and errors name where a problem is without repeating any value.
//!
//! [`Secret`] wraps values that must never reach a log (DSN passwords, webhook secrets): its
//! `Debug`, `Display` and `Serialize` give `***`.
//!
//! # Examples
//!
//! ```
//! use lexigram::config::Secret;
//! let dsn = Secret::new("postgres://app:hunter2@db/app");
//! assert_eq!(format!("{dsn:?}"), "Secret(***)");
//! assert_eq!(dsn.expose(), "postgres://app:hunter2@db/app");
//! ```

mod events;
mod reactions;
mod secret;
mod source;

pub(crate) use events::ConcreteStore;
pub use events::{EventsConfig, OpenStores, SnapshotConfig, StoreConfig};
pub use reactions::{ReactionSettings, ReactionsConfig};
pub use secret::Secret;
