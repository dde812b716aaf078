//! The in-memory checkpoint store: for tests and single-process apps on the memory event
//! store. Leases run on tokio's clock, so a test with a paused clock controls expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    CheckpointStore, ControlRequest, Lease, NodeId, ParkedEvent, PartitionKey, PartitionState,
    ReplayReport, RequestKind, RunStatus, SubscriptionSpec, lease_lost, not_a_doubling,
};
use crate::error::{Error, Result};
use crate::message::EventId;
use crate::store::Partition;

/// Checkpoints in memory, lost with the process. Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    subscriptions: BTreeMap<(Arc<str>, u32), Sub>,
    members: BTreeMap<NodeId, Instant>,
    /// Control requests by id (ids from 1).
    requests: BTreeMap<u64, ControlRequest>,
}

#[derive(Debug)]
struct Sub {
    rows: Vec<Row>,
    parked: BTreeMap<EventId, ParkedEvent>,
}

#[derive(Debug, Clone)]
struct Row {
    position: u64,
    status: RunStatus,
    owner: Option<NodeId>,
    epoch: u64,
    until: Option<Instant>,
    last_error: Option<String>,
    rebuild: Option<(u64, Instant)>,
}

impl Row {
    fn new(position: u64) -> Self {
        Self {
            position,
            status: RunStatus::Running,
            owner: None,
            epoch: 0,
            until: None,
            last_error: None,
            rebuild: None,
        }
    }

    fn held_by(&self, lease: &Lease, now: Instant) -> bool {
        self.owner.as_ref() == Some(&lease.owner)
            && self.epoch == lease.epoch
            && self.until.is_some_and(|until| until > now)
    }
}

impl Sub {
    /// Partition `i` of `P` keeps its row; `i + P` copies its checkpoint and status; every
    /// lease is fenced out.
    fn split(&mut self) {
        let copies: Vec<Row> = self
            .rows
            .iter()
            .map(|r| Row {
                status: r.status,
                rebuild: r.rebuild,
                ..Row::new(r.position)
            })
            .collect();
        self.rows.extend(copies);
        for row in &mut self.rows {
            row.epoch += 1;
            row.owner = None;
            row.until = None;
        }
    }
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn key_of(lease: &Lease) -> (Arc<str>, u32) {
    (Arc::clone(&lease.key.subscription), lease.key.version)
}

/// The row a lease still holds, with its subscription's parked events and partition count.
struct Held<'a> {
    row: &'a mut Row,
    parked: &'a mut BTreeMap<EventId, ParkedEvent>,
    partitions: u32,
}

/// Whether `request` is open and belongs to partition `partition` of `partitions` of the
/// subscription version `key`.
fn open_for(
    request: &ControlRequest,
    key: &(Arc<str>, u32),
    partition: u32,
    partitions: u32,
) -> bool {
    request.outcome.is_none()
        && *request.subscription == *key.0
        && request.version == key.1
        && Partition::of(request.kind.stream().as_str(), partitions) == partition
}

impl State {
    /// Open requests for partition `partition` of `partitions` of `key`.
    fn open_requests(&self, key: &(Arc<str>, u32), partition: u32, partitions: u32) -> u64 {
        self.requests
            .values()
            .filter(|r| open_for(r, key, partition, partitions))
            .count() as u64
    }

    /// The partition `lease` names, if the lease still holds it (same owner and epoch, not
    /// expired at `now`); [`Error::LeaseLost`] otherwise.
    fn held(&mut self, lease: &Lease, now: Instant) -> Result<Held<'_>> {
        let Sub { rows, parked } = self
            .subscriptions
            .get_mut(&key_of(lease))
            .ok_or_else(|| lease_lost(lease))?;
        let partitions = rows.len() as u32;
        let row = rows
            .get_mut(lease.key.partition as usize)
            .filter(|row| row.held_by(lease, now))
            .ok_or_else(|| lease_lost(lease))?;
        Ok(Held {
            row,
            parked,
            partitions,
        })
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn register(&self, spec: &SubscriptionSpec) -> Result<u32> {
        let mut state = self.state.lock();
        let sub = state
            .subscriptions
            .entry((Arc::clone(&spec.name), spec.version))
            .or_insert_with(|| Sub {
                rows: (0..spec.partitions.max(1))
                    .map(|_| Row::new(spec.start_after))
                    .collect(),
                parked: BTreeMap::new(),
            });
        let mut have = sub.rows.len() as u32;
        let want = spec.partitions.max(1);
        if want != have {
            if want < have || !want.is_multiple_of(have) || !(want / have).is_power_of_two() {
                return Err(not_a_doubling(&spec.name, have, want));
            }
            while have < want {
                sub.split();
                have *= 2;
            }
        }
        Ok(have)
    }

