//! A partition worker's batches for an at-least-once subscription: the reactor called for
//! each event, the checkpoint committed after the batch.
//!
//! The reactor's type is erased once per batch ([`Runner`]), not per event: the loop below is
//! compiled for the concrete reactor, the batch runs in one causal scope that follows the
//! event being handled, and every event's context shares the batch. A reaction that finishes
//! in its first poll therefore costs no allocation and no reference count of its own.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either};
use tokio::time::Instant;
use tracing::Instrument;

use super::{Exit, Shared, Worker, reaction_span, retry_for};
use crate::context::{CurrentEvent, Parent, in_scope};
use crate::delivery::{Delivered, guard, settle};
use crate::error::BoxError;
use crate::message::EventEnvelope;
use crate::subscription::reactor::{Batch, ReactionContext, Reactor};

/// A [`Reactor`] with its type erased at the batch.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Runs a page through the reactor (see [`Worker::at_least_once`]).
    fn batch<'a>(
        &'a self,
        worker: &'a mut Worker,
        events: Vec<Arc<EventEnvelope>>,
    ) -> BoxFuture<'a, Result<Option<usize>, Exit>>;

    /// Delivers one event under the subscription's policy, all attempts (a replay).
    fn deliver<'a>(
        &'a self,
        shared: &'a Shared,
        partition: u32,
        envelope: Arc<EventEnvelope>,
        replay: bool,
    ) -> BoxFuture<'a, Delivered>;
}

/// The runner of a concrete reactor.
struct Typed<R>(R);

/// `reactor`, ready for a subscription.
pub(crate) fn runner(reactor: impl Reactor) -> Arc<dyn Runner> {
    Arc::new(Typed(reactor))
}

impl<R: Reactor> Runner for Typed<R> {
    fn batch<'a>(
        &'a self,
        worker: &'a mut Worker,
        events: Vec<Arc<EventEnvelope>>,
    ) -> BoxFuture<'a, Result<Option<usize>, Exit>> {
        worker.at_least_once(&self.0, events).boxed()
    }

    fn deliver<'a>(
        &'a self,
        shared: &'a Shared,
        partition: u32,
        envelope: Arc<EventEnvelope>,
        replay: bool,
    ) -> BoxFuture<'a, Delivered> {
        deliver(shared, &self.0, partition, envelope, replay).boxed()
    }
}

impl Worker {
    /// Delivers the events of a page one by one (the checkpoint commits after them); stops
    /// early at the batch's time budget or a stop. How many were handled, or why to end.
    async fn at_least_once<R: Reactor>(
        &mut self,
        reactor: &R,
        events: Vec<Arc<EventEnvelope>>,
    ) -> Result<Option<usize>, Exit> {
        let Some(batch) = Batch::new(events, Arc::clone(&self.shared.def.name), self.partition)
        else {
            return Ok(Some(0));
        };
        // One causal scope for the batch: messages a reaction sends are caused by the event
        // it handles (the scope follows the batch's current event).
        let following: Arc<dyn CurrentEvent> = Arc::clone(&batch) as Arc<dyn CurrentEvent>;
        in_scope(
            Parent::Following(following),
            self.run_batch(reactor, &batch),
        )
        .await
    }

    async fn run_batch<R: Reactor>(
        &mut self,
        reactor: &R,
        batch: &Arc<Batch>,
    ) -> Result<Option<usize>, Exit> {
        let started = Instant::now();
        let max_batch_time = self.shared.def.options.max_batch_time;
        let mut handled = 0usize;
        // Reading the clock costs as much as a no-op reaction: look at it after a reaction
        // that waited (time passed) and every `CLOCK_EVERY` events otherwise.
        const CLOCK_EVERY: usize = 16;
        let mut waited = false;
        let mut ctx = batch.context(0, 1, false);
        for index in 0..batch.len() {
            // The loop checked both before this batch; a change since moves the versions.
            if self.lost.has_changed().unwrap_or(true) && self.is_lost() {
                return Err(Exit::LeaseLost);
            }
            if self.stop.has_changed().unwrap_or(true) && self.stopping()
                || handled > 0
                    && (waited || handled.is_multiple_of(CLOCK_EVERY))
                    && started.elapsed() >= max_batch_time
            {
                break;
            }
            ctx.move_to(index);
            match self.handle(reactor, &ctx).await {
                Some(pending) => waited = pending,
                None => return Err(Exit::LeaseLost),
            }
            self.cursor = ctx.global_position();
            handled += 1;
            crate::fault::point("subscription.after_handle").await;
        }
        Ok(Some(handled))
    }

