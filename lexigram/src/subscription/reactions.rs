//! [`Reactions`]: the handle that starts subscriptions on this node, shares their partitions
//! with the other nodes, reports their status and stops them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::{
    CheckpointStore, ControlRequest, NodeId, ParkedEvent, PartitionKey, PartitionState,
    ReplayReport, RequestKind, RunStatus, SubscriptionSpec,
};
use super::definition::{Reaction, StartFrom, Subscription};
use super::task::Task;
use super::worker::{self, Control, Exit, Shared, Stop};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::message::StreamId;
use crate::store::{EventStore, Partition};

/// Runs durable subscriptions on this node.
///
/// Each started [`Subscription`] gets a coordinator task that registers it, claims a fair
/// share of its partitions (⌈partitions ÷ live nodes⌉) with fenced leases, gives up the excess
/// when more nodes join, and takes over the partitions of nodes whose leases expired. Each
/// claimed partition runs in a task of its own. Cheap to clone.
///
/// Stop it with [`shutdown`](Self::shutdown): batches in flight commit and leases are
/// released. Dropping the last handle without a shutdown stops every task at once, as a crash
/// would: uncommitted batches are handled again by whoever claims the partitions once the
/// leases expire.
///
/// ```
/// use std::sync::Arc;
/// use lexigram::store::InMemoryEventStore;
/// use lexigram::subscription::{reactor_fn, InMemoryCheckpointStore, Reactions, Subscription};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lexigram::Error> {
/// let reactions = Reactions::new(
///     Arc::new(InMemoryEventStore::new()),
///     Arc::new(InMemoryCheckpointStore::new()),
/// );
/// let audit = Subscription::builder("audit")
///     .reactor(reactor_fn(|event, _ctx| async move {
///         println!("{} {}", event.global_position, event.event_type);
///         Ok(())
///     }))
///     .build()?;
/// reactions.start(audit).await?;
/// reactions.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reactions {
    inner: Arc<Inner>,
}

struct Inner {
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    node: NodeId,
    running: Mutex<BTreeMap<Arc<str>, Running>>,
}

struct Running {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    requests: mpsc::Sender<Request>,
    task: Task<()>,
    held: Arc<Mutex<Vec<u32>>>,
}

enum Request {
    /// Every lease was fenced out (a rebuild started here): end the workers now and claim
    /// again at once.
    Fenced,
    /// Replay a stream's parked events if this node holds its partition.
    Replay {
        stream: StreamId,
        reply: oneshot::Sender<Routed>,
    },
}

/// Where the coordinator sent a request.
enum Routed {
    /// To the worker holding the partition here: its answer comes on the receiver.
    Here(oneshot::Receiver<Result<ReplayReport>>),
    /// No worker here holds the partition.
    NotHere,
}

impl fmt::Debug for Reactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactions")
            .field("node", &self.inner.node)
            .field("events", &self.inner.events.backend())
            .field("checkpoints", &self.inner.checkpoints.backend())
            .field(
                "running",
                &self.inner.running.lock().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How far a rebuild has come: the head it replays to (fixed when it started), the position
/// of its slowest partition, and the rate and time left estimated from the time it has run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RebuildProgress {
    /// The subscription.
    pub name: String,
    /// The head of the log when the rebuild started: it is done when every partition has
    /// passed it (it then goes on live, with no gap).
    pub target: u64,
    /// The position of the slowest partition, at most `target`; never moves backwards
    /// during one rebuild.
    pub position: u64,
    /// How long the rebuild has run, on the store's clock.
    pub elapsed: Duration,
    /// Positions per second so far (`None` before any time has passed).
    pub rate: Option<f64>,
    /// Time left at that rate (`None` without a rate; zero when done).
    pub eta: Option<Duration>,
}

impl RebuildProgress {
    /// Whether every partition has passed the target.
    pub fn is_done(&self) -> bool {
        self.position >= self.target
    }

    /// The share done, from 0 to 1 (1 for an empty log).
    pub fn fraction(&self) -> f64 {
        if self.target == 0 {
            1.0
        } else {
            self.position as f64 / self.target as f64
        }
    }

