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
/// take their defaults.
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
