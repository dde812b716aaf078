//! The in-memory dead-letter queue of the event bus.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::SubscriptionId;
use crate::delivery::{DeadLetters, GaveUp};
use crate::message::EventEnvelope;

/// Identifies one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterId(u64);

impl DeadLetterId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An event one handler failed on after its last attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter queue.
    pub id: DeadLetterId,
    /// The event.
    pub envelope: Arc<EventEnvelope>,
    /// The handler that failed.
    pub handler: Arc<str>,
    /// The handler's subscription (replay calls it again).
    pub subscription: SubscriptionId,
    /// How many attempts were made (0 when the handler was skipped).
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the last attempt failed.
    pub failed_at: DateTime<Utc>,
}

/// What the bus failed to deliver: an event, and the subscription that gave up on it.
#[derive(Debug)]
pub(super) struct Undelivered {
    pub(super) envelope: Arc<EventEnvelope>,
    pub(super) subscription: SubscriptionId,
}

/// Dead letters in memory, oldest first, at most `capacity` (the oldest go first, with a
/// warning, so a handler failing forever cannot exhaust memory).
pub(super) struct DeadLetterQueue {
    letters: Mutex<BTreeMap<DeadLetterId, DeadLetter>>,
    next: AtomicU64,
    capacity: usize,
}

impl DeadLetterQueue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            letters: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Every dead letter, oldest first.
    pub(super) fn list(&self) -> Vec<DeadLetter> {
        self.letters.lock().values().cloned().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.letters.lock().len()
    }

    /// Removes and returns one.
    pub(super) fn take(&self, id: DeadLetterId) -> Option<DeadLetter> {
        self.letters.lock().remove(&id)
    }

    /// Puts back a letter taken out (a replay that could not run).
    pub(super) fn put_back(&self, letter: DeadLetter) {
        self.letters.lock().insert(letter.id, letter);
    }
}

impl DeadLetters<Undelivered> for DeadLetterQueue {
    fn dead_letter(&self, gave_up: GaveUp<'_, Undelivered>) {
        let id = DeadLetterId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let mut letters = self.letters.lock();
        while letters.len() >= self.capacity {
            let Some((dropped, letter)) = letters.pop_first() else {
                break;
            };
            tracing::warn!(
                dead_letter = dropped.0, handler = %letter.handler, event_type = %letter.envelope.event_type,
                capacity = self.capacity,
                "dead-letter queue full; dropped the oldest dead letter"
            );
        }
        letters.insert(
            id,
            DeadLetter {
                id,
                envelope: Arc::clone(&gave_up.message.envelope),
                handler: Arc::clone(gave_up.handler),
                subscription: gave_up.message.subscription,
                attempts: gave_up.attempts,
                error: gave_up.error.to_string(),
                failed_at: Utc::now(),
            },
        );
    }
}
