//! Durable subscriptions beside their floors, measured in the same run on the same backend:
//!
//! - `catch_up/<backend>/subscription`: a no-op reaction (a `Reactor` whose `async fn` only
//!   compares the position with the head) catching up over 20 000 stored events (batch 500,
//!   one partition, a fresh checkpoint each iteration), beside
//!   `catch_up/<backend>/read_all_floor`: the same events read with the backend's raw
//!   `read_all` loop in pages of 500. Goal (D1, D2): ≥ 70 % of the floor.
//! - `live/<backend>/...` (printed, not a criterion group: criterion reports means, and a
//!   latency goal is about percentiles): 300 appends at 100/s, each timed until the running
//!   reaction has it, as p50 and p99, beside the floor of the same append followed by one
//!   `read_all`. `same-store` appends through the reader's own store; `postgres/other-process`
//!   through a second store on the same database, so only NOTIFY wakes the reader. Goal (D5):
//!   in-process p50 ≤ 0.5 ms; PostgreSQL across processes p50 ≤ 5 ms, p99 ≤ 25 ms.
//! - `partitions/io_bound_1ms/{1,8}`: 400 events through a reaction that sleeps 1 ms per event,
//!   over one partition and over eight. Goal (D6): eight ≥ 6× one.
//! - `partitions/postgres/...` (printed): 1 600 events, one per stream, through the same
//!   reaction on PostgreSQL: one partition; eight in one process; eight shared by this
//!   process and a second one (the bench binary run again as a child). Once every partition
//!   is leased (the ownership settled, as in a running system) the events are appended; each
//!   partition waits at a gate on its first; the run starts when the gate opens and ends when
//!   every checkpoint reached the head.
//!   Median of three runs. Goal (D6): eight ≥ 6× one; two processes ≥ 0.9× one.
//!
//! PostgreSQL runs when `LEXIGRAM_TEST_POSTGRES_URL` is set (its own database, dropped after).
//!
//! ```text
//! LEXIGRAM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p lexigram-events --features sqlite,postgres --bench subscriptions -- --warm-up-time 1 --measurement-time 5
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "postgres")]
#[path = "../tests/support/postgres.rs"]
mod pgdb;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use lexigram::error::BoxError;
use lexigram::message::{EventEnvelope, MessageMetadata, NewEvent, Payload};
use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore};
use lexigram::subscription::{
    CheckpointStore, InMemoryCheckpointStore, ReactionContext, Reactions, Reactor, Subscription,
    reactor_fn,
};

const EVENTS: u64 = 20_000;
const STREAMS: u64 = 1_000;
const BATCH: usize = 500;
const PAYLOAD: &str =
    r#"{"account":"acc-0001","amount":125,"currency":"EUR","reference":"invoice 2024-117"}"#;

fn event() -> NewEvent {
    NewEvent::new(
        "bank.Deposited",
        1,
        Payload::from_json_text(PAYLOAD),
        MessageMetadata::new(),
    )
}

/// One backend: its event store, a checkpoint store on the same database, and a counter that
/// gives every iteration a subscription name of its own (so each starts from the origin).
struct Backend {
    name: &'static str,
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    next: AtomicU64,
    /// The database's URL (PostgreSQL), for a second store on it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    url: Option<String>,
    _cleanup: Option<Box<dyn Send + Sync>>,
}

