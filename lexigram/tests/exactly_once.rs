//! Exactly-once SQL effects (`ExactlyOnce`): a reaction's writes commit with its checkpoint in
//! the events' own database. Checked on SQLite and PostgreSQL with real processes that abort
//! mid-batch, PostgreSQL backends killed mid-batch, a failing event whose writes are undone
//! and parked then replayed, and three worker processes sharing eight partitions while one is
//! killed (T3, T11 of the design brief).

#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lexigram::async_trait;
use lexigram::error::BoxError;
use lexigram::message::{Event, EventEnvelope, MessageMetadata, NewEvent};
use lexigram::store::{EventStore, ExpectedVersion};
use lexigram::subscription::{
    CheckpointStore, ExactlyOnce, NodeId, ReactionContext, Reactions, Subscription,
    TransactionalReactor,
};
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

const ROLE: &str = "LEXIGRAM_TEST_ROLE";

/// The projection: one `ledger` row per event (its id the key, in the order written) and a
/// running `totals` count, both in the events' database. Fails for good on `fail` while set.
struct Ledger {
    fail: Option<(String, u64)>,
    broken: Arc<AtomicBool>,
    /// A pause after each event's writes (a slow projection, so a rebuild takes a while).
    delay: Option<Duration>,
    /// Writes the batch's rows in one statement at its flush instead of one per event.
    buffered: bool,
}

impl Ledger {
    fn new() -> Self {
        Self {
            fail: None,
            broken: Arc::new(AtomicBool::new(false)),
            delay: None,
            buffered: false,
        }
    }

    /// The rows `flush` writes: (event id, stream, seq) of each event, checked.
    fn rows(
        &self,
        events: &[Arc<EventEnvelope>],
    ) -> Result<Vec<(uuid::Uuid, String, i64)>, BoxError> {
        events
            .iter()
            .map(|event| {
                let e: Numbered = event.decode()?;
                self.check(&e)?;
                Ok((event.event_id.as_uuid(), e.stream, i64::try_from(e.seq)?))
            })
            .collect()
    }

    async fn slow_down(&self) {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn check(&self, e: &Numbered) -> Result<(), BoxError> {
        if self.broken.load(Ordering::SeqCst)
            && self
                .fail
                .as_ref()
                .is_some_and(|(s, n)| *s == e.stream && *n == e.seq)
        {
            return Err(format!("{}#{} cannot be handled", e.stream, e.seq).into());
        }
        Ok(())
    }
}

const SQLITE_SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS ledger (n INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, events INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO totals (id, events) VALUES (1, 0)",
];

const POSTGRES_SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS ledger (n BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, stream TEXT NOT NULL, seq BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, events BIGINT NOT NULL)",
    "INSERT INTO totals (id, events) VALUES (1, 0) ON CONFLICT DO NOTHING",
];

#[cfg(feature = "sqlite")]
#[async_trait]
impl TransactionalReactor<sqlx::Sqlite> for Ledger {
    async fn react(
        &self,
        conn: &mut sqlx::SqliteConnection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        let e: Numbered = event.decode()?;
        if self.buffered {
            return Ok(());
        }
        sqlx::query("INSERT INTO ledger (event_id, stream, seq) VALUES (?, ?, ?)")
            .bind(ctx.event_id().to_string())
            .bind(&e.stream)
            .bind(i64::try_from(e.seq)?)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE totals SET events = events + 1 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        self.slow_down().await;
        // After the writes: a failure must undo them.
        self.check(&e)
    }

