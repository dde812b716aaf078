//! The `CheckpointStore` behavioural suite.

// A suite reports a broken contract by panicking with the case's name, as `assert!` does;
// `panic!` says it where a value has to be taken apart first.
#![allow(clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::{EventId, StreamId};
use crate::store::Partition;
use crate::subscription::{
    CheckpointStore, Lease, NodeId, ParkedEvent, PartitionKey, PartitionState, ReplayReport,
    RequestKind, RunStatus, SubscriptionSpec,
};

/// A lease that outlives every case.
const LONG: Duration = Duration::from_secs(60);
/// A lease that a case lets run out.
const SHORT: Duration = Duration::from_millis(300);
/// Long enough for a [`SHORT`] lease to have run out on the store's clock.
const PAST_SHORT: Duration = Duration::from_millis(500);

/// Runs every case of the checkpoint store contract, each against a fresh store from `make`
/// (a store with no subscriptions and no members).
///
/// Two cases let leases of 300 ms run out: they sleep on tokio's clock, so the in-memory
/// store can run the suite with the clock paused, and a SQL store waits for real. Returns
/// the first store error met; contract violations panic with the case name.
///
/// # Examples
///
/// ```
/// use lexigram::subscription::InMemoryCheckpointStore;
/// use lexigram::testing::checkpoint_store_suite;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), lexigram::Error> {
/// checkpoint_store_suite(|| async { Ok(InMemoryCheckpointStore::new()) }).await?;
/// # Ok(()) }
/// ```
pub async fn checkpoint_store_suite<S, F, Fut>(make: F) -> Result<()>
where
    S: CheckpointStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S>>,
{
    register_is_idempotent(&make().await?).await?;
    claims_are_exclusive(&make().await?).await?;
    an_expired_lease_is_taken_over_and_fenced(&make().await?).await?;
    commits_never_move_backwards(&make().await?).await?;
    parked_events_are_parked_once(&make().await?).await?;
    release_frees_the_partition(&make().await?).await?;
    status_is_seen_at_renewal(&make().await?).await?;
    heartbeats_list_live_members(&make().await?).await?;
    split_copies_positions_and_fences_leases(&make().await?).await?;
    register_doubles_only(&make().await?).await?;
    states_report_owners_and_parked_counts(&make().await?).await?;
    concurrent_claims_and_registrations(&make().await?).await?;
    requests_reach_the_holder_of_their_stream(&make().await?).await?;
    a_rebuild_starts_over_and_fences(&make().await?).await?;
    Ok(())
}

fn spec(name: &str, partitions: u32, start_after: u64) -> SubscriptionSpec {
    SubscriptionSpec::new(Arc::from(name), 1, partitions, start_after)
}

fn key(name: &str, partition: u32) -> PartitionKey {
    PartitionKey {
        subscription: Arc::from(name),
        version: 1,
        partition,
    }
}

fn node(id: &str) -> Result<NodeId> {
    NodeId::new(id)
}

fn claimed(case: &str, what: &str, lease: Option<Lease>) -> Lease {
    match lease {
        Some(lease) => lease,
        None => panic!("[{case}] {what}"),
    }
}

fn lost(case: &str, what: &str, result: Result<impl std::fmt::Debug>, lease: &Lease) {
    match result {
        Err(Error::LeaseLost {
            subscription,
            version,
            partition,
            epoch,
        }) => assert_eq!(
            (subscription.as_str(), version, partition, epoch),
            (
                &*lease.key.subscription,
                lease.key.version,
                lease.key.partition,
                lease.epoch
            ),
            "[{case}] {what}: LeaseLost names the lost lease"
        ),
        other => panic!("[{case}] {what}: expected LeaseLost, got {other:?}"),
    }
}

async fn state(store: &impl CheckpointStore, key: &PartitionKey) -> Result<PartitionState> {
    let states = store.states(Some(&key.subscription)).await?;
    match states.into_iter().find(|s| s.key == *key) {
        Some(state) => Ok(state),
        None => panic!("states() lists {key:?}"),
    }
}

/// The first `n` stream ids (of `s-0`, `s-1`, ...) that fall into `partition` of `total`.
fn streams_in(partition: u32, total: u32, n: usize) -> Vec<StreamId> {
    (0..10_000)
        .map(|i| format!("s-{i}"))
        .filter(|s| Partition::of(s, total) == partition)
        .take(n)
        .map(|s| StreamId::from(s.as_str()))
        .collect()
}

