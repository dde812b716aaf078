//! The PostgreSQL event store beside the raw `sqlx` floor, measured in the same run on the
//! same server: each `lexigram` figure has a `raw` twin doing the least a hand-written store
//! would do (same columns, same indexes, no ordering scheme, no checks).
//!
//! Needs `LEXIGRAM_TEST_POSTGRES_URL`; creates and drops its own database.
//!
//! ```text
//! LEXIGRAM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p lexigram-events --features postgres --bench postgres -- --warm-up-time 1 --measurement-time 3
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/support/postgres.rs"]
mod pgdb;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::TryStreamExt;
use lexigram::message::{MessageMetadata, NewEvent, Payload};
use lexigram::store::{EventStore, ExpectedVersion, PostgresEventStore, VersionRange};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{QueryBuilder, Row};

const TASKS: usize = 8;
const PAYLOAD: &str =
    r#"{"account":"acc-0001","amount":125,"currency":"EUR","reference":"invoice 2024-117"}"#;

struct Setup {
    runtime: tokio::runtime::Runtime,
    store: Arc<PostgresEventStore>,
    raw: PgPool,
    metadata: String,
    next: AtomicU64,
    // Dropped last: drops the database.
    _db: pgdb::TestDb,
}

fn event() -> NewEvent {
    NewEvent::new(
        "bank.Deposited",
        1,
        Payload::from_json_text(PAYLOAD),
        MessageMetadata::new(),
    )
}

fn setup() -> Option<Setup> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (db, store, raw) = runtime.block_on(async {
        let db = pgdb::TestDb::create().await?;
        // LEXIGRAM_BENCH_NOTIFY=0 measures appends without the wake-up signal.
        let notify = std::env::var("LEXIGRAM_BENCH_NOTIFY").map_or(true, |v| v != "0");
        let store = PostgresEventStore::connect(&db.config().max_connections(16).notify(notify))
            .await
            .unwrap();
        let raw = PgPoolOptions::new()
            .max_connections(16)
            .connect(&db.url)
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE raw_events (
                global_position bigserial PRIMARY KEY,
                stream_id text NOT NULL,
                stream_version bigint NOT NULL,
                stream_hash bigint NOT NULL,
                event_id uuid NOT NULL UNIQUE,
                event_type text NOT NULL,
                event_version integer NOT NULL,
                payload text NOT NULL,
                metadata text NOT NULL,
                recorded_at timestamptz NOT NULL,
                UNIQUE (stream_id, stream_version)
            )",
        )
        .execute(&raw)
        .await
        .unwrap();
        sqlx::query("CREATE INDEX raw_events_by_type ON raw_events (event_type, global_position)")
            .execute(&raw)
            .await
            .unwrap();
        Some((db, Arc::new(store), raw))
    })?;
    Some(Setup {
        runtime,
        store,
        raw,
        metadata: serde_json::to_string(&MessageMetadata::new()).unwrap(),
        next: AtomicU64::new(1),
        _db: db,
    })
}

/// One single-row autocommit INSERT: the floor of a one-event append.
async fn raw_insert_one(raw: &PgPool, metadata: &str, stream: &str, version: i64) {
    sqlx::query(
        "INSERT INTO raw_events (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
         VALUES ($1, $2, 0, $3, 'bank.Deposited', 1, $4, $5, now())",
    )
    .bind(stream)
    .bind(version)
    .bind(uuid::Uuid::now_v7())
    .bind(PAYLOAD)
    .bind(metadata)
    .execute(raw)
    .await
    .unwrap();
}

