//! Where subscriptions keep their progress: per partition a checkpoint, a lease (owner,
//! fencing epoch, expiry), a status and the last error; per subscription the parked events and
//! the control requests for whichever node holds a partition; and the live members sharing
//! the work.
//!
//! Every write that moves progress is fenced: it names the lease's owner and epoch, and a
//! claim by another node increments the epoch, so a node whose lease was taken over can run
//! its handler but never commit ([`Error::LeaseLost`](crate::Error::LeaseLost)).
//!
//! Backends: [`InMemoryCheckpointStore`] (tokio's clock, so tests can pause time),
//! `SqliteCheckpointStore` and `PostgresCheckpointStore` (the event store's database and
//! clock, behind the `sqlite` and `postgres` features).

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::InMemoryCheckpointStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresCheckpointStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteCheckpointStore;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::message::{EventId, StreamId};

/// Identifies this process among the nodes of a deployment (default `hostname-pid-random`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id: 1 to 200 bytes, without NUL.
    pub fn new(id: impl Into<Arc<str>>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > 200 || id.contains('\0') {
            return Err(Error::InvalidArgument {
                reason: "a node id must be 1 to 200 bytes without NUL".to_owned(),
            });
        }
        Ok(Self(id))
    }

    /// `hostname-pid-random`: unique per process, readable in the checkpoint tables.
    pub fn generate() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().chars().take(64).collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_owned());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{host}-{}-{}", std::process::id(), &random[..8]).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One partition of one version of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    /// The subscription's name.
    pub subscription: Arc<str>,
    /// Its checkpoint version.
    pub version: u32,
    /// The partition's index.
    pub partition: u32,
}

/// What the runner asks the store to create.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The subscription's name.
    pub name: Arc<str>,
    /// Its checkpoint version.
    pub version: u32,
    /// How many partitions it asks for.
    pub partitions: u32,
    /// The position new checkpoints start after.
    pub start_after: u64,
}

impl SubscriptionSpec {
    /// A spec.
    pub fn new(name: Arc<str>, version: u32, partitions: u32, start_after: u64) -> Self {
        Self {
            name,
            version,
            partitions,
            start_after,
        }
    }
}

/// Whether a subscription's partitions handle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Handling events.
    Running,
    /// Paused by an operator: holding its lease, handling nothing.
    Paused,
    /// Stopped on an error it could not park; see the last error.
    Failed,
}

/// A claimed partition.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The partition.
    pub key: PartitionKey,
    /// Who holds it.
    pub owner: NodeId,
    /// The fencing epoch: every claim increments it; commits must name it.
    pub epoch: u64,
    /// The subscription's partition count now (it changes with a split).
    pub partitions: u32,
    /// The committed checkpoint when claimed.
    pub position: u64,
    /// The partition's status at the last claim or renewal.
    pub status: RunStatus,
    /// Control requests for this partition not served yet, at the last claim or renewal.
    pub open_requests: u64,
    /// A local, conservative deadline: the holder stops handling when it could not renew by
    /// then (taken before the claim or renewal was sent, plus the lease's length).
    pub valid_until: tokio::time::Instant,
}

/// An event a subscription gave up on, with every later event of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// Its global position.
    pub position: u64,
    /// Its id.
    pub event_id: EventId,
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its type.
    pub event_type: String,
    /// Attempts made (0 when parked behind an earlier event of its stream).
    pub attempts: u32,
    /// The last error (at most 2 000 characters).
    pub error: String,
}

impl ParkedEvent {
    /// A parked event; the error is cut to 2 000 characters.
    pub fn new(
        position: u64,
        event_id: EventId,
        stream: StreamId,
        stream_version: u64,
        event_type: String,
        attempts: u32,
        error: String,
    ) -> Self {
        let error = if error.chars().count() > 2_000 {
            cut(&error)
        } else {
            error
        };
        Self {
            position,
            event_id,
            stream,
            stream_version,
            event_type,
            attempts,
            error,
        }
    }
}

/// What a [`ControlRequest`] asks the holder of a partition to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// Handle the parked events of `stream` again, in order (the partition that owns the
    /// stream serves it).
    ReplayParked {
        /// The stream whose parked events are replayed.
        stream: StreamId,
    },
}

