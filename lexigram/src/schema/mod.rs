//! Event types and schema evolution.
//!
//! A [`SchemaRegistry`] knows every event type by its stable name and current schema version,
//! and holds the upcasters that turn an old payload into the next version, one step at a time:
//! `(event_type, from_version) -> to_version` over `serde_json::Value`. A store built with a
//! registry upcasts on every read path, so code only ever sees current payloads. Snapshot
//! state evolves the same way, keyed by aggregate type.
//!
//! # Examples
//!
//! ```
//! use lexigram::message::Event;
//! use lexigram::schema::SchemaRegistry;
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Renamed { full_name: String }
//! impl Event for Renamed { const NAME: &'static str = "user.Renamed"; const VERSION: u32 = 2; }
//!
//! let mut schema = SchemaRegistry::new();
//! schema.register::<Renamed>()?.upcaster("user.Renamed", 1, 2, |mut v| {
//!     v["full_name"] = v["name"].take();
//!     Ok(v)
//! })?;
//! let (version, value) = schema.upcast_event("user.Renamed", 1, json!({"name": "Ada"}))?;
//! assert_eq!((version, value), (2, json!({"name": null, "full_name": "Ada"})));
//! # Ok::<(), lexigram::Error>(())
//! ```

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::error::{BoxError, EventLoadErrorKind, SchemaError};
use crate::message::{Event, EventEnvelope, EventKind, Payload};

/// One upcasting step over a JSON value.
pub type UpcastFn =
    Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync>;

/// A registered event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventType {
    /// The stable stored name.
    pub name: &'static str,
    /// The current schema version.
    pub version: u32,
    /// Domain or integration event.
    pub kind: EventKind,
    /// The Rust type's name.
    pub rust_type: &'static str,
    type_id: TypeId,
}

impl EventType {
    /// The description of `E`.
    pub fn of<E: Event>() -> Self {
        Self {
            name: E::NAME,
            version: E::VERSION,
            kind: E::KIND,
            rust_type: std::any::type_name::<E>(),
            type_id: TypeId::of::<E>(),
        }
    }
}

#[derive(Clone)]
struct Step {
    to: u32,
    run: UpcastFn,
}

/// Upcasters for one family of names (events, or snapshot state by aggregate type).
#[derive(Clone, Default)]
struct Chains {
    steps: HashMap<(Arc<str>, u32), Step>,
    names: HashSet<Arc<str>>,
}

impl Chains {
    fn add(&mut self, name: &str, from: u32, to: u32, run: UpcastFn) -> Result<(), SchemaError> {
        let name: Arc<str> = Arc::from(name);
        if to <= from {
            return Err(SchemaError::BackwardUpcaster { name, from, to });
        }
        let key = (Arc::clone(&name), from);
        if self.steps.contains_key(&key) {
            return Err(SchemaError::DuplicateUpcaster { name, from });
        }
        self.steps.insert(key, Step { to, run });
        self.names.insert(name);
        Ok(())
    }

    /// Runs the chain from `from` to `target` (or to the end of the chain when `None`).
    fn run(
        &self,
        name: &str,
        from: u32,
        target: Option<u32>,
        mut value: serde_json::Value,
    ) -> Result<(u32, serde_json::Value), SchemaError> {
        let mut version = from;
        if let Some(target) = target
            && from > target
        {
            return Err(SchemaError::NewerThanKnown {
                name: Arc::from(name),
                stored: from,
                known: target,
            });
        }
        loop {
            if target == Some(version) {
                return Ok((version, value));
            }
            let Some(step) = self.steps.get(&(Arc::from(name), version)) else {
                return match target {
                    None => Ok((version, value)),
                    Some(to) => Err(SchemaError::NoMigrationPath {
                        name: Arc::from(name),
                        from,
                        to,
                        missing: version,
                    }),
                };
            };
            if let Some(target) = target
                && step.to > target
            {
                return Err(SchemaError::NoMigrationPath {
                    name: Arc::from(name),
                    from,
                    to: target,
                    missing: version,
                });
            }
            value = (step.run)(value).map_err(|cause| SchemaError::UpcasterFailed {
                name: Arc::from(name),
                from: version,
                cause,
            })?;
            version = step.to;
        }
    }
}