/// Runs `per_task(task, iters)` on 8 tasks at once and returns the wall time.
fn parallel<F, Fut>(setup: &Setup, iters: u64, per_task: F) -> Duration
where
    F: Fn(usize, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    setup.runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| tokio::spawn(per_task(t, iters)))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn appends(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("append_1_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lexigram", |b| {
        b.to_async(&s.runtime).iter(|| async {
            s.store
                .append("one", vec![event()], ExpectedVersion::Any)
                .await
                .unwrap();
        })
    });
    group.bench_function("raw", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let v = s.next.fetch_add(1, Ordering::Relaxed) as i64;
            raw_insert_one(&s.raw, &s.metadata, "one", v).await;
        })
    });
    group.finish();

    let mut group = c.benchmark_group("append_1_event_8_tasks");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("lexigram", |b| {
        b.iter_custom(|iters| {
            parallel(s, iters, |t, iters| {
                let store = Arc::clone(&s.store);
                async move {
                    let stream = format!("par-{t}");
                    for _ in 0..iters {
                        store
                            .append(&stream, vec![event()], ExpectedVersion::Any)
                            .await
                            .unwrap();
                    }
                }
            })
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let base = s.next.fetch_add(iters, Ordering::Relaxed) as i64;
            parallel(s, iters, |t, iters| {
                let (raw, metadata) = (s.raw.clone(), s.metadata.clone());
                async move {
                    let stream = format!("par-{t}");
                    for i in 0..iters {
                        raw_insert_one(&raw, &metadata, &stream, base + i as i64).await;
                    }
                }
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("append_100_events");
    group.throughput(Throughput::Elements(100));
    group.bench_function("lexigram", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let events: Vec<NewEvent> = (0..100).map(|_| event()).collect();
            s.store
                .append("hundred", events, ExpectedVersion::Any)
                .await
                .unwrap();
        })
    });
    group.bench_function("raw", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let base = s.next.fetch_add(100, Ordering::Relaxed) as i64;
            let mut insert = QueryBuilder::new(
                "INSERT INTO raw_events (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at) ",
            );
            insert.push_values(0..100_i64, |mut row, i| {
                row.push_bind("hundred")
                    .push_bind(base + i)
                    .push_bind(0_i64)
                    .push_bind(uuid::Uuid::now_v7())
                    .push_bind("bank.Deposited")
                    .push_bind(1_i32)
                    .push_bind(PAYLOAD)
                    .push_bind(&s.metadata)
                    .push("now()");
            });
            insert.build().execute(&s.raw).await.unwrap();
        })
    });
    group.finish();
}

type RawRow = (
    i64,
    String,
    i64,
    uuid::Uuid,
    String,
    i32,
    String,
    MessageMetadata,
    DateTime<Utc>,
);

/// Decodes what an envelope holds: owned columns, metadata parsed.
fn decode_raw(row: &sqlx::postgres::PgRow) -> RawRow {
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        serde_json::from_str(row.get::<&str, _>(7)).unwrap(),
        row.get(8),
    )
}

const RAW_SELECT: &str = "SELECT global_position, stream_id, stream_version, event_id, event_type, event_version, payload, metadata, recorded_at FROM raw_events";

fn reads(c: &mut Criterion, s: &Setup) {
    // A 1001-event stream in both tables.
    s.runtime.block_on(async {
        for chunk in 0..11 {
            let n = if chunk == 10 { 1 } else { 100 };
            let events: Vec<NewEvent> = (0..n).map(|_| event()).collect();
            s.store
                .append("long", events, ExpectedVersion::Any)
                .await
                .unwrap();
        }
        for v in 1..=1001 {
            raw_insert_one(&s.raw, &s.metadata, "long", v).await;
        }
    });
    let mut group = c.benchmark_group("load_1001_event_stream");
    group.throughput(Throughput::Elements(1001));
    group.bench_function("lexigram", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let events = s.store.read("long", VersionRange::all()).await.unwrap();
            assert_eq!(events.len(), 1001);
        })
    });
    group.bench_function("raw", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let rows = sqlx::query(&format!(
                "{RAW_SELECT} WHERE stream_id = $1 ORDER BY stream_version"
            ))
            .bind("long")
            .fetch_all(&s.raw)
            .await
            .unwrap();
            let decoded: Vec<RawRow> = rows.iter().map(decode_raw).collect();
            assert_eq!(decoded.len(), 1001);
        })
    });
    group.finish();

    let total = s
        .runtime
        .block_on(async { s.store.count(None).await.unwrap() });
    let raw_total: i64 = s.runtime.block_on(async {
        sqlx::query_scalar("SELECT count(*) FROM raw_events")
            .fetch_one(&s.raw)
            .await
            .unwrap()
    });
    let mut group = c.benchmark_group("stream_all");
    group.throughput(Throughput::Elements(total));
    group.sample_size(10);
    group.bench_function("lexigram", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let n = s
                .store
                .stream_all(0, 1_000, None)
                .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                .await
                .unwrap();
            assert_eq!(n, total);
        })
    });
    group.throughput(Throughput::Elements(raw_total as u64));
    group.bench_function("raw", |b| {
        b.to_async(&s.runtime).iter(|| async {
            let mut after = 0_i64;
            let mut n = 0;
            loop {
                let rows = sqlx::query(&format!(
                    "{RAW_SELECT} WHERE global_position > $1 ORDER BY global_position LIMIT 1000"
                ))
                .bind(after)
                .fetch_all(&s.raw)
                .await
                .unwrap();
                let page: Vec<RawRow> = rows.iter().map(decode_raw).collect();
                n += page.len();
                match page.last() {
                    Some(last) if page.len() == 1_000 => after = last.0,
                    _ => break,
                }
            }
            assert_eq!(n as i64, raw_total);
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let Some(setup) = setup() else { return };
    appends(c, &setup);
    reads(c, &setup);
}

criterion_group!(postgres, benches);
criterion_main!(postgres);