    async fn flush(
        &self,
        conn: &mut sqlx::SqliteConnection,
        events: &[Arc<EventEnvelope>],
    ) -> Result<(), BoxError> {
        if !self.buffered {
            return Ok(());
        }
        let rows = self.rows(events)?;
        let values = vec!["(?, ?, ?)"; rows.len()].join(", ");
        let sql = format!("INSERT INTO ledger (event_id, stream, seq) VALUES {values}");
        let mut insert = sqlx::query(&sql);
        for (id, stream, seq) in &rows {
            insert = insert.bind(id.to_string()).bind(stream).bind(*seq);
        }
        insert.execute(&mut *conn).await?;
        sqlx::query("UPDATE totals SET events = events + ? WHERE id = 1")
            .bind(i64::try_from(rows.len())?)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM ledger")
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE totals SET events = 0 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalReactor<sqlx::Postgres> for Ledger {
    async fn react(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        let e: Numbered = event.decode()?;
        if self.buffered {
            return Ok(());
        }
        sqlx::query("INSERT INTO ledger (event_id, stream, seq) VALUES ($1, $2, $3)")
            .bind(ctx.event_id().as_uuid())
            .bind(&e.stream)
            .bind(i64::try_from(e.seq)?)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE totals SET events = events + 1 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        self.slow_down().await;
        self.check(&e)
    }

    async fn flush(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[Arc<EventEnvelope>],
    ) -> Result<(), BoxError> {
        if !self.buffered {
            return Ok(());
        }
        let rows = self.rows(events)?;
        let (ids, (streams, seqs)): (Vec<uuid::Uuid>, (Vec<String>, Vec<i64>)) =
            rows.into_iter().map(|(i, s, n)| (i, (s, n))).unzip();
        let count = i64::try_from(ids.len())?;
        // One statement for the whole batch, in event order (`n` keeps the order written).
        sqlx::query(
            "INSERT INTO ledger (event_id, stream, seq)
             SELECT i, s, q FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) WITH ORDINALITY AS r(i, s, q, o) ORDER BY o",
        )
        .bind(ids)
        .bind(streams)
        .bind(seqs)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE totals SET events = events + $1 WHERE id = 1")
            .bind(count)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut sqlx::PgConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM ledger")
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE totals SET events = 0 WHERE id = 1")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// One database: opens the stores and the sink as a process of the deployment would.
#[async_trait]
trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// The environment a child process needs to open the same database.
    fn env(&self) -> (&'static str, String);
    async fn open(
        &self,
        ledger: Ledger,
    ) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>, ExactlyOnce);
    /// `(stream, seq)` of every ledger row in the order written, and the running total.
    async fn ledger(&self) -> (Vec<(String, u64)>, u64);
    /// Kills every other connection to the database (PostgreSQL only).
    async fn kill_connections(&self) {}
}

#[cfg(feature = "sqlite")]
struct Sqlite {
    path: std::path::PathBuf,
    owner: bool,
}

#[cfg(feature = "sqlite")]
impl Sqlite {
    fn new() -> Self {
        Self {
            path: std::env::temp_dir().join(format!(
                "lexigram-once-{}.db",
                uuid::Uuid::new_v4().simple()
            )),
            owner: true,
        }
    }

    fn from_env() -> Self {
        Self {
            path: std::env::var("LEXIGRAM_ONCE_DB").unwrap().into(),
            owner: false,
        }
    }
}

#[cfg(feature = "sqlite")]
impl Drop for Sqlite {
    fn drop(&mut self) {
        if self.owner {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
            }
        }
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn env(&self) -> (&'static str, String) {
        ("LEXIGRAM_ONCE_DB", self.path.display().to_string())
    }
    async fn open(
        &self,
        ledger: Ledger,
    ) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>, ExactlyOnce) {
        use lexigram::store::{SqliteConfig, SqliteEventStore};
        use lexigram::subscription::SqliteCheckpointStore;
        let store = SqliteEventStore::connect(&SqliteConfig::file(&self.path))
            .await
            .unwrap();
        for statement in SQLITE_SCHEMA {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        let checkpoints = SqliteCheckpointStore::new(&store);
        let sink = ExactlyOnce::sqlite(&store, ledger);
        (Arc::new(store), Arc::new(checkpoints), sink)
    }
    async fn ledger(&self) -> (Vec<(String, u64)>, u64) {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.path.display()))
            .await
            .unwrap();
        let rows = sqlx::query("SELECT stream, seq FROM ledger ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        let total: i64 = sqlx::query_scalar("SELECT events FROM totals WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (
            rows.iter()
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u64))
                .collect(),
            total as u64,
        )
    }
}

#[cfg(feature = "postgres")]
struct Postgres {
    url: String,
    /// The database, dropped with the test (none in a child process).
    _db: Option<support::postgres::TestDb>,
}

#[cfg(feature = "postgres")]
impl Postgres {
    async fn new() -> Option<Self> {
        let db = support::postgres::TestDb::create().await?;
        Some(Self {
            url: db.url.clone(),
            _db: Some(db),
        })
    }