    /// The progress of the last rebuild recorded in `states` (one subscription version's
    /// partitions); `None` when it was never rebuilt.
    fn from_states(name: &str, states: &[PartitionState]) -> Option<Self> {
        let target = states.iter().filter_map(|s| s.rebuild_target).max()?;
        let position = states
            .iter()
            .map(|s| s.position.min(target))
            .min()
            .unwrap_or(target);
        let elapsed = states
            .iter()
            .filter_map(|s| s.rebuild_elapsed)
            .max()
            .unwrap_or_default();
        let secs = elapsed.as_secs_f64();
        let rate = (secs > 0.0).then(|| position as f64 / secs);
        let eta = if position >= target {
            Some(Duration::ZERO)
        } else {
            rate.filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(((target - position) as f64 / r).min(1e9)))
        };
        Some(Self {
            name: name.to_owned(),
            target,
            position,
            elapsed,
            rate,
            eta,
        })
    }
}

/// Where one subscription stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionStatus {
    /// The subscription.
    pub name: String,
    /// The highest position in the event store.
    pub head: u64,
    /// How far the slowest partition trails the head (in positions, an upper bound on the
    /// events it has not handled yet).
    pub lag: u64,
    /// Events parked in all partitions.
    pub parked: u64,
    /// The partitions this node holds.
    pub held_here: Vec<u32>,
    /// Every partition, as the checkpoint store has it.
    pub partitions: Vec<PartitionState>,
    /// What holds every reader of the log back now (committed events not readable yet, and
    /// the open transaction they wait behind), if anything: see
    /// [`EventStore::held_back`](crate::store::EventStore::held_back).
    pub held_back_by: Option<crate::store::HeldBack>,
}

impl Reactions {
    /// Subscriptions over `events`, checkpointed in `checkpoints`, as a node with a generated
    /// id (`hostname-pid-random`).
    pub fn new(events: Arc<dyn EventStore>, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        Self::with_node(events, checkpoints, NodeId::generate())
    }

