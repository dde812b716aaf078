//! Durable subscriptions end to end, on every backend: catch-up under concurrent writers,
//! filters, wake-ups, retries, sequenced parking and replay, drain, fair share between nodes,
//! fencing of a node that lost its lease, exact splits, and crashes of real processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lexigram::async_trait;
use lexigram::error::BoxError;
use lexigram::message::{Event, EventEnvelope, MessageMetadata, NewEvent};
use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore};
use lexigram::subscription::{
    CheckpointStore, InMemoryCheckpointStore, Lease, NodeId, ParkedEvent, PartitionKey,
    PartitionState, ReactionContext, Reactions, Reactor, RunStatus, Subscription, SubscriptionSpec,
    reactor_fn,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Every test event carries its stream and its 1-based sequence in the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Numbered {
    stream: String,
    seq: u64,
}

impl Event for Numbered {
    const NAME: &'static str = "test.Numbered";
    const VERSION: u32 = 1;
}

/// A rare type among many `Numbered`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rare {
    n: u64,
}

impl Event for Rare {
    const NAME: &'static str = "test.Rare";
    const VERSION: u32 = 1;
}

fn numbered(stream: &str, seq: u64) -> NewEvent {
    NewEvent::from_event(
        &Numbered {
            stream: stream.to_owned(),
            seq,
        },
        MessageMetadata::new(),
    )
    .unwrap()
}

/// Appends `per_stream` events to each of `streams` streams named `{prefix}-{i}`, interleaved.
/// Returns the highest position appended.
///
/// A test waits for that position, never for `last_position()` read after the appends: on
/// PostgreSQL `last_position` is the settled head, and any transaction still open on the
/// server (another test's, in another database) holds it below the appends just made.
async fn append_streams(
    store: &dyn EventStore,
    prefix: &str,
    streams: u64,
    per_stream: u64,
) -> u64 {
    let mut last = 0;
    for seq in 1..=per_stream {
        for s in 0..streams {
            let stream = format!("{prefix}-{s}");
            let done = store
                .append(&stream, vec![numbered(&stream, seq)], ExpectedVersion::Any)
                .await
                .unwrap();
            last = last.max(done.last_position().unwrap());
        }
    }
    last
}

/// What a recording reactor saw: (stream, seq, position, partition) in the order handled.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Handled>>>);

/// One handled event: stream, seq, global position, partition.
type Handled = (String, u64, u64, u32);

impl Log {
    fn reactor(&self) -> impl Reactor {
        let log = self.clone();
        reactor_fn(move |event: Arc<EventEnvelope>, ctx: ReactionContext| {
            let log = log.clone();
            async move {
                let e: Numbered = event.decode()?;
                log.0
                    .lock()
                    .push((e.stream, e.seq, event.global_position, ctx.partition()));
                Ok(())
            }
        })
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Checks per-partition global order, per-stream order, and that every (stream, seq) in
    /// `expected` was seen; returns how many were seen more than once.
    fn check(&self, expected: &BTreeMap<String, u64>) -> usize {
        let log = self.0.lock();
        let mut last_position: HashMap<u32, u64> = HashMap::new();
        let mut last_seq: HashMap<&str, u64> = HashMap::new();
        let mut seen: HashMap<(&str, u64), usize> = HashMap::new();
        for (stream, seq, position, partition) in log.iter() {
            *seen.entry((stream.as_str(), *seq)).or_default() += 1;
            let last = last_seq.entry(stream.as_str()).or_default();
            if *seen.get(&(stream.as_str(), *seq)).unwrap() == 1 {
                assert_eq!(*seq, *last + 1, "stream {stream}: seq {seq} after {last}");
                *last = *seq;
            }
            let lp = last_position.entry(*partition).or_default();
            if *seen.get(&(stream.as_str(), *seq)).unwrap() == 1 {
                assert!(
                    position > lp,
                    "partition {partition}: {position} after {lp}"
                );
                *lp = *position;
            }
        }
        for (stream, count) in expected {
            for seq in 1..=*count {
                assert!(
                    seen.contains_key(&(stream.as_str(), seq)),
                    "{stream}#{seq} was never handled"
                );
            }
        }
        let expected_total: u64 = expected.values().sum();
        assert_eq!(seen.len() as u64, expected_total, "nothing unexpected");
        seen.values().filter(|n| **n > 1).count()
    }
}

fn expected(prefix: &str, streams: u64, per_stream: u64) -> BTreeMap<String, u64> {
    (0..streams)
        .map(|s| (format!("{prefix}-{s}"), per_stream))
        .collect()
}

/// Polls `done` every 10 ms for at most `within`.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One deployment's shared database: an event store and a checkpoint store per "process".
#[async_trait]
trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// A new connection to the same database, as another process would open it.
    async fn open(&self) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>);
}

struct Memory {
    events: Arc<InMemoryEventStore>,
    checkpoints: Arc<InMemoryCheckpointStore>,
}

impl Memory {
    fn new() -> Self {
        Self {
            events: Arc::new(InMemoryEventStore::new()),
            checkpoints: Arc::new(InMemoryCheckpointStore::new()),
        }
    }
}

#[async_trait]
impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn open(&self) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>) {
        (self.events.clone(), self.checkpoints.clone())
    }
}

#[cfg(feature = "sqlite")]
struct Sqlite {
    path: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl Sqlite {
    fn new() -> Self {
        Self {
            path: std::env::temp_dir()
                .join(format!("lexigram-sub-{}.db", uuid::Uuid::new_v4().simple())),
        }
    }
}

#[cfg(feature = "sqlite")]
impl Drop for Sqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn open(&self) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>) {
        use lexigram::store::{SqliteConfig, SqliteEventStore};
        use lexigram::subscription::SqliteCheckpointStore;
        let store = SqliteEventStore::connect(&SqliteConfig::file(&self.path))
            .await
            .unwrap();
        let checkpoints = SqliteCheckpointStore::new(&store);
        (Arc::new(store), Arc::new(checkpoints))
    }
}

