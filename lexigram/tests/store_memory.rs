//! The in-memory stores against the shared behavioural suites.

use lexigram::snapshot::InMemorySnapshotStore;
use lexigram::store::InMemoryEventStore;
use lexigram::testing::{event_store_suite, snapshot_store_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_event_store_meets_the_contract() -> lexigram::Result<()> {
    event_store_suite(|schema| async move { Ok(InMemoryEventStore::new().with_schema(schema)) })
        .await
}

#[tokio::test]
async fn memory_snapshot_store_meets_the_contract() -> lexigram::Result<()> {
    snapshot_store_suite(|| async { Ok(InMemorySnapshotStore::new()) }).await
}
