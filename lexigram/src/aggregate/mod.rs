//! Aggregates: state rebuilt from events, changed only by recording new ones.
//!
//! An aggregate's state is a plain type implementing [`Aggregate`] (its type name and how a
//! stored event is routed to its apply function) and [`Apply<E>`] for each event it handles.
//! [`AggregateRoot<A>`] wraps the state with its id, version and the events recorded but not
//! yet saved. [`record`](AggregateRoot::record) checks the event against the state, applies it
//! at once and buffers it; replaying history applies without recording anything.
//!
//! `#[aggregate]` writes the [`Aggregate`] and [`Apply`] impls from `#[apply]` methods; by
//! hand they look like this:
//!
//! ```
//! use lexigram::prelude::*;
//! use lexigram::aggregate::Route;
//! use lexigram::error::EventLoadError;
//! use lexigram::{AggregateRoot, EventEnvelope};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Withdrawn { amount: u64 }
//! impl Event for Withdrawn { const NAME: &'static str = "bank.Withdrawn"; const VERSION: u32 = 1; }
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
//!         Route::new(self, event).on::<Withdrawn>().finish()
//!     }
//! }
//!
//! impl Apply<Withdrawn> for Account {
//!     fn check(&self, event: &Withdrawn) -> Result<(), String> {
//!         if event.amount > self.balance { Err("insufficient funds".into()) } else { Ok(()) }
//!     }
//!     fn apply(&mut self, event: &Withdrawn) { self.balance -= event.amount; }
//! }
//!
//! let mut account = AggregateRoot::<Account>::new("acc-1");
//! let err = account.record(Withdrawn { amount: 5 }).unwrap_err();
//! assert!(err.to_string().contains("insufficient funds"));
//! assert!(account.pending().is_empty()); // nothing was applied or buffered
//! ```

mod root;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EventLoadError, EventLoadErrorKind};
use crate::message::{Event, EventEnvelope};

pub use root::AggregateRoot;

/// The state of an aggregate, rebuilt by applying its events in order.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lexigram aggregate",
    label = "this type must implement `lexigram::Aggregate`",
    note = "put `#[aggregate]` on an `impl {Self}` block with `#[apply]` methods, or implement `Aggregate` by hand"
)]
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type's stable name (stored with snapshots and events' metadata).
    const TYPE: &'static str;

    /// The schema version of the serialized state, for snapshots.
    const SNAPSHOT_VERSION: u32 = 1;

    /// Applies one stored event: decode it and call the matching [`Apply::apply`].
    /// Use [`Route`] to write this in one line.
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError>;
}

/// How an aggregate changes when an event of type `E` happens.
///
/// `E` is an [`Event`] wherever the impl is used ([`AggregateRoot::record`], [`Route::on`]);
/// the trait itself names no bound on `E`, so `#[aggregate]` checks an `#[apply]` method's
/// event type once, at the method's parameter, and its `Apply` impl does not repeat the check.
pub trait Apply<E>: Aggregate {
    /// Rejects an event that would break an invariant. Runs before [`apply`](Apply::apply)
    /// when the event is recorded (not when history is replayed). The default accepts all.
    fn check(&self, event: &E) -> Result<(), String> {
        let _ = event;
        Ok(())
    }

    /// Changes the state. Must not fail: an event is a fact.
    fn apply(&mut self, event: &E);
}

/// Routes a stored event to the [`Apply`] impl for its type.
///
/// Each [`on`](Route::on) tries one event type (by name); [`ignore`](Route::ignore) accepts a
/// type the aggregate does not care about; [`finish`](Route::finish) fails with an
/// [`EventLoadError`] naming the stream, version and type if nothing matched.
#[must_use = "call `finish()` to get the result"]
#[derive(Debug)]
pub struct Route<'a, A> {
    state: &'a mut A,
    event: &'a EventEnvelope,
    outcome: Option<Result<(), EventLoadError>>,
}

impl<'a, A: Aggregate> Route<'a, A> {
    /// Starts routing `event` to `state`. An event read from a damaged row
    /// ([`EventEnvelope::defect`]) matches no route: `finish` reports it.
    pub fn new(state: &'a mut A, event: &'a EventEnvelope) -> Self {
        Self {
            state,
            event,
            outcome: event.defect_error().map(Err),
        }
    }

    /// Applies the event if it is an `E`.
    pub fn on<E: Event>(mut self) -> Self
    where
        A: Apply<E>,
    {
        if self.outcome.is_none() && self.event.is::<E>() {
            self.outcome = Some(self.event.decode::<E>().map(|e| self.state.apply(&e)));
        }
        self
    }

    /// Accepts events named `event_type` without applying anything.
    pub fn ignore(mut self, event_type: &str) -> Self {
        if self.outcome.is_none() && &*self.event.event_type == event_type {
            self.outcome = Some(Ok(()));
        }
        self
    }

    /// The result: `Ok` if a route matched and applied, the decode error if it failed, or an
    /// unknown-type error if no route matched.
    pub fn finish(self) -> Result<(), EventLoadError> {
        self.outcome
            .unwrap_or_else(|| Err(self.event.load_error(EventLoadErrorKind::UnknownType)))
    }
}
