//! The repository: load, save, conflicts, snapshots and publishing.

mod common;

use std::sync::Arc;

use common::{Account, Deposited, Opened, Withdrawn};
use lexigram::error::{ConcurrencyError, Error};
use lexigram::message::EventEnvelope;
use lexigram::repository::{AGGREGATE_TYPE_KEY, EventPublisher};
use lexigram::schema::SchemaRegistry;
use lexigram::snapshot::{InMemorySnapshotStore, Snapshot, SnapshotPolicy, SnapshotStore};
use lexigram::store::{EventStore, ExpectedVersion, VersionRange};
use lexigram::{InMemoryEventStore, Repository, Result};
use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<EventEnvelope>>);

#[async_trait::async_trait]
impl EventPublisher for Recorder {
    async fn publish(&self, envelopes: &[EventEnvelope]) -> Result<()> {
        self.0.lock().extend_from_slice(envelopes);
        Ok(())
    }
}

async fn opened_with_deposits(repo: &Repository<Account>, id: &str, deposits: u64) -> Result<()> {
    let mut account = repo.load(id).await?;
    account.record(Opened {
        owner: "ada".into(),
    })?;
    for amount in 1..=deposits {
        account.record(Deposited { amount })?;
    }
    repo.save(&mut account).await?;
    Ok(())
}

#[tokio::test]
async fn load_replays_saved_events_and_new_ids_come_back_empty() -> Result<()> {
    let repo = Repository::<Account>::new(InMemoryEventStore::new());
    let fresh = repo.load("acc-1").await?;
    assert!(fresh.is_new());
    assert_eq!(fresh.version(), 0);
    assert!(!repo.exists("acc-1").await?);
    let missing = repo.load_or_error("acc-1").await;
    assert!(matches!(
        missing,
        Err(Error::AggregateNotFound {
            aggregate_type: "Account",
            ..
        })
    ));

    opened_with_deposits(&repo, "acc-1", 3).await?;
    let loaded = repo.load_or_error("acc-1").await?;
    assert_eq!(loaded.version(), 4);
    assert_eq!(
        loaded.state(),
        &Account {
            owner: "ada".into(),
            balance: 6,
            movements: 3
        }
    );
    assert!(
        loaded.pending().is_empty(),
        "replaying history records nothing"
    );
    assert!(repo.exists("acc-1").await?);
    Ok(())
}

#[tokio::test]
async fn save_stamps_stream_version_and_aggregate_type_and_publishes_positions() -> Result<()> {
    let store = InMemoryEventStore::new();
    let recorder = Arc::new(Recorder::default());
    let repo = Repository::<Account>::new(store.clone()).with_publisher(recorder.clone());
    opened_with_deposits(&repo, "acc-1", 2).await?;

    let published = recorder.0.lock().clone();
    let stored = store.read("acc-1", VersionRange::all()).await?;
    assert_eq!(
        published, stored,
        "the publisher gets exactly what was stored"
    );
    assert_eq!(
        published
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        published
            .iter()
            .all(|e| e.stream_id == "acc-1" && e.global_position > 0)
    );
    assert!(
        published
            .iter()
            .all(|e| e.metadata.custom(AGGREGATE_TYPE_KEY) == Some(&"Account".into()))
    );
    Ok(())
}