#[cfg(feature = "postgres")]
struct Postgres {
    db: support::postgres::TestDb,
}

#[cfg(feature = "postgres")]
#[async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn open(&self) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>) {
        use lexigram::store::PostgresEventStore;
        use lexigram::subscription::PostgresCheckpointStore;
        let store = PostgresEventStore::connect(&self.db.config())
            .await
            .unwrap();
        let checkpoints = PostgresCheckpointStore::new(&store);
        (Arc::new(store), Arc::new(checkpoints))
    }
}

/// Runs `scenario` on every backend this build has (PostgreSQL when its server is set).
macro_rules! on_every_backend {
    ($memory:ident, $sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            $scenario(&Memory::new()).await;
        }

        #[cfg(feature = "sqlite")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(&Sqlite::new()).await;
        }

        #[cfg(feature = "postgres")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = support::postgres::TestDb::create().await else {
                return;
            };
            $scenario(&Postgres { db }).await;
        }
    };
}

/// Short leases so takeovers happen within a test.
fn quick(
    builder: lexigram::subscription::SubscriptionBuilder,
) -> lexigram::subscription::SubscriptionBuilder {
    builder
        .leases(
            Duration::from_millis(800),
            Duration::from_millis(200),
            Duration::from_millis(150),
        )
        .poll_interval(Duration::from_millis(200))
}

// T1: catch-up under fire. 2 000 events exist; the subscription starts; 4 writers append
// 2 000 more meanwhile. Every event is handled, once (no crash), in order per partition and
// per stream.
async fn catch_up_under_fire(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    append_streams(&*store, "old", 40, 50).await;
    let log = Log::default();
    let reactions = Reactions::new(store.clone(), checkpoints);
    let sub = quick(Subscription::builder("t1").partitions(2))
        .batch_size(100)
        .reactor(log.reactor())
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            append_streams(&*store, &format!("new{w}"), 10, 50).await;
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut want = expected("old", 40, 50);
    for w in 0..4 {
        want.extend(expected(&format!("new{w}"), 10, 50));
    }
    eventually(Duration::from_secs(60), "all 4 000 events handled", || {
        log.len() >= 4_000
    })
    .await;
    reactions.shutdown().await.unwrap();
    let duplicates = log.check(&want);
    assert_eq!(
        duplicates,
        0,
        "{}: no crash, so no redelivery",
        backend.name()
    );
}

on_every_backend!(
    t1_catch_up_under_fire_memory,
    t1_catch_up_under_fire_sqlite,
    t1_catch_up_under_fire_postgres,
    catch_up_under_fire
);