    fn from_env() -> Self {
        Self {
            url: std::env::var("LEXIGRAM_ONCE_DB").unwrap(),
            _db: None,
        }
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn env(&self) -> (&'static str, String) {
        ("LEXIGRAM_ONCE_DB", self.url.clone())
    }
    async fn open(
        &self,
        ledger: Ledger,
    ) -> (Arc<dyn EventStore>, Arc<dyn CheckpointStore>, ExactlyOnce) {
        use lexigram::store::{PostgresConfig, PostgresEventStore};
        use lexigram::subscription::PostgresCheckpointStore;
        let store = PostgresEventStore::connect(&PostgresConfig::new(self.url.as_str()))
            .await
            .unwrap();
        for statement in POSTGRES_SCHEMA {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        let checkpoints = PostgresCheckpointStore::new(&store);
        let sink = ExactlyOnce::postgres(&store, ledger);
        (Arc::new(store), Arc::new(checkpoints), sink)
    }
    async fn ledger(&self) -> (Vec<(String, u64)>, u64) {
        use sqlx::Row;
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        let rows = sqlx::query("SELECT stream, seq FROM ledger ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        let total: i64 = sqlx::query_scalar("SELECT events FROM totals WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (
            rows.iter()
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u64))
                .collect(),
            total as u64,
        )
    }
    async fn kill_connections(&self) {
        let name = self.url.rsplit('/').next().unwrap().to_owned();
        let admin = std::env::var(support::postgres::URL_VAR).unwrap();
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
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

/// Appends `per_stream` events to `streams` streams `{prefix}-{i}`, interleaved; returns the
/// highest position appended.
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

fn subscription(sink: ExactlyOnce, partitions: u32, batch: usize) -> Subscription {
    Subscription::builder("ledger")
        .partitions(partitions)
        .batch_size(batch)
        .leases(
            Duration::from_millis(1_000),
            Duration::from_millis(250),
            Duration::from_millis(250),
        )
        .poll_interval(Duration::from_millis(100))
        .retry(
            Duration::from_millis(1),
            2.0,
            Duration::from_millis(5),
            0.0,
            3,
        )
        .exactly_once(sink)
        .build()
        .unwrap()
}

/// Every `(stream, seq)` exactly once, in order per stream, and the total matching.
fn assert_exactly_once(
    name: &str,
    rows: &[(String, u64)],
    total: u64,
    want: &BTreeMap<String, u64>,
) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (stream, seq) in rows {
        let previous = last.entry(stream.as_str()).or_default();
        assert_eq!(
            *seq,
            *previous + 1,
            "{name}: stream {stream} wrote {seq} after {previous} (a duplicate or a gap)"
        );
        *previous = *seq;
    }
    for (stream, count) in want {
        assert_eq!(
            last.get(stream.as_str()).copied().unwrap_or(0),
            *count,
            "{name}: all of {stream}"
        );
    }
    let expected: u64 = want.values().sum();
    assert_eq!(
        rows.len() as u64,
        expected,
        "{name}: one ledger row per event"
    );
    assert_eq!(
        total, expected,
        "{name}: the running total counts each event once"
    );
}

/// A child process: runs the ledger until it reaches `LEXIGRAM_ONCE_HEAD` (or is killed),
/// as node `LEXIGRAM_ONCE_NODE`, with `LEXIGRAM_ONCE_PARTITIONS` partitions.
async fn child(backend: &dyn Backend) {
    let (store, checkpoints, sink) = backend.open(Ledger::new()).await;
    let node = std::env::var("LEXIGRAM_ONCE_NODE").unwrap_or_else(|_| "child".into());
    let partitions: u32 =
        std::env::var("LEXIGRAM_ONCE_PARTITIONS").map_or(1, |p| p.parse().unwrap());
    let reactions = Reactions::with_node(store, checkpoints, NodeId::new(node).unwrap());
    reactions
        .start(subscription(sink, partitions, 25))
        .await
        .unwrap();
    let head: u64 = std::env::var("LEXIGRAM_ONCE_HEAD")
        .unwrap()
        .parse()
        .unwrap();
    reactions
        .wait_for("ledger", head, Duration::from_secs(120))
        .await
        .unwrap();
    reactions.shutdown().await.unwrap();
}

/// Spawns this test binary as a child running `test` with `env`.
fn spawn(test: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ROLE, "once-child")
        .stdout(std::process::Stdio::null());
    // LEXIGRAM_TEST_VERBOSE=1 shows what the children print.
    if std::env::var_os("LEXIGRAM_TEST_VERBOSE").is_none() {
        child.stderr(std::process::Stdio::null());
    }
    for (key, value) in env {
        child.env(key, value);
    }
    child.spawn().unwrap()
}

/// Waits for `child` to end, at most `within`.
async fn wait_child(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a child process did not end within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// T3: crashes mid-batch. Four child processes each abort at a random handled event (their
// batch's writes were not committed); a fifth runs to the head. The ledger holds exactly one
// row per event and the total counts each once.
async fn crash_mid_batch(backend: &dyn Backend, test: &str) {
    let (store, _, _) = backend.open(Ledger::new()).await;
    let head = append_streams(&*store, "c", 10, 40).await;
    let crashes = 4;
    for run in 0..=crashes {
        let mut env = vec![backend.env(), ("LEXIGRAM_ONCE_HEAD", head.to_string())];
        if run < crashes {
            let at = 5 + (uuid::Uuid::new_v4().as_u128() % 60) as u64;
            env.push((
                "LEXIGRAM_FAULT",
                format!("subscription.after_handle=abort@{at}"),
            ));
        }
        let mut child = spawn(test, &env);
        let status = wait_child(&mut child, Duration::from_secs(90)).await;
        assert_eq!(status.success(), run == crashes, "run {run}: {status:?}");
    }
    let (rows, total) = backend.ledger().await;
    let want = (0..10).map(|s| (format!("c-{s}"), 40)).collect();
    assert_exactly_once(backend.name(), &rows, total, &want);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_crash_mid_batch_sqlite() {
    if std::env::var(ROLE).as_deref() == Ok("once-child") {
        return child(&Sqlite::from_env()).await;
    }
    crash_mid_batch(&Sqlite::new(), "t3_crash_mid_batch_sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_crash_mid_batch_postgres() {
    if std::env::var(ROLE).as_deref() == Ok("once-child") {
        return child(&Postgres::from_env()).await;
    }
    let Some(backend) = Postgres::new().await else {
        return;
    };
    crash_mid_batch(&backend, "t3_crash_mid_batch_postgres").await;
}

// T3 on PostgreSQL: the server ends the worker's connections while a batch is in flight (the
// child pauses at a fault point inside the batch); the batch rolls back and is done again.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_backend_killed_mid_batch_postgres() {
    if std::env::var(ROLE).as_deref() == Ok("once-child") {
        return child(&Postgres::from_env()).await;
    }
    let Some(backend) = Postgres::new().await else {
        return;
    };
    let (store, _, _) = backend.open(Ledger::new()).await;
    let head = append_streams(&*store, "k", 8, 30).await;
    let env = vec![
        backend.env(),
        ("LEXIGRAM_ONCE_HEAD", head.to_string()),
        (
            "LEXIGRAM_FAULT",
            "subscription.after_handle=pause:1500@10".to_owned(),
        ),
    ];
    let mut child = spawn("t3_backend_killed_mid_batch_postgres", &env);
    // The child handles 9 events, then stalls inside its batch for 1.5 s: kill its
    // connections meanwhile (three times, to also hit the reconnects).
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..3 {
        backend.kill_connections().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let status = wait_child(&mut child, Duration::from_secs(90)).await;
    assert!(status.success(), "the worker recovered: {status:?}");
    let (rows, total) = backend.ledger().await;
    let want = (0..8).map(|s| (format!("k-{s}"), 30)).collect();
    assert_exactly_once("postgres", &rows, total, &want);
}

// A failing event: its writes are undone, it is parked with the rest of its stream while the
// others commit; fixed and replayed, it is written once.
async fn failing_event_is_undone_then_replayed(backend: &dyn Backend, buffered: bool) {
    let mut ledger = Ledger::new();
    ledger.buffered = buffered;
    ledger.fail = Some(("f-1".into(), 2));
    ledger.broken.store(true, Ordering::SeqCst);
    let broken = Arc::clone(&ledger.broken);
    let (store, checkpoints, sink) = backend.open(ledger).await;
    let head = append_streams(&*store, "f", 3, 4).await;
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    reactions.start(subscription(sink, 1, 50)).await.unwrap();
    reactions
        .wait_for("ledger", head, Duration::from_secs(30))
        .await
        .unwrap();
    let parked = reactions.parked("ledger").await.unwrap();
    let keys: Vec<(String, u64, u32)> = parked
        .iter()
        .map(|p| (p.stream.to_string(), p.stream_version, p.attempts))
        .collect();
    assert_eq!(
        keys,
        [
            ("f-1".to_owned(), 2, 3),
            ("f-1".to_owned(), 3, 0),
            ("f-1".to_owned(), 4, 0)
        ],
        "{}: f-1#2 parked after 3 attempts, the rest of f-1 behind it",
        backend.name()
    );
    let (rows, total) = backend.ledger().await;
    let mut want: BTreeMap<String, u64> = [("f-0".to_owned(), 4), ("f-2".to_owned(), 4)].into();
    want.insert("f-1".into(), 1);
    assert_exactly_once(backend.name(), &rows, total, &want);

    broken.store(false, Ordering::SeqCst);
    let report = reactions
        .replay_parked("ledger", "f-1", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!((report.replayed, report.still_parked), (3, 0), "{report:?}");
    assert!(reactions.parked("ledger").await.unwrap().is_empty());
    reactions.shutdown().await.unwrap();
    let (rows, total) = backend.ledger().await;
    want.insert("f-1".into(), 4);
    assert_exactly_once(backend.name(), &rows, total, &want);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_undone_parked_and_replayed_sqlite() {
    failing_event_is_undone_then_replayed(&Sqlite::new(), false).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_undone_parked_and_replayed_postgres() {
    let Some(backend) = Postgres::new().await else {
        return;
    };
    failing_event_is_undone_then_replayed(&backend, false).await;
}

// T15, T16 and T20: a slow projection (1 ms per event) over 1 000 events is rebuilt while a
// writer appends about 200 events/s. The first rebuild is cancelled by a pause at 40 % (no
// partition moves on after its batch in flight, and `wait_for` times out meanwhile); a second
// rebuild starts over from the reset and runs to its end with progress that only moves
// forward, towards a target fixed at its start. Afterwards the ledger holds every event
// exactly once, in order per stream, as a fresh projection over the log would.
async fn rebuild_while_live(backend: &dyn Backend) {
    let mut ledger = Ledger::new();
    ledger.delay = Some(Duration::from_millis(1));
    let (store, checkpoints, sink) = backend.open(ledger).await;
    let head = append_streams(&*store, "r", 40, 25).await;
    let reactions = Reactions::new(store.clone(), checkpoints.clone());
    reactions.start(subscription(sink, 2, 20)).await.unwrap();
    reactions
        .wait_for("ledger", head, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        reactions.rebuild_progress("ledger").await.unwrap(),
        None,
        "never rebuilt"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) && seq < 10_000 {
                seq += 1;
                store
                    .append("live", vec![numbered("live", seq)], ExpectedVersion::Any)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seq
        })
    };

    // T16: cancelled at 40 % by a pause.
    let first = reactions.rebuild("ledger").await.unwrap();
    assert!(first.target >= head && first.position == 0, "{first:?}");
    let started = Instant::now();
    let at = loop {
        let now = reactions.rebuild_progress("ledger").await.unwrap().unwrap();
        if now.fraction() >= 0.4 {
            break now;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{now:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    reactions.pause("ledger").await.unwrap();
    // Each partition stops after the batch it commits next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = reactions.rebuild_progress("ledger").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = reactions.rebuild_progress("ledger").await.unwrap().unwrap();
    assert_eq!(later.position, paused.position, "paused: nothing moves");
    assert!(later.position < later.target, "{at:?} {later:?}");
    let timeout = reactions
        .wait_for("ledger", first.target, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(timeout, lexigram::Error::Timeout { .. }),
        "T20: wait_for times out while paused: {timeout}"
    );

    // T15: rebuilt again from the reset, to the end, while the writer goes on.
    reactions.resume("ledger").await.unwrap();
    let second = reactions.rebuild("ledger").await.unwrap();
    assert!(second.target >= first.target, "{first:?} {second:?}");
    assert!(
        backend.ledger().await.0.len() as u64 <= second.target,
        "the reset emptied the model"
    );
    let mut seen = Vec::new();
    let done = reactions
        .wait_rebuilt("ledger", Duration::from_secs(120), |p| seen.push(p.clone()))
        .await
        .unwrap();
    assert!(
        done.is_done() && done.eta == Some(Duration::ZERO),
        "{done:?}"
    );
    assert!(
        seen.iter().all(|p| p.target == second.target),
        "the target is fixed at the start: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].position <= w[1].position),
        "progress only moves forward: {seen:?}"
    );
    assert!(
        seen.len() >= 2,
        "progress was reported along the way: {seen:?}"
    );

    stop.store(true, Ordering::SeqCst);
    let live = writer.await.unwrap();
    let head = store.last_position().await.unwrap();
    reactions
        .wait_for("ledger", head, Duration::from_secs(60))
        .await
        .unwrap();
    reactions.shutdown().await.unwrap();
    let (rows, total) = backend.ledger().await;
    let mut want: BTreeMap<String, u64> = (0..40).map(|s| (format!("r-{s}"), 25)).collect();
    want.insert("live".into(), live);
    assert_exactly_once(backend.name(), &rows, total, &want);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_t16_rebuild_while_live_after_a_cancelled_one_sqlite() {
    rebuild_while_live(&Sqlite::new()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_t16_rebuild_while_live_after_a_cancelled_one_postgres() {
    let Some(backend) = Postgres::new().await else {
        return;
    };
    rebuild_while_live(&backend).await;
}

// The same with the rows written by the batch's flush, in one statement: the batch whose
// flush fails is written again one event per transaction, so the failing event alone is
// retried and parked, and every other event's row lands once.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_flush_is_narrowed_to_its_event_parked_and_replayed_sqlite() {
    failing_event_is_undone_then_replayed(&Sqlite::new(), true).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_flush_is_narrowed_to_its_event_parked_and_replayed_postgres() {
    let Some(backend) = Postgres::new().await else {
        return;
    };
    failing_event_is_undone_then_replayed(&backend, true).await;
}

// T11: three worker processes share 8 partitions; worker A is killed with SIGKILL mid-run.
// Its partitions are owned by B and C within lease_ttl + claim_interval (+ slack for a loaded
// machine), and every stream's rows are written once, in order, with no gap.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_takeover_keeps_per_stream_order_postgres() {
    if std::env::var(ROLE).as_deref() == Ok("once-child") {
        return child(&Postgres::from_env()).await;
    }
    let Some(backend) = Postgres::new().await else {
        return;
    };
    let (store, checkpoints, _) = backend.open(Ledger::new()).await;
    let head = append_streams(&*store, "t", 200, 5).await;
    let test = "t11_takeover_keeps_per_stream_order_postgres";
    let env = |node: &str| {
        vec![
            backend.env(),
            ("LEXIGRAM_ONCE_HEAD", head.to_string()),
            ("LEXIGRAM_ONCE_NODE", node.to_owned()),
            ("LEXIGRAM_ONCE_PARTITIONS", "8".to_owned()),
            // Slow enough that A is mid-run when it is killed.
            (
                "LEXIGRAM_FAULT",
                "subscription.after_handle=pause:5".to_owned(),
            ),
        ]
    };
    let mut a = spawn(test, &env("a"));
    // A alone for a moment: it claims partitions and handles some events.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = checkpoints.states(Some("ledger")).await.unwrap_or_default();
        let held_by_a = states
            .iter()
            .filter(|s| s.owner.as_ref().map(NodeId::as_str) == Some("a"))
            .count();
        if held_by_a > 0 && states.iter().any(|s| s.position > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "A started: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = spawn(test, &env("b"));
    let mut c = spawn(test, &env("c"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let held_by_a: Vec<u32> = checkpoints
        .states(Some("ledger"))
        .await
        .unwrap()
        .iter()
        .filter(|s| s.owner.as_ref().map(NodeId::as_str) == Some("a"))
        .map(|s| s.key.partition)
        .collect();
    assert!(!held_by_a.is_empty(), "A holds partitions before it dies");
    a.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = a.wait();
    let bound = Duration::from_millis(1_000 + 250);
    let took = loop {
        let states = checkpoints.states(Some("ledger")).await.unwrap();
        let taken = held_by_a.iter().all(|p| {
            states.iter().any(|s| {
                s.key.partition == *p
                    && matches!(s.owner.as_ref().map(NodeId::as_str), Some("b" | "c"))
            })
        });
        let finished = states.iter().all(|s| s.position >= head);
        if taken || finished {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound + Duration::from_secs(2),
            "A's partitions {held_by_a:?} taken over: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("t11: A's partitions taken over {took:?} after SIGKILL (bound {bound:?} + 200 ms)");
    assert!(wait_child(&mut b, Duration::from_secs(120)).await.success());
    assert!(wait_child(&mut c, Duration::from_secs(120)).await.success());
    let (rows, total) = backend.ledger().await;
    let want = (0..200).map(|s| (format!("t-{s}"), 5)).collect();
    assert_exactly_once("postgres", &rows, total, &want);
}
