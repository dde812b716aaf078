//! A partition worker's batches for an exactly-once subscription: the events' writes and the
//! checkpoint in one transaction (see [`sink`](crate::subscription::ExactlyOnce)).

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use super::{Exit, Worker, context, reaction_span};
use crate::context::{Parent, in_scope};
use crate::delivery::{Retry, RetryPolicy};
use crate::error::{BoxError, Error, EventLoadError};
use crate::message::EventEnvelope;
use crate::subscription::sink::{ExactlyOnce, SinkTx};

/// Whether an error of an attempt is the lease being gone.
fn is_lease_lost(error: &BoxError) -> bool {
    matches!(error.downcast_ref::<Error>(), Some(Error::LeaseLost { .. }))
}

impl Worker {
    /// Runs a page in one transaction with the checkpoint. An event that fails ends the
    /// transaction: its writes went into it, so it is rolled back, what came before is
    /// written again in a new one that commits, and the failing event is tried again alone.
    /// (No savepoint per event: the common case, where nothing fails, costs one statement
    /// less per write and two round trips less per event.) How many events were handled,
    /// `None` when the batch was rolled back (read again from the checkpoint), or why to end.
    pub(super) async fn exactly_once(
        &mut self,
        sink: &ExactlyOnce,
        events: Vec<Arc<EventEnvelope>>,
    ) -> Result<Option<usize>, Exit> {
        let started = Instant::now();
        let max_batch_time = self.shared.def.options.max_batch_time;
        let mut tx: Option<Box<dyn SinkTx + '_>> = None;
        // The events whose writes are in `tx`, to write again if a later one fails.
        let mut in_tx: Vec<Arc<EventEnvelope>> = Vec::new();
        let mut handled = 0usize;
        for envelope in events {
            if self.is_lost() {
                return Err(Exit::LeaseLost);
            }
            if self.stopping() || started.elapsed() >= max_batch_time && handled > 0 {
                break;
            }
            let position = envelope.global_position;
            if self.parked_streams.contains(&envelope.stream_id) {
                self.park(&envelope, 0, "an earlier event of this stream is parked; replay the stream's parked events to handle it".to_owned());
            } else if let Some(damaged) = envelope.defect_error() {
                self.park_for_good(&envelope, 1, &damaged.to_string());
            } else {
                let open = match &mut tx {
                    Some(open) => open,
                    None => match sink.0.begin().await {
                        Ok(open) => tx.insert(open),
                        Err(error) => return self.roll_back(&error).await.map(|()| None),
                    },
                };
                let ctx = context(&self.shared, self.partition, &envelope, 1, false);
                let span = reaction_span(&self.shared, self.partition, &envelope, false);
                let attempt = self
                    .shared
                    .delivery
                    .attempt(in_scope(
                        Parent::Event(Arc::clone(&envelope)),
                        open.react(&envelope, &ctx),
                    ))
                    .instrument(span)
                    .await;
                if let Err(error) = attempt {
                    // Rolled back with its writes; what came before commits on its own, then
                    // this event is tried again alone.
                    drop(tx.take());
                    if !in_tx.is_empty() {
                        if !self.rewrite(sink, &in_tx).await? {
                            return Ok(None);
                        }
                    } else if !self.parking.is_empty()
                        && let Some(exit) = self.commit().await
                    {
                        // Events parked before it are recorded before the checkpoint can
                        // move past them with this event.
                        return Err(exit);
                    }
                    in_tx.clear();
                    match self.retry_alone(sink, &envelope, error).await? {
                        Ok(()) => self.committed = position,
                        Err((attempts, error)) => {
                            self.park_for_good(&envelope, attempts, &error.to_string());
                        }
                    }
                } else {
                    in_tx.push(envelope);
                }
            }
            self.cursor = position;
            handled += 1;
            crate::fault::point("subscription.after_handle").await;
        }
        if let Some(open) = tx.take()
            && !self.commit_tx(sink, open, &in_tx).await?
        {
            return Ok(None);
        }
        Ok(Some(handled))
    }

    /// Writes `events` (which succeeded in a transaction rolled back for a later event's
    /// failure) again in a new transaction and commits it at the cursor. `false` when that
    /// was rolled back too (the cursor is back at the checkpoint, and the page is read again).
    async fn rewrite(
        &mut self,
        sink: &ExactlyOnce,
        events: &[Arc<EventEnvelope>],
    ) -> Result<bool, Exit> {
        let mut open = match sink.0.begin().await {
            Ok(open) => open,
            Err(error) => return self.roll_back(&error).await.map(|()| false),
        };
        for envelope in events {
            let ctx = context(&self.shared, self.partition, envelope, 1, false);
            let span = reaction_span(&self.shared, self.partition, envelope, false);
            let written = self
                .shared
                .delivery
                .attempt(in_scope(
                    Parent::Event(Arc::clone(envelope)),
                    open.react(envelope, &ctx),
                ))
                .instrument(span)
                .await;
            if let Err(error) = written {
                drop(open);
                if is_lease_lost(&error) {
                    self.held.lost.send_replace(true);
                    return Err(Exit::LeaseLost);
                }
                let error = Error::InvalidArgument {
                    reason: format!(
                        "event {} at position {} succeeded once in this batch and failed when written again: {error}",
                        envelope.event_id, envelope.global_position
                    ),
                };
                return self.roll_back(&error).await.map(|()| false);
            }
        }
        self.commit_tx(sink, open, events).await
    }