// T4: a rare type among many: only the rare events are handled, and the checkpoint moves to
// the head over the others.
async fn rare_type_filter(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    let mut rare_at = Vec::new();
    let mut head = 0;
    for i in 0..2_000u64 {
        let stream = format!("s-{}", i % 50);
        let event = if i % 200 == 7 {
            NewEvent::from_event(&Rare { n: i }, MessageMetadata::new()).unwrap()
        } else {
            numbered(&stream, i)
        };
        let done = store
            .append(&stream, vec![event], ExpectedVersion::Any)
            .await
            .unwrap();
        head = done.last_position().unwrap();
        if i % 200 == 7 {
            rare_at.push(head);
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reactor = {
        let seen = seen.clone();
        reactor_fn(move |event: Arc<EventEnvelope>, _ctx| {
            let seen = seen.clone();
            async move {
                let rare: Rare = event.decode()?;
                seen.lock().push((rare.n, event.global_position));
                Ok(())
            }
        })
    };
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    let sub = quick(Subscription::builder("t4"))
        .event_type::<Rare>()
        .reactor(reactor)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    reactions
        .wait_for("t4", head, Duration::from_secs(30))
        .await
        .unwrap();
    let positions: Vec<u64> = seen.lock().iter().map(|(_, p)| *p).collect();
    assert_eq!(
        positions,
        rare_at,
        "{}: exactly the rare events",
        backend.name()
    );
    let status = reactions.status("t4").await.unwrap();
    assert_eq!(status.lag, 0, "the checkpoint reached the head: {status:?}");
    reactions.shutdown().await.unwrap();
}

on_every_backend!(
    t4_rare_type_filter_memory,
    t4_rare_type_filter_sqlite,
    t4_rare_type_filter_postgres,
    rare_type_filter
);

// T5: an append wakes a live subscription long before its 10 s poll: from the same process
// (the store the subscription reads), or from another one (a second connection pool on the
// same database).
async fn wake_up(backend: &dyn Backend, from_another_process: bool) {
    let (store, checkpoints) = backend.open().await;
    let appender = if from_another_process {
        backend.open().await.0
    } else {
        store.clone()
    };
    let log = Log::default();
    let reactions = Reactions::new(store.clone(), checkpoints);
    let sub = Subscription::builder("t5")
        .poll_interval(Duration::from_secs(10))
        .reactor(log.reactor())
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    // Let the subscription reach the live state (an empty log, then waiting), and another
    // process's listener connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    appender
        .append("w-1", vec![numbered("w-1", 1)], ExpectedVersion::Any)
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "woken by the append", || {
        log.len() == 1
    })
    .await;
    let latency = started.elapsed();
    let bound = Duration::from_secs(if from_another_process { 2 } else { 1 });
    assert!(
        latency < bound,
        "{}: woken in {latency:?}, not by the 10 s poll",
        backend.name()
    );
    reactions.shutdown().await.unwrap();
}

async fn wake_up_in_process(backend: &dyn Backend) {
    wake_up(backend, false).await;
}

on_every_backend!(
    t5_wake_up_in_process_memory,
    t5_wake_up_in_process_sqlite,
    t5_wake_up_in_process_postgres,
    wake_up_in_process
);

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_wake_up_across_processes_sqlite() {
    wake_up(&Sqlite::new(), true).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_wake_up_across_processes_postgres() {
    let Some(db) = support::postgres::TestDb::create().await else {
        return;
    };
    wake_up(&Postgres { db }, true).await;
}

// T6: a handler failing 3 times then succeeding is retried after 100, 200, 400 ms (each cut
// by at most 20 % of jitter), and nothing is parked.
#[tokio::test(start_paused = true)]
async fn t6_backoff_schedule_on_a_paused_clock() {
    let backend = Memory::new();
    let (store, checkpoints) = backend.open().await;
    store
        .append("b-1", vec![numbered("b-1", 1)], ExpectedVersion::Any)
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let origin = tokio::time::Instant::now();
    let reactor = {
        let attempts = attempts.clone();
        reactor_fn(move |_event, ctx: ReactionContext| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().push(origin.elapsed());
                if ctx.attempt() <= 3 {
                    Err::<(), BoxError>("not yet".into())
                } else {
                    Ok(())
                }
            }
        })
    };
    let reactions = Reactions::new(store, checkpoints.clone());
    let sub = Subscription::builder("t6")
        .retry(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(60),
            0.2,
            10,
        )
        .reactor(reactor)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    for _ in 0..400 {
        if attempts.lock().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = attempts.lock().clone();
    assert_eq!(at.len(), 4, "three failures then a success: {at:?}");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, full) in gaps.iter().zip([100u64, 200, 400]) {
        let full = Duration::from_millis(full);
        assert!(
            *gap <= full + Duration::from_millis(15) && *gap >= full.mul_f64(0.8),
            "wait {gap:?} should be in [0.8, 1] x {full:?}: {gaps:?}"
        );
    }
    reactions
        .wait_for("t6", 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(reactions.parked("t6").await.unwrap().is_empty());
    reactions.shutdown().await.unwrap();
}

// T7: sequenced parking and replay. Stream A's second event fails for good: it and A3, A4
// are parked as one sequence while B flows; the checkpoint passes A4; after the fix, a replay
// handles A2, A3, A4 in order, empties the parked set and leaves the checkpoint alone.
async fn parking_and_replay(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let log = Log::default();
    let reactor = {
        let (broken, log) = (broken.clone(), log.clone());
        reactor_fn(move |event: Arc<EventEnvelope>, ctx: ReactionContext| {
            let (broken, log) = (broken.clone(), log.clone());
            async move {
                let e: Numbered = event.decode()?;
                if e.stream == "A" && e.seq == 2 && broken.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return Err("A2 cannot be handled".into());
                }
                log.0
                    .lock()
                    .push((e.stream, e.seq, event.global_position, ctx.partition()));
                Ok(())
            }
        })
    };
    let mut head = 0;
    for (stream, seq) in [
        ("A", 1),
        ("A", 2),
        ("A", 3),
        ("B", 1),
        ("A", 4),
        ("B", 2),
        ("B", 3),
    ] {
        head = store
            .append(stream, vec![numbered(stream, seq)], ExpectedVersion::Any)
            .await
            .unwrap()
            .last_position()
            .unwrap();
    }
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    let sub = quick(Subscription::builder("t7"))
        .retry(
            Duration::from_millis(1),
            2.0,
            Duration::from_millis(5),
            0.0,
            3,
        )
        .reactor(reactor)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    reactions
        .wait_for("t7", head, Duration::from_secs(20))
        .await
        .unwrap();
    let handled: Vec<(String, u64)> = log.0.lock().iter().map(|e| (e.0.clone(), e.1)).collect();
    assert_eq!(
        handled,
        [
            ("A".into(), 1),
            ("B".into(), 1),
            ("B".into(), 2),
            ("B".into(), 3)
        ],
        "{}: B flows past the parked A",
        backend.name()
    );
    let parked = reactions.parked("t7").await.unwrap();
    let versions: Vec<(String, u64, u32)> = parked
        .iter()
        .map(|p| (p.stream.to_string(), p.stream_version, p.attempts))
        .collect();
    assert_eq!(
        versions,
        [("A".into(), 2, 3), ("A".into(), 3, 0), ("A".into(), 4, 0)],
        "A2 after its 3 attempts, then the rest of A unattempted"
    );
    assert!(
        parked[0].error.contains("A2 cannot be handled"),
        "{:?}",
        parked[0]
    );
    let status = reactions.status("t7").await.unwrap();
    assert_eq!((status.parked, status.lag), (3, 0), "{status:?}");

    // On the node holding A's partition, while A2 still fails: nothing leaves the set.
    let report = reactions
        .replay_parked("t7", "A", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!((report.replayed, report.still_parked), (0, 3), "{report:?}");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("A2 cannot be handled")),
        "{report:?}"
    );
    assert_eq!(log.len(), 4, "nothing handled");

    // From another process's view: a node that does not run `t7` files a durable request,
    // which the holder serves at its next renewal.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let operator = Reactions::new(store.clone(), checkpoints.clone());
    let report = operator
        .replay_parked("t7", "A", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!((report.replayed, report.still_parked), (3, 0), "{report:?}");
    let missing = operator
        .replay_parked("no-such", "A", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("no-such"), "{missing}");
    let tail: Vec<(String, u64)> = log.0.lock()[4..]
        .iter()
        .map(|e| (e.0.clone(), e.1))
        .collect();
    assert_eq!(tail, [("A".into(), 2), ("A".into(), 3), ("A".into(), 4)]);
    assert!(reactions.parked("t7").await.unwrap().is_empty());
    let after = reactions.status("t7").await.unwrap();
    assert_eq!(
        after.partitions[0].position, status.partitions[0].position,
        "replay leaves the checkpoint"
    );

    // A flows again: a new event of A is handled live.
    store
        .append("A", vec![numbered("A", 5)], ExpectedVersion::Any)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "A5 handled", || log.len() == 8).await;
    reactions.shutdown().await.unwrap();
}

on_every_backend!(
    t7_parking_and_replay_memory,
    t7_parking_and_replay_sqlite,
    t7_parking_and_replay_postgres,
    parking_and_replay
);

