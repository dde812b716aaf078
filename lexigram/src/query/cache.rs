//! The result cache of a query handler: O(1) lookups, stores and evictions under one short
//! lock, and single-flight misses (concurrent callers of one key share one handler call).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long results live in a query handler's cache and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a result stays fresh. A TTL too long for the clock (such as
    /// `Duration::MAX`) means results never expire.
    pub ttl: Duration,
    /// At most this many results are kept (at least 1).
    pub max_entries: usize,
}

impl CachePolicy {
    /// Results live `ttl`; at most `max_entries` are kept.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
        }
    }
}

impl Default for CachePolicy {
    /// Five minutes (the seed's usual `cache_ttl=300`), 1000 entries.
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 1000)
    }
}

/// What a query cache did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Executions answered without calling the handler: from the cache, or with the result
    /// of a call of the same query that was already running.
    pub hits: u64,
    /// Executions that called the handler.
    pub misses: u64,
    /// Results held now (some may have expired and not been evicted yet).
    pub entries: usize,
}

struct Slot<V> {
    value: V,
    /// `None`: never expires (the TTL is too long to be added to the clock).
    expires: Option<Instant>,
    /// When it was stored; matches its entry in `State::order`.
    seq: u64,
}

impl<V> Slot<V> {
    fn is_fresh(&self, now: Instant) -> bool {
        self.expires.is_none_or(|expires| expires > now)
    }
}

/// A handler call of one key in progress. Its waiters are allocated by the first caller that
/// waits, so an uncontended miss allocates nothing for them.
struct Flight<V> {
    id: u64,
    waiters: Option<Arc<Waiters<V>>>,
}

/// What the callers waiting for another caller's handler call wait on.
pub(crate) struct Waiters<V> {
    outcome: Mutex<Outcome<V>>,
    settled: Notify,
}

enum Outcome<V> {
    Running,
    Done(V),
    /// The call failed, panicked or was cancelled.
    Abandoned,
}

impl<V: Clone> Waiters<V> {
    /// The call's result, or `None` if it failed, panicked or was cancelled.
    pub(crate) async fn result(&self) -> Option<V> {
        loop {
            let mut settled = std::pin::pin!(self.settled.notified());
            settled.as_mut().enable();
            match &*self.outcome.lock() {
                Outcome::Done(value) => return Some(value.clone()),
                Outcome::Abandoned => return None,
                Outcome::Running => {}
            }
            settled.await;
        }
    }

    fn settle(&self, outcome: Outcome<V>) {
        *self.outcome.lock() = outcome;
        self.settled.notify_waiters();
    }
}

