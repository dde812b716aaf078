//! The per-event-type queues (lanes) and the background workers that drain them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::dispatch::Shared;
use crate::message::EventEnvelope;

/// The queue of one event type, shared by its publishers and its worker.
pub(super) struct Lane {
    pub(super) event_type: Arc<str>,
    pub(super) state: Mutex<LaneState>,
    /// Free places in the queue: `publish` takes one (waiting while there is none) and the
    /// worker gives it back when it takes the event out. Never closed.
    pub(super) room: Semaphore,
    /// Wakes the worker when an event arrives in its empty queue, or when the lane is retired.
    pub(super) wake: Notify,
}

/// A published event waiting for its worker, with the span it was published in (the
/// command that saved it, say), which the span that handles it follows from.
pub(super) struct Queued {
    pub(super) envelope: Arc<EventEnvelope>,
    pub(super) cause: tracing::Span,
}

pub(super) struct LaneState {
    pub(super) events: VecDeque<Queued>,
    /// The lane is out of the bus's map (its worker ended or is ending, or the bus stopped):
    /// publishers must not queue into it, and look the lane up again.
    pub(super) retired: bool,
}

impl Lane {
    pub(super) fn new(event_type: Arc<str>, capacity: usize) -> Self {
        Self {
            event_type,
            state: Mutex::new(LaneState {
                events: VecDeque::new(),
                retired: false,
            }),
            room: Semaphore::new(capacity),
            wake: Notify::new(),
        }
    }
}

/// The background task of one event type: handles its lane's events in order. Counted in
/// `live_tasks` while it lives.
///
/// It ends when its queue has been empty for `worker_idle_timeout`, after taking its lane out
/// of the bus under the map's lock: a publisher either queued before that (and the worker
/// keeps going) or finds the lane retired and opens a new one, whose events all come after
/// this lane's. It also ends when the bus is dropped (once its queue is empty) or stopped.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) lane: Arc<Lane>,
    /// An event is being handled (it is counted in `pending`).
    pub(super) in_flight: bool,
}

impl Worker {
    pub(super) fn new(shared: &Arc<Shared>, lane: &Arc<Lane>) -> Self {
        shared.live_tasks.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(shared),
            lane: Arc::clone(lane),
            in_flight: false,
        }
    }

    pub(super) async fn run(mut self) {
        let idle = self.shared.config.worker_idle_timeout;
        // When the queue was last found empty after handling an event.
        let mut idle_since = Instant::now();
        let mut busy = false;
        // One timer for the worker's life, moved only when it fires early: handling events
        // costs no timer operations. `None`: the idle timeout is too long for the clock.
        let mut timer = idle_since
            .checked_add(idle)
            .map(|due| Box::pin(tokio::time::sleep_until(due)));
        loop {
            // After `shutdown` gave up waiting, a task stuck in blocking code goes no further.
            if self.shared.stopped.load(Ordering::Acquire) {
                return;
            }
            let next = {
                let mut state = self.lane.state.lock();
                match state.events.pop_front() {
                    Some(queued) => Some(queued),
                    None if state.retired => return,
                    None => None,
                }
            };
            if let Some(Queued { envelope, cause }) = next {
                self.lane.room.add_permits(1);
                self.in_flight = true;
                self.shared.deliver(&envelope, &cause).await;
                self.in_flight = false;
                self.shared.finish(1);
                busy = true;
                continue;
            }
            if std::mem::take(&mut busy) {
                idle_since = Instant::now();
            }
            let Some(timer) = timer.as_mut() else {
                self.lane.wake.notified().await;
                continue;
            };
            tokio::select! {
                biased;
                () = self.lane.wake.notified() => {}
                () = timer.as_mut() => {
                    match idle_since.checked_add(idle) {
                        Some(due) if due > Instant::now() => timer.as_mut().reset(due),
                        _ => {
                            if self.retire_if_idle() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Takes the lane out of the bus if its queue is still empty.
    pub(super) fn retire_if_idle(&self) -> bool {
        let mut lanes = self.shared.lanes.write();
        let mut state = self.lane.state.lock();
        if !state.events.is_empty() {
            return false;
        }
        state.retired = true;
        if lanes
            .get(&self.lane.event_type)
            .is_some_and(|lane| Arc::ptr_eq(lane, &self.lane))
        {
            lanes.remove(&self.lane.event_type);
        }
        true
    }
}

impl Drop for Worker {
    /// A worker ends with its lane retired and empty. If it ends otherwise (aborted by
    /// `shutdown`, or a panic outside the handlers, which are guarded), its lane leaves the
    /// bus so the next event of its type starts a new worker, and the events it will not
    /// handle are no longer counted, so `drain` still returns.
    fn drop(&mut self) {
        let clean = {
            let state = self.lane.state.lock();
            state.retired && state.events.is_empty()
        };
        let mut lost = u64::from(self.in_flight);
        if !clean {
            let mut lanes = self.shared.lanes.write();
            let mut state = self.lane.state.lock();
            if !state.retired {
                state.retired = true;
                if lanes
                    .get(&self.lane.event_type)
                    .is_some_and(|lane| Arc::ptr_eq(lane, &self.lane))
                {
                    lanes.remove(&self.lane.event_type);
                }
            }
            lost += state.events.len() as u64;
            state.events.clear();
        }
        if lost > 0 {
            if !self.shared.closed.load(Ordering::Acquire) {
                tracing::error!(
                    event_type = %self.lane.event_type,
                    lost,
                    "an event bus worker ended unexpectedly; its unhandled events are dropped and the next event of its type starts a new worker"
                );
            }
            self.shared.finish(lost);
        }
        self.shared.live_tasks.fetch_sub(1, Ordering::SeqCst);
        // `try_lock`: this may run inside `spawn_on` (a runtime shutting down drops the new
        // task at once), which holds the lock; the next worker to end reaps instead.
        if let Some(mut tasks) = self.shared.tasks.try_lock() {
            while tasks.try_join_next().is_some() {}
        }
    }
}

/// Runs `future` until `until` (`None`: no deadline); `None` if the deadline came first.
pub(super) async fn within<F: std::future::Future>(
    until: Option<Instant>,
    future: F,
) -> Option<F::Output> {
    match until {
        Some(until) => tokio::time::timeout_at(until, future).await.ok(),
        None => Some(future.await),
    }
}

/// Scheduler turns an aborted task gets past the deadline to end.
pub(super) const ABORT_TURNS: usize = 8;

/// Waits for the (aborted) tasks until `until`. An aborted task ends when it is next
/// scheduled, which takes no time unless it is stuck in blocking code, so past the deadline
/// each still gets a few scheduler turns (no timer). Returns how many are still running.
pub(super) async fn join_until(tasks: &mut JoinSet<()>, until: Option<Instant>) -> usize {
    let _ = within(until, async { while tasks.join_next().await.is_some() {} }).await;
    for _ in 0..ABORT_TURNS {
        while tasks.try_join_next().is_some() {}
        if tasks.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    tasks.len()
}