// T9: an event that does not decode as the reactor's type is parked at once, with one
// attempt and the decode error's text.
async fn undecodable_is_parked_at_once(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    let bad = NewEvent::new(
        Numbered::NAME,
        1,
        lexigram::message::Payload::from_json_text(r#"{"stream": 7}"#),
        MessageMetadata::new(),
    );
    store
        .append("U", vec![bad], ExpectedVersion::Any)
        .await
        .unwrap();
    store
        .append("V", vec![numbered("V", 1)], ExpectedVersion::Any)
        .await
        .unwrap();
    let (parked, handled) = parked_at_once(store, checkpoints, "t9").await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        parked[0].attempts, 1,
        "no retry for an event that cannot decode"
    );
    assert!(
        parked[0].error.contains("test.Numbered"),
        "{}",
        parked[0].error
    );
    assert_eq!(handled, 1, "{}: V flows", backend.name());
}

/// Runs subscription `name` (five attempts per event) over a log of two events until it has
/// passed both; the events it parked, and how many it handled.
async fn parked_at_once(
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    name: &str,
) -> (Vec<ParkedEvent>, usize) {
    let log = Log::default();
    let reactions = Reactions::new(store, checkpoints);
    let sub = quick(Subscription::builder(name))
        .retry(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(1),
            0.0,
            5,
        )
        .reactor(log.reactor())
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    reactions
        .wait_for(name, 2, Duration::from_secs(10))
        .await
        .unwrap();
    let parked = reactions.parked(name).await.unwrap();
    reactions.shutdown().await.unwrap();
    (parked, log.len())
}

// T9 for a damaged row: an event whose stored row cannot be read in full (its metadata is
// not JSON, written behind the store's back) is parked at once, with one attempt and an error
// naming its stream and the damage, while the other streams flow.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn t9_damaged_row_is_parked_at_once_sqlite() {
    use lexigram::store::{SqliteConfig, SqliteEventStore};
    use lexigram::subscription::SqliteCheckpointStore;
    let db = Sqlite::new();
    let store = SqliteEventStore::connect(&SqliteConfig::file(&db.path))
        .await
        .unwrap();
    for stream in ["D", "E"] {
        store
            .append(stream, vec![numbered(stream, 1)], ExpectedVersion::Any)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE lexigram_events SET metadata = 'not json' WHERE stream_id = 'D'")
        .execute(store.pool())
        .await
        .unwrap();
    let checkpoints = SqliteCheckpointStore::new(&store);
    let (parked, handled) =
        parked_at_once(Arc::new(store), Arc::new(checkpoints), "t9-damaged").await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].stream.as_str(), "D");
    assert_eq!(
        parked[0].attempts, 1,
        "no retry for a row no attempt can read"
    );
    assert!(
        parked[0].error.contains("stream `D`") && parked[0].error.contains("metadata"),
        "{}",
        parked[0].error
    );
    assert_eq!(handled, 1, "E flows");
}

on_every_backend!(
    t9_undecodable_memory,
    t9_undecodable_sqlite,
    t9_undecodable_postgres,
    undecodable_is_parked_at_once
);

// T10: a graceful stop during a batch commits what was handled and releases every lease.
async fn graceful_drain(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    append_streams(&*store, "d", 4, 50).await;
    let log = Log::default();
    let slow = {
        let log = log.clone();
        reactor_fn(move |event: Arc<EventEnvelope>, ctx: ReactionContext| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let e: Numbered = event.decode()?;
                log.0
                    .lock()
                    .push((e.stream, e.seq, event.global_position, ctx.partition()));
                Ok(())
            }
        })
    };
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    let sub = quick(Subscription::builder("t10").partitions(2))
        .batch_size(1_000)
        .reactor(slow)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    eventually(Duration::from_secs(10), "some handled", || log.len() >= 10).await;
    let started = tokio::time::Instant::now();
    reactions.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within drain_timeout"
    );
    let handled = log.len();
    let states = checkpoints.states(Some("t10")).await.unwrap();
    assert!(
        states.iter().all(|s| s.owner.is_none()),
        "{}: every lease released: {states:?}",
        backend.name()
    );
    // What was handled was committed: a restart handles only the rest, none again.
    let committed: usize = {
        let log = log.0.lock();
        states
            .iter()
            .map(|s| {
                log.iter()
                    .filter(|e| e.3 == s.key.partition && e.2 <= s.position)
                    .count()
            })
            .sum()
    };
    assert_eq!(
        committed, handled,
        "the batch in flight was committed: {states:?}"
    );
    let again = Reactions::new(store.clone(), checkpoints);
    let sub = quick(Subscription::builder("t10").partitions(2))
        .reactor(log.reactor())
        .build()
        .unwrap();
    again.start(sub).await.unwrap();
    eventually(Duration::from_secs(20), "the rest handled", || {
        log.len() >= 200
    })
    .await;
    again.shutdown().await.unwrap();
    assert_eq!(log.check(&expected("d", 4, 50)), 0, "nothing handled twice");
}

on_every_backend!(
    t10_graceful_drain_memory,
    t10_graceful_drain_sqlite,
    t10_graceful_drain_postgres,
    graceful_drain
);

fn held(states: &[PartitionState], node: &NodeId) -> usize {
    states
        .iter()
        .filter(|s| s.owner.as_ref() == Some(node))
        .count()
}