fn parked_event(position: u64, stream: &StreamId, error: String) -> ParkedEvent {
    ParkedEvent {
        position,
        event_id: EventId::new(),
        stream: stream.clone(),
        stream_version: position,
        event_type: "test.Failed".to_owned(),
        attempts: 3,
        error,
    }
}

async fn register_is_idempotent(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "register_is_idempotent";
    assert_eq!(store.register(&spec("a", 4, 7)).await?, 4, "[{CASE}] count");
    assert_eq!(
        store.register(&spec("a", 4, 99)).await?,
        4,
        "[{CASE}] again"
    );
    assert_eq!(store.register(&spec("b", 1, 0)).await?, 1, "[{CASE}] other");
    let states = store.states(Some("a")).await?;
    assert_eq!(states.len(), 4, "[{CASE}] one row per partition");
    for (i, s) in states.iter().enumerate() {
        assert_eq!(s.key, key("a", i as u32), "[{CASE}] ordered by partition");
        assert_eq!(s.partitions, 4, "[{CASE}] partition count");
        assert_eq!(
            s.position, 7,
            "[{CASE}] starts after start_after, and a second register keeps it"
        );
        assert_eq!(s.status, RunStatus::Running, "[{CASE}] running");
        assert_eq!(
            (s.owner.as_ref(), s.epoch, s.lease_expires_in),
            (None, 0, None),
            "[{CASE}] free"
        );
        assert_eq!((s.last_error.as_deref(), s.parked), (None, 0), "[{CASE}]");
    }
    Ok(())
}

async fn claims_are_exclusive(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "claims_are_exclusive";
    let (a, b) = (node("node-a")?, node("node-b")?);
    store.register(&spec("a", 4, 5)).await?;
    let first = claimed(
        CASE,
        "a free partition is claimed",
        store.claim(&key("a", 0), &a, LONG).await?,
    );
    assert_eq!(first.epoch, 1, "[{CASE}] the first claim has epoch 1");
    assert_eq!(
        (
            first.owner.as_str(),
            first.partitions,
            first.position,
            first.status
        ),
        ("node-a", 4, 5, RunStatus::Running),
        "[{CASE}] the lease"
    );
    assert!(
        first.valid_until > tokio::time::Instant::now(),
        "[{CASE}] valid for a while"
    );
    assert!(
        store.claim(&key("a", 0), &b, LONG).await?.is_none(),
        "[{CASE}] another node cannot claim a live lease"
    );
    assert!(
        store.claim(&key("a", 4), &a, LONG).await?.is_none(),
        "[{CASE}] a partition past the count does not exist"
    );
    assert!(
        store.claim(&key("nobody", 0), &a, LONG).await?.is_none(),
        "[{CASE}] an unknown subscription has no partitions"
    );
    let again = claimed(
        CASE,
        "a node claims its own partition again",
        store.claim(&key("a", 0), &a, LONG).await?,
    );
    assert!(
        again.epoch > first.epoch,
        "[{CASE}] a new claim, a new epoch"
    );
    lost(
        CASE,
        "the previous lease of the same node is fenced out",
        store.commit(&first, 9, &[]).await,
        &first,
    );
    store.commit(&again, 9, &[]).await?;
    let other = claimed(
        CASE,
        "b claims another partition",
        store.claim(&key("a", 1), &b, LONG).await?,
    );
    assert_eq!(other.epoch, 1, "[{CASE}] epochs are per partition");
    Ok(())
}

