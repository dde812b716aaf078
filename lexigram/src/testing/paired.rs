//! The suite for an event store and the snapshot store that belongs to it.

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aggregate::{Aggregate, Apply, Route};
use crate::error::{EventLoadError, Result};
use crate::message::{Event, EventEnvelope};
use crate::repository::Repository;
use crate::schema::SchemaRegistry;
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
use crate::store::EventStore;

/// Runs the cases where an event store and its snapshot store must agree, each against a fresh
/// pair from `make` (the snapshot store must be the one that belongs to the event store, e.g.
/// [`SqliteEventStore::snapshot_store`](crate::store::SqliteEventStore::snapshot_store)):
///
/// - deleting a stream deletes its snapshots, so an aggregate created again under the same id
///   starts from nothing and can be saved;
/// - a snapshot claiming a version the stream never reached is ignored on load.
pub async fn paired_store_suite<E, S, F, Fut>(make: F) -> Result<()>
where
    E: EventStore,
    S: SnapshotStore,
    F: Fn(Arc<SchemaRegistry>) -> Fut,
    Fut: Future<Output = Result<(E, S)>>,
{
    let fresh = || make(Arc::new(SchemaRegistry::new()));
    let (events, snapshots) = fresh().await?;
    deleting_a_stream_deletes_its_snapshots(Arc::new(events), Arc::new(snapshots)).await?;
    let (events, snapshots) = fresh().await?;
    a_snapshot_ahead_of_its_stream_is_ignored(Arc::new(events), Arc::new(snapshots)).await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Ticked;

impl Event for Ticked {
    const NAME: &'static str = "lexigram.testing.Ticked";
    const VERSION: u32 = 1;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    ticks: u64,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "lexigram.testing.Counter";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Ticked>().finish()
    }
}

impl Apply<Ticked> for Counter {
    fn apply(&mut self, _: &Ticked) {
        self.ticks += 1;
    }
}

fn repository(
    events: &Arc<impl EventStore>,
    snapshots: &Arc<impl SnapshotStore>,
    policy: SnapshotPolicy,
) -> Repository<Counter> {
    let events: Arc<dyn EventStore> = Arc::clone(events) as Arc<dyn EventStore>;
    let snapshots: Arc<dyn SnapshotStore> = Arc::clone(snapshots) as Arc<dyn SnapshotStore>;
    Repository::from_store(events)
        .with_snapshot_manager(crate::snapshot::SnapshotManager::shared(snapshots, policy))
}

async fn tick(repo: &Repository<Counter>, id: &str, times: u64) -> Result<()> {
    let mut counter = repo.load(id).await?;
    for _ in 0..times {
        counter.record(Ticked)?;
    }
    repo.save(&mut counter).await?;
    Ok(())
}

async fn deleting_a_stream_deletes_its_snapshots(
    events: Arc<impl EventStore>,
    snapshots: Arc<impl SnapshotStore>,
) -> Result<()> {
    const CASE: &str = "deleting_a_stream_deletes_its_snapshots";
    let repo = repository(&events, &snapshots, SnapshotPolicy::EveryEvents(2));
    tick(&repo, "c-1", 4).await?;
    tick(&repo, "c-2", 2).await?;
    assert_eq!(
        snapshots.latest("c-1").await?.map(|s| s.version),
        Some(4),
        "[{CASE}] the policy took a snapshot"
    );
    assert!(
        events.delete_stream("c-1").await?,
        "[{CASE}] the stream existed"
    );
    assert!(
        snapshots.latest("c-1").await?.is_none(),
        "[{CASE}] its snapshots went with it"
    );
    assert!(
        snapshots.latest("c-2").await?.is_some(),
        "[{CASE}] other aggregates keep theirs"
    );
    let again = repo.load("c-1").await?;
    assert!(again.is_new(), "[{CASE}] the id starts from nothing");
    assert_eq!(again.state().ticks, 0, "[{CASE}] no old state");
    tick(&repo, "c-1", 1).await?;
    tick(&repo, "c-1", 1).await?;
    let loaded = repo.load("c-1").await?;
    assert_eq!(
        (loaded.version(), loaded.state().ticks),
        (2, 2),
        "[{CASE}] the new aggregate saves and loads"
    );
    Ok(())
}

async fn a_snapshot_ahead_of_its_stream_is_ignored(
    events: Arc<impl EventStore>,
    snapshots: Arc<impl SnapshotStore>,
) -> Result<()> {
    const CASE: &str = "a_snapshot_ahead_of_its_stream_is_ignored";
    let repo = repository(&events, &snapshots, SnapshotPolicy::Never);
    tick(&repo, "c-1", 4).await?;
    snapshots
        .save(Snapshot::new(
            "c-1".into(),
            Counter::TYPE,
            1000,
            json!({ "ticks": 1_000_000 }),
            Counter::SNAPSHOT_VERSION,
        ))
        .await?;
    let loaded = repo.load("c-1").await?;
    assert_eq!(
        (loaded.version(), loaded.state().ticks),
        (4, 4),
        "[{CASE}] the stream's version and state, not the snapshot's"
    );
    tick(&repo, "c-1", 1).await?;
    assert_eq!(
        repo.load("c-1").await?.version(),
        5,
        "[{CASE}] saving still works"
    );
    Ok(())
}
