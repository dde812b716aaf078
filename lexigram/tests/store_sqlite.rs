//! The SQLite stores against the shared behavioural suites, on a file and in memory, plus
//! migrations and rows that cannot be decoded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lexigram::message::{MessageMetadata, NewEvent, Payload};
use lexigram::snapshot::SqliteSnapshotStore;
use lexigram::store::{EventStore, ExpectedVersion, SqliteConfig, SqliteEventStore, stream_hash};
use lexigram::testing::{event_store_suite, paired_store_suite, snapshot_store_suite};

/// Temporary database files, removed (with their WAL files) when dropped.
#[derive(Default, Clone)]
struct TempFiles(Arc<Mutex<Vec<PathBuf>>>);

impl TempFiles {
    fn config(&self) -> SqliteConfig {
        let path = std::env::temp_dir().join(format!("lexigram-test-{}.db", uuid::Uuid::new_v4()));
        self.0.lock().unwrap().push(path.clone());
        SqliteConfig::file(path)
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) > 1 {
            return;
        }
        for path in self.0.lock().unwrap().drain(..) {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_event_store_meets_the_contract() -> lexigram::Result<()> {
    let files = TempFiles::default();
    event_store_suite(|schema| {
        let config = files.config();
        async move {
            Ok(SqliteEventStore::connect(&config)
                .await?
                .with_schema(schema))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_event_store_meets_the_contract() -> lexigram::Result<()> {
    event_store_suite(|schema| async move {
        Ok(SqliteEventStore::connect(&SqliteConfig::in_memory())
            .await?
            .with_schema(schema))
    })
    .await
}

#[tokio::test]
async fn snapshot_stores_meet_the_contract() -> lexigram::Result<()> {
    let files = TempFiles::default();
    snapshot_store_suite(|| {
        let config = files.config();
        async move { SqliteSnapshotStore::connect(&config).await }
    })
    .await?;
    snapshot_store_suite(|| async {
        SqliteSnapshotStore::connect(&SqliteConfig::in_memory()).await
    })
    .await?;
    // Beside an event store, sharing its connections: closing it leaves the events usable.
    let opened = Arc::new(Mutex::new(Vec::new()));
    snapshot_store_suite(|| {
        let opened = Arc::clone(&opened);
        async move {
            let events = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
            let store = events.snapshot_store();
            opened.lock().unwrap().push(events);
            Ok(store)
        }
    })
    .await?;
    let events: Vec<SqliteEventStore> = opened.lock().unwrap().drain(..).collect();
    for store in events {
        store.ping().await?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_stores_delete_snapshots_with_streams_and_distrust_snapshots_ahead()
-> lexigram::Result<()> {
    let files = TempFiles::default();
    paired_store_suite(|schema| {
        let config = files.config();
        async move {
            let events = SqliteEventStore::connect(&config)
                .await?
                .with_schema(schema);
            let snapshots = events.snapshot_store();
            Ok((events, snapshots))
        }
    })
    .await
}

#[tokio::test]
async fn reopening_runs_no_migration_twice_and_keeps_data() -> lexigram::Result<()> {
    let files = TempFiles::default();
    let config = files.config().table_prefix("app_");
    let store = SqliteEventStore::connect(&config).await?;
    let event = NewEvent::new("E", 1, Payload::encode(&1).unwrap(), MessageMetadata::new());
    store
        .append("s", vec![event], ExpectedVersion::NoStream)
        .await?;
    store.close().await?;

    let again = SqliteEventStore::connect(&config).await?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM app_migrations ORDER BY version")
            .fetch_all(again.pool())
            .await
            .unwrap();
    assert_eq!(
        applied.len(),
        5,
        "each migration recorded once: {applied:?}"
    );
    assert_eq!(again.version("s").await?, 1, "data survives reopening");
    Ok(())
}

#[tokio::test]
async fn an_invalid_prefix_is_refused_before_touching_the_file() {
    let err = SqliteEventStore::connect(&SqliteConfig::in_memory().table_prefix("x; DROP TABLE y"))
        .await
        .unwrap_err();
    assert!(matches!(err, lexigram::Error::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("not a valid SQL identifier"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_rows_fail_alone_with_typed_errors() -> lexigram::Result<()> {
    let files = TempFiles::default();
    let store = SqliteEventStore::connect(&files.config()).await?;
    let good =
        |n: u64| NewEvent::from_event(&support::Counted { n }, MessageMetadata::new()).unwrap();
    store
        .append("acc", vec![good(1)], ExpectedVersion::NoStream)
        .await?;
    // Rows written behind the store's back: corrupt JSON, then a type nobody registered.
    let metadata = serde_json::to_string(&MessageMetadata::new()).unwrap();
    for (version, event_type, payload) in [
        (2, "test.Counted", "{\"n\": 2,"),
        (3, "nobody.Knows", "{\"n\": 3}"),
    ] {
        sqlx::query(
            "INSERT INTO lexigram_events (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
             VALUES ('acc', ?1, ?2, ?3, ?4, 1, ?5, ?6, 0)",
        )
        .bind(version)
        .bind(i64::from(stream_hash("acc")))
        .bind(uuid::Uuid::now_v7().to_string())
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
    Ok(())
}

#[test]
fn an_append_never_leaves_its_span_entered_while_other_tasks_run() {
    if !support::alone("an_append_never_leaves_its_span_entered_while_other_tasks_run") {
        return;
    }
    let files = TempFiles::default();
    let config = files.config();
    let (unrelated, inside, appends) =
        support::spans::unrelated_events_inside_appends(async move {
            let store = SqliteEventStore::connect(&config).await.unwrap();
            for n in 0..50 {
                let event =
                    NewEvent::new("E", 1, Payload::encode(&n).unwrap(), MessageMetadata::new());
                store
                    .append("s", vec![event], ExpectedVersion::Any)
                    .await
                    .unwrap();
            }
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

/// Rows written behind the store's back with metadata that is not JSON, an event id that is
/// not a UUID, a blob where the payload's text belongs, and text where integers belong: each
/// reads as one damaged event, and no reader of the log is stopped by it.
#[tokio::test]
async fn a_damaged_row_fails_alone_and_never_stops_readers_of_the_log() -> lexigram::Result<()> {
    let files = TempFiles::default();
    let store = SqliteEventStore::connect(&files.config()).await?;
    let good =
        |n: u64| NewEvent::from_event(&support::Counted { n }, MessageMetadata::new()).unwrap();
    store
        .append("acc", vec![good(1)], ExpectedVersion::NoStream)
        .await?;
    let metadata = serde_json::to_string(&MessageMetadata::new()).unwrap();
    let hash = i64::from(stream_hash("acc"));
    for (version, id, event_version, payload, metadata_sql, recorded_at) in [
        // Metadata that is not JSON.
        ("2", "uuid", "1", "'{\"n\": 2}'", "'{not json'", "0"),
        // An event id that is not a UUID.
        ("3", "'not-a-uuid'", "1", "'{\"n\": 3}'", "?2", "0"),
        // A blob where the payload's text belongs.
        ("4", "uuid", "1", "X'00FF'", "?2", "0"),
        // Text where the schema version and the time (integers) belong.
        ("5", "uuid", "'one'", "'{\"n\": 5}'", "?2", "'yesterday'"),
    ] {
        let id = if id == "uuid" {
            format!("'{}'", uuid::Uuid::now_v7())
        } else {
            id.to_owned()
        };
        sqlx::query(&format!(
            "INSERT INTO lexigram_events (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
             VALUES ('acc', {version}, ?1, {id}, 'test.Counted', {event_version}, {payload}, {metadata_sql}, {recorded_at})"
        ))
        .bind(hash)
        .bind(&metadata)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query("UPDATE lexigram_streams SET version = 5 WHERE stream_id = 'acc'")
        .execute(store.pool())
        .await
        .unwrap();
    store
        .append("acc", vec![good(6)], ExpectedVersion::Exact(5))
        .await?;
    store
        .append("other", vec![good(7)], ExpectedVersion::NoStream)
        .await?;
    support::check_damaged_rows(
        &store,
        "acc",
        7,
        &[
            (2, "`metadata` is not the JSON of message metadata"),
            (3, "`event_id` is not a UUID"),
            (4, "`payload` is not text"),
            (5, "`event_version` is not an integer"),
        ],
    )
    .await;
    Ok(())
}

/// Many stores opening one fresh file at once while another store appends to it: every open
/// succeeds (an up-to-date schema is not migrated again under a write lock, and a busy file
/// is retried within `busy_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_a_file_under_write_load_succeeds_within_the_busy_timeout() -> lexigram::Result<()>
{
    let files = TempFiles::default();
    let config = files.config().max_connections(2);
    let writer = Arc::new(SqliteEventStore::connect(&config).await?);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = tokio::spawn({
        let (writer, stop) = (Arc::clone(&writer), Arc::clone(&stop));
        async move {
            let mut n = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
                let batch = (0..20)
                    .map(|i| {
                        NewEvent::new("E", 1, Payload::encode(&i).unwrap(), MessageMetadata::new())
                    })
                    .collect();
                writer
                    .append(&format!("s-{}", n % 50), batch, ExpectedVersion::Any)
                    .await?;
                n += 1;
            }
            Ok::<_, lexigram::Error>(n)
        }
    });
    let mut failures = Vec::new();
    for _round in 0..4 {
        let opens: Vec<_> = (0..40)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move {
                    let store = SqliteEventStore::connect(&config).await?;
                    store.close().await
                })
            })
            .collect();
        for open in opens {
            if let Err(err) = open.await.unwrap() {
                failures.push(err.to_string());
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = writing.await.unwrap()?;
    assert!(appended > 0, "the writer wrote while the stores opened");
    assert!(
        failures.is_empty(),
        "{} of 160 opens failed: {:?}",
        failures.len(),
        failures.first()
    );
    Ok(())
}

/// Waits (at most `within`) until `signal` has announced `position` or more.
async fn woken_up_to(
    signal: &mut lexigram::store::AppendSignal,
    position: u64,
    within: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while signal.announced() < position {
        match tokio::time::timeout_at(deadline, signal.changed()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_on_the_same_file_wakes_the_first_stores_signal() -> lexigram::Result<()> {
    let files = TempFiles::default();
    let config = files.config();
    let first = SqliteEventStore::connect(&config).await?;
    // Another pool on the same file: what another process would be.
    let second = SqliteEventStore::connect(&config).await?;
    let mut signal = first.append_signal();
    let written = second
        .append("other-1", vec![event(1)], ExpectedVersion::NoStream)
        .await?;
    let last = written.last_position().unwrap();
    assert!(
        woken_up_to(&mut signal, last, std::time::Duration::from_secs(1)).await,
        "the first store's signal hears the second store's append within 1 s (announced {})",
        signal.announced()
    );
    first.close().await?;
    // What was announced before the close may still be delivered; then the signal ends.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while signal.changed().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "closing ends the signal");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_transaction_takes_turns_with_appends() -> lexigram::Result<()> {
    let files = TempFiles::default();
    let store = SqliteEventStore::connect(&files.config()).await?;
    let fail = |e: sqlx::Error| lexigram::Error::InvalidArgument {
        reason: e.to_string(),
    };
    let mut tx = store.write_tx().await?;
    sqlx::query("CREATE TABLE read_model (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    sqlx::query("INSERT INTO read_model VALUES ('a', 1)")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    let appender = store.clone();
    let append = tokio::spawn(async move {
        appender
            .append("s", vec![event(1)], ExpectedVersion::NoStream)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !append.is_finished(),
        "an append waits while a write transaction is open"
    );
    assert_eq!(store.version("s").await?, 0, "readers are not blocked");
    tx.commit().await?;
    let appended = tokio::time::timeout(std::time::Duration::from_secs(5), append)
        .await
        .expect("the append proceeds after the commit")
        .unwrap()?;
    assert_eq!(appended.version, 1);
    let n: i64 = sqlx::query_scalar("SELECT n FROM read_model WHERE id = 'a'")
        .fetch_one(store.pool())
        .await
        .map_err(fail)?;
    assert_eq!(n, 1, "the write transaction committed");

    // Dropped without a commit: rolled back, and the turn is given up.
    let mut tx = store.write_tx().await?;
    sqlx::query("INSERT INTO read_model VALUES ('b', 2)")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    drop(tx);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.append("s", vec![event(2)], ExpectedVersion::Exact(1)),
    )
    .await
    .expect("the turn is given up on drop")?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM read_model")
        .fetch_one(store.pool())
        .await
        .map_err(fail)?;
    assert_eq!(count, 1, "a dropped write transaction rolls back");
    Ok(())
}

#[test]
fn change_poll_interval_must_be_above_zero() {
    let config = SqliteConfig::in_memory().change_poll_interval(std::time::Duration::ZERO);
    let problems = config.validate();
    assert!(
        problems.iter().any(|p| p.contains("change_poll_interval")),
        "{problems:?}"
    );
    assert_eq!(
        SqliteConfig::default().change_poll_interval,
        std::time::Duration::from_millis(50)
    );
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("E", 1, Payload::encode(&n).unwrap(), MessageMetadata::new())
}