#[tokio::test]
async fn saving_nothing_appends_and_publishes_nothing() -> Result<()> {
    let store = InMemoryEventStore::new();
    let recorder = Arc::new(Recorder::default());
    let repo = Repository::<Account>::new(store.clone()).with_publisher(recorder.clone());
    let mut account = repo.load("acc-1").await?;
    assert!(repo.save(&mut account).await?.is_empty());
    assert_eq!(store.count(None).await?, 0);
    assert!(recorder.0.lock().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_conflict_writes_nothing_and_keeps_the_losers_pending_events() -> Result<()> {
    let repo = Repository::<Account>::new(InMemoryEventStore::new());
    opened_with_deposits(&repo, "acc-1", 1).await?;
    let mut first = repo.load("acc-1").await?;
    let mut second = repo.load("acc-1").await?;
    first.record(Deposited { amount: 10 })?;
    second.record(Deposited { amount: 20 })?;
    second.record(Deposited { amount: 30 })?;
    repo.save(&mut first).await?;

    let lost = repo.save(&mut second).await;
    assert!(
        matches!(
            &lost,
            Err(Error::Concurrency(ConcurrencyError {
                expected: ExpectedVersion::Exact(2),
                actual: 3,
                ..
            }))
        ),
        "{lost:?}"
    );
    assert_eq!(
        second.pending().len(),
        2,
        "the losing copy keeps its events"
    );
    assert_eq!(repo.load("acc-1").await?.state().balance, 11);

    // The usual recovery: reload, re-run the decision, save.
    let mut retry = repo.load("acc-1").await?;
    for event in second.pending() {
        retry.record(event_payload(event)?)?;
    }
    repo.save(&mut retry).await?;
    assert_eq!(repo.load("acc-1").await?.state().balance, 61);
    Ok(())
}

fn event_payload(event: &lexigram::message::NewEvent) -> Result<Deposited> {
    serde_json::from_str(event.payload.as_str()).map_err(|source| Error::Serialization {
        what: "test payload".into(),
        source,
    })
}

#[tokio::test]
async fn invariant_checks_reject_before_anything_is_applied() -> Result<()> {
    let repo = Repository::<Account>::new(InMemoryEventStore::new());
    let mut account = repo.load("acc-1").await?;
    account.record(Deposited { amount: 5 })?;
    let err = account.record(Withdrawn { amount: 6 });
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("Account")
            && message.contains("acc-1")
            && message.contains("bank.Withdrawn"),
        "{message}"
    );
    assert!(
        message.contains("cannot withdraw 6 from a balance of 5"),
        "{message}"
    );
    assert_eq!(
        (
            account.state().balance,
            account.pending().len(),
            account.version()
        ),
        (5, 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn snapshots_follow_the_policy_and_loading_uses_them() -> Result<()> {
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    let repo = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::EveryEvents(10));
    opened_with_deposits(&repo, "acc-1", 5).await?;
    assert!(
        snapshots.latest("acc-1").await?.is_none(),
        "6 events: below the threshold"
    );
    let mut account = repo.load("acc-1").await?;
    for _ in 0..4 {
        account.record(Deposited { amount: 1 })?;
    }
    repo.save(&mut account).await?;
    let snap = snapshots.latest("acc-1").await?;
    assert_eq!(
        snap.as_ref().map(|s| s.version),
        Some(10),
        "10 events since none: snapshot"
    );

    // Loading uses the snapshot: purge the events it covers and the load still works.
    store.purge("acc-1", 10).await?;
    let loaded = repo.load("acc-1").await?;
    assert_eq!((loaded.version(), loaded.state().balance), (10, 19));
    Ok(())
}

#[tokio::test]
async fn purged_history_without_a_snapshot_is_an_error_not_a_wrong_state() -> Result<()> {
    let store = InMemoryEventStore::new();
    let repo = Repository::<Account>::new(store.clone());
    opened_with_deposits(&repo, "acc-1", 3).await?;
    store.purge("acc-1", 2).await?;
    let err = repo
        .load("acc-1")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("purged") && err.contains("acc-1"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_unusable_snapshot_falls_back_to_a_full_replay() -> Result<()> {
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    let repo =
        Repository::<Account>::new(store).with_snapshots(snapshots.clone(), SnapshotPolicy::Never);
    opened_with_deposits(&repo, "acc-1", 3).await?;
    snapshots
        .save(Snapshot::new(
            "acc-1".into(),
            "Account",
            4,
            serde_json::json!({"balance": "not a number"}),
            1,
        ))
        .await?;
    let loaded = repo.load("acc-1").await?;
    assert_eq!((loaded.version(), loaded.state().balance), (4, 6));
    Ok(())
}

#[tokio::test]
async fn old_snapshot_state_is_upcast() -> Result<()> {
    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    struct Wallet {
        cents: u64,
    }
    impl lexigram::Aggregate for Wallet {
        const TYPE: &'static str = "Wallet";
        const SNAPSHOT_VERSION: u32 = 2;
        fn apply_stored(
            &mut self,
            e: &EventEnvelope,
        ) -> std::result::Result<(), lexigram::error::EventLoadError> {
            lexigram::aggregate::Route::new(self, e).finish()
        }
    }
    let mut schema = SchemaRegistry::new();
    schema.snapshot_upcaster("Wallet", 1, 2, |v| {
        let euros = v["euros"].as_u64().ok_or("euros missing")?;
        Ok(serde_json::json!({ "cents": euros * 100 }))
    })?;
    let store = InMemoryEventStore::new();
    store
        .append(
            "w-1",
            vec![lexigram::message::NewEvent::new(
                "x",
                1,
                lexigram::message::Payload::from_json_text("{}"),
                Default::default(),
            )],
            ExpectedVersion::NoStream,
        )
        .await?;
    let snapshots = InMemorySnapshotStore::new();
    snapshots
        .save(Snapshot::new(
            "w-1".into(),
            "Wallet",
            1,
            serde_json::json!({"euros": 3}),
            1,
        ))
        .await?;
    let repo = Repository::<Wallet>::new(store)
        .with_snapshots(snapshots, SnapshotPolicy::Never)
        .with_schema(Arc::new(schema));
    assert_eq!(repo.load("w-1").await?.state().cents, 300);
    Ok(())
}

#[tokio::test]
async fn a_state_that_cannot_be_serialized_fails_the_save_before_the_append() -> Result<()> {
    #[derive(Debug, Default, serde::Deserialize)]
    struct Fragile {
        broken: bool,
    }
    impl serde::Serialize for Fragile {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            if self.broken {
                return Err(serde::ser::Error::custom("state refuses to serialize"));
            }
            s.serialize_unit()
        }
    }
    impl lexigram::Aggregate for Fragile {
        const TYPE: &'static str = "Fragile";
        fn apply_stored(
            &mut self,
            e: &EventEnvelope,
        ) -> std::result::Result<(), lexigram::error::EventLoadError> {
            lexigram::aggregate::Route::new(self, e)
                .on::<Opened>()
                .finish()
        }
    }
    impl lexigram::Apply<Opened> for Fragile {
        fn apply(&mut self, _: &Opened) {
            self.broken = true;
        }
    }
    let store = InMemoryEventStore::new();
    let repo = Repository::<Fragile>::new(store.clone())
        .with_snapshots(InMemorySnapshotStore::new(), SnapshotPolicy::EveryEvents(1));
    let mut root = repo.load("f-1").await?;
    root.record(Opened { owner: "x".into() })?;
    let result = repo.save(&mut root).await;
    assert!(
        matches!(result, Err(Error::Serialization { .. })),
        "{result:?}"
    );
    assert_eq!(store.count(None).await?, 0, "nothing appended");
    assert_eq!(root.pending().len(), 1, "pending kept");
    Ok(())
}

#[tokio::test]
async fn force_snapshot_needs_a_store_and_then_takes_one() -> Result<()> {
    let plain = Repository::<Account>::new(InMemoryEventStore::new());
    opened_with_deposits(&plain, "acc-1", 1).await?;
    let mut account = plain.load("acc-1").await?;
    assert!(matches!(
        plain.force_snapshot(&mut account).await,
        Err(Error::SnapshotsDisabled {
            aggregate_type: "Account"
        })
    ));

    let snapshots = InMemorySnapshotStore::new();
    let repo = plain
        .clone()
        .with_snapshots(snapshots.clone(), SnapshotPolicy::Never);
    repo.force_snapshot(&mut account).await?;
    assert_eq!(snapshots.latest("acc-1").await?.map(|s| s.version), Some(2));
    assert_eq!(account.events_since_snapshot(), 0);
    Ok(())
}

/// A publisher that refuses everything, like a bus that is shut down.
#[derive(Debug, Default)]
struct Refusing;

#[async_trait::async_trait]
impl EventPublisher for Refusing {
    async fn publish(&self, envelopes: &[EventEnvelope]) -> Result<()> {
        Err(Error::Publish {
            event_type: envelopes
                .first()
                .map_or_else(|| "".into(), |e| e.event_type.clone()),
            reason: "the event bus is shut down".into(),
        })
    }
}

#[tokio::test]
async fn a_committed_save_succeeds_even_when_the_publisher_refuses_and_the_hook_is_told()
-> Result<()> {
    let store = InMemoryEventStore::new();
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&told);
    let repo = Repository::<Account>::new(store.clone())
        .with_publisher(Arc::new(Refusing))
        .on_publish_failure(move |envelopes, err| {
            seen.lock().push((envelopes.len(), err.to_string()));
        });
    let mut account = repo.load("acc-1").await?;
    account.record(Opened {
        owner: "ada".into(),
    })?;
    account.record(Deposited { amount: 5 })?;
    let stored = repo.save(&mut account).await?;
    assert_eq!(stored.len(), 2, "the save reports what it stored");
    assert!(account.pending().is_empty());
    assert_eq!(store.version("acc-1").await?, 2);
    assert_eq!(
        *told.lock(),
        vec![(
            2,
            "could not publish event `bank.Opened`: the event bus is shut down".to_owned()
        )]
    );

    // The caller does not retry a save that succeeded, so the fact is stored once.
    account.record(Deposited { amount: 1 })?;
    repo.save(&mut account).await?;
    assert_eq!(store.count(Some("acc-1")).await?, 3);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_ignored_and_the_stream_replayed() -> Result<()> {
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    let repo = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::Never);
    opened_with_deposits(&repo, "acc-1", 3).await?;
    // A snapshot claiming version 1000 for a stream at version 4.
    snapshots
        .save(Snapshot::new(
            "acc-1".into(),
            "Account",
            1000,
            serde_json::json!({"owner": "mallory", "balance": 1_000_000, "movements": 999}),
            1,
        ))
        .await?;
    let mut loaded = repo.load("acc-1").await?;
    assert_eq!(
        loaded.version(),
        4,
        "the stream's version, not the snapshot's"
    );
    assert_eq!(loaded.state().balance, 6);
    assert_eq!(loaded.state().owner, "ada");
    loaded.record(Deposited { amount: 4 })?;
    repo.save(&mut loaded).await?;
    assert_eq!(repo.load("acc-1").await?.state().balance, 10);
    Ok(())
}