struct State<K, V> {
    map: HashMap<K, Slot<V>>,
    /// Keys from the oldest stored to the newest, with the `seq` they were stored under. An
    /// entry whose key is gone or was stored again since is stale and skipped; stale entries
    /// are compacted away, so the queue stays within a constant factor of `map`. One TTL for
    /// every result means the oldest is also the first to expire.
    order: VecDeque<(K, u64)>,
    flights: HashMap<K, Flight<V>>,
    /// The waiters of calls whose key was invalidated while they ran, by flight id: they
    /// still get the call's outcome.
    detached: HashMap<u64, Arc<Waiters<V>>>,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V> State<K, V> {
    fn is_live(&self, key: &K, seq: u64) -> bool {
        self.map.get(key).is_some_and(|slot| slot.seq == seq)
    }

    /// Ends the flight `id` of `key`: returns the key (when the flight is still the key's,
    /// so its result may be stored) and its waiters, if any.
    fn land(&mut self, key: &K, id: u64) -> (Option<K>, Option<Arc<Waiters<V>>>) {
        if self.flights.get(key).is_some_and(|flight| flight.id == id) {
            match self.flights.remove_entry(key) {
                Some((key, flight)) => (Some(key), flight.waiters),
                None => (None, None),
            }
        } else {
            (None, self.detached.remove(&id))
        }
    }

    /// Detaches the running call of `key`, if any: it will not store its result.
    fn detach(&mut self, key: &K) {
        if let Some(Flight {
            id,
            waiters: Some(waiters),
        }) = self.flights.remove(key)
        {
            self.detached.insert(id, waiters);
        }
    }

    /// Stores `value`, dropping the oldest result when full (with one TTL for all, expired
    /// results are the oldest): O(1) amortized, as each stored key is queued once and popped
    /// or compacted away once.
    fn store(&mut self, key: K, value: V, now: Instant, policy: &CachePolicy) {
        if !self.map.contains_key(&key) {
            while self.map.len() >= policy.max_entries {
                let Some((oldest, seq)) = self.order.pop_front() else {
                    break;
                };
                if self.is_live(&oldest, seq) {
                    self.map.remove(&oldest);
                }
            }
        }
        self.seq += 1;
        let seq = self.seq;
        self.order.push_back((key.clone(), seq));
        self.map.insert(
            key,
            Slot {
                value,
                expires: now.checked_add(policy.ttl),
                seq,
            },
        );
        if self.order.len() > self.map.len().saturating_mul(2).saturating_add(32) {
            let map = &self.map;
            self.order
                .retain(|(key, seq)| map.get(key).is_some_and(|slot| slot.seq == *seq));
        }
    }
}

/// What a caller of a cached query does next.
pub(crate) enum Lookup<'a, K: Hash + Eq + Clone, V: Clone> {
    /// A fresh result.
    Hit(V),
    /// Another caller is calling the handler: wait for its [`result`](Waiters::result), and
    /// look again if there is none.
    Wait(Arc<Waiters<V>>),
    /// Call the handler and hand the result to [`Leader::complete`].
    Lead(Leader<'a, K, V>),
}

/// The caller that calls the handler for a key. Dropped without
/// [`complete`](Self::complete) (the call failed, panicked or was cancelled), it lets the
/// waiters try again.
pub(crate) struct Leader<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a QueryCache<K, V>,
    key: K,
    id: u64,
    completed: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<'_, K, V> {
    /// Stores the result (unless the key was invalidated meanwhile) and hands it to the
    /// waiters.
    pub(crate) fn complete(mut self, value: V) {
        self.completed = true;
        let waiters = {
            let mut state = self.cache.state.lock();
            let (key, waiters) = state.land(&self.key, self.id);
            if let Some(key) = key {
                state.store(key, value.clone(), Instant::now(), &self.cache.policy);
            }
            waiters
        };
        if let Some(waiters) = waiters {
            waiters.settle(Outcome::Done(value));
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        let (_, waiters) = self.cache.state.lock().land(&self.key, self.id);
        if let Some(waiters) = waiters {
            waiters.settle(Outcome::Abandoned);
        }
    }
}

pub(crate) struct QueryCache<K, V> {
    policy: CachePolicy,
    state: Mutex<State<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Clone> QueryCache<K, V> {
    pub(crate) fn new(policy: CachePolicy) -> Self {
        Self {
            policy: CachePolicy::new(policy.ttl, policy.max_entries),
            state: Mutex::new(State {
                map: HashMap::new(),
                order: VecDeque::new(),
                flights: HashMap::new(),
                detached: HashMap::new(),
                seq: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A fresh result for `key`, or the call to wait for, or the duty to call the handler.
    pub(crate) fn lookup(&self, key: &K) -> Lookup<'_, K, V> {
        let now = Instant::now();
        let mut state = self.state.lock();
        match state.map.get(key) {
            Some(slot) if slot.is_fresh(now) => {
                let value = slot.value.clone();
                drop(state);
                self.count_hit();
                return Lookup::Hit(value);
            }
            Some(_) => {
                state.map.remove(key);
            }
            None => {}
        }
        if let Some(flight) = state.flights.get_mut(key) {
            let waiters = flight.waiters.get_or_insert_with(|| {
                Arc::new(Waiters {
                    outcome: Mutex::new(Outcome::Running),
                    settled: Notify::new(),
                })
            });
            return Lookup::Wait(Arc::clone(waiters));
        }
        state.seq += 1;
        let id = state.seq;
        state
            .flights
            .insert(key.clone(), Flight { id, waiters: None });
        drop(state);
        self.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Lead(Leader {
            cache: self,
            key: key.clone(),
            id,
            completed: false,
        })
    }

    /// Counts an execution answered without calling the handler.
    pub(crate) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the result of `key`; a call of it already running will not store its result.
    pub(crate) fn remove(&self, key: &K) -> bool {
        let mut state = self.state.lock();
        state.detach(key);
        state.map.remove(key).is_some()
    }
}

/// The type-erased face of a cache, for invalidation by type.
pub(crate) trait ErasedCache: Send + Sync + 'static {
    fn clear(&self) -> usize;
    fn stats(&self) -> CacheStats;
    fn as_any_arc(&self) -> Arc<dyn Any + Send + Sync>;
}

impl<K, V> ErasedCache for Arc<QueryCache<K, V>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn clear(&self) -> usize {
        let mut state = self.state.lock();
        let n = state.map.len();
        state.map.clear();
        state.order.clear();
        let flights = std::mem::take(&mut state.flights);
        for (id, waiters) in flights
            .into_values()
            .filter_map(|flight| Some((flight.id, flight.waiters?)))
        {
            state.detached.insert(id, waiters);
        }
        n
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.state.lock().map.len(),
        }
    }

    fn as_any_arc(&self) -> Arc<dyn Any + Send + Sync> {
        Arc::clone(self) as Arc<dyn Any + Send + Sync>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_insertion_queue_stays_within_a_constant_factor_of_the_capacity() {
        let cache = QueryCache::<u32, u32>::new(CachePolicy::new(Duration::from_secs(60), 4));
        for round in 0..10_000 {
            let key = round % 3;
            if let Lookup::Lead(leader) = cache.lookup(&key) {
                leader.complete(round);
            }
            cache.remove(&key);
            let state = cache.state.lock();
            assert!(state.order.len() <= 2 * 4 + 33, "{}", state.order.len());
            assert!(state.detached.is_empty() && state.flights.is_empty());
        }
    }

    #[tokio::test]
    async fn a_full_cache_drops_its_oldest_result_first() {
        let cache = QueryCache::<u32, u32>::new(CachePolicy::new(Duration::from_secs(60), 2));
        for key in [1, 2, 1, 3] {
            if let Lookup::Lead(leader) = cache.lookup(&key) {
                leader.complete(key);
            }
        }
        let state = cache.state.lock();
        let mut kept: Vec<u32> = state.map.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [2, 3],
            "a hit does not make 1 newer: it was stored first"
        );
    }
}
