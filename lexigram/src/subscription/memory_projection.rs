//! In-memory projections: a read model in the process's memory, for tests and small programs
//! on the memory store. The model and its checkpoint move together: a batch applies its events
//! to a copy of the model and the copy replaces the model only once the fenced checkpoint
//! commit succeeded, both under the model's lock, so a reader sees the model before the batch
//! or after it, and a batch whose lease was lost leaves it untouched.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::checkpoint::{CheckpointStore, InMemoryCheckpointStore, Lease, ParkedEvent, RunStatus};
use super::reactor::ReactionContext;
use super::sink::{ExactlyOnce, Sink, SinkTx};
use crate::error::{BoxError, Result};
use crate::message::{EventEnvelope, EventId};

/// A read model kept in memory: a fold of the events it reads. `apply` must leave the model
/// as it was when it returns an `Err` (check, then change), because a batch is applied to a
/// copy of the model that replaces it only when every event of the batch was applied or
/// parked. [`Default`] is the empty model a rebuild starts from.
///
/// ```
/// use std::collections::BTreeMap;
/// use lexigram::error::BoxError;
/// use lexigram::message::EventEnvelope;
/// use lexigram::subscription::{MemoryProjection, ReactionContext};
///
/// #[derive(Clone, Default)]
/// struct EventsPerStream(BTreeMap<String, u64>);
///
/// impl MemoryProjection for EventsPerStream {
///     fn apply(&mut self, event: &EventEnvelope, _ctx: &ReactionContext) -> Result<(), BoxError> {
///         *self.0.entry(event.stream_id.to_string()).or_default() += 1;
///         Ok(())
///     }
/// }
/// # let _ = lexigram::subscription::InMemoryProjection::<EventsPerStream>::new();
/// ```
pub trait MemoryProjection: Clone + Default + Send + Sync + 'static {
    /// Applies one event to the model.
    fn apply(
        &mut self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError>;
}

/// A shared in-memory read model and the handle that reads it. Cheap to clone; every clone
/// reads the same model.
///
/// Run it with [`ExactlyOnce::memory`] on the checkpoint store of the same process, or with
/// `EventsModule::memory_projection`.
pub struct InMemoryProjection<P> {
    model: Arc<tokio::sync::RwLock<P>>,
}

impl<P> Clone for InMemoryProjection<P> {
    fn clone(&self) -> Self {
        Self {
            model: Arc::clone(&self.model),
        }
    }
}

impl<P> fmt::Debug for InMemoryProjection<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryProjection").finish_non_exhaustive()
    }
}

impl<P: MemoryProjection> Default for InMemoryProjection<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: MemoryProjection> InMemoryProjection<P> {
    /// An empty model.
    pub fn new() -> Self {
        Self {
            model: Arc::new(tokio::sync::RwLock::new(P::default())),
        }
    }

    /// Reads the model as of the last committed batch.
    pub async fn read<R>(&self, read: impl FnOnce(&P) -> R) -> R {
        read(&*self.model.read().await)
    }
}

impl ExactlyOnce {
    /// Applies `projection`'s events in memory, with its checkpoints in `checkpoints` (the
    /// checkpoint store of the subscriptions that run it): a batch's effect on the model and
    /// its checkpoint commit together, and a rebuild empties the model with the checkpoints.
    pub fn memory<P: MemoryProjection>(
        checkpoints: &InMemoryCheckpointStore,
        projection: &InMemoryProjection<P>,
    ) -> Self {
        Self(Arc::new(MemorySink {
            model: Arc::clone(&projection.model),
            checkpoints: checkpoints.clone(),
        }))
    }
}

/// The sink of an in-memory projection.
struct MemorySink<P> {
    model: Arc<tokio::sync::RwLock<P>>,
    checkpoints: InMemoryCheckpointStore,
}

/// A batch: the model's write lock, and the copy the batch applies its events to.
struct MemoryTx<'a, P> {
    model: tokio::sync::RwLockWriteGuard<'a, P>,
    working: P,
    checkpoints: &'a InMemoryCheckpointStore,
}

#[async_trait]
impl<P: MemoryProjection> Sink for MemorySink<P> {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn begin(&self) -> Result<Box<dyn SinkTx + '_>> {
        let model = self.model.write().await;
        let working = model.clone();
        Ok(Box::new(MemoryTx {
            model,
            working,
            checkpoints: &self.checkpoints,
        }))
    }

    async fn rebuild(&self, name: &str, version: u32, target: u64) -> Result<u32> {
        let mut model = self.model.write().await;
        let partitions = self.checkpoints.rebuild(name, version, target).await?;
        *model = P::default();
        Ok(partitions)
    }

    async fn setup(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl<P: MemoryProjection> SinkTx for MemoryTx<'_, P> {
    async fn react(
        &mut self,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> std::result::Result<(), BoxError> {
        self.working.apply(event, ctx)
    }

    async fn commit(
        self: Box<Self>,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
        unparked: &[EventId],
        _written: &[Arc<EventEnvelope>],
    ) -> Result<RunStatus> {
        let MemoryTx {
            mut model,
            working,
            checkpoints,
        } = *self;
        let status = checkpoints.commit(lease, position, parked).await?;
        if !unparked.is_empty() {
            checkpoints.unpark(lease, unparked).await?;
        }
        *model = working;
        Ok(status)
    }
}
