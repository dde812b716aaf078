//! One partition of one subscription, on this node: a lease keeper that renews the lease
//! in the background, and the loop that reads pages, calls the reactor and commits.
//!
//! The loop holds no transaction across handler calls or between batches: every checkpoint
//! write is one fenced statement (or one short transaction with the parked events), so it
//! never holds back a PostgreSQL reader's watermark.

mod at_least_once;
mod exactly_once;

pub(crate) use at_least_once::{Runner, runner};

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, MaybeDone, maybe_done};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::checkpoint::{
    CheckpointStore, Lease, ParkedEvent, ReplayReport, RequestKind, RunStatus, lease_lost,
};
use super::definition::{Reaction, Subscription};
use super::reactor::{Batch, ReactionContext};
use super::task::Task;
use crate::delivery::{Delivery, Retry, RetryPolicy};
use crate::error::{BoxError, Error, EventLoadError, Result};
use crate::message::{EventEnvelope, StreamId};
use crate::store::{EventStore, Page, Partition, PartitionSet, ReadFilter, VersionRange};

/// What every partition worker of one subscription on this node shares.
pub(crate) struct Shared {
    pub(crate) def: Subscription,
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) checkpoints: Arc<dyn CheckpointStore>,
    pub(crate) delivery: Delivery,
    pub(crate) retry: RetryPolicy,
}

/// How a worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep running.
    Run,
    /// Commit, release the lease and end (a planned move to another node, or a shutdown).
    Release,
}

/// A request to a running worker, served between batches.
pub(crate) enum Control {
    /// Every lease of the subscription was fenced out (a rebuild started here): end now
    /// instead of at the next renewal, committing nothing.
    Fenced,
    /// Replay the parked events of one stream, in order.
    ReplayParked {
        stream: StreamId,
        reply: oneshot::Sender<Result<ReplayReport>>,
    },
}

/// Why a worker ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Asked to stop: committed and released.
    Released,
    /// Another node holds the partition now (or it was split): nothing more was committed.
    LeaseLost,
}

/// The lease as the keeper last renewed it, whether it is gone, and a wake-up for the
/// control requests a renewal reported.
struct Held {
    lease: Mutex<Lease>,
    lost: watch::Sender<bool>,
    requests: Notify,
}

impl Held {
    fn current(&self) -> Lease {
        self.lease.lock().clone()
    }
}

/// Renews the lease every `renew_every` until stopped; marks it lost when the store says
/// another node holds it, or when it could not be renewed before it ran out (self-fencing:
/// a worker that cannot prove its lease stops handling, even while the database is away).
async fn keep(shared: Arc<Shared>, held: Arc<Held>, mut done: watch::Receiver<bool>) {
    let options = &shared.def.options;
    let mut wait = options.renew_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = done.changed() => return,
        }
        let current = held.current();
        match shared.checkpoints.renew(&current, options.lease_ttl).await {
            Ok(renewed) => {
                let requests = renewed.open_requests > 0;
                *held.lease.lock() = renewed;
                if requests {
                    held.requests.notify_one();
                }
                wait = options.renew_every;
            }
            Err(Error::LeaseLost { .. }) => {
                held.lost.send_replace(true);
                return;
            }
            Err(error) => {
                let left = current
                    .valid_until
                    .saturating_duration_since(Instant::now());
                tracing::warn!(
                    target: "lexigram::subscription",
                    subscription = %shared.def.name,
                    partition = current.key.partition,
                    %error,
                    ?left,
                    "could not renew the lease; retrying"
                );
                if left <= options.renew_every.min(options.lease_ttl / 4) {
                    held.lost.send_replace(true);
                    return;
                }
                wait = (left / 4).max(Duration::from_millis(20));
            }
        }
    }
}

/// A partition worker's state between batches.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    held: Arc<Held>,
    lost: watch::Receiver<bool>,
    stop: watch::Receiver<Stop>,
    filter: ReadFilter,
    partition: u32,
    /// How far the log was read and handled.
    cursor: u64,
    /// How far the store has it.
    committed: u64,
    last_commit: Instant,
    /// Streams with a parked event: their later events are parked too.
    parked_streams: HashSet<StreamId>,
    /// Parked in this batch, written with the next commit.
    parking: Vec<ParkedEvent>,
    /// The lease (by its expiry) whose open control requests were last served: a renewal
    /// reporting requests again is looked at once.
    requests_seen: Option<Instant>,
}

