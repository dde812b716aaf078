//! The in-memory stores against the shared behavioural suites.

use lexigram::snapshot::InMemorySnapshotStore;
use lexigram::store::InMemoryEventStore;
use lexigram::testing::{event_store_suite, paired_store_suite, snapshot_store_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_event_store_meets_the_contract() -> lexigram::Result<()> {
    event_store_suite(|schema| async move { Ok(InMemoryEventStore::new().with_schema(schema)) })
        .await
}

#[tokio::test]
async fn memory_snapshot_store_meets_the_contract() -> lexigram::Result<()> {
    snapshot_store_suite(|| async { Ok(InMemorySnapshotStore::new()) }).await
}

#[tokio::test]
async fn memory_stores_delete_snapshots_with_streams_and_distrust_snapshots_ahead()
-> lexigram::Result<()> {
    paired_store_suite(|schema| async move {
        let events = InMemoryEventStore::new().with_schema(schema);
        let snapshots = events.snapshot_store();
        Ok((events, snapshots))
    })
    .await
}

#[tokio::test]
async fn retention_keeps_the_newest_events_without_changing_versions() -> lexigram::Result<()> {
    use lexigram::message::{MessageMetadata, NewEvent, Payload};
    use lexigram::store::{EventStore, ExpectedVersion, VersionRange};

    let store = InMemoryEventStore::new().with_retention(3);
    let event = |n: u64| {
        NewEvent::new(
            "E",
            1,
            Payload::from_json_text(n.to_string()),
            MessageMetadata::new(),
        )
    };
    store
        .append("s", (1..=5).map(event).collect(), ExpectedVersion::NoStream)
        .await?;
    store
        .append("s", vec![event(6)], ExpectedVersion::Exact(5))
        .await?;
    let kept: Vec<u64> = store
        .read("s", VersionRange::all())
        .await?
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(kept, [4, 5, 6]);
    assert_eq!(store.version("s").await?, 6);
    assert_eq!(store.count(None).await?, 3);
    assert_eq!(
        store.read_all(0, 10, None).await?.len(),
        3,
        "dropped events leave the global log too"
    );
    Ok(())
}
