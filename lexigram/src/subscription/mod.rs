//! Durable subscriptions: catch-up then live readers of the global log, checkpointed in the
//! events' own database, partitioned and leased across processes.
//!
//! A [`Subscription`] names a reader, the event types it wants and the [`Reactor`] it calls;
//! [`Reactions`] runs subscriptions on this node. Each subscription's log is split into
//! partitions by stream (every event of a stream lands in one partition, in order); nodes
//! share the partitions through fenced leases in a [`CheckpointStore`].
//!
//! The contracts, one sentence each (the full text is `docs/subscriptions.md`):
//!
//! - **Order**: within a partition the reactor sees events in increasing global position,
//!   and every event of a stream lands in one partition.
//! - **No skip**: every committed event matching the filter after the start point reaches the
//!   reactor at least once.
//! - **Bounded redelivery**: after a crash only events after the last committed checkpoint
//!   are handled again, at most one batch per partition.
//! - **Seamless live**: catch-up and live are one cursor; the switch neither repeats nor skips.
//! - **Wake-up**: an append wakes the subscriptions of its process at once (and other
//!   processes where the backend can); every subscription also polls.
//! - **Filter**: events of other types are never fetched, and the checkpoint moves over them.
//! - **Retry, then sequenced parking**: a failing event is retried with capped, jittered
//!   exponential backoff; after the last attempt (at once when it does not decode) it and
//!   every later event of its stream are parked while other streams go on.
//! - **Exclusive commit**: a node whose lease was taken over can never commit again.
//! - **Drain**: a graceful stop commits the batch in flight and releases the leases.

mod checkpoint;
mod definition;
mod memory_projection;
mod reactions;
mod reactor;
mod registry;
mod sink;
mod task;
mod worker;

pub use checkpoint::*;
pub use definition::{StartFrom, Subscription, SubscriptionBuilder, SubscriptionOptions};
pub use memory_projection::{InMemoryProjection, MemoryProjection};
pub use reactions::{Reactions, RebuildProgress, SubscriptionStatus};
pub use reactor::{FnReactor, ReactionContext, Reactor, reactor_fn};
pub use registry::{ReactionConflict, ReactionDecl, ReactionHandler, ReactionRegistry};
pub use sink::ExactlyOnce;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sink::TransactionalReactor;
