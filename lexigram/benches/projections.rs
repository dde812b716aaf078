//! Exactly-once SQL projections beside their floor, measured in the same run on the same
//! database (D3, D4 and D8 of the design brief):
//!
//! - `projection_catch_up/<backend>/projection`: an exactly-once projection (a
//!   `TransactionalReactor` doing one upsert per event into a counts table) catching up over
//!   20 000 stored events in 1 000 streams: one partition, 500 events per transaction, a fresh
//!   checkpoint each iteration (the claim and start are inside the time), timed until its
//!   checkpoint reached the head.
//! - `projection_catch_up/<backend>/raw_floor`: the same work with no framework around it:
//!   read a page of 500 with `read_all`, then in one transaction one upsert per event and one
//!   checkpoint update, commit, repeat.
//! - `projection_catch_up/postgres/flushed`: the same projection writing each batch in one
//!   statement from its `flush` (`INSERT .. SELECT .. FROM UNNEST($1) GROUP BY .. ON CONFLICT
//!   DO UPDATE`), beside `flushed_floor`: the raw loop doing that one statement per page.
//!
//! - `rebuild/postgres/...` (printed, median of four): a rebuild of the flushing projection
//!   over 1 000 000 events (the model emptied and the checkpoint reset in one transaction, then
//!   replayed to the head), timed from `rebuild` until its checkpoint reached the head, beside
//!   the raw loop doing the same (empty the table and reset the checkpoint, then the flushed
//!   pass), and the same rebuild watched through `wait_rebuilt` with progress every 50 ms
//!   (the two rebuilds take turns going first; every run starts after a `VACUUM` of the
//!   tables the run before rewrote).
//!   Goal (D8): ≥ 70 % of the raw loop, progress costing < 2 %.
//!
//! Goals: flushed (D3) ≥ 70 % of its floor and ≥ 40 000 events/s on PostgreSQL; per event
//! (D4) ≥ 80 % of its floor.
//! PostgreSQL runs when `LEXIGRAM_TEST_POSTGRES_URL` is set (its own database, dropped after).
//!
//! ```text
//! LEXIGRAM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p lexigram-events --features sqlite,postgres --bench projections -- --warm-up-time 1 --measurement-time 5
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "postgres")]
#[path = "../tests/support/postgres.rs"]
mod pgdb;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lexigram::async_trait;
use lexigram::error::BoxError;
use lexigram::message::{EventEnvelope, MessageMetadata, NewEvent, Payload};
use lexigram::store::{EventStore, ExpectedVersion};
use lexigram::subscription::{
    CheckpointStore, ExactlyOnce, ReactionContext, Reactions, Subscription, TransactionalReactor,
};

const EVENTS: u64 = 20_000;
const STREAMS: u64 = 1_000;
const BATCH: usize = 500;
const PAYLOAD: &str = r#"{"account":"acc-0001","amount":125,"currency":"EUR"}"#;

/// One upsert per event into `bench_counts`.
struct Counts;

/// The same counts, written once per batch in one statement.
#[cfg(feature = "postgres")]
struct FlushedCounts;