async fn an_expired_lease_is_taken_over_and_fenced(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "an_expired_lease_is_taken_over_and_fenced";
    let (a, b) = (node("node-a")?, node("node-b")?);
    store.register(&spec("a", 2, 0)).await?;
    let old = claimed(CASE, "free", store.claim(&key("a", 0), &a, SHORT).await?);
    store.commit(&old, 3, &[]).await?;
    assert!(
        store.claim(&key("a", 0), &b, LONG).await?.is_none(),
        "[{CASE}] not before it runs out"
    );
    tokio::time::sleep(PAST_SHORT).await;
    let new = claimed(
        CASE,
        "an expired lease is claimed by another node",
        store.claim(&key("a", 0), &b, LONG).await?,
    );
    assert!(new.epoch > old.epoch, "[{CASE}] with a higher epoch");
    assert_eq!(new.position, 3, "[{CASE}] from the committed checkpoint");
    let parked = parked_event(4, &streams_in(0, 2, 1)[0], "boom".to_owned());
    lost(
        CASE,
        "the old lease cannot commit",
        store.commit(&old, 10, std::slice::from_ref(&parked)).await,
        &old,
    );
    lost(
        CASE,
        "the old lease cannot renew",
        store.renew(&old, LONG).await,
        &old,
    );
    lost(
        CASE,
        "the old lease cannot record an error",
        store.record_error(&old, "late").await,
        &old,
    );
    lost(
        CASE,
        "the old lease cannot unpark",
        store.unpark(&old, &[parked.event_id]).await,
        &old,
    );
    store.release(&old).await?;
    let now = state(store, &key("a", 0)).await?;
    assert_eq!(now.position, 3, "[{CASE}] the old lease moved nothing");
    assert_eq!(now.last_error, None, "[{CASE}] nor recorded its error");
    assert_eq!(
        now.owner.as_ref(),
        Some(&b),
        "[{CASE}] releasing a lost lease frees nothing"
    );
    assert!(
        store.parked("a", 1).await?.is_empty(),
        "[{CASE}] nor parked its events"
    );
    store.commit(&new, 10, &[]).await?;
    assert_eq!(state(store, &key("a", 0)).await?.position, 10, "[{CASE}]");

    // Expiry alone (no one took the partition over) also ends a lease.
    let lapsed = claimed(CASE, "free", store.claim(&key("a", 1), &a, SHORT).await?);
    tokio::time::sleep(PAST_SHORT).await;
    lost(
        CASE,
        "a lease that ran out cannot renew",
        store.renew(&lapsed, LONG).await,
        &lapsed,
    );
    let back = claimed(
        CASE,
        "its node claims it again",
        store.claim(&key("a", 1), &a, LONG).await?,
    );
    assert!(back.epoch > lapsed.epoch, "[{CASE}] with a new epoch");
    Ok(())
}

async fn commits_never_move_backwards(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "commits_never_move_backwards";
    let a = node("node-a")?;
    store.register(&spec("a", 1, 0)).await?;
    let lease = claimed(CASE, "free", store.claim(&key("a", 0), &a, LONG).await?);
    store.commit(&lease, 10, &[]).await?;
    store.commit(&lease, 5, &[]).await?;
    assert_eq!(
        state(store, &key("a", 0)).await?.position,
        10,
        "[{CASE}] a lower position does not move the checkpoint back"
    );
    store.record_error(&lease, "the sink is down").await?;
    assert_eq!(
        state(store, &key("a", 0)).await?.last_error.as_deref(),
        Some("the sink is down"),
        "[{CASE}] the error is recorded"
    );
    let long = "x".repeat(3_000);
    store.record_error(&lease, &long).await?;
    assert_eq!(
        state(store, &key("a", 0))
            .await?
            .last_error
            .map(|e| e.chars().count()),
        Some(2_000),
        "[{CASE}] an error is cut to 2 000 characters"
    );
    store.commit(&lease, 12, &[]).await?;
    let now = state(store, &key("a", 0)).await?;
    assert_eq!(
        (now.position, now.last_error),
        (12, None),
        "[{CASE}] a commit moves on and clears the error"
    );
    let renewed = store.renew(&lease, LONG).await?;
    assert_eq!(
        (renewed.epoch, renewed.partitions),
        (lease.epoch, 1),
        "[{CASE}] a renewal keeps the epoch"
    );
    assert!(
        renewed.valid_until >= lease.valid_until,
        "[{CASE}] and extends the deadline"
    );
    store.commit(&renewed, 13, &[]).await?;
    assert_eq!(state(store, &key("a", 0)).await?.position, 13, "[{CASE}]");
    Ok(())
}

