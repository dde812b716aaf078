//! One handler-invocation policy, shared by everything that calls user code for a message:
//! the in-process event bus, the retry middleware and the durable subscription runners.
//!
//! - [`Delivery::attempt`]: one call under a concurrency permit and a per-attempt timeout,
//!   with panics caught (a handler that panics, even before returning its future, is a failed
//!   attempt, never a dead task).
//! - [`Delivery::run`]: attempts until one succeeds, the [`RetryPolicy`] runs out, or the error
//!   is one no retry can fix ([`Retry::Never`]); waits between attempts follow [`Backoff`]:
//!   exponential, capped, and jittered so that many consumers failing together do not retry in
//!   lockstep.
//! - [`DeadLetters`]: where a delivery that gave up goes. The event bus keeps them in memory;
//!   a durable runner keeps them in its database.
//!
//! This module sits below every runner and knows nothing of events, buses or stores: a
//! handler call is a future that returns `Result<(), BoxError>`.

mod backoff;

pub(crate) use backoff::Backoff;
pub use backoff::{HandlerPanicked, HandlerTimedOut};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use crate::error::BoxError;

/// How many attempts a delivery gets, and how long it waits between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub(crate) max_attempts: u32,
    /// The waits between attempts.
    pub(crate) backoff: Backoff,
}

/// Whether a failed attempt is worth another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Try again while attempts remain.
    WhileAttemptsRemain,
    /// Give up now: the same input fails the same way (an event that does not decode).
    Never,
}

/// How a delivery ended.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// How many attempts were made (at least 1).
    pub(crate) attempts: u32,
    /// `Ok`, or the last attempt's error.
    pub(crate) result: Result<(), BoxError>,
}

/// A delivery that gave up, on its way to a [`DeadLetters`] store.
#[derive(Debug)]
pub(crate) struct GaveUp<'a, M> {
    /// What was being delivered.
    pub(crate) message: &'a M,
    /// The handler that failed.
    pub(crate) handler: &'a Arc<str>,
    /// How many attempts were made.
    pub(crate) attempts: u32,
    /// The last attempt's error.
    pub(crate) error: &'a BoxError,
}

/// Where deliveries that gave up are kept, for inspection and replay.
pub(crate) trait DeadLetters<M>: Send + Sync {
    /// Keeps one.
    fn dead_letter(&self, gave_up: GaveUp<'_, M>);
}

/// Calls handlers under one policy: a bus-wide concurrency limit and a per-attempt timeout.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// `None` for a caller that makes one call at a time anyway.
    permits: Option<Arc<Semaphore>>,
    timeout: Duration,
}

impl Delivery {
    /// At most `concurrency` calls at once (at least 1), each cancelled after `timeout`.
    pub(crate) fn new(concurrency: usize, timeout: Duration) -> Self {
        Self {
            permits: Some(Arc::new(Semaphore::new(
                concurrency.clamp(1, Semaphore::MAX_PERMITS),
            ))),
            timeout,
        }
    }

    /// For callers that each make one call at a time (a subscription's partition workers:
    /// their count is the concurrency), so a permit would never be waited for: each call is
    /// cancelled after `timeout`, and takes no permit.
    pub(crate) fn serial(timeout: Duration) -> Self {
        Self {
            permits: None,
            timeout,
        }
    }

