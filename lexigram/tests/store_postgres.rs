//! The PostgreSQL stores against the shared behavioural suites, plus what only a server can
//! show: the global order under concurrent, rolled-back and long transactions; atomicity when
//! a backend is killed mid-append; unique-key races as `ConcurrencyError`; migrations; bad rows.
//!
//! Needs `LEXIGRAM_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test creates and drops its own database. Tests run one at a time: the order watermark
//! is cluster-wide, so one test's open transaction would only slow the others down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lexigram::error::{ConcurrencyError, Error};
use lexigram::message::{EventId, MessageMetadata, NewEvent, Payload};
use lexigram::snapshot::{PostgresSnapshotStore, Snapshot, SnapshotStore};
use lexigram::store::{
    EventStore, ExpectedVersion, PostgresConfig, PostgresEventStore, VersionRange, stream_hash,
};
use lexigram::testing::{event_store_suite, paired_store_suite, snapshot_store_suite};
use sqlx::{Connection, PgConnection};
use support::postgres::TestDb;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "test.Counted",
        1,
        Payload::from_json_text(format!("{{\"n\":{n}}}")),
        MessageMetadata::new(),
    )
}

fn batch(count: u64) -> Vec<NewEvent> {
    (1..=count).map(event).collect()
}

/// Calls the append function directly, inside the caller's transaction, as the store does.
async fn raw_append(
    conn: &mut PgConnection,
    config: &PostgresConfig,
    stream: &str,
    events: &[NewEvent],
) -> (i32, Vec<i64>) {
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id.as_uuid()).collect();
    let types: Vec<&str> = events.iter().map(|e| &*e.event_type).collect();
    let versions: Vec<i32> = events.iter().map(|e| e.event_version as i32).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let metadata: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.metadata).unwrap())
        .collect();
    let (status, positions): (i32, Option<Vec<i64>>) = sqlx::query_as(&format!(
        "SELECT o_status, o_positions FROM {}.{}append($1, $2, -1, $3, $4, $5, $6, $7, false)",
        config.schema, config.table_prefix
    ))
    .bind(stream)
    .bind(i64::from(stream_hash(stream)))
    .bind(&ids)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .fetch_one(conn)
    .await
    .unwrap();
    (status, positions.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_store_meets_the_contract() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    event_store_suite(|schema| {
        let config = db.fresh_schema();
        async move {
            Ok(PostgresEventStore::connect(&config)
                .await?
                .with_schema(schema))
        }
    })
    .await?;
    // Strict ordering meets the same contract.
    event_store_suite(|schema| {
        let config = db.fresh_schema().strict_ordering(true);
        async move {
            Ok(PostgresEventStore::connect(&config)
                .await?
                .with_schema(schema))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_store_meets_the_contract() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    snapshot_store_suite(|| {
        let config = db.fresh_schema();
        async move { PostgresSnapshotStore::connect(&config).await }
    })
    .await?;
    let events = PostgresEventStore::connect(&db.fresh_schema()).await?;
    let snapshots = events.snapshot_store();
    snapshots.close().await?;
    events.ping().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_delete_snapshots_with_streams_and_distrust_snapshots_ahead()
-> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    paired_store_suite(|schema| {
        let config = db.fresh_schema();
        async move {
            let events = PostgresEventStore::connect(&config)
                .await?
                .with_schema(schema);
            let snapshots = events.snapshot_store();
            Ok((events, snapshots))
        }
    })
    .await
}

/// An append in flight (its transaction open, holding the stream's row) while the stream is
/// deleted: the delete waits for it and removes its events too, so no orphan is left, an
/// `Any` append afterwards starts the stream again at version 1, and a new aggregate under the
/// id reads no foreign event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stream_while_an_append_is_in_flight_leaves_no_orphan_events()
-> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.fresh_schema();
    let store = Arc::new(PostgresEventStore::connect(&config).await?);
    store
        .append("s", batch(2), ExpectedVersion::NoStream)
        .await?;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let (status, _) = raw_append(&mut conn, &config, "s", &batch(1)).await;
    assert_eq!(status, 0, "the in-flight append claimed version 3");
    let deleting = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.delete_stream("s").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert!(deleting.await.unwrap()?, "the stream existed");

    assert_eq!(store.count(Some("s")).await?, 0, "no orphan event is left");
    assert_eq!(store.version("s").await?, 0);
    let again = store.append("s", batch(1), ExpectedVersion::Any).await?;
    assert_eq!(again.version, 1, "`Any` starts the stream again");
    let read = store.read("s", VersionRange::all()).await?;
    assert_eq!(read.len(), 1, "only the new event: {read:?}");
    let in_log = store.read_all(0, 100, None).await?;
    assert_eq!(
        in_log.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        [again.positions[0]],
        "the global log holds only the new event"
    );
    Ok(())
}

/// The ordering proof: 8 writers on random streams, some transactions rolled back on purpose,
/// one held open for a second, and a reader following `read_all` from its last position. The
/// reader must see every committed event exactly once, in increasing order, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_the_log_never_misses_or_repeats_an_event() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    const WRITERS: u64 = 8;
    const ROUNDS: u64 = 120;
    let config = db.config();
    let store = Arc::new(PostgresEventStore::connect(&config).await?);

    #[derive(Default)]
    struct Outcome {
        committed: Vec<(EventId, u64)>,
        rolled_back: Vec<EventId>,
        /// (positions of the held transaction, when it committed)
        held: Option<(Vec<u64>, Instant)>,
        /// (position, when the append returned)
        finished: Vec<(u64, Instant)>,
    }

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let mut last = 0u64;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let page = store.read_all(last, 37, None).await?;
                for e in &page {
                    assert!(
                        e.global_position > last,
                        "positions must strictly increase: {} after {last}",
                        e.global_position
                    );
                    last = e.global_position;
                    seen.push(e.event_id);
                }
                if page.is_empty() {
                    if finished {
                        return Ok::<_, Error>(seen);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for task in 0..WRITERS {
        let (store, config) = (Arc::clone(&store), config.clone());
        writers.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut conn = PgConnection::connect(config.dsn.expose()).await.unwrap();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (task + 1);
            let mut random = move |below: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % below
            };
            for round in 0..ROUNDS {
                let stream = format!("s{}", random(16));
                let events = batch(1 + random(4));
                if task == 0 && round == 3 {
                    // Held open for a second while everyone else commits past it.
                    let mut tx = conn.begin().await.unwrap();
                    let (status, positions) = raw_append(&mut tx, &config, &stream, &events).await;
                    assert_eq!(status, 0);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    tx.commit().await.unwrap();
                    let positions: Vec<u64> = positions.into_iter().map(|p| p as u64).collect();
                    out.committed.extend(
                        events
                            .iter()
                            .map(|e| e.event_id)
                            .zip(positions.iter().copied()),
                    );
                    out.held = Some((positions, Instant::now()));
                } else if round % 7 == 5 {
                    // Rolled back on purpose, after taking positions.
                    let mut tx = conn.begin().await.unwrap();
                    let (status, _) = raw_append(&mut tx, &config, &stream, &events).await;
                    assert_eq!(status, 0);
                    tx.rollback().await.unwrap();
                    out.rolled_back.extend(events.iter().map(|e| e.event_id));
                } else {
                    let ids: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
                    let written = store.append(&stream, events, ExpectedVersion::Any).await?;
                    for (id, position) in ids.into_iter().zip(written.positions) {
                        out.committed.push((id, position));
                        out.finished.push((position, Instant::now()));
                    }
                }
            }
            Ok::<_, Error>(out)
        }));
    }

    let mut committed: HashMap<EventId, u64> = HashMap::new();
    let mut rolled_back = HashSet::new();
    let mut held = None;
    let mut finished = Vec::new();
    for writer in writers {
        let out = writer.await.unwrap()?;
        committed.extend(out.committed);
        rolled_back.extend(out.rolled_back);
        finished.extend(out.finished);
        held = held.or(out.held);
    }
    done.store(true, Ordering::Release);
    let seen = reader.await.unwrap()?;

    // The scenario really happened: while the held transaction was open, others committed
    // events with higher positions, so a naive reader would have skipped its events.
    let (held_positions, held_commit) = held.unwrap();
    let held_max = held_positions.iter().copied().max().unwrap();
    assert!(
        finished
            .iter()
            .any(|(p, at)| *p > held_max && *at < held_commit),
        "no writer committed past the held transaction while it was open"
    );
    assert!(!rolled_back.is_empty());

    let unique: HashSet<EventId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was seen twice");
    assert!(
        unique.is_disjoint(&rolled_back),
        "a rolled-back event was seen"
    );
    let expected: HashSet<EventId> = committed.keys().copied().collect();
    let missed: Vec<_> = expected.difference(&unique).collect();
    assert!(
        missed.is_empty(),
        "{} committed events were missed, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert_eq!(unique, expected);
    Ok(())
}