async fn parked_events_are_parked_once(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "parked_events_are_parked_once";
    let a = node("node-a")?;
    store.register(&spec("a", 2, 0)).await?;
    let zero = claimed(CASE, "free", store.claim(&key("a", 0), &a, LONG).await?);
    let one = claimed(CASE, "free", store.claim(&key("a", 1), &a, LONG).await?);
    let streams = streams_in(0, 2, 2);
    let other = &streams_in(1, 2, 1)[0];
    let first = parked_event(3, &streams[0], "é".repeat(2_500));
    let later = parked_event(5, &streams[0], String::new());
    let second = parked_event(4, &streams[1], "bad".to_owned());
    let elsewhere = parked_event(6, other, "bad".to_owned());
    let batch = [later.clone(), first.clone(), second.clone()];
    store.commit(&zero, 5, &batch).await?;
    store.commit(&zero, 5, &batch).await?;
    store
        .commit(&one, 6, std::slice::from_ref(&elsewhere))
        .await?;
    let parked = store.parked("a", 1).await?;
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        [3, 4, 5, 6],
        "[{CASE}] each event parked once, in position order"
    );
    let mut cut = first.clone();
    cut.error = "é".repeat(2_000);
    assert_eq!(
        parked[0], cut,
        "[{CASE}] every field kept, the error cut to 2 000 characters"
    );
    assert_eq!(parked[1], second, "[{CASE}]");
    assert_eq!(parked[2], later, "[{CASE}] an empty error stays empty");
    assert!(
        store.parked("a", 2).await?.is_empty(),
        "[{CASE}] per version"
    );
    let counts: Vec<u64> = store
        .states(Some("a"))
        .await?
        .iter()
        .map(|s| s.parked)
        .collect();
    assert_eq!(counts, [3, 1], "[{CASE}] parked counts per partition");

    assert_eq!(
        store
            .unpark(&zero, &[first.event_id, later.event_id, EventId::new()])
            .await?,
        2,
        "[{CASE}] unpark removes what it names"
    );
    assert_eq!(
        store.unpark(&zero, &[first.event_id]).await?,
        0,
        "[{CASE}] once"
    );
    assert_eq!(
        store.unpark(&zero, &[elsewhere.event_id]).await?,
        0,
        "[{CASE}] only events of the lease's partition"
    );
    assert_eq!(
        store
            .parked("a", 1)
            .await?
            .iter()
            .map(|p| p.position)
            .collect::<Vec<_>>(),
        [4, 6],
        "[{CASE}] the rest stays"
    );
    store.commit(&zero, 7, std::slice::from_ref(&first)).await?;
    assert_eq!(
        store.parked("a", 1).await?.len(),
        3,
        "[{CASE}] an unparked event can be parked again"
    );
    Ok(())
}

async fn release_frees_the_partition(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "release_frees_the_partition";
    let (a, b) = (node("node-a")?, node("node-b")?);
    store.register(&spec("a", 1, 0)).await?;
    let lease = claimed(CASE, "free", store.claim(&key("a", 0), &a, LONG).await?);
    store.commit(&lease, 4, &[]).await?;
    store.release(&lease).await?;
    let freed = state(store, &key("a", 0)).await?;
    assert_eq!(
        (freed.owner, freed.lease_expires_in, freed.position),
        (None, None, 4),
        "[{CASE}] released, checkpoint kept"
    );
    lost(
        CASE,
        "a released lease cannot commit",
        store.commit(&lease, 5, &[]).await,
        &lease,
    );
    let taken = claimed(
        CASE,
        "another node claims a released partition at once",
        store.claim(&key("a", 0), &b, LONG).await?,
    );
    assert!(taken.epoch > lease.epoch, "[{CASE}] with a new epoch");
    assert_eq!(taken.position, 4, "[{CASE}]");
    store.release(&lease).await?;
    assert_eq!(
        state(store, &key("a", 0)).await?.owner.as_ref(),
        Some(&b),
        "[{CASE}] releasing a stale lease is a no-op"
    );
    Ok(())
}