/// Runs one claimed partition until it is released, lost, or asked to stop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    lease: Lease,
    stop: watch::Receiver<Stop>,
    mut control: mpsc::Receiver<Control>,
) -> Exit {
    let (lost_tx, lost) = watch::channel(false);
    let partition = lease.key.partition;
    let total = lease.partitions;
    let position = lease.position;
    let held = Arc::new(Held {
        lease: Mutex::new(lease),
        lost: lost_tx,
        requests: Notify::new(),
    });
    let (done_tx, done) = watch::channel(false);
    let mut keeper = Task::spawn(keep(Arc::clone(&shared), Arc::clone(&held), done));
    let mut filter = ReadFilter::all();
    if let Some(types) = &shared.def.event_types {
        filter = filter.event_types(types.iter().cloned());
    }
    if total > 1
        && let Ok(one) = Partition::new(partition, total)
    {
        filter = filter.partitions(PartitionSet::one(one));
    }
    let mut worker = Worker {
        shared,
        held,
        lost,
        stop,
        filter,
        partition,
        cursor: position,
        committed: position,
        last_commit: Instant::now(),
        parked_streams: HashSet::new(),
        parking: Vec::new(),
        requests_seen: None,
    };
    let exit = worker.main(&mut control).await;
    done_tx.send_replace(true);
    let _ = keeper.join().await;
    if matches!(exit, Exit::Released) {
        let lease = worker.held.current();
        if let Err(error) = worker.shared.checkpoints.release(&lease).await {
            tracing::warn!(
                target: "lexigram::subscription",
                subscription = %worker.shared.def.name,
                partition,
                %error,
                "could not release the lease; it expires on its own"
            );
        }
    }
    exit
}