impl RequestKind {
    /// The stream whose partition serves the request.
    pub fn stream(&self) -> &StreamId {
        match self {
            Self::ReplayParked { stream } => stream,
        }
    }
}

/// What a replay of parked events did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events handled successfully and removed from the parked set.
    pub replayed: u64,
    /// Events still parked (the first of them failed again, or came after one that did).
    pub still_parked: u64,
    /// Why the replay stopped early, if it did (at most 2 000 characters).
    pub error: Option<String>,
}

impl ReplayReport {
    /// A report; the error is cut to 2 000 characters.
    pub fn new(replayed: u64, still_parked: u64, error: Option<String>) -> Self {
        Self {
            replayed,
            still_parked,
            error: error.map(|e| cut(&e)),
        }
    }
}

/// A durable request to the node holding one partition of a subscription, filed in the
/// checkpoint store by any process (one that does not run the subscription too) and served
/// by the holder at its next lease claim or renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlRequest {
    /// Its id, increasing in the order requests were filed.
    pub id: u64,
    /// The subscription.
    pub subscription: String,
    /// Its checkpoint version.
    pub version: u32,
    /// What it asks for.
    pub kind: RequestKind,
    /// What serving it did; `None` while it is open.
    pub outcome: Option<ReplayReport>,
    /// The node that served it.
    pub served_by: Option<NodeId>,
}

/// `text` cut to 2 000 characters, as error columns keep it.
pub(crate) fn cut(text: &str) -> String {
    text.chars().take(2_000).collect()
}

/// Where one partition stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PartitionState {
    /// The partition.
    pub key: PartitionKey,
    /// The subscription's partition count.
    pub partitions: u32,
    /// The committed checkpoint.
    pub position: u64,
    /// Its status.
    pub status: RunStatus,
    /// Who holds a live lease on it.
    pub owner: Option<NodeId>,
    /// The fencing epoch.
    pub epoch: u64,
    /// How long the live lease still runs.
    pub lease_expires_in: Option<Duration>,
    /// The last error recorded.
    pub last_error: Option<String>,
    /// Parked events of streams in this partition.
    pub parked: u64,
    /// The head the last rebuild replays to (the partition is rebuilding while its position
    /// is below it).
    pub rebuild_target: Option<u64>,
    /// How long ago the last rebuild started, on the store's clock.
    pub rebuild_elapsed: Option<Duration>,
}