async fn status_is_seen_at_renewal(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "status_is_seen_at_renewal";
    let a = node("node-a")?;
    store.register(&spec("a", 3, 0)).await?;
    store.register(&spec("b", 1, 0)).await?;
    let lease = claimed(CASE, "free", store.claim(&key("a", 1), &a, LONG).await?);
    assert_eq!(
        store.set_status("a", 1, RunStatus::Paused).await?,
        3,
        "[{CASE}] every partition changes"
    );
    assert_eq!(
        store.set_status("a", 1, RunStatus::Paused).await?,
        0,
        "[{CASE}] nothing changes twice"
    );
    assert_eq!(
        store.set_status("nobody", 1, RunStatus::Paused).await?,
        0,
        "[{CASE}] an unknown subscription has nothing to change"
    );
    let renewed = store.renew(&lease, LONG).await?;
    assert_eq!(
        renewed.status,
        RunStatus::Paused,
        "[{CASE}] the holder sees it at renewal"
    );
    assert_eq!(
        store.commit(&renewed, 1, &[]).await?,
        RunStatus::Paused,
        "[{CASE}] and at its next commit"
    );
    let other = claimed(CASE, "free", store.claim(&key("a", 2), &a, LONG).await?);
    assert_eq!(other.status, RunStatus::Paused, "[{CASE}] and at a claim");
    assert_eq!(
        state(store, &key("b", 0)).await?.status,
        RunStatus::Running,
        "[{CASE}] other subscriptions keep theirs"
    );
    store.set_status("a", 1, RunStatus::Failed).await?;
    assert_eq!(
        store.renew(&renewed, LONG).await?.status,
        RunStatus::Failed,
        "[{CASE}] failed"
    );
    store.set_status("a", 1, RunStatus::Running).await?;
    assert_eq!(
        store.renew(&renewed, LONG).await?.status,
        RunStatus::Running,
        "[{CASE}] resumed"
    );
    Ok(())
}

async fn requests_reach_the_holder_of_their_stream(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "requests_reach_the_holder_of_their_stream";
    let (a, b) = (node("node-a")?, node("node-b")?);
    store.register(&spec("r", 2, 0)).await?;
    store.register(&spec("other", 2, 0)).await?;
    let zero = &streams_in(0, 2, 1)[0];
    // In partition 1 of 2, and in 3 of 4 after a split.
    let one = &streams_in(1, 2, 200)
        .into_iter()
        .find(|s| Partition::of(s.as_str(), 4) == 3)
        .unwrap_or_else(|| panic!("[{CASE}] a stream in partition 3 of 4"));
    let replay = |stream: &StreamId| RequestKind::ReplayParked {
        stream: stream.clone(),
    };
    assert!(
        matches!(
            store.request("nobody", 1, &replay(zero)).await,
            Err(Error::InvalidArgument { .. })
        ),
        "[{CASE}] a request to an unknown subscription is refused"
    );
    let first = store.request("r", 1, &replay(one)).await?;
    let second = store.request("r", 1, &replay(zero)).await?;
    let third = store.request("r", 1, &replay(one)).await?;
    store.request("other", 1, &replay(one)).await?;
    assert!(
        first < second && second < third,
        "[{CASE}] ids increase: {first} {second} {third}"
    );
    let filed = store.request_state(first).await?;
    assert!(
        filed.as_ref().is_some_and(|r| r.outcome.is_none()
            && r.served_by.is_none()
            && r.kind == replay(one)
            && r.subscription == "r"),
        "[{CASE}] an open request: {filed:?}"
    );
    assert!(store.request_state(third + 1_000).await?.is_none());

    let lease0 = claimed(CASE, "free", store.claim(&key("r", 0), &a, LONG).await?);
    let lease1 = claimed(CASE, "free", store.claim(&key("r", 1), &a, LONG).await?);
    assert_eq!(
        (lease0.open_requests, lease1.open_requests),
        (1, 2),
        "[{CASE}] a claim counts its partition's open requests"
    );
    let open: Vec<u64> = store
        .open_requests(&lease1)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        open,
        [first, third],
        "[{CASE}] in filing order, its own only"
    );

    let report = ReplayReport::new(2, 1, Some("x".repeat(3_000)));
    store.finish_request(&lease0, first, &report).await?;
    assert!(
        store
            .request_state(first)
            .await?
            .is_some_and(|r| r.outcome.is_none()),
        "[{CASE}] another partition's lease cannot finish it"
    );
    store.finish_request(&lease1, first, &report).await?;
    let done = store.request_state(first).await?;
    let outcome = done.as_ref().and_then(|r| r.outcome.clone());
    assert_eq!(
        outcome.as_ref().map(|o| (o.replayed, o.still_parked)),
        Some((2, 1)),
        "[{CASE}] the outcome is kept: {done:?}"
    );
    assert_eq!(
        outcome.and_then(|o| o.error).map(|e| e.chars().count()),
        Some(2_000),
        "[{CASE}] the error is cut"
    );
    assert_eq!(
        done.and_then(|r| r.served_by),
        Some(a.clone()),
        "[{CASE}] with the node that served it"
    );
    store
        .finish_request(&lease1, first, &ReplayReport::new(9, 9, None))
        .await?;
    assert!(
        store
            .request_state(first)
            .await?
            .and_then(|r| r.outcome)
            .is_some_and(|o| o.replayed == 2),
        "[{CASE}] a finished request keeps its first outcome"
    );
    let renewed = store.renew(&lease1, LONG).await?;
    assert_eq!(renewed.open_requests, 1, "[{CASE}] a renewal counts again");

    // Fenced: a lease taken over cannot finish a request.
    let stolen = claimed(CASE, "own", store.claim(&key("r", 1), &a, LONG).await?);
    lost(
        CASE,
        "finishing with a stale lease",
        store
            .finish_request(&renewed, third, &ReplayReport::new(0, 0, None))
            .await,
        &renewed,
    );
    // After a split the request follows its stream to its new partition.
    store.split("r", 1).await?;
    let three = claimed(CASE, "free", store.claim(&key("r", 3), &b, LONG).await?);
    let one_now = claimed(CASE, "free", store.claim(&key("r", 1), &b, LONG).await?);
    assert_eq!(
        (three.open_requests, one_now.open_requests),
        (1, 0),
        "[{CASE}] the split moved it with its stream"
    );
    lost(
        CASE,
        "a lease from before the split",
        store
            .finish_request(&stolen, third, &ReplayReport::new(0, 0, None))
            .await,
        &stolen,
    );
    store
        .finish_request(&three, third, &ReplayReport::new(1, 0, None))
        .await?;
    assert_eq!(
        store.open_requests(&three).await?.len(),
        0,
        "[{CASE}] nothing left open there"
    );
    Ok(())
}

