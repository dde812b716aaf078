//! Handing one event to its handlers under the bus's delivery policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::EventBusConfig;
use super::dead_letter::{DeadLetterQueue, Undelivered};
use super::handler::{EventContext, HandlerSkipped};
use super::hooks::{HandlerReport, Hooks, call_hook};
use super::routes::{Routes, Subscriber, Subscriptions};
use super::worker::Lane;
use crate::context::{Parent, in_scope};
use crate::delivery::{DeadLetters, Delivery, GaveUp, Retry, RetryPolicy};
use crate::error::BoxError;
use crate::message::EventEnvelope;

/// The state the background tasks share with the bus.
pub(super) struct Shared {
    pub(super) config: EventBusConfig,
    pub(super) routes: RwLock<Arc<Routes>>,
    pub(super) subscriptions: Mutex<Subscriptions>,
    /// Permits, timeout and panic isolation for every handler call.
    pub(super) delivery: Delivery,
    /// Attempts and waits between them.
    pub(super) retry: RetryPolicy,
    /// Events accepted by `publish` and not yet handled.
    pub(super) pending: AtomicU64,
    pub(super) idle: Notify,
    pub(super) closed: AtomicBool,
    /// `shutdown` stopped waiting for the accepted events: workers stop at once.
    pub(super) stopped: AtomicBool,
    pub(super) dead_letters: DeadLetterQueue,
    pub(super) live_tasks: AtomicUsize,
    /// The queue of each event type that has a worker.
    pub(super) lanes: RwLock<HashMap<Arc<str>, Arc<Lane>>>,
    /// The workers' tasks. A worker that ends reaps those that ended before it, so the set
    /// holds at most a few ended tasks (whose memory it keeps until reaped).
    pub(super) tasks: Mutex<JoinSet<()>>,
}

/// A failure after the last attempt.
pub(super) struct Failure {
    pub(super) attempts: u32,
    pub(super) error: BoxError,
}

impl Shared {
    pub(super) fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read())
    }

    pub(super) fn change<R>(&self, change: impl FnOnce(&mut Subscriptions) -> R) -> R {
        let mut subscriptions = self.subscriptions.lock();
        let result = change(&mut subscriptions);
        *self.routes.write() = Arc::new(subscriptions.routes());
        result
    }

    /// `n` accepted events are done (handled, or dropped). Saturates: a task stuck past
    /// `shutdown` may finish after the count was reset.
    pub(super) fn finish(&self, n: u64) {
        let before = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            })
            .unwrap_or(0);
        if before > 0 && before <= n {
            self.idle.notify_waiters();
        }
    }

    /// Hands one event to its handlers, in a `lexigram.event` span that follows from `cause`
    /// (the span it was published in), so one request is one trace.
    pub(super) async fn deliver(&self, envelope: &Arc<EventEnvelope>, cause: &tracing::Span) {
        let routes = self.routes();
        let handlers = routes.handlers_for(&envelope.event_type);
        let span = tracing::debug_span!(
            "lexigram.event",
            event_type = %envelope.event_type,
            stream_id = %envelope.stream_id,
            stream_version = envelope.stream_version,
            global_position = envelope.global_position,
        );
        span.follows_from(cause);
        async {
            match &handlers[..] {
                [] => {}
                [only] => {
                    let _ = self.run_handler(only, envelope, &routes.hooks).await;
                }
                many if self.config.parallel_dispatch => {
                    futures_util::future::join_all(
                        many.iter()
                            .map(|sub| self.run_handler(sub, envelope, &routes.hooks)),
                    )
                    .await;
                }
                many => {
                    let mut failed: Option<&Arc<str>> = None;
                    for sub in many {
                        if let Some(failed) = failed {
                            let error: BoxError = Box::new(HandlerSkipped {
                                failed: Arc::clone(failed),
                            });
                            self.give_up(sub, envelope, &routes.hooks, 0, Duration::ZERO, &error);
                            continue;
                        }
                        let outcome = self.run_handler(sub, envelope, &routes.hooks).await;
                        if outcome.is_err() && !self.config.continue_on_error {
                            failed = Some(&sub.name);
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Calls one handler under the bus's delivery policy (permit, timeout, panics caught,
    /// retries with jittered backoff) until it succeeds or gives up; then reports, and
    /// dead-letters a failure.
    pub(super) async fn run_handler(
        &self,
        sub: &Arc<Subscriber>,
        envelope: &Arc<EventEnvelope>,
        hooks: &Hooks,
    ) -> std::result::Result<(), Failure> {
        let timed = !hooks.handled.is_empty() || !hooks.failed.is_empty();
        let started = timed.then(tokio::time::Instant::now);
        let elapsed = || started.map_or(Duration::ZERO, |s| s.elapsed());
        let call = |attempt| {
            let ctx = EventContext {
                envelope: Arc::clone(envelope),
                handler: Arc::clone(&sub.name),
                attempt,
            };
            // The handler is called inside the guarded future, not before it: a handler that
            // panics before returning its future is caught like one that panics while running,
            // and its synchronous part runs in the event's scope too.
            in_scope(Parent::Event(Arc::clone(envelope)), async move {
                sub.handler.call(ctx).await
            })
        };
        // An event that does not decode will not decode on a retry either.
        let retry = |error: &BoxError| {
            if error.is::<crate::error::EventLoadError>() {
                Retry::Never
            } else {
                Retry::WhileAttemptsRemain
            }
        };
        let delivered = self.delivery.run(&self.retry, &sub.name, call, retry).await;
        match delivered.result {
            Ok(()) => {
                if !hooks.handled.is_empty() {
                    let report = HandlerReport {
                        envelope,
                        handler: &sub.name,
                        attempts: delivered.attempts,
                        elapsed: elapsed(),
                        error: None,
                    };
                    for hook in &hooks.handled {
                        call_hook("on_handled", || hook(&report));
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.give_up(sub, envelope, hooks, delivered.attempts, elapsed(), &error);
                Err(Failure {
                    attempts: delivered.attempts,
                    error,
                })
            }
        }
    }

    /// Reports a handler's final failure and dead-letters the event for it.
    pub(super) fn give_up(
        &self,
        sub: &Subscriber,
        envelope: &Arc<EventEnvelope>,
        hooks: &Hooks,
        attempts: u32,
        elapsed: Duration,
        error: &BoxError,
    ) {
        tracing::warn!(
            handler = %sub.name,
            event_type = %envelope.event_type,
            stream_id = %envelope.stream_id,
            global_position = envelope.global_position,
            attempts,
            %error,
            dead_lettered = self.config.enable_dead_letter,
            "event handler failed"
        );
        let report = HandlerReport {
            envelope,
            handler: &sub.name,
            attempts,
            elapsed,
            error: Some(&**error),
        };
        for hook in &hooks.failed {
            call_hook("on_failed", || hook(&report));
        }
        if self.config.enable_dead_letter {
            self.dead_letters.dead_letter(GaveUp {
                message: &Undelivered {
                    envelope: Arc::clone(envelope),
                    subscription: sub.id,
                },
                handler: &sub.name,
                attempts,
                error,
            });
        }
    }
}
