//! The causal context: which message the current task is handling.
//!
//! A command, query or event handler runs inside a task-local [`Parent`]; a message sent (or
//! an event recorded) from inside it is a child of that message: same correlation id, the
//! parent's message id as causation id. Nothing is passed by hand. [`Scope`] holds a command's
//! or query's metadata and creates it only on first use, so a dispatch whose handler never
//! looks at its metadata never pays for fresh ids.
//!
//! This module sits just above `message`: the aggregates, every bus and the middleware read
//! it, and it reads nothing of theirs.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::message::{EventEnvelope, MessageMetadata};

/// What a message being handled was caused by.
#[derive(Clone)]
pub(crate) enum Parent {
    /// A command or query being handled.
    Scope(Arc<Scope>),
    /// An event being handled by the event bus.
    Event(Arc<EventEnvelope>),
    /// The event a batch of reactions is handling now.
    Following(Arc<dyn CurrentEvent>),
}

/// A source of the event being handled that changes as the handling moves on (a batch of a
/// durable subscription, one scope for all its events).
pub(crate) trait CurrentEvent: Send + Sync {
    /// The event being handled now.
    fn current(&self) -> Option<&EventEnvelope>;

    /// The same, shared.
    fn current_shared(&self) -> Option<Arc<EventEnvelope>>;
}

impl Parent {
    /// This parent as it is now: a [`Following`](Parent::Following) parent is pinned to the
    /// event it follows at this moment (a scope's metadata is made later, when the batch may
    /// have moved on).
    fn pinned(&self) -> Option<Parent> {
        match self {
            Parent::Following(source) => source.current_shared().map(Parent::Event),
            other => Some(other.clone()),
        }
    }

    fn metadata(&self) -> Option<&MessageMetadata> {
        match self {
            Parent::Scope(scope) => Some(scope.metadata()),
            Parent::Event(envelope) => Some(&envelope.metadata),
            Parent::Following(source) => source.current().map(|e| &e.metadata),
        }
    }
}

tokio::task_local! {
    static CURRENT: Parent;
}

/// The metadata of one command or query, created on first use.
///
/// Making fresh ids costs more than the rest of a dispatch, so a handler that never looks at
/// its metadata (and sends nothing) never pays for it.
pub(crate) struct Scope {
    parent: Option<Parent>,
    metadata: OnceLock<MessageMetadata>,
}

impl Scope {
    /// A scope for a message sent now: a child of the message being handled, if any.
    pub(crate) fn child_of_current() -> Arc<Self> {
        Arc::new(Self {
            parent: CURRENT.try_with(Parent::pinned).ok().flatten(),
            metadata: OnceLock::new(),
        })
    }

    /// A scope with the given metadata.
    pub(crate) fn with_metadata(metadata: MessageMetadata) -> Arc<Self> {
        Arc::new(Self {
            parent: None,
            metadata: OnceLock::from(metadata),
        })
    }

    /// The metadata: given, caused by the parent, or new.
    pub(crate) fn metadata(&self) -> &MessageMetadata {
        self.metadata
            .get_or_init(|| match self.parent.as_ref().and_then(Parent::metadata) {
                Some(parent) => MessageMetadata::caused_by(parent),
                None => MessageMetadata::new(),
            })
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("metadata", &self.metadata.get())
            .field("has_parent", &self.parent.is_some())
            .finish()
    }
}

/// Runs `future` as the handling of `parent`: messages it sends are caused by `parent`.
pub(crate) fn in_scope<F: Future>(parent: Parent, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(parent, future)
}

/// Metadata for a message created now: caused by the message being handled, or new.
pub(crate) fn caused_metadata() -> MessageMetadata {
    CURRENT
        .try_with(|parent| parent.metadata().map(MessageMetadata::caused_by))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The metadata of the message being handled by the current task, if any.
pub(crate) fn current_metadata() -> Option<MessageMetadata> {
    CURRENT
        .try_with(|parent| parent.metadata().cloned())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_metadata_is_created_once_and_given_metadata_is_kept() {
        let scope = Scope::child_of_current();
        let first = scope.metadata().message_id();
        assert_eq!(scope.metadata().message_id(), first);
        assert_eq!(scope.metadata().causation_id(), None);

        let given = MessageMetadata::new();
        assert_eq!(Scope::with_metadata(given.clone()).metadata(), &given);
    }

    #[tokio::test]
    async fn a_scope_inside_another_is_its_child() {
        let parent = Scope::child_of_current();
        let expected = parent.metadata().clone();
        let child = in_scope(Parent::Scope(parent), async { Scope::child_of_current() }).await;
        assert_eq!(child.metadata().causation_id(), Some(expected.message_id()));
        assert_eq!(child.metadata().correlation_id(), expected.correlation_id());
        assert!(current_metadata().is_none());
    }
}