async fn a_rebuild_starts_over_and_fences(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "a_rebuild_starts_over_and_fences";
    let a = node("node-a")?;
    store.register(&spec("p", 2, 0)).await?;
    store.register(&spec("other", 1, 0)).await?;
    assert!(
        matches!(
            store.rebuild("nobody", 1, 10).await,
            Err(Error::InvalidArgument { .. })
        ),
        "[{CASE}] an unknown subscription is refused"
    );
    let lease = claimed(CASE, "free", store.claim(&key("p", 0), &a, LONG).await?);
    let stream = &streams_in(0, 2, 1)[0];
    store
        .commit(&lease, 40, &[parked_event(30, stream, "boom".into())])
        .await?;
    let other = claimed(CASE, "free", store.claim(&key("other", 0), &a, LONG).await?);
    store.commit(&other, 40, &[]).await?;
    store.set_status("p", 1, RunStatus::Paused).await?;
    assert!(
        state(store, &key("p", 0)).await?.rebuild_target.is_none(),
        "[{CASE}] never rebuilt"
    );

    assert_eq!(
        store.rebuild("p", 1, 50).await?,
        2,
        "[{CASE}] both partitions"
    );
    lost(
        CASE,
        "the holder's commit after a rebuild",
        store.commit(&lease, 45, &[]).await,
        &lease,
    );
    let reset = state(store, &key("p", 0)).await?;
    assert_eq!(
        (
            reset.position,
            reset.rebuild_target,
            reset.status,
            reset.parked
        ),
        (0, Some(50), RunStatus::Paused, 0),
        "[{CASE}] back at the origin, target noted, status kept, parked forgotten"
    );
    assert!(
        reset.owner.is_none() && reset.rebuild_elapsed.is_some(),
        "[{CASE}] no owner, a start time: {reset:?}"
    );
    assert!(store.parked("p", 1).await?.is_empty());
    let again = claimed(CASE, "free", store.claim(&key("p", 0), &a, LONG).await?);
    assert_eq!(
        (again.position, again.epoch > lease.epoch),
        (0, true),
        "[{CASE}] claimed again from the origin with a new epoch"
    );
    assert_eq!(
        state(store, &key("other", 0)).await?.position,
        40,
        "[{CASE}] other subscriptions keep theirs"
    );
    store.split("p", 1).await?;
    assert_eq!(
        state(store, &key("p", 3)).await?.rebuild_target,
        Some(50),
        "[{CASE}] a split keeps the rebuild's target"
    );
    Ok(())
}

