//! The middleware lexigram ships.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{MessageKind, Middleware, Next, Request, Response};
use crate::delivery::Backoff;
use crate::error::{Error, Result};
use crate::message::CorrelationId;

/// Opens a `tracing` span per dispatch (kind, message type, handler, message id, correlation
/// id) and logs the outcome: `debug` on success, `warn` on failure, with the elapsed time.
#[derive(Debug, Clone, Default)]
pub struct TracingMiddleware {
    _priv: (),
}

impl TracingMiddleware {
    /// The tracing middleware.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Middleware for TracingMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let span = tracing::info_span!(
            "lexigram.dispatch",
            kind = %request.kind(),
            message_type = request.message_type(),
            handler = request.handler(),
            message_id = %request.metadata().message_id(),
            correlation_id = %request.metadata().correlation_id(),
        );
        let started = tokio::time::Instant::now();
        let result = next.run(request).instrument(span.clone()).await;
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(elapsed_us, "handled"),
            Err(error) => tracing::warn!(elapsed_us, %error, "failed"),
        });
        result
    }
}

/// One measured dispatch, given to the hook of a [`TimingMiddleware`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Timing {
    /// Command or query.
    pub kind: MessageKind,
    /// The message's type name.
    pub message_type: &'static str,
    /// The handler's name.
    pub handler: Arc<str>,
    /// How long the rest of the chain and the handler took.
    pub elapsed: Duration,
    /// Whether it returned `Ok`.
    pub succeeded: bool,
}

/// Measures every dispatch and hands a [`Timing`] to a hook (a metrics recorder, a
/// histogram, a log line). Time is read from tokio's clock, so paused-clock tests see exact
/// durations.
///
/// ```
/// use lexigram::middleware::TimingMiddleware;
/// let timing = TimingMiddleware::new(|t| println!("{} took {:?}", t.message_type, t.elapsed));
/// # let _ = timing;
/// ```
#[derive(Clone)]
pub struct TimingMiddleware {
    hook: Arc<dyn Fn(&Timing) + Send + Sync>,
}

impl TimingMiddleware {
    /// Calls `hook` after every dispatch.
    pub fn new(hook: impl Fn(&Timing) + Send + Sync + 'static) -> Self {
        Self {
            hook: Arc::new(hook),
        }
    }
}

impl fmt::Debug for TimingMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingMiddleware").finish_non_exhaustive()
    }
}

impl Middleware for TimingMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let kind = request.kind();
        let message_type = request.message_type();
        let handler: Arc<str> = Arc::from(request.handler());
        let started = tokio::time::Instant::now();
        let result = next.run(request).await;
        (self.hook)(&Timing {
            kind,
            message_type,
            handler,
            elapsed: started.elapsed(),
            succeeded: result.is_ok(),
        });
        result
    }
}

/// Cancels a dispatch that takes longer than a limit, with
/// [`Error::Timeout`](crate::Error::Timeout).
#[derive(Debug, Clone)]
pub struct TimeoutMiddleware {
    after: Duration,
}

impl TimeoutMiddleware {
    /// Cancels dispatches that take longer than `after`.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }
}

impl Middleware for TimeoutMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let kind = request.kind();
        let message_type = request.message_type();
        let handler: Arc<str> = Arc::from(request.handler());
        match tokio::time::timeout(self.after, next.run(request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("{kind} `{message_type}` in handler `{handler}`"),
                after: self.after,
            }),
        }
    }
}

type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Runs a failed dispatch again, waiting (with `tokio::time::sleep`) an exponentially
/// growing delay between attempts: `initial`, `initial * multiplier`, ... capped at
/// `max_backoff`.
///
/// A message can only be run again if its type was declared cloneable on its bus
/// (`CommandBus::cloneable::<C>()`; cached queries always are). Otherwise the first error is
/// returned, with a warning in the log saying so.
///
/// By default every error is retried except those that cannot go away by themselves:
/// [`Validation`](Error::Validation), [`HandlerNotFound`](Error::HandlerNotFound) and
/// [`MiddlewareType`](Error::MiddlewareType). Choose with [`retry_if`](Self::retry_if).
#[derive(Clone)]
pub struct RetryMiddleware {
    max_retries: u32,
    initial_backoff: Duration,
    multiplier: f64,
    max_backoff: Duration,
    jitter: f64,
    retry_if: Option<RetryPredicate>,
}

impl RetryMiddleware {
    /// Up to `max_retries` retries, the first after `initial_backoff`, each next delay doubled,
    /// capped at 30 s, each shortened by a random 0–20 % (see [`jitter`](Self::jitter)).
    pub fn new(max_retries: u32, initial_backoff: Duration) -> Self {
        Self {
            max_retries,
            initial_backoff,
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
            jitter: 0.2,
            retry_if: None,
        }
    }

