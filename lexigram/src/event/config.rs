//! The event bus configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the [`EventBus`](super::EventBus) dispatches, retries and buffers. The defaults are the
/// seed's:
///
/// | field | default |
/// |---|---|
/// | `max_concurrent_handlers` | 10 |
/// | `handler_timeout` | 30 s |
/// | `retry_failed_handlers` | `true` |
/// | `max_handler_retries` | 3 |
/// | `retry_initial_backoff` | 100 ms, then doubling (`retry_backoff_multiplier` 2) up to `retry_max_backoff` (30 s) |
/// | `retry_jitter` | 0.2 (each wait is cut by a random 0–20 %) |
/// | `enable_dead_letter` | `true` |
/// | `allow_no_handlers` | `true` |
/// | `parallel_dispatch` | `true` |
/// | `continue_on_error` | `true` |
/// | `queue_capacity` | 1000 per event type |
/// | `dead_letter_capacity` | 10 000 (the oldest go first) |
/// | `worker_idle_timeout` | 30 s |
///
/// Serialized durations are whole milliseconds (`handler_timeout_ms`, ...); missing fields
/// take their defaults. In code, start from the default and set what differs
/// (`EventBusConfig::default().queue_capacity(100).retry_jitter(0.0)`): the struct is
/// `#[non_exhaustive]`, so it can grow without breaking callers.
///
/// ```
/// use lexigram::event::EventBusConfig;
/// let config: EventBusConfig = serde_json::from_str(r#"{ "queue_capacity": 2, "handler_timeout_ms": 500 }"#)?;
/// assert_eq!(config.queue_capacity, 2);
/// assert_eq!(config.handler_timeout, std::time::Duration::from_millis(500));
/// assert_eq!(config.max_concurrent_handlers, 10);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EventBusConfig {
    /// At most this many handler calls run at once, bus-wide (at least 1).
    pub max_concurrent_handlers: usize,
    /// Each handler attempt is cancelled after this long (and counts as a failure).
    #[serde(rename = "handler_timeout_ms", with = "millis")]
    pub handler_timeout: Duration,
    /// Whether a failed handler is called again.
    pub retry_failed_handlers: bool,
    /// How many times a failed handler is called again (so `1 + max_handler_retries`
    /// attempts in all).
    pub max_handler_retries: u32,
    /// The wait before the first retry (at most `retry_max_backoff`).
    #[serde(rename = "retry_initial_backoff_ms", with = "millis")]
    pub retry_initial_backoff: Duration,
    /// Each next wait is the previous one times this (at least 1).
    pub retry_backoff_multiplier: f64,
    /// No wait is longer than this.
    #[serde(rename = "retry_max_backoff_ms", with = "millis")]
    pub retry_max_backoff: Duration,
    /// Each wait is shortened by a random fraction of up to this (0 to 1), so handlers that
    /// failed together (a database restarting) do not all retry at the same instant. `0`
    /// gives exact waits.
    pub retry_jitter: f64,
    /// Whether an event a handler failed on (after its last attempt) is kept in the
    /// dead-letter queue for inspection and replay.
    pub enable_dead_letter: bool,
    /// Whether publishing an event no handler is subscribed to is fine (`Ok`) or an error.
    pub allow_no_handlers: bool,
    /// Whether the handlers of one event run concurrently (under
    /// `max_concurrent_handlers`) or one after another in priority order.
    pub parallel_dispatch: bool,
    /// In sequential dispatch, whether the next handlers still get an event after one failed
    /// on it. When `false` they are skipped and the event is dead-lettered for them. (In
    /// parallel dispatch every handler has already started.)
    pub continue_on_error: bool,
    /// How many published events may wait per event type; `publish` waits when it is full.
    /// At least 1 and at most `tokio::sync::Semaphore::MAX_PERMITS` (the queue's room is a
    /// tokio semaphore); memory is taken per queued event, not reserved up front.
    pub queue_capacity: usize,
    /// How many dead letters are kept; beyond it the oldest is dropped (with a warning), so a
    /// handler failing forever cannot exhaust memory.
    pub dead_letter_capacity: usize,
    /// The background task of an event type ends after its queue has been empty this long,
    /// freeing the queue; the next event of that type starts a new one. Order and
    /// backpressure are kept across the change. `0` ends it as soon as its queue is empty (a
    /// task start per burst); a duration too long for the clock (such as `Duration::MAX`)
    /// keeps it until the bus is shut down or dropped.
    #[serde(rename = "worker_idle_timeout_ms", with = "millis")]
    pub worker_idle_timeout: Duration,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        Self {
            max_concurrent_handlers: 10,
            handler_timeout: Duration::from_secs(30),
            retry_failed_handlers: true,
            max_handler_retries: 3,
            retry_initial_backoff: Duration::from_millis(100),
            retry_backoff_multiplier: 2.0,
            retry_max_backoff: Duration::from_secs(30),
            retry_jitter: 0.2,
            enable_dead_letter: true,
            allow_no_handlers: true,
            parallel_dispatch: true,
            continue_on_error: true,
            queue_capacity: 1000,
            dead_letter_capacity: 10_000,
            worker_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl EventBusConfig {
    /// Sets `max_concurrent_handlers`: at most this many handler calls at once, bus-wide.
    #[must_use]
    pub fn max_concurrent_handlers(mut self, max_concurrent_handlers: usize) -> Self {
        self.max_concurrent_handlers = max_concurrent_handlers;
        self
    }

    /// Sets `handler_timeout`: each attempt is cancelled after this long.
    #[must_use]
    pub fn handler_timeout(mut self, handler_timeout: Duration) -> Self {
        self.handler_timeout = handler_timeout;
        self
    }

    /// Sets `retry_failed_handlers`: whether a failed handler is called again.
    #[must_use]
    pub fn retry_failed_handlers(mut self, retry_failed_handlers: bool) -> Self {
        self.retry_failed_handlers = retry_failed_handlers;
        self
    }

    /// Sets `max_handler_retries`: how many times a failed handler is called again.
    #[must_use]
    pub fn max_handler_retries(mut self, max_handler_retries: u32) -> Self {
        self.max_handler_retries = max_handler_retries;
        self
    }

    /// Sets `retry_initial_backoff`: the wait before the first retry.
    #[must_use]
    pub fn retry_initial_backoff(mut self, retry_initial_backoff: Duration) -> Self {
        self.retry_initial_backoff = retry_initial_backoff;
        self
    }

    /// Sets `retry_backoff_multiplier`: each next wait is the previous one times this.
    #[must_use]
    pub fn retry_backoff_multiplier(mut self, retry_backoff_multiplier: f64) -> Self {
        self.retry_backoff_multiplier = retry_backoff_multiplier;
        self
    }

    /// Sets `retry_max_backoff`: no wait is longer than this.
    #[must_use]
    pub fn retry_max_backoff(mut self, retry_max_backoff: Duration) -> Self {
        self.retry_max_backoff = retry_max_backoff;
        self
    }

    /// Sets `retry_jitter`: each wait is cut by a random fraction of up to this (0 to 1).
    #[must_use]
    pub fn retry_jitter(mut self, retry_jitter: f64) -> Self {
        self.retry_jitter = retry_jitter;
        self
    }

    /// Sets `enable_dead_letter`: whether failed events are kept for inspection and replay.
    #[must_use]
    pub fn enable_dead_letter(mut self, enable_dead_letter: bool) -> Self {
        self.enable_dead_letter = enable_dead_letter;
        self
    }

    /// Sets `allow_no_handlers`: whether publishing an event nobody handles is fine.
    #[must_use]
    pub fn allow_no_handlers(mut self, allow_no_handlers: bool) -> Self {
        self.allow_no_handlers = allow_no_handlers;
        self
    }

    /// Sets `parallel_dispatch`: whether the handlers of one event run concurrently.
    #[must_use]
    pub fn parallel_dispatch(mut self, parallel_dispatch: bool) -> Self {
        self.parallel_dispatch = parallel_dispatch;
        self
    }

    /// Sets `continue_on_error`: in sequential dispatch, whether later handlers still run after one failed.
    #[must_use]
    pub fn continue_on_error(mut self, continue_on_error: bool) -> Self {
        self.continue_on_error = continue_on_error;
        self
    }

    /// Sets `queue_capacity`: how many events may wait per event type.
    #[must_use]
    pub fn queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// Sets `dead_letter_capacity`: how many dead letters are kept.
    #[must_use]
    pub fn dead_letter_capacity(mut self, dead_letter_capacity: usize) -> Self {
        self.dead_letter_capacity = dead_letter_capacity;
        self
    }

    /// Sets `worker_idle_timeout`: an event type's task ends after its queue was empty this long.
    #[must_use]
    pub fn worker_idle_timeout(mut self, worker_idle_timeout: Duration) -> Self {
        self.worker_idle_timeout = worker_idle_timeout;
        self
    }

    /// Every problem with this configuration, as [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.max_concurrent_handlers == 0 {
            problems
                .push("event bus `max_concurrent_handlers` is 0; set it to at least 1".to_owned());
        }
        if self.max_concurrent_handlers > tokio::sync::Semaphore::MAX_PERMITS {
            problems.push(format!(
                "event bus `max_concurrent_handlers` is {}; set it to at most {}",
                self.max_concurrent_handlers,
                tokio::sync::Semaphore::MAX_PERMITS
            ));
        }
        if self.enable_dead_letter && self.dead_letter_capacity == 0 {
            problems.push(
                "event bus `dead_letter_capacity` is 0 with dead letters enabled; set it to at least 1, or turn `enable_dead_letter` off"
                    .to_owned(),
            );
        }
        if self.queue_capacity == 0 {
            problems.push("event bus `queue_capacity` is 0; set it to at least 1".to_owned());
        }
        if self.queue_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            problems.push(format!(
                "event bus `queue_capacity` is {}; set it to at most {}",
                self.queue_capacity,
                tokio::sync::Semaphore::MAX_PERMITS
            ));
        }
        if self.handler_timeout.is_zero() {
            problems.push(
                "event bus `handler_timeout` is 0, which would fail every handler; set a positive timeout"
                    .to_owned(),
            );
        }
        if !(self.retry_jitter.is_finite() && (0.0..=1.0).contains(&self.retry_jitter)) {
            problems.push(format!(
                "event bus `retry_jitter` is {}; set it between 0 (exact waits) and 1",
                self.retry_jitter
            ));
        }
        if !(self.retry_backoff_multiplier.is_finite() && self.retry_backoff_multiplier >= 1.0) {
            problems.push(format!(
                "event bus `retry_backoff_multiplier` is {}; set it to a number >= 1",
                self.retry_backoff_multiplier
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config { problems })
        }
    }

    /// How many attempts a handler gets.
    /// The delivery policy these settings describe.
    pub(crate) fn retry_policy(&self) -> crate::delivery::RetryPolicy {
        crate::delivery::RetryPolicy {
            max_attempts: self.max_attempts(),
            backoff: crate::delivery::Backoff::new(
                self.retry_initial_backoff,
                self.retry_backoff_multiplier,
                self.retry_max_backoff,
                self.retry_jitter,
            ),
        }
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        if self.retry_failed_handlers {
            self.max_handler_retries.saturating_add(1)
        } else {
            1
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