    /// Handles one event: delivers it, or parks it (and notes its stream). `None` when the
    /// lease was lost meanwhile (the delivery is abandoned: the new owner delivers it again);
    /// otherwise whether the reaction waited (did not finish in its first poll).
    ///
    /// The first attempt is made here, inline, and watches the lease only if it waits:
    /// most reactions finish in their first poll, and a layer of futures or a watch per
    /// event would cost more than a no-op reaction. Retries go through
    /// [`Delivery`](crate::delivery::Delivery).
    async fn handle<R: Reactor>(&mut self, reactor: &R, ctx: &ReactionContext) -> Option<bool> {
        let envelope = ctx.envelope();
        if !self.parked_streams.is_empty() && self.parked_streams.contains(&envelope.stream_id) {
            self.park(envelope, 0, "an earlier event of this stream is parked; replay the stream's parked events to handle it".to_owned());
            return Some(false);
        }
        let shared = &*self.shared;
        let mut waited = false;
        let delivered = if let Some(damaged) = envelope.defect_error() {
            // No attempt can read it: parked at once.
            Delivered {
                attempts: 1,
                result: Err(damaged.into()),
            }
        } else {
            let span = reaction_span(shared, self.partition, envelope, false);
            let first = {
                let mut call =
                    std::pin::pin!(guard(instrumented(reactor.react(envelope, ctx), &span)));
                match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                    Poll::Ready(outcome) => settle(outcome),
                    Poll::Pending => {
                        waited = true;
                        let mut lost = self.lost.clone();
                        tokio::select! {
                            result = shared.delivery.finish(call) => result,
                            _ = lost.wait_for(|lost| *lost) => return None,
                        }
                    }
                }
            };
            let Err(error) = first else {
                return Some(waited);
            };
            let retries = shared.delivery.retry_after(
                &shared.retry,
                &shared.def.name,
                error,
                |n| attempt(reactor, ctx.attempt_at(n), &span),
                retry_for,
            );
            let mut lost = self.lost.clone();
            tokio::select! {
                delivered = retries => delivered,
                _ = lost.wait_for(|lost| *lost) => return None,
            }
        };
        if let Err(error) = delivered.result {
            tracing::error!(
                target: "lexigram::subscription",
                subscription = %shared.def.name,
                partition = self.partition,
                stream = %envelope.stream_id,
                stream_version = envelope.stream_version,
                global_position = envelope.global_position,
                event_type = %envelope.event_type,
                attempts = delivered.attempts,
                %error,
                "reaction failed for good; the event and the rest of its stream are parked"
            );
            self.park(envelope, delivered.attempts, error.to_string());
        }
        Some(true)
    }
}

/// `call` in `span`, when there is one.
fn instrumented<F: Future>(
    call: F,
    span: &tracing::Span,
) -> impl Future<Output = F::Output> + use<F> {
    if span.is_none() {
        Either::Left(call)
    } else {
        Either::Right(call.instrument(span.clone()))
    }
}

/// An attempt with a context of its own (a retry, a replay).
fn attempt<'a, R: Reactor>(
    reactor: &'a R,
    ctx: ReactionContext,
    span: &tracing::Span,
) -> impl Future<Output = Result<(), BoxError>> + 'a {
    instrumented(
        async move { reactor.react(ctx.envelope(), &ctx).await },
        span,
    )
}

/// Delivers one event under the subscription's policy (all attempts, with retries), in the
/// event's causal scope: the attempts made and the outcome. An undecodable event fails at
/// once.
async fn deliver<R: Reactor>(
    shared: &Shared,
    reactor: &R,
    partition: u32,
    envelope: Arc<EventEnvelope>,
    replay: bool,
) -> Delivered {
    if let Some(damaged) = envelope.defect_error() {
        return Delivered {
            attempts: 1,
            result: Err(damaged.into()),
        };
    }
    let span = reaction_span(shared, partition, &envelope, replay);
    let parent = Parent::Event(Arc::clone(&envelope));
    let batch = Batch::one(envelope, Arc::clone(&shared.def.name), partition);
    let run = shared.delivery.run(
        &shared.retry,
        &shared.def.name,
        |n| attempt(reactor, batch.context(0, n, replay), &span),
        retry_for,
    );
    in_scope(parent, run).await
}