    fn park_for_good(&mut self, envelope: &EventEnvelope, attempts: u32, error: &str) {
        tracing::error!(
            target: "lexigram::subscription",
            subscription = %self.shared.def.name,
            partition = self.partition,
            stream = %envelope.stream_id,
            stream_version = envelope.stream_version,
            global_position = envelope.global_position,
            event_type = %envelope.event_type,
            attempts,
            %error,
            "exactly-once reaction failed for good; the event and the rest of its stream are parked"
        );
        self.park(envelope, attempts, error.to_owned());
    }

    /// Commits a batch's transaction at the cursor, with the events parked meanwhile and the
    /// reactor's flush of `written` (the events written in it). When the flush fails, the
    /// events are written again one per transaction. `false` when the batch was rolled back
    /// instead (the cursor is back at the checkpoint).
    async fn commit_tx(
        &mut self,
        sink: &ExactlyOnce,
        tx: Box<dyn SinkTx + '_>,
        written: &[Arc<EventEnvelope>],
    ) -> Result<bool, Exit> {
        let lease = self.held.current();
        match tx
            .commit(&lease, self.cursor, &self.parking, &[], written)
            .await
        {
            Ok(status) => {
                self.held.lease.lock().status = status;
                self.committed = self.cursor;
                self.parking.clear();
                self.last_commit = Instant::now();
                crate::fault::point("subscription.after_commit").await;
                Ok(true)
            }
            Err(Error::LeaseLost { .. }) => {
                self.held.lost.send_replace(true);
                Err(Exit::LeaseLost)
            }
            Err(Error::ReadModel {
                step: "flush",
                source,
                ..
            }) if written.len() > 1 => {
                tracing::warn!(
                    target: "lexigram::subscription",
                    subscription = %self.shared.def.name,
                    partition = self.partition,
                    error = %source,
                    events = written.len(),
                    "a batch's flush failed; writing its events one per transaction"
                );
                self.one_by_one(sink, written).await.map(|()| true)
            }
            Err(error) => self.roll_back(&error).await.map(|()| false),
        }
    }

