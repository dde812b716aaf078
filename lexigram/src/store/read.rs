//! Filtered pages of the global log, and how far a filtered read proved the log.
//!
//! A reader that wants a few event types, or the streams of a few partitions, asks
//! [`EventStore::read_page`](crate::store::EventStore::read_page) with a [`ReadFilter`]. The
//! [`Page`] it gets back holds the matching events and [`Page::scanned_to`]: the position up to
//! which the log has been proved, so a checkpoint can move past long runs of events the reader
//! does not want without reading them again.
//!
//! # Examples
//!
//! ```
//! use lexigram::message::{MessageMetadata, NewEvent, Payload};
//! use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore, PartitionSet, ReadFilter};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lexigram::Error> {
//! let store = InMemoryEventStore::new();
//! let event = |kind: &str| NewEvent::new(kind, 1, Payload::from_json_text("1"), MessageMetadata::new());
//! store.append("acc-1", vec![event("bank.Opened"), event("bank.Deposited")], ExpectedVersion::NoStream).await?;
//!
//! let filter = ReadFilter::all()
//!     .event_types(["bank.Opened"])
//!     .partitions(PartitionSet::new(1, [0])?);
//! let page = store.read_page(0, 100, &filter).await?;
//! assert_eq!(page.events.len(), 1);
//! assert_eq!(page.scanned_to, 2); // the Deposited event was proved not to match
//! # Ok(()) }
//! ```

use std::sync::Arc;

use super::{Partition, stream_hash};
use crate::error::{Error, Result};
use crate::message::EventEnvelope;

/// Some of the `total` partitions of the global log (see [`Partition`]): a worker that owns
/// several partitions reads them in one pass.
///
/// Members are sorted, without duplicates, each below `total`.
///
/// ```
/// use lexigram::store::{Partition, PartitionSet};
/// let set = PartitionSet::new(4, [3, 1, 1])?;
/// assert_eq!((set.total(), set.members()), (4, &[1, 3][..]));
/// assert_eq!(set.contains("order-17"), [1, 3].contains(&Partition::of("order-17", 4)));
/// assert!(PartitionSet::new(4, [4]).is_err());
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionSet {
    total: u32,
    members: Arc<[u32]>,
}

impl PartitionSet {
    /// The partitions `members` of `total`. Fails with [`Error::InvalidArgument`] when `total`
    /// is 0, `members` is empty, or a member is not below `total`.
    pub fn new(total: u32, members: impl IntoIterator<Item = u32>) -> Result<Self> {
        let mut members: Vec<u32> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        let problem = if total == 0 {
            Some("the total must be at least 1".to_owned())
        } else if members.is_empty() {
            Some("it must have at least one member".to_owned())
        } else {
            members
                .iter()
                .find(|m| **m >= total)
                .map(|m| format!("partition {m} does not exist (indices are below {total})"))
        };
        if let Some(problem) = problem {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "invalid partition set {members:?} of {total}: {problem}; members are 0-based indices below the total"
                ),
            });
        }
        Ok(Self {
            total,
            members: members.into(),
        })
    }

    /// The set holding just `partition`.
    pub fn one(partition: Partition) -> Self {
        Self {
            total: partition.total(),
            members: Arc::from([partition.index()]),
        }
    }

    /// How many partitions the log is split into.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The member indices, ascending.
    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// Whether a stream falls into one of the members (`stream_hash(stream) % total`).
    pub fn contains(&self, stream: &str) -> bool {
        self.contains_hash(stream_hash(stream))
    }

    /// Whether a stream with this [`stream_hash`] falls into one of the members.
    pub(crate) fn contains_hash(&self, hash: u32) -> bool {
        self.members.binary_search(&(hash % self.total)).is_ok()
    }
}

impl From<Partition> for PartitionSet {
    fn from(partition: Partition) -> Self {
        Self::one(partition)
    }
}

/// Which events a reader of the global log wants: by type, by partition, or both (an event
/// must pass both). The default ([`ReadFilter::all`]) matches every event.
///
/// ```
/// use lexigram::store::ReadFilter;
/// let filter = ReadFilter::all().event_types(["bank.Opened", "bank.Closed"]);
/// assert_eq!(filter.types().map(<[_]>::len), Some(2));
/// assert!(ReadFilter::all().types().is_none());
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadFilter {
    event_types: Option<Arc<[Arc<str>]>>,
    partitions: Option<PartitionSet>,
}

