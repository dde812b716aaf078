//! The event bus's hooks: what they are told, and calling them safely.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::message::EventEnvelope;

/// One handler's outcome on one event, given to the [`on_handled`](super::EventBus::on_handled)
/// and [`on_failed`](super::EventBus::on_failed) hooks.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerReport<'a> {
    /// The event.
    pub envelope: &'a EventEnvelope,
    /// The handler's name.
    pub handler: &'a str,
    /// How many attempts were made.
    pub attempts: u32,
    /// From the first attempt to the outcome, retries included.
    pub elapsed: Duration,
    /// The last error, for a failure.
    pub error: Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
}

pub(super) type PublishedHook = Arc<dyn Fn(&EventEnvelope) + Send + Sync>;
pub(super) type ReportHook = Arc<dyn Fn(&HandlerReport<'_>) + Send + Sync>;

#[derive(Clone, Default)]
pub(super) struct Hooks {
    pub(super) published: Vec<PublishedHook>,
    pub(super) handled: Vec<ReportHook>,
    pub(super) failed: Vec<ReportHook>,
}

/// Calls a hook; a panicking hook is logged, never fatal.
pub(super) fn call_hook(name: &str, hook: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(hook)).is_err() {
        tracing::error!(
            hook = name,
            "an event bus hook panicked; the bus keeps running"
        );
    }
}

pub(super) fn publish_hooks(hooks: &Hooks, envelope: &EventEnvelope) {
    for hook in &hooks.published {
        call_hook("on_published", || hook(envelope));
    }
}