#[cfg(feature = "postgres")]
const POSTGRES_FLUSH: &str = "INSERT INTO bench_counts (stream, n)
     SELECT s, COUNT(*) FROM UNNEST($1::text[]) AS s GROUP BY s
     ON CONFLICT (stream) DO UPDATE SET n = bench_counts.n + excluded.n";

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalReactor<sqlx::Postgres> for FlushedCounts {
    async fn react(
        &self,
        _conn: &mut sqlx::PgConnection,
        _event: &EventEnvelope,
        _ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    async fn flush(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[Arc<EventEnvelope>],
    ) -> Result<(), BoxError> {
        let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        sqlx::query(POSTGRES_FLUSH)
            .bind(streams)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl TransactionalReactor<sqlx::Sqlite> for Counts {
    async fn react(
        &self,
        conn: &mut sqlx::SqliteConnection,
        event: &EventEnvelope,
        _ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        sqlx::query(SQLITE_UPSERT)
            .bind(event.stream_id.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalReactor<sqlx::Postgres> for Counts {
    async fn react(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &EventEnvelope,
        _ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        sqlx::query(POSTGRES_UPSERT)
            .bind(event.stream_id.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

const SQLITE_UPSERT: &str = "INSERT INTO bench_counts (stream, n) VALUES (?1, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1";
const POSTGRES_UPSERT: &str = "INSERT INTO bench_counts (stream, n) VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = bench_counts.n + 1";

/// One database: its stores, and what the floor needs of it.
struct Backend {
    name: &'static str,
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    sink: ExactlyOnce,
    /// The flushing projection's sink (PostgreSQL).
    flushed: Option<ExactlyOnce>,
    floor: Floor,
    next: AtomicU64,
    _cleanup: Box<dyn Send + Sync>,
}

/// The raw floor's database handle.
#[derive(Clone)]
enum Floor {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

async fn fill(store: &dyn EventStore) {
    let per_stream = EVENTS / STREAMS;
    for seq in 0..per_stream {
        for s in 0..STREAMS {
            let event = NewEvent::new(
                "bank.Deposited",
                1,
                Payload::from_json_text(PAYLOAD),
                MessageMetadata::new(),
            );
            store
                .append(
                    &format!("acc-{s}"),
                    vec![event],
                    ExpectedVersion::Exact(seq),
                )
                .await
                .unwrap();
        }
    }
}

async fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
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
            "lexigram-bench-projection-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let store = SqliteEventStore::connect(&SqliteConfig::file(&path))
            .await
            .unwrap();
        for statement in [
            "CREATE TABLE bench_counts (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)",
            "CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, position INTEGER NOT NULL)",
            "INSERT INTO bench_floor (id, position) VALUES (1, 0)",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        all.push(Backend {
            name: "sqlite",
            checkpoints: Arc::new(SqliteCheckpointStore::new(&store)),
            sink: ExactlyOnce::sqlite(&store, Counts),
            flushed: None,
            floor: Floor::Sqlite(store.pool().clone()),
            events: Arc::new(store),
            next: AtomicU64::new(0),
            _cleanup: Box::new(Remove(path)),
        });
    }
    #[cfg(feature = "postgres")]
    if let Some(db) = pgdb::TestDb::create().await {
        use lexigram::store::PostgresEventStore;
        use lexigram::subscription::PostgresCheckpointStore;
        let store = PostgresEventStore::connect(&db.config()).await.unwrap();
        for statement in [
            "CREATE TABLE bench_counts (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, position BIGINT NOT NULL)",
            "INSERT INTO bench_floor (id, position) VALUES (1, 0)",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        all.push(Backend {
            name: "postgres",
            checkpoints: Arc::new(PostgresCheckpointStore::new(&store)),
            sink: ExactlyOnce::postgres(&store, Counts),
            flushed: Some(ExactlyOnce::postgres(&store, FlushedCounts)),
            floor: Floor::Postgres(store.pool().clone()),
            events: Arc::new(store),
            next: AtomicU64::new(0),
            _cleanup: Box::new(db),
        });
    }
    for backend in &all {
        fill(&*backend.events).await;
    }
    all
}

/// How long the projection with `sink` takes to catch up over the whole log.
async fn projection(backend: &Backend, sink: &ExactlyOnce) -> Duration {
    let head = backend.events.last_position().await.unwrap();
    let reactions = Reactions::new(
        Arc::clone(&backend.events),
        Arc::clone(&backend.checkpoints),
    );
    let name = format!("counts-{}", backend.next.fetch_add(1, Ordering::Relaxed));
    let subscription = Subscription::builder(name.clone())
        .batch_size(BATCH)
        .leases(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_millis(100),
        )
        .exactly_once(sink.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    reactions.start(subscription).await.unwrap();
    reactions
        .wait_for(&name, head, Duration::from_secs(300))
        .await
        .unwrap();
    let took = started.elapsed();
    reactions.shutdown().await.unwrap();
    took
}

/// The floor: pages of `BATCH` from `read_all`, each written in one transaction with one
/// upsert per event (or, `flushed`, one statement per page) and one checkpoint update. Returns the events written. It runs in a task
/// of the runtime, as the projection's workers do (criterion's `block_on` thread would pay a
/// thread wake-up for every round trip).
async fn raw_floor(backend: &Backend, flushed: bool) -> u64 {
    let (events, floor) = (Arc::clone(&backend.events), backend.floor.clone());
    tokio::spawn(async move { floor_pass(&*events, &floor, flushed).await })
        .await
        .unwrap()
}

async fn floor_pass(events: &dyn EventStore, floor: &Floor, flushed: bool) -> u64 {
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = events.read_all(after, BATCH, None).await.unwrap();
        let Some(last) = page.last().map(|e| e.global_position) else {
            return written;
        };
        let position = i64::try_from(last).unwrap();
        match floor {
            #[cfg(feature = "sqlite")]
            Floor::Sqlite(pool) => {
                // The flushed variant runs on PostgreSQL only.
                let _ = flushed;
                let mut tx = pool.begin().await.unwrap();
                for event in &page {
                    sqlx::query(SQLITE_UPSERT)
                        .bind(event.stream_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                sqlx::query("UPDATE bench_floor SET position = ?1 WHERE id = 1")
                    .bind(position)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            #[cfg(feature = "postgres")]
            Floor::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                if flushed {
                    let streams: Vec<&str> = page.iter().map(|e| e.stream_id.as_str()).collect();
                    sqlx::query(POSTGRES_FLUSH)
                        .bind(streams)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                } else {
                    for event in &page {
                        sqlx::query(POSTGRES_UPSERT)
                            .bind(event.stream_id.as_str())
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                }
                sqlx::query("UPDATE bench_floor SET position = $1 WHERE id = 1")
                    .bind(position)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
        written += page.len() as u64;
        after = last;
    }
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let all = runtime.block_on(backends());
    let mut group = c.benchmark_group("projection_catch_up");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    for backend in &all {
        group.bench_function(BenchmarkId::new(backend.name, "raw_floor"), |b| {
            b.to_async(&runtime).iter(|| async {
                assert_eq!(raw_floor(backend, false).await, EVENTS);
            });
        });
        group.bench_function(BenchmarkId::new(backend.name, "projection"), |b| {
            b.to_async(&runtime).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += projection(backend, &backend.sink).await;
                }
                total
            });
        });
        if let Some(flushed) = &backend.flushed {
            group.bench_function(BenchmarkId::new(backend.name, "flushed_floor"), |b| {
                b.to_async(&runtime).iter(|| async {
                    assert_eq!(raw_floor(backend, true).await, EVENTS);
                });
            });
            group.bench_function(BenchmarkId::new(backend.name, "flushed"), |b| {
                b.to_async(&runtime).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += projection(backend, flushed).await;
                    }
                    total
                });
            });
        }
    }
    group.finish();
    runtime.block_on(async {
        for backend in &all {
            let _ = backend.events.close().await;
        }
    });
    drop(all);
}

/// Events in the rebuild's log.
#[cfg(feature = "postgres")]
const REBUILD_EVENTS: u64 = 1_000_000;

/// D8: rebuilds over a log of `REBUILD_EVENTS`, beside the raw loop (printed).
#[cfg(feature = "postgres")]
async fn rebuild_report() {
    use lexigram::store::PostgresEventStore;
    use lexigram::subscription::PostgresCheckpointStore;
    let Some(db) = pgdb::TestDb::create().await else {
        return;
    };
    let store = PostgresEventStore::connect(&db.config()).await.unwrap();
    for statement in [
        "CREATE TABLE bench_counts (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)",
        "CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, position BIGINT NOT NULL)",
        "INSERT INTO bench_floor (id, position) VALUES (1, 0)",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    let filled = Instant::now();
    let per_append = 500;
    for chunk in 0..REBUILD_EVENTS / per_append {
        let stream = format!("acc-{}", chunk % STREAMS);
        let events = (0..per_append)
            .map(|_| {
                NewEvent::new(
                    "bank.Deposited",
                    1,
                    Payload::from_json_text(PAYLOAD),
                    MessageMetadata::new(),
                )
            })
            .collect();
        store
            .append(&stream, events, ExpectedVersion::Any)
            .await
            .unwrap();
    }
    println!(
        "rebuild/postgres: {REBUILD_EVENTS} events stored in {:?}",
        filled.elapsed()
    );
    let events: Arc<dyn EventStore> = Arc::new(store.clone());
    let reactions = Reactions::new(
        Arc::clone(&events),
        Arc::new(PostgresCheckpointStore::new(&store)),
    );
    let subscription = Subscription::builder("rebuilt")
        .batch_size(BATCH)
        .leases(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_millis(100),
        )
        .exactly_once(ExactlyOnce::postgres(&store, FlushedResettable))
        .build()
        .unwrap();
    reactions.start(subscription).await.unwrap();
    let head = events.last_position().await.unwrap();
    reactions
        .wait_for("rebuilt", head, Duration::from_secs(600))
        .await
        .unwrap();
    let floor = Floor::Postgres(store.pool().clone());
    // Every run starts from tables without the dead rows of the run before (a rebuild updates
    // each counter row hundreds of times), so autovacuum's timing does not decide the order.
    let vacuum = || async {
        sqlx::query("VACUUM bench_counts, bench_floor, lexigram_subscriptions")
            .execute(store.pool())
            .await
            .unwrap();
    };
    sqlx::query("VACUUM ANALYZE")
        .execute(store.pool())
        .await
        .unwrap();
    let (mut plain, mut watched, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut reports = 0usize;
    for round in 0..4 {
        // The two rebuilds take turns going first, so neither always follows the raw loop.
        for watch in [round % 2 == 0, round % 2 == 1] {
            vacuum().await;
            let started = Instant::now();
            reactions.rebuild("rebuilt").await.unwrap();
            if watch {
                reactions
                    .wait_rebuilt("rebuilt", Duration::from_secs(600), |_| reports += 1)
                    .await
                    .unwrap();
                watched.push(started.elapsed());
            } else {
                reactions
                    .wait_for("rebuilt", head, Duration::from_secs(600))
                    .await
                    .unwrap();
                plain.push(started.elapsed());
            }
        }

        vacuum().await;
        let started = Instant::now();
        let (events, floor) = (Arc::clone(&events), floor.clone());
        let written = tokio::spawn(async move {
            if let Floor::Postgres(pool) = &floor {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("DELETE FROM bench_counts")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("UPDATE bench_floor SET position = 0 WHERE id = 1")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            floor_pass(&*events, &floor, true).await
        })
        .await
        .unwrap();
        assert_eq!(written, REBUILD_EVENTS);
        raw.push(started.elapsed());
    }
    reactions.shutdown().await.unwrap();
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let rate = |d: Duration| REBUILD_EVENTS as f64 / d.as_secs_f64();
    let (plain, watched, raw) = (median(&mut plain), median(&mut watched), median(&mut raw));
    println!(
        "rebuild/postgres/{REBUILD_EVENTS} events: rebuild {:.0} events/s ({plain:?}), raw loop {:.0} events/s ({raw:?}) = {:.2}x; watched with progress {:.0} events/s ({watched:?}, {reports} progress reports) = {:+.1} % against the unwatched rebuild (medians of 4)",
        rate(plain),
        rate(raw),
        rate(plain) / rate(raw),
        rate(watched),
        (watched.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0,
    );
    let _ = events.close().await;
    drop(db);
}

/// [`FlushedCounts`] that can start over.
#[cfg(feature = "postgres")]
struct FlushedResettable;

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalReactor<sqlx::Postgres> for FlushedResettable {
    async fn react(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        FlushedCounts.react(conn, event, ctx).await
    }

    async fn flush(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[Arc<EventEnvelope>],
    ) -> Result<(), BoxError> {
        FlushedCounts.flush(conn, events).await
    }

    async fn reset(&self, conn: &mut sqlx::PgConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM bench_counts")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

fn rebuilds(_: &mut Criterion) {
    #[cfg(feature = "postgres")]
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(rebuild_report());
    }
}

criterion_group!(projections, benches, rebuilds);
criterion_main!(projections);