/// A backend killed in the middle of a 100-event append leaves none of them; the same append
/// then goes through whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_append_leaves_all_or_nothing() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.config();
    let store = Arc::new(PostgresEventStore::connect(&config).await?);
    store
        .append("crash", batch(1), ExpectedVersion::NoStream)
        .await?;

    // Hold the stream's row so the append stops half-way: positions taken, nothing inserted.
    let mut locker = PgConnection::connect(&db.url).await.unwrap();
    let mut lock_tx = locker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM public.lexigram_streams WHERE stream_id = 'crash' FOR UPDATE")
        .execute(&mut *lock_tx)
        .await
        .unwrap();

    let events = batch(100);
    let append = {
        let (store, events) = (Arc::clone(&store), events.clone());
        tokio::spawn(async move {
            store
                .append("crash", events, ExpectedVersion::Exact(1))
                .await
        })
    };
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let killed = loop {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%lexigram_append(%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if killed.contains(&true) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(killed, "the append never reached the lock");
    let result = append.await.unwrap();
    assert!(
        matches!(&result, Err(err @ Error::StoreConnection { .. }) if err.is_retryable()),
        "a killed append is an outage a retry policy may retry, not bad input: {result:?}"
    );
    lock_tx.rollback().await.unwrap();

    assert_eq!(
        store.count(Some("crash")).await?,
        1,
        "none of the 100 events"
    );
    assert_eq!(store.version("crash").await?, 1);
    assert_eq!(store.read_all(0, 1_000, None).await?.len(), 1);
    // The lock the killed session took in its critical section died with it: appends go on.
    let written = store
        .append("crash", events, ExpectedVersion::Exact(1))
        .await?;
    assert_eq!(
        written.version, 101,
        "all 100 events when nothing interferes"
    );
    assert_eq!(store.read("crash", VersionRange::all()).await?.len(), 101);
    assert_eq!(store.read_all(0, 1_000, None).await?.len(), 101);
    Ok(())
}

/// Unique-key races come back as `ConcurrencyError`, never as a driver error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_are_concurrency_errors() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let store = Arc::new(PostgresEventStore::connect(&db.config()).await?);

    // Many writers creating the same stream at once: one wins, the rest conflict at version 1.
    for round in 0..20 {
        let stream = format!("new-{round}");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, stream) = (Arc::clone(&store), stream.clone());
                tokio::spawn(async move {
                    store
                        .append(&stream, batch(1), ExpectedVersion::NoStream)
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(Error::Concurrency(ConcurrencyError {
                    actual, expected, ..
                })) => {
                    assert_eq!((actual, expected), (1, ExpectedVersion::NoStream));
                }
                Err(other) => panic!("a race must be a ConcurrencyError: {other}"),
            }
        }
        assert_eq!(wins, 1);
    }

    // A row written behind the store's back takes the next version: the unique key on
    // (stream, version) fires inside the append, and is reported as a conflict.
    store
        .append("side", batch(1), ExpectedVersion::NoStream)
        .await?;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO lexigram_events (global_position, stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
         VALUES (nextval('lexigram_positions'), 'side', 2, 0, gen_random_uuid(), 'x', 1, '{}', '{}', now())",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let r = store
        .append("side", batch(1), ExpectedVersion::Exact(1))
        .await;
    assert!(matches!(r, Err(Error::Concurrency(_))), "{r:?}");
    assert_eq!(
        store.count(Some("side")).await?,
        2,
        "the refused append wrote nothing"
    );

    // The append function refuses to run after other writes in the same transaction, where it
    // could not keep positions in transaction order.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("CREATE TEMP TABLE t (x int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let ids = vec![uuid::Uuid::now_v7()];
    let err = sqlx::query(
        "SELECT * FROM lexigram_append('late', 1, -1, $1, ARRAY['x'], ARRAY[1], ARRAY['{}'], ARRAY['{}'], false)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("first write of its transaction"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_older_schema_is_upgraded_and_rerunning_migrations_is_a_no_op() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.config().schema("app").table_prefix("es_");
    let store = PostgresEventStore::connect(&config).await?;
    store
        .append("s", batch(2), ExpectedVersion::NoStream)
        .await?;
    // Make it look like a database from before snapshots (and checkpoints) existed.
    sqlx::query("DROP TABLE app.es_snapshots, app.es_subscriptions, app.es_members, app.es_parked, app.es_requests")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM app.es_migrations WHERE version >= 2")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await?;

    let store = PostgresEventStore::connect(&config).await?;
    let again = PostgresEventStore::connect(&config).await?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM app.es_migrations ORDER BY version")
            .fetch_all(again.pool())
            .await
            .unwrap();
    assert_eq!(
        applied,
        [1, 2, 3, 4, 5],
        "upgraded once, then nothing to do"
    );
    assert_eq!(store.version("s").await?, 2, "data kept");
    let snapshots = store.snapshot_store();
    snapshots
        .save(Snapshot::new("s".into(), "S", 2, serde_json::json!({}), 1))
        .await?;
    assert!(
        snapshots.latest("s").await?.is_some(),
        "the new table works"
    );

    let err = PostgresEventStore::connect(&db.config().schema("x; DROP SCHEMA public"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_rows_fail_alone_with_typed_errors() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let store = PostgresEventStore::connect(&db.config()).await?;
    let good =
        |n: u64| NewEvent::from_event(&support::Counted { n }, MessageMetadata::new()).unwrap();
    store
        .append("acc", vec![good(1)], ExpectedVersion::NoStream)
        .await?;
    let metadata = serde_json::to_string(&MessageMetadata::new()).unwrap();
    for (version, event_type, payload) in [
        (2_i64, "test.Counted", "{\"n\": 2,"),
        (3, "nobody.Knows", "{\"n\": 3}"),
    ] {
        sqlx::query(
            "INSERT INTO lexigram_events (global_position, stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
             VALUES (nextval('lexigram_positions'), 'acc', $1, $2, $3, $4, 1, $5, $6, now())",
        )
        .bind(version)
        .bind(i64::from(stream_hash("acc")))
        .bind(uuid::Uuid::now_v7())
        .bind(event_type)
        .bind(payload)
        .bind(&metadata)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query("UPDATE lexigram_streams SET version = 3 WHERE stream_id = 'acc'")
        .execute(store.pool())
        .await
        .unwrap();
    store
        .append("acc", vec![good(4)], ExpectedVersion::Exact(3))
        .await?;
    support::check_bad_rows(&store, "acc").await;
    assert_eq!(
        store.read_all(0, 10, None).await?.len(),
        4,
        "the global log reads too"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_wake_up_once_per_append() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let store = PostgresEventStore::connect(&db.config()).await?;
    let mut wakeups = store.listen().await?;
    let written = store
        .append("w", batch(50), ExpectedVersion::NoStream)
        .await?;
    let up_to = tokio::time::timeout(Duration::from_secs(5), wakeups.next())
        .await
        .expect("a wake-up after an append")?;
    assert_eq!(
        Some(up_to),
        written.last_position(),
        "one signal for 50 events, naming the last"
    );
    // Nothing more was sent for the 49 others.
    let extra = tokio::time::timeout(Duration::from_millis(200), wakeups.next()).await;
    assert!(
        extra.is_err(),
        "a single notification per append: {extra:?}"
    );
    // A conflicting append sends nothing either.
    let _ = store.append("w", batch(1), ExpectedVersion::NoStream).await;
    let extra = tokio::time::timeout(Duration::from_millis(200), wakeups.next()).await;
    assert!(extra.is_err(), "no signal without events: {extra:?}");
    Ok(())
}

#[tokio::test]
async fn a_closed_store_and_a_bad_server_say_what_failed() {
    let config = PostgresConfig::new("postgres://nobody@127.0.0.1:1/none")
        .acquire_timeout(Duration::from_millis(500));
    let err = PostgresEventStore::connect(&config).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::StoreConnection {
                backend: "postgres",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("DSN"), "{err}");
}

#[test]
fn an_append_never_leaves_its_span_entered_while_other_tasks_run() {
    if !support::alone("an_append_never_leaves_its_span_entered_while_other_tasks_run") {
        return;
    }
    let _serial = SERIAL.blocking_lock();
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = setup.block_on(TestDb::create()) else {
        return;
    };
    let config = db.fresh_schema();
    let (unrelated, inside, appends) =
        support::spans::unrelated_events_inside_appends(async move {
            let store = PostgresEventStore::connect(&config).await.unwrap();
            for n in 0..50 {
                store
                    .append("s", vec![event(n)], ExpectedVersion::Any)
                    .await
                    .unwrap();
            }
            store.close().await.unwrap();
        });
    assert_eq!(
        appends, 50,
        "each append opened its span (the check is not vacuous)"
    );
    assert!(
        unrelated > 50,
        "the other task ran during the appends ({unrelated} lines)"
    );
    assert_eq!(
        inside, 0,
        "{inside} of {unrelated} unrelated log lines landed in `lexigram.append`"
    );
}

/// Rows written behind the store's back with metadata that is not JSON and a `recorded_at` of
/// `infinity` (which sqlx's own conversion panics on): each reads as one damaged event, and
/// no reader of the log is stopped by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_fails_alone_and_never_stops_readers_of_the_log() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.fresh_schema();
    let store = PostgresEventStore::connect(&config).await?;
    let good =
        |n: u64| NewEvent::from_event(&support::Counted { n }, MessageMetadata::new()).unwrap();
    store
        .append("acc", vec![good(1)], ExpectedVersion::NoStream)
        .await?;
    let metadata = serde_json::to_string(&MessageMetadata::new()).unwrap();
    let (s, p) = (&config.schema, &config.table_prefix);
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    for (version, metadata, recorded_at) in [
        (2_i64, "{not json", "now()"),
        (3, metadata.as_str(), "'infinity'::timestamptz"),
        (4, metadata.as_str(), "'-infinity'::timestamptz"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {s}.{p}events (global_position, stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
             VALUES (nextval('{s}.{p}positions'), 'acc', $1, $2, $3, 'test.Counted', 1, '{{\"n\": 1}}', $4, {recorded_at})"
        ))
        .bind(version)
        .bind(i64::from(stream_hash("acc")))
        .bind(uuid::Uuid::now_v7())
        .bind(metadata)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query(&format!(
        "UPDATE {s}.{p}streams SET version = 4 WHERE stream_id = 'acc'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    store
        .append("acc", vec![good(5)], ExpectedVersion::Exact(4))
        .await?;
    support::check_damaged_rows(
        &store,
        "acc",
        5,
        &[
            (2, "`metadata` is not the JSON of message metadata"),
            (3, "`recorded_at` is not a finite timestamp"),
            (4, "`recorded_at` is not a finite timestamp"),
        ],
    )
    .await;
    let info = store.stream_info("acc").await?;
    assert_eq!(info.map(|i| i.version), Some(5));
    Ok(())
}

/// Two listeners on a store whose pool has two connections: appends and reads still get a
/// connection at once (each listener has its own), and both listeners wake up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_use_their_own_connections_not_the_stores_pool() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db
        .fresh_schema()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2));
    let store = PostgresEventStore::connect(&config).await?;
    let mut first = store.listen().await?;
    let mut second = store.listen().await?;
    let written = store
        .append("l", batch(3), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(store.read("l", VersionRange::all()).await?.len(), 3);
    let last = written.positions[2];
    for wakeups in [&mut first, &mut second] {
        let announced = tokio::time::timeout(Duration::from_secs(5), wakeups.next())
            .await
            .expect("a wake-up within 5 s")?;
        assert_eq!(announced, last);
    }
    Ok(())
}

/// With `postgres-tls`, `sslmode=require` connects over TLS (the server on this machine has a
/// self-signed certificate, which `require` accepts, as libpq does: it encrypts without
/// verifying), and every call of the store goes through the encrypted connections.
#[cfg(feature = "postgres-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_over_tls() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let url = support::postgres::with_param(&db.url, "sslmode", "require");
    let config = PostgresConfig::new(url.as_str())
        .schema("tls")
        .max_connections(1);
    let store = PostgresEventStore::connect(&config).await?;
    store
        .append("tls", batch(3), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(store.read("tls", VersionRange::all()).await?.len(), 3);
    // One connection in the pool: the one the append and the read used.
    let ssl: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(ssl, Some(true), "the store's connection is not encrypted");

    // `verify-full` checks the certificate: the server's is issued for `localhost` (and
    // self-signed), not for the test URL's `127.0.0.1`, so it is refused, with rustls's reason.
    let url = support::postgres::with_param(&db.url, "sslmode", "verify-full");
    let config = PostgresConfig::new(url.as_str())
        .schema("tls")
        .acquire_timeout(Duration::from_secs(5));
    let err = PostgresEventStore::connect(&config).await.unwrap_err();
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        matches!(err, Error::StoreConnection { .. })
            && source.as_deref().is_some_and(|s| s.contains("certificate")),
        "an untrusted certificate is refused: {err} ({source:?})"
    );
    Ok(())
}

/// Without `postgres-tls`, a DSN that insists on TLS is a configuration error before any I/O
/// that says which feature to enable and never shows the DSN; with it, the DSN is valid.
#[tokio::test]
async fn a_dsn_that_insists_on_tls_needs_the_postgres_tls_feature() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let config = PostgresConfig::new(format!(
            "postgres://app:hunter2@127.0.0.1:1/app?sslmode={mode}"
        ))
        .acquire_timeout(Duration::from_millis(500));
        let problems = config.validate();
        if cfg!(feature = "postgres-tls") {
            assert_eq!(problems, Vec::<String>::new());
            continue;
        }
        assert_eq!(problems.len(), 1, "{problems:?}");
        let problem = &problems[0];
        assert!(
            problem.contains("`postgres-tls` cargo feature"),
            "{problem}"
        );
        assert!(problem.contains(&format!("sslmode={mode}")), "{problem}");
        assert!(!problem.contains("hunter2"), "{problem}");
        let err = PostgresEventStore::connect(&config).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(!err.is_retryable(), "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }
    for mode in ["disable", "allow", "prefer"] {
        let config = PostgresConfig::new(format!("postgres://app@db/app?sslmode={mode}"));
        assert_eq!(config.validate(), Vec::<String>::new(), "{mode}");
    }
}

#[test]
fn with_param_adds_or_replaces_a_query_parameter() {
    assert_eq!(
        support::postgres::with_param("postgres://u@h/db", "sslmode", "require"),
        "postgres://u@h/db?sslmode=require"
    );
    assert_eq!(
        support::postgres::with_param(
            "postgres://u@h/db?application_name=t&sslmode=disable",
            "sslmode",
            "require"
        ),
        "postgres://u@h/db?application_name=t&sslmode=require"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_on_the_same_database_wakes_the_first_stores_signal() -> lexigram::Result<()>
{
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.fresh_schema();
    let first = PostgresEventStore::connect(&config).await?;
    // Another pool on the same database: what another process would be.
    let second = PostgresEventStore::connect(&config).await?;
    let mut signal = first.append_signal();
    let mut own = first.append_signal();
    // The first call starts the listener in the background; give it time to connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = second
        .append("other-1", batch(2), ExpectedVersion::NoStream)
        .await?;
    let last = *written.positions.last().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while signal.announced() < last {
        let woke = tokio::time::timeout_at(deadline, signal.changed()).await;
        assert!(
            matches!(woke, Ok(Some(_))),
            "the first store's signal hears the second store's append within 1 s: {woke:?}, announced {}",
            signal.announced()
        );
    }
    // In-process appends wake at once, without the server.
    let mine = first
        .append("mine-1", batch(1), ExpectedVersion::NoStream)
        .await?;
    let woke = tokio::time::timeout(Duration::from_secs(1), async {
        while own.announced() < mine.positions[0] {
            if own.changed().await.is_none() {
                break;
            }
        }
    })
    .await;
    assert!(woke.is_ok() && own.announced() >= mine.positions[0]);
    first.close().await?;
    // What was announced before the close may still be delivered; then the signal ends.
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        while signal.changed().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "closing ends the signal");
    second.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_page_keeps_the_settled_watermark() -> lexigram::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.fresh_schema();
    let store = PostgresEventStore::connect(&config).await?;
    store
        .append("a", batch(2), ExpectedVersion::NoStream)
        .await?;
    // An open transaction that appended holds positions the page must neither return nor
    // claim to have scanned past.
    let mut open = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    let (status, held) = raw_append(&mut open, &config, "held", &batch(1)).await;
    assert_eq!(status, 0);
    store
        .append("b", batch(1), ExpectedVersion::NoStream)
        .await?;
    let page = store
        .read_page(0, 100, &lexigram::store::ReadFilter::all())
        .await?;
    assert_eq!(page.events.len(), 2, "only rows below the open transaction");
    assert!(
        page.scanned_to < held[0] as u64,
        "scanned_to {} stays below the open transaction's position {}",
        page.scanned_to,
        held[0]
    );
    sqlx::query("COMMIT").execute(&mut open).await.unwrap();
    let page = store
        .read_page(page.scanned_to, 100, &lexigram::store::ReadFilter::all())
        .await?;
    let positions: Vec<u64> = page.events.iter().map(|e| e.global_position).collect();
    assert!(positions.contains(&(held[0] as u64)), "{positions:?}");
    assert_eq!(page.scanned_to, store.last_position().await?);
    Ok(())
}