    /// Writes `events` (a rolled-back batch's, whose flush failed) one per transaction, in
    /// order: each with the events parked before it, so the checkpoint never passes a parked
    /// event before it is recorded; one that fails is retried and parked alone, and the later
    /// events of its stream are parked behind it.
    async fn one_by_one(
        &mut self,
        sink: &ExactlyOnce,
        events: &[Arc<EventEnvelope>],
    ) -> Result<(), Exit> {
        let mut waiting = std::mem::take(&mut self.parking);
        for envelope in events {
            let position = envelope.global_position;
            waiting.sort_by_key(|p| p.position);
            let split = waiting.partition_point(|p| p.position < position);
            let before: Vec<_> = waiting.drain(..split).collect();
            if !before.is_empty() {
                let lease = self.held.current();
                match self
                    .shared
                    .checkpoints
                    .commit(&lease, position.saturating_sub(1), &before)
                    .await
                {
                    Ok(_) => self.committed = self.committed.max(position.saturating_sub(1)),
                    Err(Error::LeaseLost { .. }) => {
                        self.held.lost.send_replace(true);
                        return Err(Exit::LeaseLost);
                    }
                    Err(error) => {
                        self.parking = before;
                        return self.roll_back(&error).await;
                    }
                }
            }
            if self.parked_streams.contains(&envelope.stream_id) {
                self.park(envelope, 0, "an earlier event of this stream is parked; replay the stream's parked events to handle it".to_owned());
            } else {
                let first = self.write_alone(sink, envelope).await?;
                if let Err(error) = first {
                    match self.retry_alone(sink, envelope, error).await? {
                        Ok(()) => self.committed = self.committed.max(position),
                        Err((attempts, error)) => {
                            self.park_for_good(envelope, attempts, &error.to_string());
                        }
                    }
                } else {
                    self.committed = self.committed.max(position);
                }
            }
            waiting.append(&mut self.parking);
        }
        self.parking = waiting;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// One attempt at `envelope` in a transaction of its own, committing the checkpoint at
    /// its position.
    async fn write_alone(
        &mut self,
        sink: &ExactlyOnce,
        envelope: &Arc<EventEnvelope>,
    ) -> Result<Result<(), BoxError>, Exit> {
        let lease = self.held.current();
        let ctx = context(&self.shared, self.partition, envelope, 1, false);
        let span = reaction_span(&self.shared, self.partition, envelope, false);
        let position = envelope.global_position;
        let attempt = self
            .shared
            .delivery
            .attempt(in_scope(
                Parent::Event(Arc::clone(envelope)),
                async {
                    let mut tx = sink.0.begin().await?;
                    tx.react(envelope, &ctx).await?;
                    tx.commit(&lease, position, &[], &[], std::slice::from_ref(envelope))
                        .await?;
                    Ok::<(), BoxError>(())
                }
                .instrument(span),
            ))
            .await;
        if let Err(error) = &attempt
            && is_lease_lost(error)
        {
            self.held.lost.send_replace(true);
            return Err(Exit::LeaseLost);
        }
        Ok(attempt)
    }

    /// Forgets an uncommitted batch: the cursor goes back to the checkpoint, the parked set to
    /// what the store has, and the worker waits a moment before reading again.
    async fn roll_back(&mut self, error: &Error) -> Result<(), Exit> {
        tracing::warn!(
            target: "lexigram::subscription",
            subscription = %self.shared.def.name,
            partition = self.partition,
            %error,
            "an exactly-once batch was rolled back; reading again from the checkpoint"
        );
        self.cursor = self.committed;
        self.parking.clear();
        if let Err(reload) = self.load_parked().await {
            tracing::warn!(target: "lexigram::subscription", subscription = %self.shared.def.name, error = %reload, "could not read the parked events again");
        }
        match self
            .pause(std::time::Duration::from_millis(200), None)
            .await
        {
            Some(exit) => Err(exit),
            None => Ok(()),
        }
    }

    /// Tries `envelope` again alone after its first attempt failed with `first`: each
    /// attempt its own transaction (the event's writes and the checkpoint past it), with the
    /// policy's waits in between and nothing held during them. `Ok(Err((attempts, error)))`
    /// when it gave up.
    async fn retry_alone(
        &mut self,
        sink: &ExactlyOnce,
        envelope: &Arc<EventEnvelope>,
        first: BoxError,
    ) -> Result<Result<(), (u32, BoxError)>, Exit> {
        if is_lease_lost(&first) {
            self.held.lost.send_replace(true);
            return Err(Exit::LeaseLost);
        }
        let policy = self.shared.retry;
        if policy.max_attempts <= 1 || first.is::<EventLoadError>() {
            return Ok(Err((1, first)));
        }
        let wait = policy.backoff.jittered(policy.backoff.first());
        if let Some(exit) = self.pause(wait, None).await {
            return Err(exit);
        }
        let rest = RetryPolicy {
            max_attempts: policy.max_attempts - 1,
            backoff: policy.backoff,
        };
        let lease = self.held.current();
        let position = envelope.global_position;
        let (shared, partition) = (Arc::clone(&self.shared), self.partition);
        let call = |attempt: u32| {
            let ctx = context(&shared, partition, envelope, attempt + 1, false);
            let span = reaction_span(&shared, partition, envelope, false);
            let lease = &lease;
            in_scope(
                Parent::Event(Arc::clone(envelope)),
                async move {
                    let mut tx = sink.0.begin().await?;
                    tx.react(envelope, &ctx).await?;
                    tx.commit(lease, position, &[], &[], std::slice::from_ref(envelope))
                        .await?;
                    Ok::<(), BoxError>(())
                }
                .instrument(span),
            )
        };
        let retry = |error: &BoxError| {
            if error.is::<EventLoadError>() || is_lease_lost(error) {
                Retry::Never
            } else {
                Retry::WhileAttemptsRemain
            }
        };
        let delivered = shared
            .delivery
            .run(&rest, &shared.def.name, call, retry)
            .await;
        match delivered.result {
            Ok(()) => {
                self.last_commit = Instant::now();
                Ok(Ok(()))
            }
            Err(error) if is_lease_lost(&error) => {
                self.held.lost.send_replace(true);
                Err(Exit::LeaseLost)
            }
            Err(error) => Ok(Err((delivered.attempts + 1, error))),
        }
    }

    /// Replays one parked event in a transaction of its own: its writes and its removal from
    /// the parked set commit together (the checkpoint does not move).
    pub(super) async fn replay_in_tx(
        &mut self,
        sink: &ExactlyOnce,
        envelope: &Arc<EventEnvelope>,
    ) -> Result<(), BoxError> {
        let lease = self.held.current();
        let ctx = context(&self.shared, self.partition, envelope, 1, true);
        let span = reaction_span(&self.shared, self.partition, envelope, true);
        let committed = self.committed;
        let id = envelope.event_id;
        self.shared
            .delivery
            .attempt(in_scope(
                Parent::Event(Arc::clone(envelope)),
                async move {
                    let mut tx = sink.0.begin().await?;
                    tx.react(envelope, &ctx).await?;
                    tx.commit(
                        &lease,
                        committed,
                        &[],
                        &[id],
                        std::slice::from_ref(envelope),
                    )
                    .await?;
                    Ok::<(), BoxError>(())
                }
                .instrument(span),
            ))
            .await
    }
}