    /// Shortens each delay by a random fraction of up to `jitter` (0 to 1; default 0.2), so
    /// callers that failed together do not retry together. `0` gives exact delays.
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Multiplies the delay by `multiplier` after each retry (at least 1; default 2).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Never waits longer than `max_backoff` between attempts.
    #[must_use]
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Retries only the errors for which `predicate` returns `true`.
    #[must_use]
    pub fn retry_if(mut self, predicate: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    fn should_retry(&self, error: &Error) -> bool {
        match &self.retry_if {
            Some(predicate) => predicate(error),
            None => !matches!(
                error,
                Error::Validation { .. }
                    | Error::HandlerNotFound { .. }
                    | Error::MiddlewareType { .. }
            ),
        }
    }
}

impl fmt::Debug for RetryMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryMiddleware")
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("multiplier", &self.multiplier)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("retry_if", &self.retry_if.is_some())
            .finish()
    }
}

impl Middleware for RetryMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let mut request = request;
        let mut retries = 0;
        let backoffs = Backoff::new(
            self.initial_backoff,
            self.multiplier,
            self.max_backoff,
            self.jitter,
        );
        let mut backoff = backoffs.first();
        loop {
            let spare = if retries < self.max_retries {
                request.try_clone()
            } else {
                None
            };
            let kind = request.kind();
            let message_type = request.message_type();
            let error = match next.clone().run(request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if retries >= self.max_retries || !self.should_retry(&error) {
                return Err(error);
            }
            let Some(again) = spare else {
                tracing::warn!(
                    %kind, message_type,
                    "RetryMiddleware cannot retry: the message type is not cloneable; declare it with `cloneable::<{message_type}>()` on its bus"
                );
                return Err(error);
            };
            retries += 1;
            let pause = backoffs.jittered(backoff);
            tracing::debug!(%kind, message_type, retry = retries, ?pause, %error, "retrying");
            tokio::time::sleep(pause).await;
            backoff = backoffs.next(backoff);
            request = again;
        }
    }
}

/// A message that can check itself before it is handled (used by [`ValidationMiddleware`]).
///
/// ```
/// use lexigram::middleware::Validate;
/// struct Deposit { amount: u64 }
/// impl Validate for Deposit {
///     fn validate(&self) -> Result<(), Vec<String>> {
///         if self.amount == 0 { return Err(vec!["amount must be positive".into()]); }
///         Ok(())
///     }
/// }
/// assert!(Deposit { amount: 0 }.validate().is_err());
/// ```
pub trait Validate {
    /// `Ok`, or every problem found.
    fn validate(&self) -> std::result::Result<(), Vec<String>>;
}

type Validator = fn(&(dyn Any + Send)) -> std::result::Result<(), Vec<String>>;

/// Rejects invalid messages with [`Error::Validation`](crate::Error::Validation) before their
/// handler runs. Name each validated type with [`validate`](Self::validate); other types pass.
#[derive(Clone, Default)]
pub struct ValidationMiddleware {
    validators: HashMap<TypeId, (&'static str, Validator)>,
}

impl ValidationMiddleware {
    /// Validates nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates every message of type `T`.
    #[must_use]
    pub fn validate<T: Validate + 'static>(mut self) -> Self {
        let validator: Validator = |message| match message.downcast_ref::<T>() {
            Some(message) => message.validate(),
            None => Ok(()),
        };
        self.validators
            .insert(TypeId::of::<T>(), (std::any::type_name::<T>(), validator));
        self
    }
}

impl fmt::Debug for ValidationMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.validators.values().map(|(name, _)| *name).collect();
        types.sort_unstable();
        f.debug_struct("ValidationMiddleware")
            .field("types", &types)
            .finish()
    }
}

impl Middleware for ValidationMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let message = request.message_any();
        if let Some((_, validator)) = self.validators.get(&message.type_id())
            && let Err(problems) = validator(message)
        {
            return Err(Error::Validation {
                kind: request.kind().as_str(),
                message_type: request.message_type(),
                problems,
            });
        }
        next.run(request).await
    }
}

type CorrelationSource = Arc<dyn Fn() -> Option<CorrelationId> + Send + Sync>;

/// Carries correlation into the handler's `tracing` span, and, for messages that start a new
/// conversation (no causation id), can take the correlation id from outside the bus (an HTTP
/// header, a message from a broker) through a source function.
///
/// Messages sent from inside a handler inherit correlation and causation without any
/// middleware; this one is for the edges of the system.
#[derive(Clone, Default)]
pub struct CorrelationMiddleware {
    source: Option<CorrelationSource>,
}

impl CorrelationMiddleware {
    /// Records correlation and causation ids in a span around the handler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the id `source` returns (when it returns one) as the correlation id of messages
    /// that have no causation id.
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Fn() -> Option<CorrelationId> + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

impl fmt::Debug for CorrelationMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorrelationMiddleware")
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl Middleware for CorrelationMiddleware {
    async fn handle(&self, request: Request, next: Next) -> Result<Response> {
        let mut request = request;
        if let Some(source) = &self.source
            && request.metadata().causation_id().is_none()
            && let Some(id) = source()
        {
            let metadata = request.metadata().clone().with_correlation_id(id);
            request.set_metadata(metadata);
        }
        let span = tracing::info_span!(
            "lexigram.correlation",
            correlation_id = %request.metadata().correlation_id(),
            causation_id = request.metadata().causation_id().map(tracing::field::display),
        );
        next.run(request).instrument(span).await
    }
}
