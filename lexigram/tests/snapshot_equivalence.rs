//! Property: loading through any snapshot gives exactly the state and version of a full replay.

mod common;

use common::{Account, Deposited, Opened, Withdrawn};
use lexigram::snapshot::{InMemorySnapshotStore, SnapshotPolicy, SnapshotStore};
use lexigram::store::{EventStore, VersionRange};
use lexigram::{AggregateRoot, InMemoryEventStore, Repository, Result};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Deposit(u64),
    Withdraw(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (1u64..1_000).prop_map(Op::Deposit),
            (1u64..1_000).prop_map(Op::Withdraw)
        ],
        0..60,
    )
}

/// Records `ops` (withdrawals the invariant rejects are skipped), saving every `batch` ops.
async fn build(repo: &Repository<Account>, ops: &[Op], batch: usize) -> Result<()> {
    let mut account = repo.load("acc").await?;
    account.record(Opened { owner: "p".into() })?;
    for chunk in ops.chunks(batch.max(1)) {
        for op in chunk {
            let _maybe_rejected = match op {
                Op::Deposit(n) => account.record(Deposited { amount: *n }),
                Op::Withdraw(n) => account.record(Withdrawn { amount: *n }),
            };
        }
        repo.save(&mut account).await?;
    }
    Ok(())
}

type Loaded = (u64, Account);

/// (full replay, load through a snapshot cut at `snapshot_at`).
async fn through_any_snapshot(
    ops: &[Op],
    batch: usize,
    snapshot_at: usize,
) -> Result<(Loaded, Loaded)> {
    let store = InMemoryEventStore::new();
    let plain = Repository::<Account>::new(store.clone());
    build(&plain, ops, batch).await?;
    let full = plain.load("acc").await?;

    let history = store.read("acc", VersionRange::all()).await?;
    let cut = snapshot_at % (history.len() + 1);
    let partial = AggregateRoot::<Account>::load_from_history("acc", &history[..cut])?;
    let snapshots = InMemorySnapshotStore::new();
    if cut > 0 {
        snapshots.save(partial.create_snapshot()?).await?;
    }
    let via = Repository::<Account>::new(store)
        .with_snapshots(snapshots, SnapshotPolicy::Never)
        .load("acc")
        .await?;
    Ok((
        (full.version(), full.into_state()),
        (via.version(), via.into_state()),
    ))
}

/// (full replay, load through snapshots the policy took while saving).
async fn through_policy_snapshots(
    ops: &[Op],
    batch: usize,
    every: u64,
) -> Result<(Loaded, Loaded)> {
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    let with_policy = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::EveryEvents(every));
    build(&with_policy, ops, batch).await?;
    let via = with_policy.load("acc").await?;
    let full = Repository::<Account>::new(store).load("acc").await?;
    Ok((
        (full.version(), full.into_state()),
        (via.version(), via.into_state()),
    ))
}

fn run<T>(
    future: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<T, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime
        .block_on(future)
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn loading_through_any_snapshot_equals_a_full_replay(
        ops in ops(),
        batch in 1usize..8,
        snapshot_at in 0usize..100,
    ) {
        let (full, via) = run(through_any_snapshot(&ops, batch, snapshot_at))?;
        prop_assert_eq!(via, full);
    }

    #[test]
    fn snapshots_taken_by_policy_load_the_same_state(
        ops in ops(),
        batch in 1usize..8,
        every in 1u64..10,
    ) {
        let (full, via) = run(through_policy_snapshots(&ops, batch, every))?;
        prop_assert_eq!(via, full);
    }
}