/// Event types by name, and the upcasters between their schema versions.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    events: HashMap<&'static str, EventType>,
    event_chains: Chains,
    snapshot_chains: Chains,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut events: Vec<_> = self.events.values().map(|e| (e.name, e.version)).collect();
        events.sort_unstable();
        f.debug_struct("SchemaRegistry")
            .field("events", &events)
            .field("event_upcasters", &self.event_chains.steps.len())
            .field("snapshot_upcasters", &self.snapshot_chains.steps.len())
            .finish()
    }
}

impl SchemaRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `E` under its name and version. Registering the same type twice is a no-op;
    /// another type under the same name is an error.
    pub fn register<E: Event>(&mut self) -> Result<&mut Self, SchemaError> {
        self.register_type(EventType::of::<E>())
    }

    /// Registers a described event type (what `#[derive(Event)]` registrations use).
    pub fn register_type(&mut self, event: EventType) -> Result<&mut Self, SchemaError> {
        if let Some(existing) = self.events.get(event.name) {
            if existing.type_id != event.type_id {
                return Err(SchemaError::DuplicateEventName {
                    name: Arc::from(event.name),
                    first: existing.rust_type,
                    second: event.rust_type,
                });
            }
            return Ok(self);
        }
        self.events.insert(event.name, event);
        Ok(self)
    }

    /// Registers the step that turns `event_type` payloads at `from` into `to`.
    pub fn upcaster<F>(
        &mut self,
        event_type: &str,
        from: u32,
        to: u32,
        step: F,
    ) -> Result<&mut Self, SchemaError>
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync + 'static,
    {
        self.event_chains
            .add(event_type, from, to, Arc::new(step))?;
        Ok(self)
    }

    /// Registers the step that turns snapshot state of `aggregate_type` at `from` into `to`.
    pub fn snapshot_upcaster<F>(
        &mut self,
        aggregate_type: &str,
        from: u32,
        to: u32,
        step: F,
    ) -> Result<&mut Self, SchemaError>
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync + 'static,
    {
        self.snapshot_chains
            .add(aggregate_type, from, to, Arc::new(step))?;
        Ok(self)
    }

    /// The registered type with this name.
    pub fn event_type(&self, name: &str) -> Option<&EventType> {
        self.events.get(name)
    }

    /// Every registered event type, sorted by name.
    pub fn event_types(&self) -> Vec<&EventType> {
        let mut all: Vec<_> = self.events.values().collect();
        all.sort_unstable_by_key(|e| e.name);
        all
    }

    /// Whether any upcaster is registered for events of this type.
    pub fn has_upcasters(&self, event_type: &str) -> bool {
        self.event_chains.names.contains(event_type)
    }

    /// Upcasts an event payload from `from` to the registered current version of its type (or
    /// as far as the chain goes for an unregistered type). Returns the new version and value.
    pub fn upcast_event(
        &self,
        event_type: &str,
        from: u32,
        value: serde_json::Value,
    ) -> Result<(u32, serde_json::Value), SchemaError> {
        let target = self.events.get(event_type).map(|e| e.version);
        self.event_chains.run(event_type, from, target, value)
    }

    /// Upcasts snapshot state of `aggregate_type` from `from` to `to`.
    pub fn upcast_snapshot(
        &self,
        aggregate_type: &str,
        from: u32,
        to: u32,
        state: serde_json::Value,
    ) -> Result<serde_json::Value, SchemaError> {
        self.snapshot_chains
            .run(aggregate_type, from, Some(to), state)
            .map(|(_, v)| v)
    }

    /// Brings a stored envelope to the current version of its type. Envelopes that need no
    /// upcasting are returned untouched, without parsing the payload.
    pub fn upcast_envelope(
        &self,
        mut envelope: EventEnvelope,
    ) -> Result<EventEnvelope, crate::error::EventLoadError> {
        if !self.needs_upcasting(&envelope) {
            return Ok(envelope);
        }
        let value = envelope
            .payload
            .to_value()
            .map_err(|e| envelope.load_error(EventLoadErrorKind::Corrupt(e)))?;
        let (version, value) = self
            .upcast_event(&envelope.event_type, envelope.event_version, value)
            .map_err(|e| envelope.load_error(e.into()))?;
        envelope.event_version = version;
        envelope.payload = Payload::from_value(&value);
        Ok(envelope)
    }

    /// Upcasts envelopes read by a store. An envelope whose upcasting fails is returned as
    /// stored (decoding it then reports the precise error) so one bad event never hides the
    /// rest of a read.
    pub fn upcast_read(&self, envelopes: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
        if self.event_chains.names.is_empty() {
            return envelopes;
        }
        envelopes
            .into_iter()
            .map(|envelope| self.upcast_copy(&envelope).unwrap_or(envelope))
            .collect()
    }

    /// [`upcast_read`](Self::upcast_read) for shared envelopes: only those that need
    /// upcasting are copied.
    pub(crate) fn upcast_shared(
        &self,
        envelopes: Vec<Arc<EventEnvelope>>,
    ) -> Vec<Arc<EventEnvelope>> {
        if self.event_chains.names.is_empty() {
            return envelopes;
        }
        envelopes
            .into_iter()
            .map(|envelope| self.upcast_copy(&envelope).map_or(envelope, Arc::new))
            .collect()
    }

    /// An upcast copy of `envelope`, or `None` to keep it as stored: it needs no upcasting,
    /// or its upcasting failed (logged; decoding it then reports the precise error).
    fn upcast_copy(&self, envelope: &EventEnvelope) -> Option<EventEnvelope> {
        if !self.needs_upcasting(envelope) {
            return None;
        }
        match self.upcast_envelope(envelope.clone()) {
            Ok(upcast) => Some(upcast),
            Err(err) => {
                tracing::warn!(error = %err, "event left at its stored schema version");
                None
            }
        }
    }

    /// Whether `envelope` is stored at an older version of a type that has upcasters.
    fn needs_upcasting(&self, envelope: &EventEnvelope) -> bool {
        self.has_upcasters(&envelope.event_type)
            && self.events.get(&*envelope.event_type).map(|e| e.version)
                != Some(envelope.event_version)
    }

    /// Decodes an envelope as `E`, upcasting it first if it is stored at an older version.
    /// Unlike [`EventEnvelope::decode`], a failing upcaster is reported precisely.
    pub fn decode<E: Event>(
        &self,
        envelope: &EventEnvelope,
    ) -> Result<E, crate::error::EventLoadError> {
        if envelope.is::<E>() && envelope.event_version < E::VERSION {
            let upcast = self.upcast_envelope(envelope.clone())?;
            return upcast.decode();
        }
        envelope.decode()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain() -> Result<SchemaRegistry, SchemaError> {
        let mut schema = SchemaRegistry::new();
        schema
            .upcaster("X", 1, 2, |v| Ok(json!({ "v2": v })))?
            .upcaster("X", 2, 3, |v| Ok(json!({ "v3": v })))?;
        Ok(schema)
    }

    #[test]
    fn runs_each_step_in_order() -> Result<(), SchemaError> {
        let (v, value) = chain()?.upcast_event("X", 1, json!(0))?;
        assert_eq!((v, value), (3, json!({"v3": {"v2": 0}})));
        Ok(())
    }

    #[test]
    fn a_gap_names_the_missing_step() -> Result<(), SchemaError> {
        let mut schema = SchemaRegistry::new();
        schema.upcaster("X", 1, 2, Ok)?.upcaster("X", 3, 4, Ok)?;
        let err = schema.event_chains.run("X", 1, Some(4), json!(null)).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "no migration path from v1 to v4 for `X`: no upcaster starts at v2; register one with `SchemaRegistry::upcaster(\"X\", 2, ..)`"
            )
        );
        Ok(())
    }

    #[test]
    fn duplicate_and_backward_steps_are_rejected() -> Result<(), SchemaError> {
        let mut schema = chain()?;
        assert!(matches!(
            schema.upcaster("X", 1, 5, Ok),
            Err(SchemaError::DuplicateUpcaster { .. })
        ));
        assert!(matches!(
            schema.upcaster("Y", 2, 2, Ok),
            Err(SchemaError::BackwardUpcaster { .. })
        ));
        Ok(())
    }
}