    /// The same, as the node `node` (unique among the processes sharing the database).
    pub fn with_node(
        events: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        node: NodeId,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                events,
                checkpoints,
                node,
                running: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> &Arc<dyn CheckpointStore> {
        &self.inner.checkpoints
    }

    /// Registers `subscription` (creating its checkpoints, or splitting its partitions when
    /// it now asks for a power-of-two multiple of what it had) and starts running it here.
    ///
    /// Fails when a subscription of the same name already runs on this node, or when the
    /// checkpoint store refuses the registration.
    pub async fn start(&self, subscription: Subscription) -> Result<()> {
        if self.inner.running.lock().contains_key(&subscription.name) {
            return Err(Error::Config {
                problems: vec![format!(
                    "subscription `{}` is started twice on this node; give each subscription its own name",
                    subscription.name
                )],
            });
        }
        if let Reaction::ExactlyOnce(sink) = &subscription.reaction {
            sink.0.setup(&subscription.name).await?;
        }
        let start_after = match subscription.start {
            StartFrom::Origin => 0,
            StartFrom::Now => self.inner.events.last_position().await?,
            StartFrom::After(position) => position,
        };
        let spec = SubscriptionSpec::new(
            Arc::clone(&subscription.name),
            subscription.version,
            subscription.partitions,
            start_after,
        );
        let partitions = self.inner.checkpoints.register(&spec).await?;
        let shared = Arc::new(Shared {
            delivery: Delivery::serial(subscription.options.handler_timeout),
            retry: subscription.options.retry_policy(),
            def: subscription,
            events: Arc::clone(&self.inner.events),
            checkpoints: Arc::clone(&self.inner.checkpoints),
        });
        let (stop, stopped) = watch::channel(false);
        let (requests, incoming) = mpsc::channel(16);
        let held = Arc::new(Mutex::new(Vec::new()));
        let coordinator = Coordinator {
            shared: Arc::clone(&shared),
            node: self.inner.node.clone(),
            partitions,
            workers: BTreeMap::new(),
            held: Arc::clone(&held),
        };
        let task = Task::spawn(coordinator.run(stopped, incoming));
        let name = Arc::clone(&shared.def.name);
        let mut running = self.inner.running.lock();
        if running.contains_key(&name) {
            task.abort();
            return Err(Error::Config {
                problems: vec![format!(
                    "subscription `{name}` is started twice on this node"
                )],
            });
        }
        running.insert(
            name,
            Running {
                shared,
                stop,
                requests,
                task,
                held,
            },
        );
        Ok(())
    }

    /// The names of the subscriptions running here.
    pub fn running(&self) -> Vec<String> {
        self.inner
            .running
            .lock()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// Where a subscription stands: its partitions' checkpoints and leases, lag and parked
    /// events.
    pub async fn status(&self, name: &str) -> Result<SubscriptionStatus> {
        let held_here = self
            .inner
            .running
            .lock()
            .get(name)
            .map(|r| r.held.lock().clone())
            .unwrap_or_default();
        let partitions = self.inner.checkpoints.states(Some(name)).await?;
        if partitions.is_empty() {
            return Err(unknown(name));
        }
        let head = self.inner.events.last_position().await?;
        let held_back_by = self.inner.events.held_back().await?;
        let slowest = partitions.iter().map(|p| p.position).min().unwrap_or(0);
        Ok(SubscriptionStatus {
            name: name.to_owned(),
            head,
            lag: head.saturating_sub(slowest),
            parked: partitions.iter().map(|p| p.parked).sum(),
            held_here,
            partitions,
            held_back_by,
        })
    }

    /// The events parked by a subscription, in position order.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        let version = self.version_of(name).await?;
        self.inner.checkpoints.parked(name, version).await
    }

    /// Handles the parked events of `stream` again, in their order, on the partition that owns
    /// the stream; each that succeeds leaves the parked set, and the stream flows again once
    /// none is left. The checkpoint does not move.
    ///
    /// Works from any process sharing the checkpoint store: when this node holds the partition
    /// the replay runs at once; otherwise it files a durable request
    /// ([`request_replay`](Self::request_replay)) that the holder serves at its next lease
    /// renewal (`renew_every`), or the next node to claim the partition when none holds it.
    /// Waits for the outcome at most `timeout`: then [`Error::Timeout`], and a filed request
    /// stays filed ([`control_request`](Self::control_request) shows its outcome later).
    pub async fn replay_parked(
        &self,
        name: &str,
        stream: &str,
        timeout: Duration,
    ) -> Result<ReplayReport> {
        let deadline = tokio::time::Instant::now() + timeout;
        let requests = self
            .inner
            .running
            .lock()
            .get(name)
            .map(|r| r.requests.clone());
        if let Some(requests) = requests {
            let (reply, routed) = oneshot::channel();
            let request = Request::Replay {
                stream: StreamId::from(stream),
                reply,
            };
            if requests.send(request).await.is_ok()
                && let Ok(Routed::Here(answer)) = routed.await
            {
                return match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(report)) => report,
                    Ok(Err(_)) => Err(Error::InvalidArgument {
                        reason: format!(
                            "the partition of stream `{stream}` in subscription `{name}` stopped before replaying; try again"
                        ),
                    }),
                    Err(_) => Err(Error::Timeout {
                        operation: format!(
                            "replaying the parked events of stream `{stream}` in subscription `{name}` (the replay goes on; see `Reactions::parked`)"
                        ),
                        after: timeout,
                    }),
                };
            }
        }
        let id = self.request_replay(name, stream).await?;
        self.await_request(id, deadline, timeout).await
    }

    /// Files a durable request to replay the parked events of `stream` and returns its id at
    /// once. Whichever node holds the stream's partition serves it at its next lease renewal
    /// (or claim); [`control_request`](Self::control_request) shows its outcome. This node
    /// need not run the subscription (an operator's tool can file it).
    pub async fn request_replay(&self, name: &str, stream: &str) -> Result<u64> {
        let version = self.version_of(name).await?;
        let kind = RequestKind::ReplayParked {
            stream: StreamId::from(stream),
        };
        self.inner.checkpoints.request(name, version, &kind).await
    }

    /// A control request by id, open or served (with its outcome and the node that served
    /// it); `None` when no request has that id.
    pub async fn control_request(&self, id: u64) -> Result<Option<ControlRequest>> {
        self.inner.checkpoints.request_state(id).await
    }

    /// Waits until request `id` is served, until `deadline`.
    async fn await_request(
        &self,
        id: u64,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<ReplayReport> {
        let mut wait = Duration::from_millis(5);
        loop {
            match self.inner.checkpoints.request_state(id).await {
                Ok(Some(ControlRequest {
                    outcome: Some(outcome),
                    ..
                })) => return Ok(outcome),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Error::InvalidArgument {
                        reason: format!(
                            "control request {id} is gone from the checkpoint store (its rows were removed outside lexigram)"
                        ),
                    });
                }
                // A store that is briefly away is asked again until the deadline.
                Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {}
                Err(error) => return Err(error),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for control request {id} to be served (it stays filed: the node that holds, or next claims, the partition serves it; see `Reactions::control_request({id})`)"
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    /// Rebuilds an exactly-once subscription (a projection) from the origin while appends
    /// go on: in one transaction its reactor's [`reset`](super::TransactionalReactor::reset)
    /// empties the read model and every partition's checkpoint goes back to the origin with a
    /// new epoch (so no batch in flight anywhere commits), its parked events forgotten; then
    /// the partitions replay to the head observed now and run live, without a gap. Progress
    /// is in [`rebuild_progress`](Self::rebuild_progress), here and in every other process.
    ///
    /// Runs where the subscription runs (the reset is its code). A paused subscription stays
    /// paused (its rebuild goes on once resumed); pausing one that rebuilds cancels nothing but
    /// stops it where it is, and a new rebuild starts over from the reset. At-least-once
    /// reactions are refused: a rebuild would repeat every side effect of the history (start a
    /// new `version` to replay one on purpose).
    pub async fn rebuild(&self, name: &str) -> Result<RebuildProgress> {
        let shared = self
            .inner
            .running
            .lock()
            .get(name)
            .map(|r| Arc::clone(&r.shared))
            .ok_or_else(|| not_running(name))?;
        let Reaction::ExactlyOnce(sink) = &shared.def.reaction else {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "subscription `{name}` is at-least-once: a rebuild would run its side effects again for every stored event; only exactly-once reactions (projections) rebuild — start a new version to replay it on purpose"
                ),
            });
        };
        let target = self.inner.events.last_position().await?;
        sink.0.rebuild(name, shared.def.version, target).await?;
        // This node's workers learn it now; other nodes at their next commit or renewal.
        let requests = self
            .inner
            .running
            .lock()
            .get(name)
            .map(|r| r.requests.clone());
        if let Some(requests) = requests {
            let _ = requests.send(Request::Fenced).await;
        }
        tracing::info!(target: "lexigram::subscription", subscription = name, target, "rebuild started");
        self.rebuild_progress(name)
            .await?
            .ok_or_else(|| unknown(name))
    }

    /// The progress of a subscription's last rebuild (done or not), from the checkpoint
    /// store, so any process sharing it can watch; `None` when it was never rebuilt.
    pub async fn rebuild_progress(&self, name: &str) -> Result<Option<RebuildProgress>> {
        let version = self.version_of(name).await?;
        let states: Vec<PartitionState> = self
            .inner
            .checkpoints
            .states(Some(name))
            .await?
            .into_iter()
            .filter(|s| s.key.version == version)
            .collect();
        Ok(RebuildProgress::from_states(name, &states))
    }

    /// Waits until the last rebuild of `name` is done, calling `progress` each time its
    /// position moves (and once at the start), or until `timeout` ([`Error::Timeout`]; the
    /// rebuild goes on). A person watching gets a line or a bar from `progress`.
    pub async fn wait_rebuilt(
        &self,
        name: &str,
        timeout: Duration,
        mut progress: impl FnMut(&RebuildProgress),
    ) -> Result<RebuildProgress> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<u64> = None;
        loop {
            match self.rebuild_progress(name).await {
                Ok(Some(now)) => {
                    if last != Some(now.position) {
                        last = Some(now.position);
                        progress(&now);
                    }
                    if now.is_done() {
                        return Ok(now);
                    }
                }
                Ok(None) => {
                    return Err(Error::InvalidArgument {
                        reason: format!("subscription `{name}` was never rebuilt"),
                    });
                }
                Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {}
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!("waiting for the rebuild of subscription `{name}`"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pauses a subscription on every node: each partition finishes its batch in flight and
    /// handles nothing more until [`resume`](Self::resume) (a node sees it when it commits
    /// that batch, or at its next lease renewal when it is idle).
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.set_status(name, RunStatus::Paused).await
    }

    /// Resumes a paused subscription on every node.
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.set_status(name, RunStatus::Running).await
    }

    async fn set_status(&self, name: &str, status: RunStatus) -> Result<()> {
        let version = self.version_of(name).await?;
        self.inner
            .checkpoints
            .set_status(name, version, status)
            .await?;
        Ok(())
    }

    /// Splits every partition of a subscription in two, exactly (partition *i* of *P*
    /// becomes *i* and *i + P* of *2P*, both at *i*'s checkpoint). Current leases are fenced
    /// out; their uncommitted batches are handled again by the new owners. Returns the new
    /// partition count.
    pub async fn split(&self, name: &str) -> Result<u32> {
        let version = self.version_of(name).await?;
        self.inner.checkpoints.split(name, version).await
    }

    /// Waits until every partition of `name` has committed a checkpoint at or beyond
    /// `position`, or `timeout` passes ([`Error::Timeout`]). A checkpoint store that is
    /// briefly unavailable is asked again until then.
    pub async fn wait_for(&self, name: &str, position: u64, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A store that is briefly away (a dropped connection) is asked again until the
            // deadline; any other error ends the wait.
            match self.inner.checkpoints.states(Some(name)).await {
                Ok(states)
                    if !states.is_empty() && states.iter().all(|s| s.position >= position) =>
                {
                    return Ok(());
                }
                Ok(_) => {}
                Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {}
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for subscription `{name}` to reach position {position}"
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops one subscription here: its partitions commit their batch in flight and release
    /// their leases, within its `drain_timeout` (batches still running then are abandoned,
    /// uncommitted, and handled again by the next owner).
    pub async fn stop(&self, name: &str) -> Result<()> {
        let running = self.inner.running.lock().remove(name);
        match running {
            Some(running) => stop_one(running).await,
            None => Err(not_running(name)),
        }
    }

    /// Stops every subscription here (see [`stop`](Self::stop)) and leaves the members.
    pub async fn shutdown(&self) -> Result<()> {
        let all: Vec<Running> = std::mem::take(&mut *self.inner.running.lock())
            .into_values()
            .collect();
        let mut first_error = None;
        for result in futures_util::future::join_all(all.into_iter().map(stop_one)).await {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        if let Err(error) = self.inner.checkpoints.leave(&self.inner.node).await {
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn version_of(&self, name: &str) -> Result<u32> {
        if let Some(running) = self.inner.running.lock().get(name) {
            return Ok(running.shared.def.version);
        }
        let states = self.inner.checkpoints.states(Some(name)).await?;
        states
            .iter()
            .map(|s| s.key.version)
            .max()
            .ok_or_else(|| unknown(name))
    }
}

async fn stop_one(running: Running) -> Result<()> {
    let drain = running.shared.def.options.drain_timeout;
    running.stop.send_replace(true);
    let mut task = running.task;
    // The coordinator drains its workers within `drain_timeout`; give it a little more.
    match tokio::time::timeout(drain + Duration::from_millis(500), task.join()).await {
        Ok(_) => Ok(()),
        Err(_) => {
            task.abort();
            Err(Error::ShutdownTimeout {
                component: "durable subscription",
                deadline: drain,
                abandoned: 0,
            })
        }
    }
}

fn unknown(name: &str) -> Error {
    Error::InvalidArgument {
        reason: format!("no subscription `{name}` is registered in the checkpoint store"),
    }
}

fn not_running(name: &str) -> Error {
    Error::InvalidArgument {
        reason: format!(
            "subscription `{name}` is not running on this node; start it here (or ask the node that runs it)"
        ),
    }
}

struct WorkerHandle {
    stop: watch::Sender<Stop>,
    control: mpsc::Sender<Control>,
    task: Task<Exit>,
}

/// Shares one subscription's partitions with the other nodes and runs the claimed ones.
struct Coordinator {
    shared: Arc<Shared>,
    node: NodeId,
    partitions: u32,
    workers: BTreeMap<u32, WorkerHandle>,
    held: Arc<Mutex<Vec<u32>>>,
}

impl Coordinator {
    async fn run(
        mut self,
        mut stopped: watch::Receiver<bool>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        let claim_interval = self.shared.def.options.claim_interval;
        loop {
            self.reap();
            if let Err(error) = self.rebalance().await {
                tracing::warn!(
                    target: "lexigram::subscription",
                    subscription = %self.shared.def.name,
                    %error,
                    "could not share partitions; retrying"
                );
            }
            self.publish_held();
            tokio::select! {
                () = tokio::time::sleep(claim_interval) => {}
                _ = stopped.changed() => break,
                request = requests.recv() => match request {
                    Some(request) => self.route(request).await,
                    None => break,
                },
            }
            if *stopped.borrow() {
                break;
            }
        }
        self.drain().await;
    }

    fn publish_held(&self) {
        *self.held.lock() = self.workers.keys().copied().collect();
    }

    /// Forgets workers that ended (lease lost, released, failed).
    fn reap(&mut self) {
        self.workers.retain(|_, worker| !worker.task.is_finished());
    }

    async fn rebalance(&mut self) -> Result<()> {
        let options = &self.shared.def.options;
        let members = self
            .shared
            .checkpoints
            .heartbeat(&self.node, options.lease_ttl)
            .await?;
        // The partition count and who holds what, as the store has them now: a split made
        // elsewhere is seen here within one round even when no claim succeeds.
        let states = self
            .shared
            .checkpoints
            .states(Some(&self.shared.def.name))
            .await?;
        let states: Vec<_> = states
            .into_iter()
            .filter(|s| s.key.version == self.shared.def.version)
            .collect();
        if let Some(count) = states.iter().map(|s| s.partitions).max() {
            self.partitions = count;
        }
        let taken = |partition: u32| {
            states.iter().any(|s| {
                s.key.partition == partition
                    && s.lease_expires_in.is_some()
                    && s.owner.as_ref().is_some_and(|owner| owner != &self.node)
            })
        };
        let live = members.len().max(1) as u32;
        let target = self.partitions.div_ceil(live) as usize;
        let held = self.workers.len();
        if held > target {
            // Give up the excess, highest partitions first: they commit, then release.
            let excess: Vec<u32> = self
                .workers
                .keys()
                .rev()
                .take(held - target)
                .copied()
                .collect();
            for partition in excess {
                if let Some(worker) = self.workers.get(&partition) {
                    worker.stop.send_replace(Stop::Release);
                }
            }
            return Ok(());
        }
        let me = members.iter().position(|m| m == &self.node).unwrap_or(0) as u32;
        let offset = (me * target as u32) % self.partitions.max(1);
        let mut index = 0;
        while index < self.partitions && self.workers.len() < target {
            let partition = (offset + index) % self.partitions;
            index += 1;
            if self.workers.contains_key(&partition) || taken(partition) {
                continue;
            }
            let key = PartitionKey {
                subscription: Arc::clone(&self.shared.def.name),
                version: self.shared.def.version,
                partition,
            };
            let Some(lease) = self
                .shared
                .checkpoints
                .claim(&key, &self.node, options.lease_ttl)
                .await?
            else {
                continue;
            };
            if lease.partitions != self.partitions {
                // Split meanwhile: claim again with the new layout.
                self.partitions = lease.partitions;
            }
            tracing::info!(
                target: "lexigram::subscription",
                subscription = %self.shared.def.name,
                partition,
                epoch = lease.epoch,
                position = lease.position,
                node = %self.node,
                "claimed a partition"
            );
            let (stop, stop_rx) = watch::channel(Stop::Run);
            let (control, control_rx) = mpsc::channel(4);
            let task = Task::spawn(worker::run(
                Arc::clone(&self.shared),
                lease,
                stop_rx,
                control_rx,
            ));
            self.workers.insert(
                partition,
                WorkerHandle {
                    stop,
                    control,
                    task,
                },
            );
        }
        Ok(())
    }

    async fn route(&mut self, request: Request) {
        match request {
            Request::Fenced => {
                for worker in self.workers.values() {
                    let _ = worker.control.send(Control::Fenced).await;
                }
                let wait = self.shared.def.options.drain_timeout;
                for (_, worker) in std::mem::take(&mut self.workers) {
                    let mut task = worker.task;
                    if tokio::time::timeout(wait, task.join()).await.is_err() {
                        task.abort();
                    }
                }
            }
            Request::Replay { stream, reply } => {
                let partition = Partition::of(stream.as_str(), self.partitions);
                let routed = match self.workers.get(&partition) {
                    Some(worker) if !worker.task.is_finished() => {
                        let (answer, answered) = oneshot::channel();
                        let control = Control::ReplayParked {
                            stream,
                            reply: answer,
                        };
                        match worker.control.send(control).await {
                            Ok(()) => Routed::Here(answered),
                            Err(_) => Routed::NotHere,
                        }
                    }
                    _ => Routed::NotHere,
                };
                let _ = reply.send(routed);
            }
        }
    }

    /// Asks every worker to commit and release, and waits for them within `drain_timeout`.
    async fn drain(&mut self) {
        for worker in self.workers.values() {
            worker.stop.send_replace(Stop::Release);
        }
        let drain = self.shared.def.options.drain_timeout;
        let deadline = tokio::time::Instant::now() + drain;
        for (partition, worker) in std::mem::take(&mut self.workers) {
            let mut task = worker.task;
            if tokio::time::timeout_at(deadline, task.join())
                .await
                .is_err()
            {
                tracing::warn!(
                    target: "lexigram::subscription",
                    subscription = %self.shared.def.name,
                    partition,
                    ?drain,
                    "a batch did not finish within the drain timeout; abandoned uncommitted"
                );
                task.abort();
            }
        }
        self.publish_held();
    }
}