/// Positions, leases, parked events and members of every subscription.
///
/// Every write that moves progress is fenced by a [`Lease`]: it names the owner and the
/// epoch, and a claim by another node increments the epoch, so the old holder's commits fail
/// with [`Error::LeaseLost`] and change nothing. A lease that ran out is lost too, even when
/// no one took it over yet (the holder stops at [`Lease::valid_until`] anyway).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use lexigram::subscription::{
///     CheckpointStore, InMemoryCheckpointStore, NodeId, PartitionKey, RunStatus, SubscriptionSpec,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let store = InMemoryCheckpointStore::new();
/// assert_eq!(store.register(&SubscriptionSpec::new("bank.mailer".into(), 1, 2, 0)).await?, 2);
///
/// let key = PartitionKey { subscription: Arc::from("bank.mailer"), version: 1, partition: 0 };
/// let (a, b) = (NodeId::new("node-a")?, NodeId::new("node-b")?);
/// let lease = store.claim(&key, &a, Duration::from_secs(10)).await?.expect("free");
/// assert_eq!(lease.epoch, 1);
/// assert!(store.claim(&key, &b, Duration::from_secs(10)).await?.is_none(), "a holds it");
///
/// assert_eq!(store.commit(&lease, 17, &[]).await?, RunStatus::Running);
/// store.release(&lease).await?;
/// assert_eq!(store.states(Some("bank.mailer")).await?[0].position, 17);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug + 'static {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// Creates the partitions of a new subscription at `spec.start_after`; idempotent. A
    /// subscription that has `P` partitions and now asks for `P × 2^k` is split `k` times;
    /// fewer, or another multiple, is a configuration error. Returns the partition count.
    async fn register(&self, spec: &SubscriptionSpec) -> Result<u32>;

    /// Claims a partition that is free, expired or already `me`'s (epoch + 1, lease for
    /// `ttl`); `None` when another node holds a live lease or the partition does not exist.
    async fn claim(&self, key: &PartitionKey, me: &NodeId, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends a lease still held (same owner and epoch), re-reading status and partition
    /// count; [`Error::LeaseLost`] otherwise.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Gives a partition up if the lease still holds it; a no-op otherwise.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Moves the checkpoint to `position` (never backwards) and parks `parked` (an event is
    /// parked once, however often it is committed), fenced by the lease:
    /// [`Error::LeaseLost`] and nothing written when another node holds it now. Returns the
    /// partition's status, so a pause is seen after the batch that commits.
    async fn commit(
        &self,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> Result<RunStatus>;

    /// Records an error on the partition (fenced like [`commit`](Self::commit)).
    async fn record_error(&self, lease: &Lease, error: &str) -> Result<()>;

    /// A subscription version's parked events, in position order.
    async fn parked(&self, subscription: &str, version: u32) -> Result<Vec<ParkedEvent>>;

    /// Removes parked events after a replay, fenced by a lease of the subscription; returns
    /// how many were removed.
    async fn unpark(&self, lease: &Lease, event_ids: &[EventId]) -> Result<u64>;

    /// Sets the status of every partition of a subscription version; returns how many
    /// partitions changed. Holders see it at their next renewal.
    async fn set_status(&self, subscription: &str, version: u32, status: RunStatus) -> Result<u64>;

    /// Every partition (of one subscription, or of all), by name, version and partition.
    async fn states(&self, subscription: Option<&str>) -> Result<Vec<PartitionState>>;

    /// Records that `me` is alive for `ttl` and returns the live members, sorted.
    async fn heartbeat(&self, me: &NodeId, ttl: Duration) -> Result<Vec<NodeId>>;

    /// Removes `me` from the members.
    async fn leave(&self, me: &NodeId) -> Result<()>;

    /// Files a control request for the partition that owns `kind`'s stream (now or after a
    /// split); returns its id. The holder sees it at its next claim or renewal
    /// ([`Lease::open_requests`]). An error names a subscription version not registered.
    async fn request(&self, subscription: &str, version: u32, kind: &RequestKind) -> Result<u64>;

    /// The open requests for the lease's partition, in the order they were filed.
    async fn open_requests(&self, lease: &Lease) -> Result<Vec<ControlRequest>>;

    /// Records what serving request `id` did, fenced by the lease of the partition it belongs
    /// to ([`Error::LeaseLost`] otherwise); a request already finished keeps its first outcome.
    async fn finish_request(&self, lease: &Lease, id: u64, outcome: &ReplayReport) -> Result<()>;

    /// A request, open or finished; `None` when no request has that id.
    async fn request_state(&self, id: u64) -> Result<Option<ControlRequest>>;

    /// Starts a rebuild of a subscription version: every partition back to the origin
    /// (position 0, status kept) with a new epoch, so every lease is fenced out and nothing
    /// of a batch in flight commits; the parked events forgotten; `target` (the head to replay
    /// to) and the time noted for progress. Returns how many partitions were reset; an error
    /// names a subscription version not registered.
    async fn rebuild(&self, subscription: &str, version: u32, target: u64) -> Result<u32>;

    /// Splits every partition of a subscription version in two: `i` of `P` keeps its row,
    /// `i + P` gets a copy of its checkpoint and status; every lease is fenced out. Returns the
    /// new count.
    async fn split(&self, subscription: &str, version: u32) -> Result<u32>;
}

/// The error for a subscription that asks for a partition count its stored one cannot be
/// split into exactly.
pub(crate) fn not_a_doubling(name: &str, have: u32, want: u32) -> Error {
    Error::Config {
        problems: vec![format!(
            "subscription `{name}` has {have} partitions and now asks for {want}: only doubling is exact (to {}, {}, ...); keep {have}, or start a new version",
            have.saturating_mul(2),
            have.saturating_mul(4)
        )],
    }
}

/// The error for a request to a subscription version the store does not have.
pub(crate) fn not_registered(name: &str, version: u32) -> Error {
    Error::InvalidArgument {
        reason: format!(
            "no subscription `{name}` (version {version}) is registered in the checkpoint store; start it once on some node first"
        ),
    }
}

/// The error for a lease another node holds now.
pub(crate) fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        subscription: lease.key.subscription.to_string(),
        version: lease.key.version,
        partition: lease.key.partition,
        epoch: lease.epoch,
    }
}
