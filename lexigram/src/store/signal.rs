//! Wake-ups after appends: a store announces the highest position it appended, and live
//! readers wait on an [`AppendSignal`] instead of polling.
//!
//! Every store announces its own appends (and its clones') at once, without a database round
//! trip. Appends by other processes are announced where the backend can tell: PostgreSQL
//! through `LISTEN`, a SQLite file by watching `PRAGMA data_version`. Those watchers are
//! background tasks started by the first [`EventStore::append_signal`] call made inside a
//! tokio runtime; called outside one, the signal hears this process only.
//!
//! # Examples
//!
//! ```
//! use lexigram::message::{MessageMetadata, NewEvent, Payload};
//! use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let store = InMemoryEventStore::new();
//! let mut signal = store.append_signal();
//! let event = NewEvent::new("cart.ItemAdded", 1, Payload::from_json_text("1"), MessageMetadata::new());
//! store.append("cart-1", vec![event], ExpectedVersion::NoStream).await?;
//! assert_eq!(signal.changed().await, Some(1));
//! # Ok(()) }
//! ```
//!
//! [`EventStore::append_signal`]: crate::store::EventStore::append_signal

use std::fmt;
use std::sync::Arc;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::sync::Weak;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use parking_lot::Mutex;
use parking_lot::RwLock;
use tokio::sync::watch;

/// Resolves when events were appended, for a live reader waiting at the head of the log.
///
/// A hint, not a log: a reader still reads from its own checkpoint after each wake-up, and
/// also polls now and then (a signal from another process can be lost with its connection).
/// Cheap to clone; each clone keeps its own "seen" mark.
#[derive(Clone)]
pub struct AppendSignal {
    rx: Option<watch::Receiver<u64>>,
    /// The store closed or went away: `changed` returns `None` at once.
    ended: bool,
}

impl fmt::Debug for AppendSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendSignal")
            .field("announced", &self.announced())
            .field("fires", &self.rx.is_some())
            .finish()
    }
}

impl AppendSignal {
    /// A signal that never fires: [`changed`](Self::changed) pends forever (a store without
    /// wake-ups; readers poll).
    pub fn never() -> Self {
        Self {
            rx: None,
            ended: false,
        }
    }

    /// Waits until an append was announced since the last call (or since the signal was
    /// made) and returns the highest position announced. `None` once the store is closed
    /// or dropped: it will not fire again, so the caller only polls from then on (later
    /// calls return `None` at once). On a [`never`](Self::never) signal it pends forever.
    pub async fn changed(&mut self) -> Option<u64> {
        let Some(rx) = self.rx.as_mut() else {
            if self.ended {
                return None;
            }
            return std::future::pending().await;
        };
        if rx.changed().await.is_ok() {
            return Some(*rx.borrow_and_update());
        }
        self.rx = None;
        self.ended = true;
        None
    }

    /// The highest position announced so far (0 when none).
    pub fn announced(&self) -> u64 {
        self.rx.as_ref().map_or(0, |rx| *rx.borrow())
    }
}

/// The sending side a store owns: it announces after every committed append. Clones share
/// one channel; [`close`](Self::close) drops the sender, so every reader's
/// [`AppendSignal::changed`] returns `None`.
#[derive(Debug, Clone)]
pub(crate) struct AppendNotifier {
    tx: Arc<RwLock<Option<watch::Sender<u64>>>>,
}

impl Default for AppendNotifier {
    fn default() -> Self {
        Self {
            tx: Arc::new(RwLock::new(Some(watch::Sender::new(0)))),
        }
    }
}

impl AppendNotifier {
    /// Announces that events up to `position` were appended (keeps the highest; a lower or
    /// equal position wakes nobody).
    pub(crate) fn announce(&self, position: u64) {
        if let Some(tx) = &*self.tx.read() {
            tx.send_if_modified(|current| {
                if position > *current {
                    *current = position;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// A signal for one reader, woken by announcements made after this call. After
    /// [`close`](Self::close), a signal whose `changed` returns `None` at once.
    pub(crate) fn subscribe(&self) -> AppendSignal {
        let rx = match &*self.tx.read() {
            Some(tx) => tx.subscribe(),
            None => watch::channel(0).1,
        };
        AppendSignal {
            rx: Some(rx),
            ended: false,
        }
    }

    /// The store was closed: every reader's `changed` returns `None` from now on.
    pub(crate) fn close(&self) {
        self.tx.write().take();
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    /// A weak handle, for a background watcher that must not keep the store alive.
    pub(crate) fn downgrade(&self) -> WeakNotifier {
        WeakNotifier(Arc::downgrade(&self.tx))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// A weak [`AppendNotifier`]: gone once the store (every clone) is dropped.
#[derive(Debug, Clone)]
pub(crate) struct WeakNotifier(Weak<RwLock<Option<watch::Sender<u64>>>>);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl WeakNotifier {
    /// The notifier, while the store lives.
    pub(crate) fn upgrade(&self) -> Option<AppendNotifier> {
        self.0.upgrade().map(|tx| AppendNotifier { tx })
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// The background task that announces other processes' appends, started at most once per
/// store (by the first `append_signal` call inside a tokio runtime) and aborted when the store
/// is closed or its last clone dropped. Clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watcher {
    state: Arc<Mutex<WatchState>>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Default)]
enum WatchState {
    #[default]
    NotStarted,
    /// Held only to abort the task when dropped.
    Running {
        _task: AbortOnDrop,
    },
    Stopped,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Aborts a task when dropped (a `JoinHandle` only detaches).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Watcher {
    /// Spawns `task` on the current tokio runtime unless it was started (or stopped)
    /// before. Without a runtime nothing starts, and a later call inside one may start it.
    pub(crate) fn start_once<F>(&self, task: impl FnOnce() -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut state = self.state.lock();
        if !matches!(*state, WatchState::NotStarted) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *state = WatchState::Running {
            _task: AbortOnDrop(runtime.spawn(task())),
        };
    }

    /// Stops the task for good (the store was closed).
    pub(crate) fn stop(&self) {
        let previous = std::mem::replace(&mut *self.state.lock(), WatchState::Stopped);
        drop(previous);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn announcements_keep_the_highest_and_wake_once() {
        let notifier = AppendNotifier::default();
        let mut signal = notifier.subscribe();
        notifier.announce(3);
        notifier.announce(2);
        assert_eq!(signal.changed().await, Some(3));
        assert_eq!(signal.announced(), 3);
        let idle = tokio::time::timeout(Duration::from_millis(20), signal.changed()).await;
        assert!(idle.is_err(), "a lower position wakes nobody");
        notifier.announce(5);
        assert_eq!(signal.changed().await, Some(5));
        notifier.close();
        assert_eq!(signal.changed().await, None);
        assert_eq!(signal.changed().await, None);
        assert_eq!(notifier.subscribe().changed().await, None);
    }

    #[tokio::test]
    async fn never_pends() {
        let mut signal = AppendSignal::never();
        let waited = tokio::time::timeout(Duration::from_millis(20), signal.changed()).await;
        assert!(waited.is_err());
        assert_eq!(signal.announced(), 0);
    }
}
