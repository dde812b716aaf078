//! The aggregate root: state plus identity, version and pending events.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Aggregate, Apply};
use crate::error::{Error, Result};
use crate::message::{AggregateId, Event, EventEnvelope, MessageMetadata, NewEvent};
use crate::snapshot::Snapshot;

/// An aggregate instance: its id, its state at a version, and the events recorded since it
/// was loaded.
pub struct AggregateRoot<A> {
    id: AggregateId,
    version: u64,
    state: A,
    pending: Vec<NewEvent>,
    metadata: Option<MessageMetadata>,
    events_since_snapshot: u64,
    last_snapshot_at: Option<DateTime<Utc>>,
}

impl<A: fmt::Debug> fmt::Debug for AggregateRoot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateRoot")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> AggregateRoot<A> {
    /// A new aggregate at version 0 with default state.
    pub fn new(id: impl Into<AggregateId>) -> Self {
        Self {
            id: id.into(),
            version: 0,
            state: A::default(),
            pending: Vec::new(),
            metadata: None,
            events_since_snapshot: 0,
            last_snapshot_at: None,
        }
    }

    /// Rebuilds an aggregate by applying stored events in order. Records nothing.
    pub fn load_from_history<'e>(
        id: impl Into<AggregateId>,
        history: impl IntoIterator<Item = &'e EventEnvelope>,
    ) -> Result<Self> {
        let mut root = Self::new(id);
        root.replay(history)?;
        Ok(root)
    }

    /// Restores an aggregate from a snapshot (whose state must already be at
    /// [`A::SNAPSHOT_VERSION`](Aggregate::SNAPSHOT_VERSION)).
    pub fn load_from_snapshot(snapshot: &Snapshot) -> Result<Self> {
        let state = A::deserialize(&snapshot.state).map_err(|source| Error::Serialization {
            what: format!(
                "snapshot of aggregate `{}` `{}` at version {}",
                A::TYPE,
                snapshot.aggregate_id,
                snapshot.version
            ),
            source,
        })?;
        Ok(Self {
            id: snapshot.aggregate_id.clone(),
            version: snapshot.version,
            state,
            pending: Vec::new(),
            metadata: None,
            events_since_snapshot: 0,
            last_snapshot_at: Some(snapshot.created_at),
        })
    }

    /// Applies stored events after the current version. Each must be the next version.
    pub(crate) fn replay<'e>(
        &mut self,
        history: impl IntoIterator<Item = &'e EventEnvelope>,
    ) -> Result<()> {
        history
            .into_iter()
            .try_for_each(|envelope| self.replay_one(envelope))
    }

    /// Applies one stored event, which must be the next version.
    pub(crate) fn replay_one(&mut self, envelope: &EventEnvelope) -> Result<()> {
        if envelope.stream_version != self.version + 1 {
            return Err(Error::EventPersistence {
                stream: envelope.stream_id.clone(),
                reason: format!(
                    "aggregate `{}` `{}` is at version {} but the next stored event has version {}; \
                     events before it were purged and no snapshot covers them",
                    A::TYPE,
                    self.id,
                    self.version,
                    envelope.stream_version
                ),
                source: None,
            });
        }
        self.state.apply_stored(envelope)?;
        self.version = envelope.stream_version;
        self.events_since_snapshot += 1;
        Ok(())
    }

    /// Sets the metadata of the message that causes the events recorded from now on (same
    /// correlation, its id as causation, same user and tenant). Inside a command, query or
    /// event handler this is automatic: recorded events are caused by the message being
    /// handled.
    pub fn set_metadata(&mut self, cause: MessageMetadata) {
        self.metadata = Some(cause);
    }

    /// Checks `event` against the state ([`Apply::check`]), applies it, and buffers it for
    /// the next save. Nothing changes if the check or the serialization fails. Its metadata
    /// is caused by the message being handled (see [`set_metadata`](Self::set_metadata)).
    pub fn record<E: Event>(&mut self, event: E) -> Result<()>
    where
        A: Apply<E>,
    {
        let metadata = match &self.metadata {
            Some(cause) => MessageMetadata::caused_by(cause),
            // Inside a handler: caused by the message being handled; elsewhere: new.
            None => crate::context::caused_metadata(),
        };
        self.record_with(event, metadata)
    }

    /// Like [`record`](Self::record), with explicit metadata.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a recorded event is handed over: callers write `record(Deposited { .. })`"
    )]
    pub fn record_with<E: Event>(&mut self, event: E, metadata: MessageMetadata) -> Result<()>
    where
        A: Apply<E>,
    {
        self.state
            .check(&event)
            .map_err(|reason| Error::InvariantViolation {
                aggregate_type: A::TYPE,
                id: self.id.to_string(),
                event_type: E::NAME,
                reason,
            })?;
        let new = NewEvent::from_event(&event, metadata)?;
        self.state.apply(&event);
        self.pending.push(new);
        self.version += 1;
        self.events_since_snapshot += 1;
        Ok(())
    }

    /// The aggregate's id (also its stream id).
    pub fn id(&self) -> &AggregateId {
        &self.id
    }

    /// The version the state reflects, counting pending events.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version last loaded or saved: what the store should still hold.
    pub fn persisted_version(&self) -> u64 {
        self.version - self.pending.len() as u64
    }

    /// Whether nothing was ever stored for this aggregate.
    pub fn is_new(&self) -> bool {
        self.persisted_version() == 0
    }

    /// The current state.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Consumes the root, returning the state.
    pub fn into_state(self) -> A {
        self.state
    }

    /// Events recorded but not yet saved, oldest first.
    pub fn pending(&self) -> &[NewEvent] {
        &self.pending
    }

    /// Events applied since the last snapshot.
    pub fn events_since_snapshot(&self) -> u64 {
        self.events_since_snapshot
    }

    /// Time since the last snapshot this root knows of.
    pub(crate) fn since_last_snapshot(&self) -> Option<Duration> {
        self.last_snapshot_at
            .map(|at| (Utc::now() - at).to_std().unwrap_or_default())
    }

    /// A snapshot of the current state (including pending events).
    pub fn create_snapshot(&self) -> Result<Snapshot> {
        let state = serde_json::to_value(&self.state).map_err(|source| Error::Serialization {
            what: format!(
                "state of aggregate `{}` `{}` for a snapshot",
                A::TYPE,
                self.id
            ),
            source,
        })?;
        Ok(Snapshot::new(
            self.id.clone(),
            A::TYPE,
            self.version,
            state,
            A::SNAPSHOT_VERSION,
        ))
    }

    pub(crate) fn pending_mut(&mut self) -> &mut Vec<NewEvent> {
        &mut self.pending
    }

    pub(crate) fn mark_snapshot(&mut self, at: DateTime<Utc>) {
        self.events_since_snapshot = 0;
        self.last_snapshot_at = Some(at);
    }
}
