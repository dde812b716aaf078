//! The PostgreSQL checkpoint store against the shared behavioural suite, in the event
//! store's schema and table prefix, on a database of its own.
//!
//! Needs `LEXIGRAM_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`).

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use lexigram::store::PostgresEventStore;
use lexigram::subscription::{
    CheckpointStore, NodeId, PartitionKey, PostgresCheckpointStore, SubscriptionSpec,
};
use lexigram::testing::checkpoint_store_suite;
use support::postgres::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_checkpoint_store_meets_the_contract() -> lexigram::Result<()> {
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    checkpoint_store_suite(|| {
        let config = db.fresh_schema().table_prefix("app_");
        async move {
            let events = PostgresEventStore::connect(&config).await?;
            Ok(PostgresCheckpointStore::new(&events))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_schema_share_leases_and_others_do_not() -> lexigram::Result<()> {
    let Some(db) = TestDb::create().await else {
        return Ok(());
    };
    let config = db.fresh_schema();
    let one = PostgresCheckpointStore::new(&PostgresEventStore::connect(&config).await?);
    let two = PostgresCheckpointStore::new(&PostgresEventStore::connect(&config).await?);
    let apart =
        PostgresCheckpointStore::new(&PostgresEventStore::connect(&db.fresh_schema()).await?);
    assert_eq!(one.backend(), "postgres");
    let spec = SubscriptionSpec::new("s".into(), 1, 1, 0);
    for store in [&one, &two, &apart] {
        store.register(&spec).await?;
    }
    let key = PartitionKey {
        subscription: Arc::from("s"),
        version: 1,
        partition: 0,
    };
    let ttl = Duration::from_secs(60);
    assert!(one.claim(&key, &NodeId::new("a")?, ttl).await?.is_some());
    assert!(
        two.claim(&key, &NodeId::new("b")?, ttl).await?.is_none(),
        "another process on the same schema sees the lease"
    );
    assert!(
        apart.claim(&key, &NodeId::new("b")?, ttl).await?.is_some(),
        "another schema has its own checkpoints"
    );
    Ok(())
}