impl Backend {
    fn fresh_name(&self, what: &str) -> String {
        format!("{what}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

async fn fill(store: &dyn EventStore) {
    let per_append = 20;
    let mut appended = 0;
    while appended < EVENTS {
        let stream = format!("acc-{}", (appended / per_append) % STREAMS);
        let batch = (0..per_append).map(|_| event()).collect();
        store
            .append(&stream, batch, ExpectedVersion::Any)
            .await
            .unwrap();
        appended += per_append;
    }
}

async fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
    let memory = Arc::new(InMemoryEventStore::new());
    all.push(Backend {
        name: "memory",
        events: memory,
        checkpoints: Arc::new(InMemoryCheckpointStore::new()),
        next: AtomicU64::new(0),
        url: None,
        _cleanup: None,
    });
    #[cfg(feature = "sqlite")]
    {
        use lexigram::store::{SqliteConfig, SqliteEventStore};
        use lexigram::subscription::SqliteCheckpointStore;
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
                }
            }
        }
        let path = std::env::temp_dir().join(format!(
            "lexigram-bench-sub-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let store = SqliteEventStore::connect(&SqliteConfig::file(&path))
            .await
            .unwrap();
        let checkpoints = SqliteCheckpointStore::new(&store);
        all.push(Backend {
            name: "sqlite",
            events: Arc::new(store),
            checkpoints: Arc::new(checkpoints),
            next: AtomicU64::new(0),
            url: None,
            _cleanup: Some(Box::new(Remove(path))),
        });
    }
    #[cfg(feature = "postgres")]
    if let Some(db) = pgdb::TestDb::create().await {
        use lexigram::store::PostgresEventStore;
        use lexigram::subscription::PostgresCheckpointStore;
        let store = PostgresEventStore::connect(&db.config()).await.unwrap();
        let checkpoints = PostgresCheckpointStore::new(&store);
        all.push(Backend {
            name: "postgres",
            events: Arc::new(store),
            checkpoints: Arc::new(checkpoints),
            next: AtomicU64::new(0),
            url: Some(db.url.clone()),
            _cleanup: Some(Box::new(db)),
        });
    }
    for backend in &all {
        fill(&*backend.events).await;
    }
    all
}

fn quick(name: String) -> lexigram::subscription::SubscriptionBuilder {
    Subscription::builder(name)
        .batch_size(BATCH)
        .leases(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_millis(100),
        )
        .poll_interval(Duration::from_millis(100))
}

/// A no-op reaction that says when it reached `head`.
struct UntilHead {
    head: u64,
    done: tokio::sync::watch::Sender<bool>,
}

impl Reactor for UntilHead {
    async fn react(&self, event: &EventEnvelope, _: &ReactionContext) -> Result<(), BoxError> {
        if event.global_position >= self.head {
            self.done.send_replace(true);
        }
        Ok(())
    }
}

/// How long a no-op subscription takes to catch up over the whole log.
async fn catch_up(backend: &Backend) -> Duration {
    let head = backend.events.last_position().await.unwrap();
    let reactions = Reactions::new(
        Arc::clone(&backend.events),
        Arc::clone(&backend.checkpoints),
    );
    let name = backend.fresh_name("catch-up");
    // The reactor does nothing but say when it reached the head (a comparison per event).
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let subscription = quick(name.clone())
        .reactor(UntilHead {
            head,
            done: done_tx,
        })
        .build()
        .unwrap();
    let started = Instant::now();
    reactions.start(subscription).await.unwrap();
    let mut done_rx = done_rx;
    tokio::time::timeout(Duration::from_secs(120), done_rx.wait_for(|done| *done))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    reactions.shutdown().await.unwrap();
    took
}

/// The floor: the same log read with `read_all` in pages of `BATCH`.
async fn read_all_loop(store: &dyn EventStore) -> u64 {
    let mut after = 0;
    let mut read = 0;
    loop {
        let page = store.read_all(after, BATCH, None).await.unwrap();
        let Some(last) = page.last() else {
            return read;
        };
        after = last.global_position;
        read += page.len() as u64;
    }
}

fn catch_up_bench(c: &mut Criterion, runtime: &tokio::runtime::Runtime, all: &[Backend]) {
    let mut group = c.benchmark_group("catch_up");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    for backend in all {
        group.bench_function(BenchmarkId::new(backend.name, "read_all_floor"), |b| {
            // In a task of the runtime, as the subscription's workers run (criterion's
            // `block_on` thread would pay a thread wake-up for every read).
            b.to_async(runtime).iter(|| async {
                let events = Arc::clone(&backend.events);
                let read = tokio::spawn(async move { read_all_loop(&*events).await })
                    .await
                    .unwrap();
                assert_eq!(read, EVENTS);
            });
        });
        group.bench_function(BenchmarkId::new(backend.name, "subscription"), |b| {
            b.to_async(runtime).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += catch_up(backend).await;
                }
                total
            });
        });
    }
    group.finish();
}