async fn heartbeats_list_live_members(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "heartbeats_list_live_members";
    let (a, b, c) = (node("node-a")?, node("node-b")?, node("Node-c")?);
    assert_eq!(
        store.heartbeat(&b, LONG).await?,
        std::slice::from_ref(&b),
        "[{CASE}] me"
    );
    assert_eq!(
        store.heartbeat(&a, LONG).await?,
        [a.clone(), b.clone()],
        "[{CASE}] sorted"
    );
    assert_eq!(
        store.heartbeat(&c, SHORT).await?,
        [c.clone(), a.clone(), b.clone()],
        "[{CASE}] sorted by bytes"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        store.heartbeat(&a, LONG).await?,
        [a.clone(), b.clone()],
        "[{CASE}] an expired member is dropped"
    );
    store.leave(&a).await?;
    store.leave(&a).await?;
    assert_eq!(
        store.heartbeat(&b, LONG).await?,
        std::slice::from_ref(&b),
        "[{CASE}] a member that left is gone"
    );
    Ok(())
}

async fn split_copies_positions_and_fences_leases(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "split_copies_positions_and_fences_leases";
    let a = node("node-a")?;
    store.register(&spec("a", 2, 0)).await?;
    let zero = claimed(CASE, "free", store.claim(&key("a", 0), &a, LONG).await?);
    let one = claimed(CASE, "free", store.claim(&key("a", 1), &a, LONG).await?);
    store.commit(&zero, 10, &[]).await?;
    store.commit(&one, 20, &[]).await?;
    store.set_status("a", 1, RunStatus::Paused).await?;
    assert_eq!(store.split("a", 1).await?, 4, "[{CASE}] P -> 2P");
    let states = store.states(Some("a")).await?;
    assert_eq!(
        states.iter().map(|s| s.position).collect::<Vec<_>>(),
        [10, 20, 10, 20],
        "[{CASE}] i + P copies i's checkpoint"
    );
    for s in &states {
        assert_eq!(s.partitions, 4, "[{CASE}] every row knows the new count");
        assert_eq!(s.status, RunStatus::Paused, "[{CASE}] the status is copied");
        assert_eq!(s.owner, None, "[{CASE}] every lease is cleared");
    }
    assert!(
        states[0].epoch > zero.epoch && states[1].epoch > one.epoch,
        "[{CASE}] kept rows move to a new epoch"
    );
    lost(
        CASE,
        "a lease from before the split cannot commit",
        store.commit(&zero, 30, &[]).await,
        &zero,
    );
    lost(CASE, "nor renew", store.renew(&one, LONG).await, &one);
    let three = claimed(
        CASE,
        "a new partition is claimed",
        store.claim(&key("a", 3), &a, LONG).await?,
    );
    assert_eq!(
        (three.partitions, three.position, three.status),
        (4, 20, RunStatus::Paused),
        "[{CASE}] the new partition's lease"
    );
    let zero = claimed(
        CASE,
        "an old partition is claimed again",
        store.claim(&key("a", 0), &a, LONG).await?,
    );
    assert_eq!(zero.partitions, 4, "[{CASE}] with the new count");
    assert!(
        matches!(
            store.split("nobody", 1).await,
            Err(Error::InvalidArgument { .. })
        ),
        "[{CASE}] an unknown subscription cannot be split"
    );
    Ok(())
}

async fn register_doubles_only(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "register_doubles_only";
    let a = node("node-a")?;
    store.register(&spec("a", 4, 0)).await?;
    let lease = claimed(CASE, "free", store.claim(&key("a", 1), &a, LONG).await?);
    store.commit(&lease, 8, &[]).await?;
    assert_eq!(
        store.register(&spec("a", 8, 0)).await?,
        8,
        "[{CASE}] 4 -> 8 splits"
    );
    assert_eq!(
        store.register(&spec("a", 8, 0)).await?,
        8,
        "[{CASE}] and stays"
    );
    let states = store.states(Some("a")).await?;
    assert_eq!(
        states.iter().map(|s| s.position).collect::<Vec<_>>(),
        [0, 8, 0, 0, 0, 8, 0, 0],
        "[{CASE}] partition 5 starts where 1 was"
    );
    lost(
        CASE,
        "the split fenced the lease",
        store.commit(&lease, 9, &[]).await,
        &lease,
    );
    for fewer in [4, 12] {
        match store.register(&spec("a", fewer, 0)).await {
            Err(Error::Config { problems }) => {
                let text = problems.join("\n");
                assert!(
                    text.contains("`a`")
                        && text.contains('8')
                        && text.contains(&fewer.to_string())
                        && text.contains("doubling"),
                    "[{CASE}] the error names the subscription, both counts and the rule: {text}"
                );
            }
            other => panic!("[{CASE}] 8 -> {fewer} is a configuration error, got {other:?}"),
        }
    }
    assert_eq!(
        store.states(Some("a")).await?.len(),
        8,
        "[{CASE}] a refused register changes nothing"
    );
    assert_eq!(
        store.register(&spec("a", 32, 0)).await?,
        32,
        "[{CASE}] 8 -> 32 splits twice"
    );
    assert_eq!(
        store.states(Some("a")).await?[29].position,
        8,
        "[{CASE}] 29 = 1 + 4 * 7 descends from 1"
    );
    Ok(())
}