    /// One call: waits for a permit, then runs `call` under the timeout with panics caught.
    ///
    /// `call` is the whole handler invocation (the call that makes the future, and the
    /// future), so a handler that panics before returning its future is caught too. A call
    /// that finishes in its first poll arms no timer.
    pub(crate) async fn attempt<Fut>(&self, call: Fut) -> Result<(), BoxError>
    where
        Fut: Future<Output = Result<(), BoxError>>,
    {
        // The semaphore is never closed, so `acquire` cannot fail; run unguarded if it did.
        let _permit = match &self.permits {
            Some(permits) => permits.acquire().await.ok(),
            None => None,
        };
        let mut call = std::pin::pin!(guard(call));
        match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            Poll::Ready(outcome) => settle(outcome),
            Poll::Pending => self.finish(call).await,
        }
    }

    /// Finishes an attempt whose first poll was pending (a [`guard`]ed call), under the
    /// timeout: the timer is armed only now.
    pub(crate) async fn finish<Fut>(&self, call: Fut) -> Result<(), BoxError>
    where
        Fut: Future<Output = std::thread::Result<Result<(), BoxError>>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => settle(outcome),
            Err(_) => Err(Box::new(HandlerTimedOut {
                after: self.timeout,
            })),
        }
    }

    /// Attempts `call(attempt)` (1-based) until it succeeds, `policy` runs out, or
    /// `retry(&error)` says no retry can help, sleeping [`Backoff`] waits in between.
    pub(crate) async fn run<F, Fut>(
        &self,
        policy: &RetryPolicy,
        handler: &str,
        mut call: F,
        retry: impl Fn(&BoxError) -> Retry,
    ) -> Delivered
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        match self.attempt(call(1)).await {
            Ok(()) => Delivered {
                attempts: 1,
                result: Ok(()),
            },
            Err(error) => self.retry_after(policy, handler, error, call, retry).await,
        }
    }

    /// Goes on with a delivery whose first attempt failed with `error`: attempts
    /// `call(2)`, `call(3)`… as [`run`](Self::run) does. A caller that made the first
    /// attempt itself (inline, to keep the common case cheap) hands its failure here.
    pub(crate) async fn retry_after<F, Fut>(
        &self,
        policy: &RetryPolicy,
        handler: &str,
        mut error: BoxError,
        mut call: F,
        retry: impl Fn(&BoxError) -> Retry,
    ) -> Delivered
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let max_attempts = policy.max_attempts.max(1);
        let mut wait = policy.backoff.first();
        let mut attempt = 1;
        loop {
            if attempt >= max_attempts || retry(&error) == Retry::Never {
                return Delivered {
                    attempts: attempt,
                    result: Err(error),
                };
            }
            let pause = policy.backoff.jittered(wait);
            tracing::debug!(handler, attempt, ?pause, %error, "handler failed; retrying");
            tokio::time::sleep(pause).await;
            wait = policy.backoff.next(wait);
            attempt += 1;
            error = match self.attempt(call(attempt)).await {
                Ok(()) => {
                    return Delivered {
                        attempts: attempt,
                        result: Ok(()),
                    };
                }
                Err(error) => error,
            };
        }
    }
}

/// `call` with its panics caught: a handler that panics (while its future is made or
/// polled) is a failed attempt, never a dead task. [`settle`] reads the outcome.
pub(crate) fn guard<Fut: Future>(
    call: Fut,
) -> futures_util::future::CatchUnwind<AssertUnwindSafe<Fut>> {
    AssertUnwindSafe(call).catch_unwind()
}

/// The result of a [`guard`]ed call that ended: its own, or [`HandlerPanicked`].
pub(crate) fn settle(outcome: std::thread::Result<Result<(), BoxError>>) -> Result<(), BoxError> {
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(Box::new(HandlerPanicked::from_payload(&*panic))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1), 0.0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_call_is_retried_with_backoff_until_it_succeeds() {
        let delivery = Delivery::new(1, Duration::from_secs(5));
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let delivered = delivery
            .run(
                &policy(5),
                "flaky",
                |attempt| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if attempt < 3 {
                            Err::<(), BoxError>("not yet".into())
                        } else {
                            Ok(())
                        }
                    }
                },
                |_| Retry::WhileAttemptsRemain,
            )
            .await;
        assert!(delivered.result.is_ok());
        assert_eq!(delivered.attempts, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(300),
            "100 ms, then 200 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_no_retry_can_fix_gives_up_at_once() {
        let delivery = Delivery::new(1, Duration::from_secs(5));
        let delivered = delivery
            .run(
                &policy(5),
                "corrupt",
                |_| async { Err::<(), BoxError>("corrupt".into()) },
                |_| Retry::Never,
            )
            .await;
        assert_eq!(delivered.attempts, 1);
        assert!(delivered.result.is_err());
    }

    #[tokio::test(start_paused = true)]
    #[allow(clippy::panic)] // the panic is what is tested
    async fn panics_and_timeouts_are_failed_attempts() {
        let delivery = Delivery::new(1, Duration::from_millis(50));
        let panicked = delivery
            .attempt(async {
                if Duration::ZERO.is_zero() {
                    panic!("boom");
                }
                Ok(())
            })
            .await;
        let error = panicked.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(error, "handler panicked: boom");
        let timed_out = delivery
            .attempt(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            })
            .await;
        assert!(
            timed_out.is_err_and(|e| e.is::<HandlerTimedOut>()),
            "a slow call is cancelled"
        );
    }
}
