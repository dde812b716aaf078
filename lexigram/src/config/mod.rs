//! Configuration: [`EventsConfig`] (from code, TOML or the environment) and [`Secret`].
//!
//! [`Secret`] wraps values that must never reach a log (DSN passwords, webhook secrets): its
//! `Debug` and `Display` print `***`.
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
mod secret;

pub use events::{EventsConfig, SnapshotConfig, StoreConfig};
pub use secret::Secret;