/// Percentiles of `samples` (sorted here): p50 and p99.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// D5: append → reaction latency at 100 appends/s, as p50 and p99 over `ROUNDS` appends,
/// beside the floor measured the same way: the append, then one `read_all` of it. `writer`
/// appends and `reader` runs the subscription: the same store in-process, or a second store
/// on the same database (another connection pool, so only the database's wake-up reaches
/// the reader, as in another process). Each latency is taken when the reactor runs (it sends
/// the instant), from the start of the append and from its return: on SQLite the append's
/// own commit takes most of a millisecond, which no subscription can win back.
async fn latency(
    label: &str,
    writer: Arc<dyn EventStore>,
    reader: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
) {
    const ROUNDS: usize = 300;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let reactions = Reactions::new(Arc::clone(&reader), checkpoints);
    let name = format!("live-{label}");
    let head = writer.last_position().await.unwrap();
    let subscription = quick(name)
        .start_from(lexigram::subscription::StartFrom::After(head))
        .reactor(reactor_fn(move |event, _| {
            let _ = seen_tx.send((event.global_position, Instant::now()));
            async { Ok(()) }
        }))
        .build()
        .unwrap();
    reactions.start(subscription).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = Duration::from_millis(10);
    let mut from_call = Vec::with_capacity(ROUNDS);
    let mut from_return = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let done = writer
            .append("live", vec![event()], ExpectedVersion::Any)
            .await
            .unwrap();
        let returned = Instant::now();
        let position = done.last_position().unwrap();
        while let Some((got, at)) = seen_rx.recv().await {
            if got >= position {
                from_call.push(at - started);
                from_return.push(at.saturating_duration_since(returned));
                break;
            }
        }
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    reactions.shutdown().await.unwrap();
    let mut floor = Vec::with_capacity(ROUNDS);
    let mut appends = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let done = writer
            .append("live-floor", vec![event()], ExpectedVersion::Any)
            .await
            .unwrap();
        appends.push(started.elapsed());
        let position = done.last_position().unwrap();
        let page = reader.read_all(position - 1, 1, None).await.unwrap();
        assert!(page.len() <= 1);
        floor.push(started.elapsed());
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    let (p50, p99) = percentiles(&mut from_call);
    let (r50, r99) = percentiles(&mut from_return);
    let (f50, f99) = percentiles(&mut floor);
    let (a50, a99) = percentiles(&mut appends);
    println!(
        "live/{label}: append -> reaction p50 {p50:?} p99 {p99:?} (after the append returned: p50 {r50:?} p99 {r99:?}); floor append -> read p50 {f50:?} p99 {f99:?}, the append alone p50 {a50:?} p99 {a99:?} ({ROUNDS} appends at 100/s)"
    );
}

async fn latency_report(all: &[Backend]) {
    for backend in all {
        latency(
            &format!("{}/same-store", backend.name),
            Arc::clone(&backend.events),
            Arc::clone(&backend.events),
            Arc::clone(&backend.checkpoints),
        )
        .await;
    }
    #[cfg(feature = "postgres")]
    if let Some(backend) = all.iter().find(|b| b.name == "postgres")
        && let Some(url) = &backend.url
    {
        use lexigram::store::{PostgresConfig, PostgresEventStore};
        let other = PostgresEventStore::connect(&PostgresConfig::new(url.as_str()))
            .await
            .unwrap();
        latency(
            "postgres/other-process",
            Arc::new(other),
            Arc::clone(&backend.events),
            Arc::clone(&backend.checkpoints),
        )
        .await;
    }
}

/// 400 events through a reaction that waits 1 ms on each (an I/O-bound side effect).
fn partitions_bench(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    const N: u64 = 400;
    let mut group = c.benchmark_group("partitions/io_bound_1ms");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    let store = Arc::new(InMemoryEventStore::new());
    runtime.block_on(async {
        for i in 0..N {
            store
                .append(&format!("s-{i}"), vec![event()], ExpectedVersion::Any)
                .await
                .unwrap();
        }
    });
    let next = AtomicU64::new(0);
    for partitions in [1u32, 8] {
        group.bench_function(BenchmarkId::from_parameter(partitions), |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let store = Arc::clone(&store);
                let next = &next;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let reactions =
                            Reactions::new(store.clone(), Arc::new(InMemoryCheckpointStore::new()));
                        let name = format!("io-{}", next.fetch_add(1, Ordering::Relaxed));
                        let subscription = quick(name.clone())
                            .partitions(partitions)
                            .reactor(reactor_fn(|_, _| async {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                Ok(())
                            }))
                            .build()
                            .unwrap();
                        let started = Instant::now();
                        reactions.start(subscription).await.unwrap();
                        reactions
                            .wait_for(&name, N, Duration::from_secs(60))
                            .await
                            .unwrap();
                        total += started.elapsed();
                        reactions.shutdown().await.unwrap();
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

/// The environment variable that makes the bench binary a second node (see [`node`]).
const NODE_ROLE: &str = "LEXIGRAM_BENCH_SUBSCRIPTION_NODE";

/// A subscription for the multi-process runs: `partitions` partitions of a reaction that
/// waits for `gate`, then sleeps 1 ms per event.
#[cfg(feature = "postgres")]
fn gated(
    name: &str,
    partitions: u32,
    after: u64,
    gate: tokio::sync::watch::Receiver<bool>,
) -> Subscription {
    quick(name.to_owned())
        .partitions(partitions)
        .start_from(lexigram::subscription::StartFrom::After(after))
        .reactor(reactor_fn(move |_, _| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        }))
        .build()
        .unwrap()
}

/// The second node: `url name partitions after` in [`NODE_ROLE`]; runs the gated
/// subscription until stdin says `stop` (or closes), opening the gate on `go`.
#[cfg(feature = "postgres")]
fn node(spec: &str) {
    use lexigram::store::{PostgresConfig, PostgresEventStore};
    use lexigram::subscription::PostgresCheckpointStore;
    use std::io::BufRead;
    let parts: Vec<&str> = spec.split(' ').collect();
    let (url, name, partitions, after) = (
        parts[0],
        parts[1],
        parts[2].parse().unwrap(),
        parts[3].parse().unwrap(),
    );
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("go") => {
                    gate_tx.send_replace(true);
                }
                _ => break,
            }
        }
        let _ = stop_tx.send(());
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PostgresEventStore::connect(&PostgresConfig::new(url))
            .await
            .unwrap();
        let checkpoints = PostgresCheckpointStore::new(&store);
        let reactions = Reactions::new(Arc::new(store), Arc::new(checkpoints));
        reactions
            .start(gated(name, partitions, after, gate))
            .await
            .unwrap();
        let _ = stop.await;
        reactions.shutdown().await.unwrap();
    });
}

