//! The result cache of a query handler.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How long results live in a query handler's cache and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a result stays fresh.
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
    /// Executions answered from the cache.
    pub hits: u64,
    /// Executions that called the handler.
    pub misses: u64,
    /// Results held now (some may have expired and not been evicted yet).
    pub entries: usize,
}

struct Slot<V> {
    value: V,
    expires: Instant,
    seq: u64,
}

struct State<K, V> {
    map: HashMap<K, Slot<V>>,
    seq: u64,
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
                seq: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A fresh result for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let found = match state.map.get(key) {
            Some(slot) if slot.expires > now => Some(slot.value.clone()),
            Some(_) => {
                state.map.remove(key);
                None
            }
            None => None,
        };
        drop(state);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a result, evicting expired results, then the oldest, when full.
    pub(crate) fn insert(&self, key: K, value: V) {
        let now = Instant::now();
        let mut state = self.state.lock();
        if !state.map.contains_key(&key) && state.map.len() >= self.policy.max_entries {
            state.map.retain(|_, slot| slot.expires > now);
            if state.map.len() >= self.policy.max_entries {
                let oldest = state
                    .map
                    .iter()
                    .min_by_key(|(_, slot)| slot.seq)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    state.map.remove(&oldest);
                }
            }
        }
        state.seq += 1;
        let seq = state.seq;
        state.map.insert(
            key,
            Slot {
                value,
                expires: now + self.policy.ttl,
                seq,
            },
        );
    }

    pub(crate) fn remove(&self, key: &K) -> bool {
        self.state.lock().map.remove(key).is_some()
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