impl Worker {
    fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Run
    }

    async fn main(&mut self, control: &mut mpsc::Receiver<Control>) -> Exit {
        if let Err(error) = self.load_parked().await {
            tracing::warn!(target: "lexigram::subscription", subscription = %self.shared.def.name, %error, "could not read parked events; retrying");
            if let Some(exit) = self.pause(Duration::from_millis(200), None).await {
                return exit;
            }
            if let Err(error) = self.load_parked().await {
                return self.fail(&error.to_string()).await;
            }
        }
        let mut signal = self.shared.events.append_signal();
        let mut signal_open = true;
        let mut read_failures = 0u32;
        let mut unsettled_wait = Duration::ZERO;
        let mut ahead: Option<(u64, ReadAhead)> = None;
        loop {
            if self.is_lost() {
                return Exit::LeaseLost;
            }
            if self.stopping() {
                return self.drain().await;
            }
            while let Ok(request) = control.try_recv() {
                if let Some(exit) = self.serve(request).await {
                    return exit;
                }
            }
            let lease = self.held.current();
            if lease.open_requests > 0 && self.requests_seen != Some(lease.valid_until) {
                self.requests_seen = Some(lease.valid_until);
                if let Some(exit) = self.serve_requests(&lease).await {
                    return exit;
                }
            }
            if self.held.current().status != RunStatus::Running {
                if let Some(exit) = self
                    .pause(self.shared.def.options.renew_every, Some(control))
                    .await
                {
                    return exit;
                }
                continue;
            }
            let options = &self.shared.def.options;
            let read = match ahead.take() {
                // The page read ahead while the last one was handled, if it starts here.
                Some((after, mut next)) if after == self.cursor => {
                    (&mut next).await;
                    match Pin::new(&mut next).take_output() {
                        Some(read) => read,
                        None => {
                            self.shared
                                .events
                                .read_page(self.cursor, options.batch_size, &self.filter)
                                .await
                        }
                    }
                }
                _ => {
                    self.shared
                        .events
                        .read_page(self.cursor, options.batch_size, &self.filter)
                        .await
                }
            };
            let page = match read {
                Ok(page) => {
                    read_failures = 0;
                    page
                }
                Err(error) => {
                    read_failures = read_failures.saturating_add(1);
                    let wait = Duration::from_millis(100)
                        .saturating_mul(1 << read_failures.min(6))
                        .min(Duration::from_secs(5));
                    tracing::warn!(target: "lexigram::subscription", subscription = %self.shared.def.name, partition = self.partition, %error, ?wait, "reading the log failed; retrying");
                    if let Some(exit) = self.pause(wait, None).await {
                        return exit;
                    }
                    continue;
                }
            };
            let full = page.events.len() >= options.batch_size;
            // Catching up: read the next page while this one is handled and committed.
            if full && let Some(last) = page.events.last() {
                let after = last.global_position;
                let (events, filter, limit) = (
                    Arc::clone(&self.shared.events),
                    self.filter.clone(),
                    options.batch_size,
                );
                let read: BoxFuture<'static, Result<Page>> =
                    Box::pin(async move { events.read_page(after, limit, &filter).await });
                ahead = Some((after, maybe_done(read)));
            }
            let work = self.run_page(page);
            let outcome = match ahead.as_mut() {
                Some((_, next)) => alongside(work, next).await,
                None => work.await,
            };
            let whole_page = match outcome {
                Ok(Some(whole_page)) => whole_page,
                // Rolled back: read again from the committed checkpoint.
                Ok(None) => continue,
                Err(exit) => return exit,
            };
            if whole_page && !full {
                // Caught up: wait for an append, a poll, a request or a stop.
                let poll = self.shared.def.options.poll_interval;
                // An append announced beyond what the read proved is not readable yet (on
                // PostgreSQL an older transaction elsewhere still holds the watermark back):
                // look again soon rather than wait for a signal that was already given.
                let behind = signal.announced() > self.cursor;
                let wait = if behind {
                    unsettled_wait = (unsettled_wait * 2)
                        .clamp(Duration::from_millis(2), Duration::from_millis(100));
                    poll.min(unsettled_wait)
                } else if self.cursor > self.committed {
                    unsettled_wait = Duration::ZERO;
                    poll.min(Duration::from_millis(250))
                } else {
                    unsettled_wait = Duration::ZERO;
                    poll
                };
                tokio::select! {
                    changed = signal.changed(), if signal_open && !behind => {
                        signal_open = changed.is_some();
                    }
                    () = tokio::time::sleep(wait) => {}
                    _ = self.stop.changed() => {}
                    _ = self.lost.changed() => {}
                    () = self.held.requests.notified() => {}
                    request = control.recv() => {
                        if let Some(request) = request
                            && let Some(exit) = self.serve(request).await
                        {
                            return exit;
                        }
                    }
                }
            }
        }
    }

    fn park(&mut self, envelope: &EventEnvelope, attempts: u32, error: String) {
        self.parked_streams.insert(envelope.stream_id.clone());
        self.parking.push(ParkedEvent::new(
            envelope.global_position,
            envelope.event_id,
            envelope.stream_id.clone(),
            envelope.stream_version,
            envelope.event_type.to_string(),
            attempts,
            error,
        ));
    }

    /// Commits the cursor and the parked events, retrying a failing store until the lease is
    /// lost. `Some` when the worker must end.
    async fn commit(&mut self) -> Option<Exit> {
        let mut wait = Duration::from_millis(50);
        loop {
            let lease = self.held.current();
            match self
                .shared
                .checkpoints
                .commit(&lease, self.cursor, &self.parking)
                .await
            {
                Ok(status) => {
                    self.held.lease.lock().status = status;
                    self.committed = self.cursor;
                    self.parking.clear();
                    self.last_commit = Instant::now();
                    crate::fault::point("subscription.after_commit").await;
                    return None;
                }
                Err(Error::LeaseLost { .. }) => {
                    self.held.lost.send_replace(true);
                    return Some(Exit::LeaseLost);
                }
                Err(error) => {
                    tracing::warn!(target: "lexigram::subscription", subscription = %self.shared.def.name, partition = self.partition, %error, ?wait, "committing the checkpoint failed; retrying");
                    if self.is_lost() {
                        return Some(Exit::LeaseLost);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Handles a page and commits what it did (now, or at the next poll when it only moved
    /// over other partitions' events). Whether it handled the whole page, `None` when it was
    /// rolled back (read again from the checkpoint), or why to end.
    async fn run_page(&mut self, page: Page) -> std::result::Result<Option<bool>, Exit> {
        let count = page.events.len();
        let shared = Arc::clone(&self.shared);
        let batch = match &shared.def.reaction {
            Reaction::AtLeastOnce(runner) => runner.batch(self, page.events).await,
            Reaction::ExactlyOnce(sink) => self.exactly_once(sink, page.events).await,
        };
        let Some(handled) = batch? else {
            return Ok(None);
        };
        let whole_page = handled == count;
        if whole_page {
            self.cursor = self.cursor.max(page.scanned_to);
        }
        let moved_only_over_others = handled == 0 && self.parking.is_empty();
        let due = !moved_only_over_others
            || self.last_commit.elapsed() >= self.shared.def.options.poll_interval;
        if (self.cursor > self.committed && due || !self.parking.is_empty())
            && let Some(exit) = self.commit().await
        {
            return Err(exit);
        }
        Ok(Some(whole_page))
    }

    /// Commits what was handled or parked since the last commit, if anything.
    async fn commit_pending(&mut self) -> Option<Exit> {
        if self.cursor > self.committed || !self.parking.is_empty() {
            self.commit().await
        } else {
            None
        }
    }

    /// A planned stop: commits what was handled, then ends (the caller releases).
    async fn drain(&mut self) -> Exit {
        self.commit_pending().await.unwrap_or(Exit::Released)
    }

    /// Records an error the worker cannot get past, and ends holding nothing.
    async fn fail(&mut self, error: &str) -> Exit {
        let lease = self.held.current();
        if let Err(record) = self.shared.checkpoints.record_error(&lease, error).await {
            tracing::warn!(target: "lexigram::subscription", subscription = %self.shared.def.name, %record, "could not record the failure");
        }
        Exit::Released
    }

    /// Waits `wait` (or until a stop, a lost lease or a request); `Some` when the worker must end.
    async fn pause(
        &mut self,
        wait: Duration,
        control: Option<&mut mpsc::Receiver<Control>>,
    ) -> Option<Exit> {
        match control {
            Some(control) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = self.stop.changed() => {}
                    _ = self.lost.changed() => {}
                    request = control.recv() => {
                        if let Some(request) = request {
                            return self.serve(request).await;
                        }
                    }
                }
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = self.stop.changed() => {}
                    _ = self.lost.changed() => {}
                }
            }
        }
        if self.is_lost() {
            Some(Exit::LeaseLost)
        } else {
            None
        }
    }

    async fn load_parked(&mut self) -> Result<()> {
        let parked = self
            .shared
            .checkpoints
            .parked(&self.shared.def.name, self.shared.def.version)
            .await?;
        let total = self.held.current().partitions;
        self.parked_streams = parked
            .into_iter()
            .filter(|p| Partition::of(p.stream.as_str(), total) == self.partition)
            .map(|p| p.stream)
            .collect();
        Ok(())
    }

    async fn serve(&mut self, request: Control) -> Option<Exit> {
        match request {
            Control::Fenced => {
                self.held.lost.send_replace(true);
                Some(Exit::LeaseLost)
            }
            Control::ReplayParked { stream, reply } => {
                // Commit first, so the parked set in the store is complete.
                if let Some(exit) = self.commit_pending().await {
                    let _ = reply.send(Err(lease_lost(&self.held.current())));
                    return Some(exit);
                }
                let report = self.replay(&stream).await;
                let lost = matches!(report, Err(Error::LeaseLost { .. }));
                let _ = reply.send(report);
                lost.then_some(Exit::LeaseLost)
            }
        }
    }

    /// Serves the control requests filed for this partition in the checkpoint store (by any
    /// process), in the order they were filed. A request that could not be served for a
    /// reason other than a lost lease stays open and is tried again at a later renewal.
    async fn serve_requests(&mut self, lease: &Lease) -> Option<Exit> {
        let (name, partition) = (Arc::clone(&self.shared.def.name), self.partition);
        let open = match self.shared.checkpoints.open_requests(lease).await {
            Ok(open) => open,
            Err(error) => {
                tracing::warn!(target: "lexigram::subscription", subscription = %name, partition, %error, "could not read the control requests; trying again at the next renewal");
                return None;
            }
        };
        for request in open {
            let report = match &request.kind {
                RequestKind::ReplayParked { stream } => {
                    // Commit first, so the parked set in the store is complete.
                    if let Some(exit) = self.commit_pending().await {
                        return Some(exit);
                    }
                    self.replay(stream).await
                }
            };
            let report = match report {
                Ok(report) => report,
                Err(Error::LeaseLost { .. }) => return Some(Exit::LeaseLost),
                Err(error) => {
                    tracing::warn!(target: "lexigram::subscription", subscription = %name, partition, request = request.id, %error, "could not serve a control request; it stays open");
                    self.requests_seen = None;
                    return None;
                }
            };
            let current = self.held.current();
            match self
                .shared
                .checkpoints
                .finish_request(&current, request.id, &report)
                .await
            {
                Ok(()) => tracing::info!(
                    target: "lexigram::subscription",
                    subscription = %name,
                    partition,
                    request = request.id,
                    replayed = report.replayed,
                    still_parked = report.still_parked,
                    "served a control request"
                ),
                Err(Error::LeaseLost { .. }) => {
                    self.held.lost.send_replace(true);
                    return Some(Exit::LeaseLost);
                }
                Err(error) => {
                    // Served, not recorded: served again later (a replay of nothing).
                    tracing::warn!(target: "lexigram::subscription", subscription = %name, partition, request = request.id, %error, "could not record a served control request; it stays open");
                    self.requests_seen = None;
                }
            }
        }
        None
    }

    /// Handles the parked events of `stream` again in position order, removing each that
    /// succeeds; stops at the first that fails. The checkpoint does not move.
    async fn replay(&mut self, stream: &StreamId) -> Result<ReplayReport> {
        let mut parked: Vec<ParkedEvent> = self
            .shared
            .checkpoints
            .parked(&self.shared.def.name, self.shared.def.version)
            .await?
            .into_iter()
            .filter(|p| &p.stream == stream)
            .collect();
        parked.sort_by_key(|p| p.position);
        let mut done = Vec::new();
        let mut unparked_in_tx = 0u64;
        let mut error = None;
        for entry in &parked {
            let range = VersionRange::from(entry.stream_version).to(entry.stream_version);
            let found = self.shared.events.read(stream.as_str(), range).await?;
            let Some(envelope) = found.into_iter().find(|e| e.event_id == entry.event_id) else {
                // Deleted or purged since: nothing left to handle.
                done.push(entry.event_id);
                continue;
            };
            let envelope = Arc::new(envelope);
            let shared = Arc::clone(&self.shared);
            let result = match &shared.def.reaction {
                Reaction::AtLeastOnce(runner) => {
                    runner
                        .deliver(&self.shared, self.partition, Arc::clone(&envelope), true)
                        .await
                        .result
                }
                // The writes and the removal from the parked set commit together.
                Reaction::ExactlyOnce(sink) => match self.replay_in_tx(sink, &envelope).await {
                    Ok(()) => {
                        unparked_in_tx += 1;
                        continue;
                    }
                    Err(failed) => Err(failed),
                },
            };
            match result {
                Ok(()) => done.push(entry.event_id),
                Err(failed) => {
                    if matches!(
                        failed.downcast_ref::<Error>(),
                        Some(Error::LeaseLost { .. })
                    ) {
                        return Err(lease_lost(&self.held.current()));
                    }
                    error = Some(failed.to_string());
                    break;
                }
            }
        }
        let lease = self.held.current();
        let replayed = unparked_in_tx
            + if done.is_empty() {
                0
            } else {
                self.shared.checkpoints.unpark(&lease, &done).await?
            };
        let done = done.len() + unparked_in_tx as usize;
        let still_parked = parked.len().saturating_sub(done) as u64;
        if still_parked == 0 {
            self.parked_streams.remove(stream);
        }
        Ok(ReplayReport::new(replayed, still_parked, error))
    }
}

/// The next page, read while this one is handled.
type ReadAhead = MaybeDone<BoxFuture<'static, Result<Page>>>;

/// Runs `main` to its end while polling `side` too (which may end first, or stay unfinished
/// for later): the next page is read while a batch is handled, in the same task, so catching
/// up costs no task hand-over per page.
async fn alongside<F: Future>(main: F, side: &mut ReadAhead) -> F::Output {
    let mut main = std::pin::pin!(main);
    std::future::poll_fn(|cx| {
        // Once done it stays done (its output is taken only after this returns), and
        // polling it again is a no-op.
        let _ = Pin::new(&mut *side).poll(cx);
        main.as_mut().poll(cx)
    })
    .await
}

/// The context of attempt `attempt` at `envelope` alone (in a batch of one).
fn context(
    shared: &Shared,
    partition: u32,
    envelope: &Arc<EventEnvelope>,
    attempt: u32,
    replay: bool,
) -> ReactionContext {
    Batch::one(
        Arc::clone(envelope),
        Arc::clone(&shared.def.name),
        partition,
    )
    .context(0, attempt, replay)
}

/// The `lexigram.reaction` span of one event: where it is in the log, and the trace context
/// recorded with it, so the reaction joins the trace of the request that stored it. None when
/// nothing records debug spans (the common case in production): building and entering one
/// for every event would cost more than a no-op reaction.
fn reaction_span(
    shared: &Shared,
    partition: u32,
    envelope: &EventEnvelope,
    replay: bool,
) -> tracing::Span {
    if tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "lexigram.reaction",
        subscription = %shared.def.name,
        partition,
        event_type = %envelope.event_type,
        stream_id = %envelope.stream_id,
        stream_version = envelope.stream_version,
        global_position = envelope.global_position,
        replay,
        traceparent = envelope.metadata.trace_context().map(|t| t.traceparent()),
    )
}

/// Whether a failed attempt is worth another: an event that does not decode never is.
fn retry_for(error: &BoxError) -> Retry {
    if error.is::<EventLoadError>() {
        Retry::Never
    } else {
        Retry::WhileAttemptsRemain
    }
}
