//! The in-memory checkpoint store against the shared behavioural suite, on tokio's paused
//! clock (leases run out without waiting).

use std::sync::Arc;
use std::time::Duration;

use lexigram::subscription::{
    CheckpointStore, InMemoryCheckpointStore, NodeId, PartitionKey, SubscriptionSpec,
};
use lexigram::testing::checkpoint_store_suite;

#[tokio::test(start_paused = true)]
async fn memory_checkpoint_store_meets_the_contract() -> lexigram::Result<()> {
    checkpoint_store_suite(|| async { Ok(InMemoryCheckpointStore::new()) }).await
}

#[tokio::test(start_paused = true)]
async fn clones_share_leases_and_expiry_follows_tokio_time() -> lexigram::Result<()> {
    let one = InMemoryCheckpointStore::new();
    let two = one.clone();
    one.register(&SubscriptionSpec::new("s".into(), 1, 1, 0))
        .await?;
    let key = PartitionKey {
        subscription: Arc::from("s"),
        version: 1,
        partition: 0,
    };
    let (a, b) = (NodeId::new("a")?, NodeId::new("b")?);
    let ttl = Duration::from_secs(3600);
    let lease = one.claim(&key, &a, ttl).await?;
    assert!(lease.is_some());
    assert!(two.claim(&key, &b, ttl).await?.is_none(), "shared state");
    tokio::time::advance(ttl).await;
    let taken = two.claim(&key, &b, ttl).await?;
    assert_eq!(
        taken.map(|l| l.epoch),
        Some(2),
        "an hour later, on tokio's clock"
    );
    Ok(())
}