async fn states_report_owners_and_parked_counts(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "states_report_owners_and_parked_counts";
    let (a, b) = (node("node-a")?, node("node-b")?);
    store.register(&spec("b", 2, 0)).await?;
    store.register(&spec("a", 1, 0)).await?;
    store
        .register(&SubscriptionSpec::new(Arc::from("a"), 2, 1, 0))
        .await?;
    let held = claimed(CASE, "free", store.claim(&key("b", 1), &b, LONG).await?);
    let stream = &streams_in(1, 2, 1)[0];
    store
        .commit(&held, 2, &[parked_event(2, stream, "x".to_owned())])
        .await?;
    let other = claimed(CASE, "free", store.claim(&key("a", 0), &a, LONG).await?);
    store.release(&other).await?;
    let all = store.states(None).await?;
    assert_eq!(
        all.iter()
            .map(|s| (&*s.key.subscription, s.key.version, s.key.partition))
            .collect::<Vec<_>>(),
        [("a", 1, 0), ("a", 2, 0), ("b", 1, 0), ("b", 1, 1)],
        "[{CASE}] every partition, by name, version and partition"
    );
    let one = &all[3];
    assert_eq!(one.owner.as_ref(), Some(&b), "[{CASE}] the live owner");
    assert!(
        one.lease_expires_in
            .is_some_and(|left| left <= LONG && left > LONG / 2),
        "[{CASE}] and how long its lease runs: {:?}",
        one.lease_expires_in
    );
    assert_eq!((one.epoch, one.position, one.parked), (1, 2, 1), "[{CASE}]");
    assert_eq!(
        (all[2].parked, all[2].owner.as_ref()),
        (0, None),
        "[{CASE}]"
    );
    assert_eq!(
        (all[0].owner.as_ref(), all[0].lease_expires_in, all[0].epoch),
        (None, None, 1),
        "[{CASE}] a released partition has no owner and keeps its epoch"
    );
    assert_eq!(
        store.states(Some("b")).await?.len(),
        2,
        "[{CASE}] one subscription"
    );
    assert!(
        store.states(Some("nobody")).await?.is_empty(),
        "[{CASE}] none"
    );
    Ok(())
}

async fn concurrent_claims_and_registrations(store: &impl CheckpointStore) -> Result<()> {
    const CASE: &str = "concurrent_claims_and_registrations";
    store.register(&spec("a", 2, 0)).await?;
    let four = spec("a", 4, 0);
    let counts = futures_util::future::join_all((0..6).map(|_| store.register(&four))).await;
    for count in counts {
        assert_eq!(
            count?, 4,
            "[{CASE}] six nodes asking for a split at once all see one split"
        );
    }
    let states = store.states(Some("a")).await?;
    assert_eq!(
        states.iter().map(|s| s.partitions).collect::<Vec<_>>(),
        [4, 4, 4, 4],
        "[{CASE}] no partition lost or doubled twice"
    );
    let nodes: Vec<NodeId> = (0..6)
        .map(|i| node(&format!("node-{i}")))
        .collect::<Result<_>>()?;
    let two = key("a", 2);
    let claims =
        futures_util::future::join_all(nodes.iter().map(|me| store.claim(&two, me, LONG))).await;
    let mut won = Vec::new();
    for claim in claims {
        won.extend(claim?);
    }
    assert_eq!(won.len(), 1, "[{CASE}] one claim wins: {won:?}");
    assert_eq!(
        won[0].epoch,
        states[2].epoch + 1,
        "[{CASE}] one epoch more than before the claims"
    );
    Ok(())
}