    async fn claim(&self, key: &PartitionKey, me: &NodeId, ttl: Duration) -> Result<Option<Lease>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let Some(sub) = state
            .subscriptions
            .get_mut(&(Arc::clone(&key.subscription), key.version))
        else {
            return Ok(None);
        };
        let partitions = sub.rows.len() as u32;
        let Some(row) = sub.rows.get_mut(key.partition as usize) else {
            return Ok(None);
        };
        let free = row.owner.is_none()
            || row.owner.as_ref() == Some(me)
            || row.until.is_none_or(|until| until <= now);
        if !free {
            return Ok(None);
        }
        row.owner = Some(me.clone());
        row.epoch += 1;
        row.until = Some(now + ttl);
        let (epoch, position, status) = (row.epoch, row.position, row.status);
        let sub_key = (Arc::clone(&key.subscription), key.version);
        Ok(Some(Lease {
            key: key.clone(),
            owner: me.clone(),
            epoch,
            partitions,
            position,
            status,
            open_requests: state.open_requests(&sub_key, key.partition, partitions),
            valid_until: now + ttl,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let held = state.held(lease, now)?;
        held.row.until = Some(now + ttl);
        let mut renewed = lease.clone();
        renewed.partitions = held.partitions;
        renewed.status = held.row.status;
        renewed.valid_until = now + ttl;
        renewed.open_requests =
            state.open_requests(&key_of(lease), lease.key.partition, renewed.partitions);
        Ok(renewed)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let now = Instant::now();
        if let Ok(held) = self.state.lock().held(lease, now) {
            held.row.owner = None;
            held.row.until = None;
        }
        Ok(())
    }

    async fn commit(
        &self,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> Result<RunStatus> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let Held {
            row,
            parked: stored,
            ..
        } = state.held(lease, now)?;
        row.position = row.position.max(position);
        row.last_error = None;
        for event in parked {
            stored.entry(event.event_id).or_insert_with(|| {
                let mut event = event.clone();
                if event.error.chars().count() > 2_000 {
                    event.error = super::cut(&event.error);
                }
                event
            });
        }
        Ok(row.status)
    }

    async fn record_error(&self, lease: &Lease, error: &str) -> Result<()> {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.held(lease, now)?.row.last_error = Some(super::cut(error));
        Ok(())
    }

    async fn parked(&self, subscription: &str, version: u32) -> Result<Vec<ParkedEvent>> {
        let state = self.state.lock();
        let mut parked: Vec<ParkedEvent> = state
            .subscriptions
            .get(&(Arc::from(subscription), version))
            .map(|sub| sub.parked.values().cloned().collect())
            .unwrap_or_default();
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    async fn unpark(&self, lease: &Lease, event_ids: &[EventId]) -> Result<u64> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let Held {
            parked, partitions, ..
        } = state.held(lease, now)?;
        // Only events of the lease's partition: another partition's holder replays those.
        let removed = event_ids
            .iter()
            .filter(|id| {
                let ours = parked.get(*id).is_some_and(|p| {
                    Partition::of(p.stream.as_str(), partitions) == lease.key.partition
                });
                ours && parked.remove(*id).is_some()
            })
            .count();
        Ok(removed as u64)
    }

    async fn set_status(&self, subscription: &str, version: u32, status: RunStatus) -> Result<u64> {
        let mut state = self.state.lock();
        let Some(sub) = state
            .subscriptions
            .get_mut(&(Arc::from(subscription), version))
        else {
            return Ok(0);
        };
        let mut changed = 0;
        for row in &mut sub.rows {
            if row.status != status {
                row.status = status;
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn states(&self, subscription: Option<&str>) -> Result<Vec<PartitionState>> {
        let now = Instant::now();
        let state = self.state.lock();
        let mut states = Vec::new();
        for ((name, version), sub) in &state.subscriptions {
            if subscription.is_some_and(|wanted| wanted != &**name) {
                continue;
            }
            let total = sub.rows.len() as u32;
            for (index, row) in sub.rows.iter().enumerate() {
                let live = row.until.filter(|until| *until > now);
                let parked = sub
                    .parked
                    .values()
                    .filter(|p| Partition::of(p.stream.as_str(), total) == index as u32)
                    .count() as u64;
                states.push(PartitionState {
                    key: PartitionKey {
                        subscription: Arc::clone(name),
                        version: *version,
                        partition: index as u32,
                    },
                    partitions: total,
                    position: row.position,
                    status: row.status,
                    owner: live.and(row.owner.clone()),
                    epoch: row.epoch,
                    lease_expires_in: live.map(|until| until - now),
                    last_error: row.last_error.clone(),
                    parked,
                    rebuild_target: row.rebuild.map(|(target, _)| target),
                    rebuild_elapsed: row.rebuild.map(|(_, started)| now - started),
                });
            }
        }
        Ok(states)
    }

    async fn heartbeat(&self, me: &NodeId, ttl: Duration) -> Result<Vec<NodeId>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.members.insert(me.clone(), now + ttl);
        state.members.retain(|_, until| *until > now);
        Ok(state.members.keys().cloned().collect())
    }

    async fn leave(&self, me: &NodeId) -> Result<()> {
        self.state.lock().members.remove(me);
        Ok(())
    }

    async fn request(&self, subscription: &str, version: u32, kind: &RequestKind) -> Result<u64> {
        let mut state = self.state.lock();
        if !state
            .subscriptions
            .contains_key(&(Arc::from(subscription), version))
        {
            return Err(super::not_registered(subscription, version));
        }
        let id = state.requests.keys().next_back().map_or(1, |last| last + 1);
        state.requests.insert(
            id,
            ControlRequest {
                id,
                subscription: subscription.to_owned(),
                version,
                kind: kind.clone(),
                outcome: None,
                served_by: None,
            },
        );
        Ok(id)
    }

    async fn open_requests(&self, lease: &Lease) -> Result<Vec<ControlRequest>> {
        let state = self.state.lock();
        let key = key_of(lease);
        let Some(sub) = state.subscriptions.get(&key) else {
            return Ok(Vec::new());
        };
        let partitions = sub.rows.len() as u32;
        Ok(state
            .requests
            .values()
            .filter(|r| open_for(r, &key, lease.key.partition, partitions))
            .cloned()
            .collect())
    }

    async fn finish_request(&self, lease: &Lease, id: u64, outcome: &ReplayReport) -> Result<()> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let partitions = state.held(lease, now)?.partitions;
        let key = key_of(lease);
        if let Some(request) = state.requests.get_mut(&id)
            && open_for(request, &key, lease.key.partition, partitions)
        {
            request.outcome = Some(ReplayReport::new(
                outcome.replayed,
                outcome.still_parked,
                outcome.error.clone(),
            ));
            request.served_by = Some(lease.owner.clone());
        }
        Ok(())
    }

    async fn request_state(&self, id: u64) -> Result<Option<ControlRequest>> {
        Ok(self.state.lock().requests.get(&id).cloned())
    }

    async fn rebuild(&self, subscription: &str, version: u32, target: u64) -> Result<u32> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let sub = state
            .subscriptions
            .get_mut(&(Arc::from(subscription), version))
            .ok_or_else(|| super::not_registered(subscription, version))?;
        for row in &mut sub.rows {
            row.position = 0;
            row.epoch += 1;
            row.owner = None;
            row.until = None;
            row.last_error = None;
            row.rebuild = Some((target, now));
        }
        sub.parked.clear();
        Ok(sub.rows.len() as u32)
    }

    async fn split(&self, subscription: &str, version: u32) -> Result<u32> {
        let mut state = self.state.lock();
        let sub = state
            .subscriptions
            .get_mut(&(Arc::from(subscription), version))
            .ok_or_else(|| Error::InvalidArgument {
                reason: format!("no subscription `{subscription}` (version {version}) to split"),
            })?;
        sub.split();
        Ok(sub.rows.len() as u32)
    }
}