impl ReadFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events of these types. Without this call every type matches; an empty list
    /// (`event_types::<[&str; 0]>([])`) matches nothing.
    #[must_use]
    pub fn event_types(mut self, types: impl IntoIterator<Item = impl Into<Arc<str>>>) -> Self {
        let mut types: Vec<Arc<str>> = types.into_iter().map(Into::into).collect();
        types.sort_unstable();
        types.dedup();
        self.event_types = Some(types.into());
        self
    }

    /// Only events of streams in these partitions.
    #[must_use]
    pub fn partitions(mut self, partitions: PartitionSet) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The types asked for (sorted, without duplicates), or `None` for every type.
    ///
    /// (Named apart from the builder [`event_types`](Self::event_types), which takes `self`.)
    pub fn types(&self) -> Option<&[Arc<str>]> {
        self.event_types.as_deref()
    }

    /// The partitions asked for, or `None` for every stream.
    ///
    /// (Named apart from the builder [`partitions`](Self::partitions), which takes `self`.)
    pub fn partition_set(&self) -> Option<&PartitionSet> {
        self.partitions.as_ref()
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &EventEnvelope) -> bool {
        self.matches_parts(&event.event_type, || stream_hash(event.stream_id.as_str()))
    }

    /// Whether an event of `event_type`, in a stream whose hash `hash` gives, passes.
    pub(crate) fn matches_parts(&self, event_type: &str, hash: impl FnOnce() -> u32) -> bool {
        self.event_types
            .as_deref()
            .is_none_or(|types| types.iter().any(|t| &**t == event_type))
            && self
                .partitions
                .as_ref()
                .is_none_or(|set| set.contains_hash(hash()))
    }
}

/// A page of the global log, and how far the read proved the log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Page {
    /// The events that matched, in global order, shared: a backend that keeps its events in
    /// memory hands them out without copying them, and a reader passes each one on (to a
    /// reaction, its context and its causal scope) without copying it again.
    pub events: Vec<Arc<EventEnvelope>>,
    /// No event matching the filter with a position at or below this will ever appear
    /// beyond [`events`](Self::events): a reader may continue after it. Never below the last
    /// position returned, nor below the `after` the page was read from.
    pub scanned_to: u64,
}

impl Page {
    /// Builds a page of events read just now; for backends.
    pub fn new(events: Vec<EventEnvelope>, scanned_to: u64) -> Self {
        Self::shared(events.into_iter().map(Arc::new).collect(), scanned_to)
    }

    /// Builds a page of events the backend already shares; for backends.
    pub fn shared(events: Vec<Arc<EventEnvelope>>, scanned_to: u64) -> Self {
        Self { events, scanned_to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_sets_are_sorted_deduplicated_and_checked() -> Result<()> {
        let set = PartitionSet::new(4, [2, 0, 2])?;
        assert_eq!(set.members(), &[0, 2]);
        assert!(PartitionSet::new(0, [0]).is_err());
        assert!(PartitionSet::new(4, []).is_err());
        let err = PartitionSet::new(4, [1, 4]).map(drop);
        assert!(
            matches!(&err, Err(Error::InvalidArgument { reason }) if reason.contains("partition 4 does not exist")),
            "{err:?}"
        );
        let one = PartitionSet::from(Partition::new(3, 5)?);
        assert_eq!((one.total(), one.members()), (5, &[3][..]));
        for stream in ["a", "b", "order-17", ""] {
            assert_eq!(
                set.contains(stream),
                [0, 2].contains(&Partition::of(stream, 4))
            );
        }
        Ok(())
    }

    #[test]
    fn an_empty_type_list_matches_nothing_and_the_default_everything() {
        assert!(ReadFilter::all().matches_parts("x", || 0));
        let none = ReadFilter::all().event_types(Vec::<String>::new());
        assert!(!none.matches_parts("x", || 0));
        let some = ReadFilter::all().event_types(["b", "a", "b"]);
        assert_eq!(
            some.types()
                .map(|t| t.iter().map(|t| &**t).collect::<Vec<_>>()),
            Some(vec!["a", "b"])
        );
        assert!(some.matches_parts("a", || 0));
        assert!(!some.matches_parts("c", || 0));
    }
}
