//! The SQLite checkpoint store against the shared behavioural suite, on a file and in
//! memory, in the event store's database and table prefix.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lexigram::store::{EventStore, SqliteConfig, SqliteEventStore};
use lexigram::subscription::{
    CheckpointStore, NodeId, PartitionKey, SqliteCheckpointStore, SubscriptionSpec,
};
use lexigram::testing::checkpoint_store_suite;

/// A temporary database file, removed (with its WAL files) when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("lexigram-checkpoints-{}.db", uuid::Uuid::new_v4())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoint_store_meets_the_contract_on_a_file() -> lexigram::Result<()> {
    let files = std::sync::Mutex::new(Vec::new());
    let result = checkpoint_store_suite(|| {
        let file = TempFile::new();
        let config = SqliteConfig::file(&file.0).table_prefix("app_");
        files.lock().unwrap().push(file);
        async move {
            let events = SqliteEventStore::connect(&config).await?;
            Ok(SqliteCheckpointStore::new(&events))
        }
    })
    .await;
    drop(files);
    result
}

#[tokio::test]
async fn sqlite_checkpoint_store_meets_the_contract_in_memory() -> lexigram::Result<()> {
    checkpoint_store_suite(|| async {
        let events = SqliteEventStore::connect(&SqliteConfig::in_memory()).await?;
        Ok(SqliteCheckpointStore::new(&events))
    })
    .await
}

#[tokio::test]
async fn checkpoints_live_in_the_event_store_tables_and_survive_a_reopen() -> lexigram::Result<()> {
    let file = TempFile::new();
    let config = SqliteConfig::file(&file.0).table_prefix("bank_");
    let key = PartitionKey {
        subscription: Arc::from("bank.mailer"),
        version: 1,
        partition: 1,
    };
    {
        let events = SqliteEventStore::connect(&config).await?;
        let store = SqliteCheckpointStore::new(&events);
        assert_eq!(store.backend(), "sqlite");
        assert!(format!("{store:?}").contains("bank_"));
        store
            .register(&SubscriptionSpec::new("bank.mailer".into(), 1, 2, 0))
            .await?;
        let lease = store
            .claim(&key, &NodeId::new("a")?, Duration::from_secs(60))
            .await?
            .expect("free");
        store.commit(&lease, 41, &[]).await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'bank_%' ORDER BY name",
        )
        .fetch_all(events.pool())
        .await
        .unwrap();
        for table in ["bank_members", "bank_parked", "bank_subscriptions"] {
            assert!(tables.contains(&table.to_owned()), "{table} in {tables:?}");
        }
        events.close().await?;
    }
    let events = SqliteEventStore::connect(&config).await?;
    let store = SqliteCheckpointStore::new(&events);
    let states = store.states(Some("bank.mailer")).await?;
    assert_eq!(states[1].position, 41, "the checkpoint is durable");
    assert_eq!(states[1].owner.as_ref().map(NodeId::as_str), Some("a"));
    Ok(())
}