/// D6 on PostgreSQL over one and two processes (see the module's doc).
#[cfg(feature = "postgres")]
async fn partitions_report(all: &[Backend]) {
    use std::io::Write;
    const N: u64 = 1_600;
    let Some(backend) = all.iter().find(|b| b.name == "postgres") else {
        return;
    };
    let Some(url) = backend.url.clone() else {
        return;
    };
    let mut rates = Vec::new();
    for (label, partitions, processes) in [
        ("1 partition", 1u32, 1usize),
        ("8 partitions, 1 process", 8, 1),
        ("8 partitions, 2 processes", 8, 2),
    ] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let name = backend.fresh_name("io");
            let after = backend.events.last_position().await.unwrap();
            let mut child = (processes == 2).then(|| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .env(NODE_ROLE, format!("{url} {name} {partitions} {after}"))
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            });
            let reactions = Reactions::new(
                Arc::clone(&backend.events),
                Arc::clone(&backend.checkpoints),
            );
            let (gate_tx, gate) = tokio::sync::watch::channel(false);
            reactions
                .start(gated(&name, partitions, after, gate))
                .await
                .unwrap();
            // Settled: every partition leased, by as many owners as there are processes.
            let settled = Instant::now();
            loop {
                let states = backend.checkpoints.states(Some(&name)).await.unwrap();
                let owners: std::collections::HashSet<_> =
                    states.iter().filter_map(|s| s.owner.clone()).collect();
                if states.len() == partitions as usize
                    && states.iter().all(|s| s.lease_expires_in.is_some())
                    && owners.len() == processes
                {
                    break;
                }
                assert!(
                    settled.elapsed() < Duration::from_secs(30),
                    "the partitions never settled"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The events come once the ownership is settled (a partition busy in a
            // reaction cannot be handed over); each partition waits at the gate on its first.
            for i in 0..N {
                backend
                    .events
                    .append(&format!("{name}-{i}"), vec![event()], ExpectedVersion::Any)
                    .await
                    .unwrap();
            }
            let head = backend.events.last_position().await.unwrap();
            let started = Instant::now();
            gate_tx.send_replace(true);
            if let Some(child) = &mut child {
                writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
            }
            reactions
                .wait_for(&name, head, Duration::from_secs(120))
                .await
                .unwrap();
            runs.push(started.elapsed());
            reactions.shutdown().await.unwrap();
            if let Some(mut child) = child {
                drop(child.stdin.take());
                tokio::task::spawn_blocking(move || child.wait().unwrap())
                    .await
                    .unwrap();
            }
        }
        runs.sort();
        let rate = N as f64 / runs[1].as_secs_f64();
        println!("partitions/postgres/{label}: {rate:.0} events/s (median of 3: {runs:?})");
        rates.push(rate);
    }
    println!(
        "partitions/postgres: 8 partitions = {:.1}x one; over 2 processes = {:.2}x one process",
        rates[1] / rates[0],
        rates[2] / rates[1]
    );
}

fn main() {
    #[cfg(feature = "postgres")]
    if let Ok(spec) = std::env::var(NODE_ROLE) {
        node(&spec);
        return;
    }
    subscriptions();
    Criterion::default().configure_from_args().final_summary();
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let all = runtime.block_on(backends());
    catch_up_bench(c, &runtime, &all);
    runtime.block_on(latency_report(&all));
    partitions_bench(c, &runtime);
    #[cfg(feature = "postgres")]
    runtime.block_on(partitions_report(&all));
    runtime.block_on(async {
        for backend in &all {
            let _ = backend.events.close().await;
        }
    });
    drop(all);
}

criterion_group!(subscriptions, benches);
