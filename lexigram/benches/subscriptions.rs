//! Durable subscriptions beside their floors, measured in the same run on the same backend:
//!
//! - `catch_up/<backend>/subscription`: a no-op reaction catching up over 20 000 stored events
//!   (batch 500, one partition, a fresh checkpoint each iteration), beside
//!   `catch_up/<backend>/read_all_floor`: the same events read with the backend's raw
//!   `read_all` loop in pages of 500. Goal (D1, D2): ≥ 70 % of the floor.
//! - `live/<backend>/append_to_reaction`: one append until the running reaction has it, beside
//!   `live/<backend>/append_then_read_floor`: the same append followed by one `read_all`.
//!   Goal (D5, in-process): median ≤ 0.5 ms.
//! - `partitions/io_bound_1ms/{1,8}`: 400 events through a reaction that sleeps 1 ms per event,
//!   over one partition and over eight. Goal (D6): eight ≥ 6× one.
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

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lexigram::message::{MessageMetadata, NewEvent, Payload};
use lexigram::store::{EventStore, ExpectedVersion, InMemoryEventStore};
use lexigram::subscription::{
    CheckpointStore, InMemoryCheckpointStore, Reactions, Subscription, reactor_fn,
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
        .reactor(reactor_fn(move |event, _| {
            if event.global_position >= head {
                done_tx.send_replace(true);
            }
            async { Ok(()) }
        }))
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
            b.to_async(runtime).iter(|| async {
                assert_eq!(read_all_loop(&*backend.events).await, EVENTS);
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

fn live_bench(c: &mut Criterion, runtime: &tokio::runtime::Runtime, all: &[Backend]) {
    let mut group = c.benchmark_group("live");
    for backend in all.iter().filter(|b| b.name != "postgres") {
        // A running reaction that reports each event it sees.
        let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let seen_rx = Arc::new(tokio::sync::Mutex::new(seen_rx));
        let reactions = Reactions::new(
            Arc::clone(&backend.events),
            Arc::clone(&backend.checkpoints),
        );
        let name = backend.fresh_name("live");
        runtime.block_on(async {
            let head = backend.events.last_position().await.unwrap();
            let subscription = quick(name.clone())
                .start_from(lexigram::subscription::StartFrom::After(head))
                .reactor(reactor_fn(move |event, _| {
                    let seen = seen_tx.clone();
                    async move {
                        let _ = seen.send(event.global_position);
                        Ok(())
                    }
                }))
                .build()
                .unwrap();
            reactions.start(subscription).await.unwrap();
            // Let the partition be claimed before measuring.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        group.bench_function(BenchmarkId::new(backend.name, "append_to_reaction"), |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let seen_rx = Arc::clone(&seen_rx);
                async move {
                    let mut seen = seen_rx.lock().await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let done = backend
                            .events
                            .append("live", vec![event()], ExpectedVersion::Any)
                            .await
                            .unwrap();
                        let position = done.last_position().unwrap();
                        while let Some(got) = seen.recv().await {
                            if got >= position {
                                break;
                            }
                        }
                        total += started.elapsed();
                    }
                    total
                }
            });
        });
        group.bench_function(
            BenchmarkId::new(backend.name, "append_then_read_floor"),
            |b| {
                b.to_async(runtime).iter(|| async {
                    let done = backend
                        .events
                        .append("live-floor", vec![event()], ExpectedVersion::Any)
                        .await
                        .unwrap();
                    let position = done.last_position().unwrap();
                    let page = backend
                        .events
                        .read_all(position - 1, 1, None)
                        .await
                        .unwrap();
                    assert_eq!(page.len(), 1);
                });
            },
        );
        runtime.block_on(reactions.shutdown()).unwrap();
    }
    group.finish();
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

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let all = runtime.block_on(backends());
    catch_up_bench(c, &runtime, &all);
    live_bench(c, &runtime, &all);
    partitions_bench(c, &runtime);
    runtime.block_on(async {
        for backend in &all {
            let _ = backend.events.close().await;
        }
    });
    drop(all);
}

criterion_group!(subscriptions, benches);
criterion_main!(subscriptions);