// T13: fair share and handoff. Node 1 takes all 8 partitions; node 2 joins and within a few
// claim intervals each holds 4; node 1 stops gracefully and node 2 takes all 8; meanwhile
// every event is handled, with no duplicate at the planned handoffs.
async fn fair_share_and_handoff(backend: &dyn Backend) {
    let (store1, checkpoints1) = backend.open().await;
    let (store2, checkpoints2) = backend.open().await;
    let log = Log::default();
    let make = || {
        quick(Subscription::builder("t13").partitions(8))
            .batch_size(20)
            .reactor(log.reactor())
            .build()
            .unwrap()
    };
    let (n1, n2) = (
        NodeId::new("node-1").unwrap(),
        NodeId::new("node-2").unwrap(),
    );
    let one = Reactions::with_node(store1.clone(), checkpoints1.clone(), n1.clone());
    one.start(make()).await.unwrap();
    append_streams(&*store1, "f", 32, 5).await;
    let deadline = Duration::from_secs(15);
    let states = |c: Arc<dyn CheckpointStore>| async move { c.states(Some("t13")).await.unwrap() };
    let t = tokio::time::Instant::now();
    while held(&states(checkpoints1.clone()).await, &n1) < 8 {
        assert!(t.elapsed() < deadline, "node 1 takes all 8");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let two = Reactions::with_node(store2.clone(), checkpoints2.clone(), n2.clone());
    two.start(make()).await.unwrap();
    let t = tokio::time::Instant::now();
    loop {
        let s = states(checkpoints2.clone()).await;
        if held(&s, &n1) == 4 && held(&s, &n2) == 4 {
            break;
        }
        assert!(t.elapsed() < deadline, "4/4 in time: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append_streams(&*store2, "g", 32, 5).await;
    one.shutdown().await.unwrap();
    let t = tokio::time::Instant::now();
    while held(&states(checkpoints2.clone()).await, &n2) < 8 {
        assert!(
            t.elapsed() < deadline,
            "node 2 takes all 8 after node 1 stops"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = append_streams(&*store2, "h", 32, 5).await;
    two.wait_for("t13", head, Duration::from_secs(30))
        .await
        .unwrap();
    two.shutdown().await.unwrap();
    let mut want = expected("f", 32, 5);
    want.extend(expected("g", 32, 5));
    want.extend(expected("h", 32, 5));
    assert_eq!(
        log.check(&want),
        0,
        "{}: planned handoffs repeat nothing",
        backend.name()
    );
}

on_every_backend!(
    t13_fair_share_memory,
    t13_fair_share_sqlite,
    t13_fair_share_postgres,
    fair_share_and_handoff
);

/// A checkpoint store whose renewals fail while `cut` is set: the node behind it is cut off
/// from the database for leases, as in a network partition or a long pause.
#[derive(Debug)]
struct CutOff {
    inner: Arc<dyn CheckpointStore>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl CutOff {
    /// Fails while the node is cut off.
    fn check(&self) -> lexigram::Result<()> {
        if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(lexigram::Error::InvalidArgument {
                reason: "cut off from the database".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for CutOff {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn register(&self, spec: &SubscriptionSpec) -> lexigram::Result<u32> {
        self.inner.register(spec).await
    }
    async fn claim(
        &self,
        key: &PartitionKey,
        me: &NodeId,
        ttl: Duration,
    ) -> lexigram::Result<Option<Lease>> {
        self.check()?;
        self.inner.claim(key, me, ttl).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> lexigram::Result<Lease> {
        self.check()?;
        self.inner.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> lexigram::Result<()> {
        self.inner.release(lease).await
    }
    async fn commit(
        &self,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> lexigram::Result<RunStatus> {
        self.inner.commit(lease, position, parked).await
    }
    async fn record_error(&self, lease: &Lease, error: &str) -> lexigram::Result<()> {
        self.inner.record_error(lease, error).await
    }
    async fn parked(&self, subscription: &str, version: u32) -> lexigram::Result<Vec<ParkedEvent>> {
        self.inner.parked(subscription, version).await
    }
    async fn request(
        &self,
        subscription: &str,
        version: u32,
        kind: &lexigram::subscription::RequestKind,
    ) -> lexigram::Result<u64> {
        self.inner.request(subscription, version, kind).await
    }
    async fn open_requests(
        &self,
        lease: &Lease,
    ) -> lexigram::Result<Vec<lexigram::subscription::ControlRequest>> {
        self.inner.open_requests(lease).await
    }
    async fn finish_request(
        &self,
        lease: &Lease,
        id: u64,
        outcome: &lexigram::subscription::ReplayReport,
    ) -> lexigram::Result<()> {
        self.inner.finish_request(lease, id, outcome).await
    }
    async fn request_state(
        &self,
        id: u64,
    ) -> lexigram::Result<Option<lexigram::subscription::ControlRequest>> {
        self.inner.request_state(id).await
    }
    async fn rebuild(
        &self,
        subscription: &str,
        version: u32,
        target: u64,
    ) -> lexigram::Result<u32> {
        self.inner.rebuild(subscription, version, target).await
    }
    async fn unpark(
        &self,
        lease: &Lease,
        ids: &[lexigram::message::EventId],
    ) -> lexigram::Result<u64> {
        self.inner.unpark(lease, ids).await
    }
    async fn set_status(
        &self,
        subscription: &str,
        version: u32,
        status: RunStatus,
    ) -> lexigram::Result<u64> {
        self.inner.set_status(subscription, version, status).await
    }
    async fn states(&self, subscription: Option<&str>) -> lexigram::Result<Vec<PartitionState>> {
        self.inner.states(subscription).await
    }
    async fn heartbeat(&self, me: &NodeId, ttl: Duration) -> lexigram::Result<Vec<NodeId>> {
        self.check()?;
        self.inner.heartbeat(me, ttl).await
    }
    async fn leave(&self, me: &NodeId) -> lexigram::Result<()> {
        self.inner.leave(me).await
    }
    async fn split(&self, subscription: &str, version: u32) -> lexigram::Result<u32> {
        self.inner.split(subscription, version).await
    }
}

// T12: zombie fencing. Node A holds the partition while its reactor is stuck; A is cut off
// from renewing; its lease runs out, node B takes over and handles the events; when A's
// reactor finally returns, A commits nothing and stops.
async fn zombie_fencing(backend: &dyn Backend) {
    let (store_a, checkpoints_a) = backend.open().await;
    let (store_b, checkpoints_b) = backend.open().await;
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Notify::new());
    let a_handled = Arc::new(Mutex::new(Vec::new()));
    let stuck = {
        let (gate, a_handled) = (gate.clone(), a_handled.clone());
        reactor_fn(move |event: Arc<EventEnvelope>, _ctx| {
            let (gate, a_handled) = (gate.clone(), a_handled.clone());
            async move {
                gate.notified().await;
                a_handled.lock().push(event.global_position);
                Ok(())
            }
        })
    };
    let a = Reactions::with_node(
        store_a.clone(),
        Arc::new(CutOff {
            inner: checkpoints_a,
            cut: cut.clone(),
        }),
        NodeId::new("zombie").unwrap(),
    );
    let sub = quick(Subscription::builder("t12"))
        .reactor(stuck)
        .build()
        .unwrap();
    a.start(sub).await.unwrap();
    store_a
        .append("z", vec![numbered("z", 1)], ExpectedVersion::Any)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let log = Log::default();
    let b = Reactions::with_node(
        store_b.clone(),
        checkpoints_b.clone(),
        NodeId::new("healthy").unwrap(),
    );
    let sub = quick(Subscription::builder("t12"))
        .reactor(log.reactor())
        .build()
        .unwrap();
    b.start(sub).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "B takes over after A's lease ran out",
        || log.len() == 1,
    )
    .await;
    b.wait_for("t12", 1, Duration::from_secs(5)).await.unwrap();
    let before = checkpoints_b.states(Some("t12")).await.unwrap();
    gate.notify_waiters();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = checkpoints_b.states(Some("t12")).await.unwrap();
    assert_eq!(
        before[0].epoch,
        after[0].epoch,
        "{}: A did not re-claim",
        backend.name()
    );
    assert_eq!(after[0].owner.as_ref().map(NodeId::as_str), Some("healthy"));
    let _ = a.shutdown().await;
    b.shutdown().await.unwrap();
}

on_every_backend!(
    t12_zombie_fencing_memory,
    t12_zombie_fencing_sqlite,
    t12_zombie_fencing_postgres,
    zombie_fencing
);

// T14: exact split 4 -> 8 while appends go on: per-stream order kept, nothing lost.
async fn exact_split(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    let first = append_streams(&*store, "p", 40, 10).await;
    let log = Log::default();
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    let sub = quick(Subscription::builder("t14").partitions(4))
        .batch_size(25)
        .reactor(log.reactor())
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    eventually(Duration::from_secs(10), "some handled", || log.len() >= 100).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_streams(&*store, "q", 40, 10).await })
    };
    assert_eq!(reactions.split("t14").await.unwrap(), 8);
    let head = writer.await.unwrap().max(first);
    reactions
        .wait_for("t14", head, Duration::from_secs(30))
        .await
        .unwrap();
    let states = checkpoints.states(Some("t14")).await.unwrap();
    assert_eq!(states.len(), 8, "{states:?}");
    reactions.shutdown().await.unwrap();
    let mut want = expected("p", 40, 10);
    want.extend(expected("q", 40, 10));
    let duplicates = log.check(&want);
    // Each change of owner (a claim, or the split fencing every lease out) can repeat at most
    // the one uncommitted batch of the partition; epochs count those changes.
    let changes: u64 = states.iter().map(|s| s.epoch).sum();
    assert!(
        duplicates as u64 <= 25 * changes,
        "{}: at most one batch per change of owner repeats ({duplicates} repeats, {changes} changes)",
        backend.name()
    );
}

on_every_backend!(
    t14_exact_split_memory,
    t14_exact_split_sqlite,
    t14_exact_split_postgres,
    exact_split
);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// The role a re-run of this test binary plays in a crash test.
const ROLE: &str = "LEXIGRAM_TEST_ROLE";

/// Re-runs this test binary as a child running `test` in `role` with `env`, and waits at
/// most `within` for it to end (killing it and failing after that).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn run_child(
    test: &str,
    role: &str,
    env: &[(&str, String)],
    within: Duration,
) -> std::process::ExitStatus {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ROLE, role)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        child.env(key, value);
    }
    let mut child = child.spawn().unwrap();
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a `{role}` child of `{test}` did not end within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// T2 in a child process: runs subscription `t2` over the database named by
/// `LEXIGRAM_T2_DB` until it reaches the head, appending `run stream seq position` to the
/// file `LEXIGRAM_T2_LOG` for each event it handles. `LEXIGRAM_FAULT` may abort it midway.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn t2_child(backend: &dyn Backend) {
    use std::io::Write;
    let run = std::env::var("LEXIGRAM_T2_RUN").unwrap();
    let path = std::env::var("LEXIGRAM_T2_LOG").unwrap();
    let file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap(),
    ));
    let (store, checkpoints) = backend.open().await;
    let reactor = reactor_fn(move |event: Arc<EventEnvelope>, _ctx| {
        let (file, run) = (file.clone(), run.clone());
        async move {
            let e: Numbered = event.decode()?;
            let line = format!("{run} {} {} {}\n", e.stream, e.seq, event.global_position);
            file.lock().write_all(line.as_bytes())?;
            Ok(())
        }
    });
    let reactions = Reactions::new(store.clone(), checkpoints);
    let sub = quick(Subscription::builder("t2").partitions(2))
        .batch_size(50)
        .reactor(reactor)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    let head: u64 = std::env::var("LEXIGRAM_T2_HEAD").unwrap().parse().unwrap();
    reactions
        .wait_for("t2", head, Duration::from_secs(60))
        .await
        .unwrap();
    reactions.shutdown().await.unwrap();
}

/// T2 in the parent: 2 000 events in 20 streams; five child processes each abort at a random
/// handled event (a fault point calling `abort`, as a SIGKILL would end them); a sixth runs
/// to the head. Every event is logged at least once, in order per stream within each run,
/// and each crash repeats at most one batch per partition.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn crash_and_restart(backend: &dyn Backend, env: &[(&str, String)], test: &str) {
    let (store, _) = backend.open().await;
    let head = append_streams(&*store, "c", 20, 100).await;
    let log =
        std::env::temp_dir().join(format!("lexigram-t2-{}.log", uuid::Uuid::new_v4().simple()));
    let crashes = 5;
    for run in 0..=crashes {
        let mut vars: Vec<(&str, String)> = vec![
            ("LEXIGRAM_T2_LOG", log.display().to_string()),
            ("LEXIGRAM_T2_RUN", run.to_string()),
            ("LEXIGRAM_T2_HEAD", head.to_string()),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        if run < crashes {
            let at = 20 + (uuid::Uuid::new_v4().as_u128() % 300) as u64;
            vars.push((
                "LEXIGRAM_FAULT",
                format!("subscription.after_handle=abort@{at}"),
            ));
        }
        let status = run_child(test, "t2-child", &vars, Duration::from_secs(90)).await;
        if run < crashes {
            assert!(
                !status.success(),
                "run {run} was to abort at its fault point"
            );
        } else {
            assert!(
                status.success(),
                "the last run reaches the head: {status:?}"
            );
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut last: HashMap<(u32, String), u64> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (run, stream, seq) = (
            parts[0].parse::<u32>().unwrap(),
            parts[1],
            parts[2].parse::<u64>().unwrap(),
        );
        *seen.entry((stream.to_owned(), seq)).or_default() += 1;
        let previous = last.entry((run, stream.to_owned())).or_default();
        assert!(
            seq > *previous,
            "run {run}, stream {stream}: {seq} after {previous}"
        );
        *previous = seq;
    }
    for s in 0..20 {
        for seq in 1..=100 {
            assert!(
                seen.contains_key(&(format!("c-{s}"), seq)),
                "c-{s}#{seq} never handled"
            );
        }
    }
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        repeated <= crashes * 2 * 50,
        "{}: {repeated} repeats; at most one batch per partition per crash",
        backend.name()
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_crash_and_restart_sqlite() {
    if std::env::var(ROLE).as_deref() == Ok("t2-child") {
        let path = std::path::PathBuf::from(std::env::var("LEXIGRAM_T2_DB").unwrap());
        let backend = Sqlite { path };
        t2_child(&backend).await;
        std::mem::forget(backend); // the parent owns the file
        return;
    }
    let backend = Sqlite::new();
    let env = [("LEXIGRAM_T2_DB", backend.path.display().to_string())];
    crash_and_restart(&backend, &env, "t2_crash_and_restart_sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_crash_and_restart_postgres() {
    if std::env::var(ROLE).as_deref() == Ok("t2-child") {
        let url = std::env::var("LEXIGRAM_T2_DB").unwrap();
        t2_child(&PostgresUrl(url)).await;
        return;
    }
    let Some(db) = support::postgres::TestDb::create().await else {
        return;
    };
    let env = [("LEXIGRAM_T2_DB", db.url.clone())];
    crash_and_restart(&Postgres { db }, &env, "t2_crash_and_restart_postgres").await;
}

/// A PostgreSQL database the child did not create (the parent drops it).
#[cfg(feature = "postgres")]
struct PostgresUrl(String);

#[cfg(feature = "postgres")]
#[async_trait]
impl Backend for PostgresUrl {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn open(&self) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>) {
        use lexigram::store::{PostgresConfig, PostgresEventStore};
        use lexigram::subscription::PostgresCheckpointStore;
        let store = PostgresEventStore::connect(&PostgresConfig::new(self.0.as_str()))
            .await
            .unwrap();
        let checkpoints = PostgresCheckpointStore::new(&store);
        (Arc::new(store), Arc::new(checkpoints))
    }
}

// T8: no double parking. A2 fails for good; the process aborts right after handling it (so
// A2 was parked in memory but not committed); a restart fails A2 again and parks it once,
// with the rest of its stream, while B flows. Parked rows are keyed by event id.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn t8_child(backend: &dyn Backend) {
    let (store, checkpoints) = backend.open().await;
    let reactor = reactor_fn(move |event: Arc<EventEnvelope>, _ctx| async move {
        let e: Numbered = event.decode()?;
        if e.stream == "A" && e.seq == 2 {
            return Err::<(), BoxError>("A2 cannot be handled".into());
        }
        Ok(())
    });
    let reactions = Reactions::new(store.clone(), checkpoints);
    let sub = quick(Subscription::builder("t8"))
        .retry(
            Duration::from_millis(1),
            2.0,
            Duration::from_millis(2),
            0.0,
            1,
        )
        .reactor(reactor)
        .build()
        .unwrap();
    reactions.start(sub).await.unwrap();
    let head: u64 = std::env::var("LEXIGRAM_T8_HEAD").unwrap().parse().unwrap();
    reactions
        .wait_for("t8", head, Duration::from_secs(30))
        .await
        .unwrap();
    reactions.shutdown().await.unwrap();
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn no_double_parking(backend: &dyn Backend, env: &[(&str, String)], test: &str) {
    let (store, checkpoints) = backend.open().await;
    let mut head = 0;
    for (stream, seq) in [("A", 1), ("A", 2), ("A", 3), ("B", 1)] {
        head = store
            .append(stream, vec![numbered(stream, seq)], ExpectedVersion::Any)
            .await
            .unwrap()
            .last_position()
            .unwrap();
    }
    // Run 0 aborts after its second handled event (A2, just parked); run 1 reaches the head.
    for run in 0..2 {
        let mut vars: Vec<(&str, String)> = vec![("LEXIGRAM_T8_HEAD", head.to_string())];
        vars.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        if run == 0 {
            vars.push(("LEXIGRAM_FAULT", "subscription.after_handle=abort@2".into()));
        }
        let status = run_child(test, "t8-child", &vars, Duration::from_secs(60)).await;
        assert_eq!(status.success(), run == 1, "run {run}: {status:?}");
        if run == 0 {
            let parked = checkpoints.parked("t8", 1).await.unwrap();
            assert!(
                parked.is_empty(),
                "{}: nothing was committed before the abort: {parked:?}",
                backend.name()
            );
        }
    }
    let parked = checkpoints.parked("t8", 1).await.unwrap();
    let keys: Vec<(String, u64, u32)> = parked
        .iter()
        .map(|p| (p.stream.to_string(), p.stream_version, p.attempts))
        .collect();
    assert_eq!(
        keys,
        [("A".to_owned(), 2, 1), ("A".to_owned(), 3, 0)],
        "{}: A2 parked once (1 attempt), A3 behind it, B not at all",
        backend.name()
    );
    let states = checkpoints.states(Some("t8")).await.unwrap();
    assert!(states[0].position >= head, "{states:?}");
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_no_double_parking_sqlite() {
    if std::env::var(ROLE).as_deref() == Ok("t8-child") {
        let path = std::path::PathBuf::from(std::env::var("LEXIGRAM_T8_DB").unwrap());
        let backend = Sqlite { path };
        t8_child(&backend).await;
        std::mem::forget(backend); // the parent owns the file
        return;
    }
    let backend = Sqlite::new();
    let env = [("LEXIGRAM_T8_DB", backend.path.display().to_string())];
    no_double_parking(&backend, &env, "t8_no_double_parking_sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_no_double_parking_postgres() {
    if std::env::var(ROLE).as_deref() == Ok("t8-child") {
        let url = std::env::var("LEXIGRAM_T8_DB").unwrap();
        t8_child(&PostgresUrl(url)).await;
        return;
    }
    let Some(db) = support::postgres::TestDb::create().await else {
        return;
    };
    let env = [("LEXIGRAM_T8_DB", db.url.clone())];
    no_double_parking(&Postgres { db }, &env, "t8_no_double_parking_postgres").await;
}

// T19: a transaction elsewhere on the server takes an id and stays open; events appended after
// it are committed but not readable. The status names that transaction's server process and
// counts the events behind it; once it commits, they are handled and nothing is named.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t19_status_names_the_transaction_that_holds_the_log_back_postgres() {
    use sqlx::Connection;
    let Some(db) = support::postgres::TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    let backend = Postgres { db };
    let (store, checkpoints) = backend.open().await;
    let log = Log::default();
    let reactions = Reactions::new(store.clone(), checkpoints);
    reactions
        .start(
            quick(Subscription::builder("t19"))
                .reactor(log.reactor())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let first = store
        .append("s-1", vec![numbered("s-1", 1)], ExpectedVersion::Any)
        .await
        .unwrap()
        .last_position()
        .unwrap();
    reactions
        .wait_for("t19", first, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        reactions.status("t19").await.unwrap().held_back_by,
        None,
        "nothing holds the log back"
    );

    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE unrelated (n INTEGER)")
        .execute(&mut blocker)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("INSERT INTO unrelated (n) VALUES (1)")
        .execute(&mut blocker)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    let mut last = first;
    for seq in 2..=4 {
        last = store
            .append("s-1", vec![numbered("s-1", seq)], ExpectedVersion::Any)
            .await
            .unwrap()
            .last_position()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = reactions.status("t19").await.unwrap();
    let held = status
        .held_back_by
        .clone()
        .expect("the open transaction is named");
    assert_eq!(held.pid, pid, "{held}");
    assert_eq!(held.unsettled, 3, "{held}");
    assert_eq!(held.state.as_deref(), Some("idle in transaction"), "{held}");
    assert!(held.to_string().contains(&pid.to_string()), "{held}");
    assert_eq!(log.len(), 1, "the events behind it are not handled yet");

    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    reactions
        .wait_for("t19", last, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(reactions.status("t19").await.unwrap().held_back_by, None);
    blocker.close().await.unwrap();
    reactions.shutdown().await.unwrap();
}

// T18: two nodes (each its own store and pool on one database) share four partitions; an
// operator's handle that runs nothing pauses the subscription. Once every node has seen it
// (after the batch in flight, at the latest a lease renewal later), 100 events appended are
// not handled; after `resume` all 100 are, each at least once, in order per stream.
async fn pause_across_nodes(backend: &dyn Backend) {
    let log = Log::default();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let (store, checkpoints) = backend.open().await;
        let reactions = Reactions::new(store, checkpoints);
        reactions
            .start(
                quick(Subscription::builder("t18"))
                    .partitions(4)
                    .reactor(log.reactor())
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        nodes.push(reactions);
    }
    let (store, checkpoints) = backend.open().await;
    let operator = Reactions::new(store.clone(), checkpoints);
    let first = append_streams(&*store, "p", 4, 1).await;
    operator
        .wait_for("t18", first, Duration::from_secs(20))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "both nodes hold partitions",
        || nodes.iter().all(|n| !n.running().is_empty()),
    )
    .await;
    let before = log.len();

    operator.pause("t18").await.unwrap();
    // Every holder sees the pause at its next renewal (150 ms here) or commit.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut last = first;
    for seq in 2..=26 {
        for s in 0..4 {
            let stream = format!("p-{s}");
            last = store
                .append(&stream, vec![numbered(&stream, seq)], ExpectedVersion::Any)
                .await
                .unwrap()
                .last_position()
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        log.len(),
        before,
        "{}: nothing handled while paused",
        backend.name()
    );
    let paused = operator
        .wait_for("t18", last, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(paused, lexigram::Error::Timeout { .. }),
        "{paused}"
    );

    operator.resume("t18").await.unwrap();
    operator
        .wait_for("t18", last, Duration::from_secs(20))
        .await
        .unwrap();
    let seen = log.0.lock().clone();
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (stream, seq, _, _) in &seen {
        per_stream.entry(stream.clone()).or_default().push(*seq);
    }
    for (stream, seqs) in &per_stream {
        // First deliveries, in the order they came (a redelivery repeats a tail).
        let mut first_seen = Vec::new();
        for seq in seqs {
            if !first_seen.contains(seq) {
                first_seen.push(*seq);
            }
        }
        assert_eq!(
            first_seen,
            (1..=26).collect::<Vec<u64>>(),
            "{}: {stream} in order, every event at least once",
            backend.name()
        );
    }
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}

on_every_backend!(
    t18_pause_and_resume_across_nodes_memory,
    t18_pause_and_resume_across_nodes_sqlite,
    t18_pause_and_resume_across_nodes_postgres,
    pause_across_nodes
);
