//! Waits between attempts, and the errors of an attempt that did not return.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::time::Duration;

/// Exponential waits between attempts: `initial`, then each wait times `multiplier`, never
/// above `max`; each wait is then shortened by a random fraction of up to `jitter` (0 to 1),
/// so consumers that failed together spread their retries out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Waits starting at `initial`, growing by `multiplier` up to `max`, with `jitter`
    /// (clamped to 0..=1; 0 means exact waits).
    pub(crate) fn new(initial: Duration, multiplier: f64, max: Duration, jitter: f64) -> Self {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            initial,
            multiplier,
            max,
            jitter,
        }
    }

    /// The wait before the first retry (never above `max`).
    pub(crate) fn first(&self) -> Duration {
        self.initial.min(self.max)
    }

    /// The wait after `current`, before jitter.
    pub(crate) fn next(&self, current: Duration) -> Duration {
        next_backoff(current, self.multiplier, self.max)
    }

    /// `wait` shortened by a random fraction of up to `jitter`: uniform in
    /// `[wait × (1 − jitter), wait]`.
    pub(crate) fn jittered(&self, wait: Duration) -> Duration {
        if self.jitter == 0.0 || wait.is_zero() {
            return wait;
        }
        let cut = self.jitter * unit_random();
        Duration::try_from_secs_f64(wait.as_secs_f64() * (1.0 - cut)).unwrap_or(wait)
    }
}

/// The delay after `current`: multiplied, capped at `max`, never panicking.
fn next_backoff(current: Duration, multiplier: f64, max: Duration) -> Duration {
    Duration::try_from_secs_f64(current.as_secs_f64() * multiplier)
        .unwrap_or(max)
        .min(max)
}

/// A number in `[0, 1)` from a per-thread xorshift generator seeded from the process's random
/// hasher keys: good enough to spread retries, not for anything secret.
fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // The top 53 bits as a fraction: exact in an f64.
        (x >> 11) as f64 / (1_u64 << 53) as f64
    })
}

/// A handler attempt did not finish within its timeout (the event bus's `handler_timeout`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("handler timed out after {after:?}; make it faster or raise `handler_timeout`")]
pub struct HandlerTimedOut {
    /// The timeout.
    pub after: Duration,
}

/// A handler panicked. The panic was caught; whatever called it keeps running.
#[derive(Debug, Clone, thiserror::Error)]
#[error("handler panicked: {message}")]
pub struct HandlerPanicked {
    /// The panic message, when it was a string.
    pub message: String,
}

impl HandlerPanicked {
    /// The error for a caught panic's payload.
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_without_overflow() {
        let max = Duration::from_secs(30);
        assert_eq!(
            next_backoff(Duration::from_millis(100), 2.0, max),
            Duration::from_millis(200)
        );
        assert_eq!(next_backoff(Duration::from_secs(20), 2.0, max), max);
        assert_eq!(next_backoff(Duration::MAX, 2.0, max), max);
        assert_eq!(
            next_backoff(Duration::from_secs(1), f64::INFINITY, max),
            max
        );
    }

    #[test]
    fn jitter_shortens_waits_within_its_fraction_and_spreads_them() {
        let backoff = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(10), 0.5);
        let waits: Vec<Duration> = (0..200)
            .map(|_| backoff.jittered(Duration::from_secs(1)))
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(500) && *w <= Duration::from_secs(1)),
            "within [0.5 s, 1 s]"
        );
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "spread out, not in lockstep");
        let exact = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(10), 0.0);
        assert_eq!(
            exact.jittered(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        let clamped = Backoff::new(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(10),
            f64::NAN,
        );
        assert_eq!(
            clamped.jittered(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
