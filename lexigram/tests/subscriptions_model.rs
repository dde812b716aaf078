//! T40: a model-based test of durable subscriptions. Random sequences of appends, node
//! crashes and restarts, pauses, splits and clock jumps run against three in-memory nodes on a
//! paused clock; afterwards every node is brought back and the subscription catches up. Then
//! every appended event was handled (no skip), each stream's events were first seen in order,
//! and events handled more than once are bounded by one batch per change of owner.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lexigram::message::{Event, EventEnvelope, MessageMetadata, NewEvent};
use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore};
use lexigram::subscription::{
    CheckpointStore, InMemoryCheckpointStore, NodeId, ReactionContext, Reactions, RunStatus,
    Subscription, reactor_fn,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const NODES: usize = 3;
const STREAMS: u8 = 6;
const BATCH: usize = 4;
const MAX_PARTITIONS: u32 = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Numbered {
    stream: String,
    seq: u64,
}

impl Event for Numbered {
    const NAME: &'static str = "model.Numbered";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone)]
enum Op {
    /// Appends `count` events to stream `stream`.
    Append { stream: u8, count: u8 },
    /// Ends a node at once, as a SIGKILL would: no commit, no release.
    Crash(usize),
    /// Starts a node that is down.
    Restart(usize),
    /// Pauses the subscription on every node.
    Pause,
    /// Resumes it.
    Resume,
    /// Splits every partition in two (up to `MAX_PARTITIONS`).
    Split,
    /// Lets this many milliseconds pass.
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..STREAMS, 1u8..4).prop_map(|(stream, count)| Op::Append { stream, count }),
        1 => (0..NODES).prop_map(Op::Crash),
        1 => (0..NODES).prop_map(Op::Restart),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Split),
        2 => (1u16..3_000).prop_map(Op::Wait),
    ]
}

/// (node, stream, seq) in the order handled.
type Log = Arc<Mutex<Vec<(usize, String, u64)>>>;

/// The subscription as node `node` declares it: a node started after a split declares the
/// partitions the deployment has now.
fn subscription(node: usize, partitions: u32, log: &Log) -> Subscription {
    let log = Arc::clone(log);
    Subscription::builder("model")
        .partitions(partitions)
        .batch_size(BATCH)
        .leases(
            Duration::from_millis(1_000),
            Duration::from_millis(300),
            Duration::from_millis(200),
        )
        .poll_interval(Duration::from_millis(100))
        .reactor(reactor_fn(
            move |event: Arc<EventEnvelope>, _ctx: ReactionContext| {
                let log = Arc::clone(&log);
                async move {
                    let e: Numbered = event.decode()?;
                    log.lock().push((node, e.stream, e.seq));
                    Ok(())
                }
            },
        ))
        .build()
        .unwrap()
}

async fn start(
    node: usize,
    partitions: u32,
    store: &Arc<InMemoryEventStore>,
    checkpoints: &Arc<InMemoryCheckpointStore>,
    log: &Log,
) -> Reactions {
    let reactions = Reactions::with_node(
        store.clone(),
        checkpoints.clone(),
        NodeId::new(format!("n{node}")).unwrap(),
    );
    reactions
        .start(subscription(node, partitions, log))
        .await
        .unwrap();
    reactions
}

/// Runs `ops`, then brings every node back and catches up; returns what the checks need.
async fn run(ops: Vec<Op>) -> (Vec<(usize, String, u64)>, HashMap<String, u64>, u64) {
    let store = Arc::new(InMemoryEventStore::new());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let log: Log = Arc::default();
    let mut nodes: Vec<Option<Reactions>> = Vec::new();
    let mut partitions = 2;
    for node in 0..NODES {
        nodes.push(Some(
            start(node, partitions, &store, &checkpoints, &log).await,
        ));
    }
    let mut appended: HashMap<String, u64> = HashMap::new();
    let mut head = 0;
    for op in ops {
        match op {
            Op::Append { stream, count } => {
                let stream = format!("s{stream}");
                let next = appended.entry(stream.clone()).or_default();
                let events = (0..count)
                    .map(|i| {
                        NewEvent::from_event(
                            &Numbered {
                                stream: stream.clone(),
                                seq: *next + 1 + u64::from(i),
                            },
                            MessageMetadata::new(),
                        )
                        .unwrap()
                    })
                    .collect();
                *next += u64::from(count);
                let done = store
                    .append(&stream, events, ExpectedVersion::Any)
                    .await
                    .unwrap();
                head = done.last_position().unwrap();
            }
            Op::Crash(node) => drop(nodes[node].take()),
            Op::Restart(node) => {
                if nodes[node].is_none() {
                    nodes[node] = Some(start(node, partitions, &store, &checkpoints, &log).await);
                }
            }
            Op::Pause => {
                checkpoints
                    .set_status("model", 1, RunStatus::Paused)
                    .await
                    .unwrap();
            }
            Op::Resume => {
                checkpoints
                    .set_status("model", 1, RunStatus::Running)
                    .await
                    .unwrap();
            }
            Op::Split => {
                if partitions < MAX_PARTITIONS {
                    partitions = checkpoints.split("model", 1).await.unwrap();
                }
            }
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    checkpoints
        .set_status("model", 1, RunStatus::Running)
        .await
        .unwrap();
    for (node, slot) in nodes.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(start(node, partitions, &store, &checkpoints, &log).await);
        }
    }
    let any = nodes.iter().flatten().next().unwrap().clone();
    any.wait_for("model", head, Duration::from_secs(120))
        .await
        .unwrap();
    let changes: u64 = checkpoints
        .states(Some("model"))
        .await
        .unwrap()
        .iter()
        .map(|s| s.epoch)
        .sum();
    for reactions in nodes.into_iter().flatten() {
        reactions.shutdown().await.unwrap();
    }
    let log = log.lock().clone();
    (log, appended, changes)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn t40_no_skip_order_and_bounded_redelivery(ops in proptest::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let (log, appended, changes) = runtime.block_on(run(ops));
        let mut seen: HashMap<(&str, u64), usize> = HashMap::new();
        let mut first: HashMap<&str, u64> = HashMap::new();
        for (_node, stream, seq) in &log {
            let count = seen.entry((stream.as_str(), *seq)).or_default();
            *count += 1;
            if *count == 1 {
                let last = first.entry(stream.as_str()).or_default();
                prop_assert_eq!(*seq, *last + 1, "stream {} first saw {} after {}", stream, seq, last);
                *last = *seq;
            }
        }
        for (stream, count) in &appended {
            for seq in 1..=*count {
                prop_assert!(seen.contains_key(&(stream.as_str(), seq)), "{}#{} never handled", stream, seq);
            }
        }
        let repeats: usize = seen.values().map(|n| n - 1).sum();
        prop_assert!(
            repeats as u64 <= BATCH as u64 * changes,
            "{} repeats for {} changes of owner", repeats, changes
        );
    }
}
