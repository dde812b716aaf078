//! The `EventStore` behavioural suite.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures_util::TryStreamExt;
use serde_json::json;

use crate::error::{ConcurrencyError, Error, Result};
use crate::message::{EventEnvelope, MessageMetadata, NewEvent, Payload};
use crate::schema::SchemaRegistry;
use crate::store::{
    EventStore, ExpectedVersion, Partition, PartitionSet, ReadFilter, VersionRange,
};

/// Runs every case of the event store contract, each against a fresh store from `make`.
///
/// Besides reads and appends, the contract asks [`EventStore::read_page`] to prove the log
/// up to the head when a filtered page is not full, and [`EventStore::append_signal`] to
/// wake within a second after an append through the same store.
///
/// `make` receives the schema registry the store must upcast with (empty except in the
/// upcasting case). Returns the first store error met; contract violations panic with the
/// case name.
pub async fn event_store_suite<S, F, Fut>(make: F) -> Result<()>
where
    S: EventStore,
    F: Fn(Arc<SchemaRegistry>) -> Fut,
    Fut: Future<Output = Result<S>>,
{
    let fresh = || make(Arc::new(SchemaRegistry::new()));
    numbering_and_read_bounds(&fresh().await?).await?;
    expected_versions(&fresh().await?).await?;
    atomic_appends(&fresh().await?).await?;
    idempotent_retries(&fresh().await?).await?;
    global_order(&fresh().await?).await?;
    partitions(&fresh().await?).await?;
    by_type(&fresh().await?).await?;
    stream_catalogue(&fresh().await?).await?;
    purge_keeps_versions(&fresh().await?).await?;
    delete_stream(&fresh().await?).await?;
    bad_events_are_isolated(&fresh().await?).await?;
    invalid_stream_ids_are_refused_as_input(&fresh().await?).await?;
    concurrent_writers(Arc::new(fresh().await?)).await?;
    read_pages(&fresh().await?).await?;
    append_signals(&fresh().await?).await?;
    upcasting_on_every_read_path(&make(Arc::new(upcasting_schema()?)).await?).await?;
    closed_store_refuses(&fresh().await?).await?;
    Ok(())
}

fn event(kind: &str, n: u64) -> NewEvent {
    let payload = Payload::from_json_text(json!({ "n": n }).to_string());
    NewEvent::new(kind, 1, payload, MessageMetadata::new().with_custom("n", n))
}

fn events(kind: &str, range: std::ops::RangeInclusive<u64>) -> Vec<NewEvent> {
    range.map(|n| event(kind, n)).collect()
}

fn versions(envelopes: &[EventEnvelope]) -> Vec<u64> {
    envelopes.iter().map(|e| e.stream_version).collect()
}

fn positions<E: std::borrow::Borrow<EventEnvelope>>(envelopes: &[E]) -> Vec<u64> {
    envelopes
        .iter()
        .map(|e| e.borrow().global_position)
        .collect()
}

fn assert_increasing(case: &str, positions: &[u64]) {
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "[{case}] global positions must strictly increase: {positions:?}"
    );
}

fn is_conflict(result: &Result<impl Sized>, expected: ExpectedVersion, actual: u64) -> bool {
    matches!(result, Err(Error::Concurrency(ConcurrencyError { expected: e, actual: a, .. })) if *e == expected && *a == actual)
}

async fn numbering_and_read_bounds(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "numbering_and_read_bounds";
    let first = events("Tick", 1..=3);
    let written = store
        .append("a", first.clone(), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(written.version, 3, "[{CASE}] version after 3 events");
    assert_eq!(
        written.positions.len(),
        3,
        "[{CASE}] one position per event"
    );
    assert!(written.positions[0] >= 1, "[{CASE}] positions are 1-based");
    assert_increasing(CASE, &written.positions);
    let more = store
        .append("b", events("Tock", 1..=2), ExpectedVersion::NoStream)
        .await?;
    assert!(
        more.positions[0] > written.positions[2],
        "[{CASE}] positions increase across streams"
    );

    let all = store.read("a", VersionRange::all()).await?;
    assert_eq!(
        versions(&all),
        [1, 2, 3],
        "[{CASE}] versions are 1-based and dense"
    );
    assert_eq!(
        positions(&all),
        written.positions,
        "[{CASE}] read returns the positions append reported"
    );
    for (stored, sent) in all.iter().zip(&first) {
        assert_eq!(stored.event_id, sent.event_id, "[{CASE}] event id kept");
        assert_eq!(
            &*stored.event_type, &*sent.event_type,
            "[{CASE}] event type kept"
        );
        assert_eq!(stored.event_version, 1, "[{CASE}] event version kept");
        assert_eq!(
            stored.payload.to_value().ok(),
            sent.payload.to_value().ok(),
            "[{CASE}] payload kept"
        );
        assert_eq!(stored.metadata, sent.metadata, "[{CASE}] metadata kept");
        assert_eq!(stored.stream_id, "a", "[{CASE}] stream id set");
        assert_eq!(
            stored.recorded_at, written.recorded_at,
            "[{CASE}] recorded_at reported by append"
        );
    }

    let mid = store.read("a", VersionRange::from(2).to(3)).await?;
    assert_eq!(versions(&mid), [2, 3], "[{CASE}] bounds are inclusive");
    let one = store.read("a", VersionRange::from(2).limit(1)).await?;
    assert_eq!(versions(&one), [2], "[{CASE}] limit");
    let zero = store.read("a", VersionRange::from(0)).await?;
    assert_eq!(
        versions(&zero),
        [1, 2, 3],
        "[{CASE}] from 0 reads from the start"
    );
    assert!(
        store
            .read("a", VersionRange::from(3).to(2))
            .await?
            .is_empty(),
        "[{CASE}] to < from is empty"
    );
    assert!(
        store.read("a", VersionRange::from(4)).await?.is_empty(),
        "[{CASE}] past the end is empty"
    );
    assert!(
        store
            .read("a", VersionRange::all().limit(0))
            .await?
            .is_empty(),
        "[{CASE}] limit 0 is empty"
    );
    assert!(
        store.read("missing", VersionRange::all()).await?.is_empty(),
        "[{CASE}] missing stream is empty"
    );
    assert_eq!(store.version("a").await?, 3, "[{CASE}] version");
    assert_eq!(
        store.version("missing").await?,
        0,
        "[{CASE}] version of a missing stream is 0"
    );
    assert!(
        store.exists("a").await? && !store.exists("missing").await?,
        "[{CASE}] exists"
    );
    Ok(())
}

async fn expected_versions(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "expected_versions";
    store
        .append("s", events("E", 1..=3), ExpectedVersion::Exact(0))
        .await?;

    let r = store
        .append("s", events("E", 4..=4), ExpectedVersion::NoStream)
        .await;
    assert!(
        is_conflict(&r, ExpectedVersion::NoStream, 3),
        "[{CASE}] NoStream on an existing stream: {r:?}"
    );
    let r = store
        .append("s", events("E", 4..=4), ExpectedVersion::Exact(2))
        .await;
    assert!(
        is_conflict(&r, ExpectedVersion::Exact(2), 3),
        "[{CASE}] stale version: {r:?}"
    );
    let r = store
        .append("s", Vec::new(), ExpectedVersion::Exact(2))
        .await;
    assert!(
        is_conflict(&r, ExpectedVersion::Exact(2), 3),
        "[{CASE}] empty append still checks: {r:?}"
    );
    let r = store
        .append("new", events("E", 1..=1), ExpectedVersion::Exact(5))
        .await;
    assert!(
        is_conflict(&r, ExpectedVersion::Exact(5), 0),
        "[{CASE}] missing stream is at 0: {r:?}"
    );
    assert_eq!(
        store.count(Some("s")).await?,
        3,
        "[{CASE}] a conflict writes nothing"
    );
    assert!(
        !store.exists("new").await?,
        "[{CASE}] a conflict creates nothing"
    );
    if let Err(Error::Concurrency(err)) = &r {
        assert_eq!(err.stream, "new", "[{CASE}] the error names the stream");
    }

    let empty = store
        .append("s", Vec::new(), ExpectedVersion::Exact(3))
        .await?;
    assert_eq!(
        (empty.version, empty.positions.len()),
        (3, 0),
        "[{CASE}] empty append writes nothing"
    );
    assert_eq!(
        store
            .append("s", events("E", 4..=4), ExpectedVersion::Exact(3))
            .await?
            .version,
        4
    );
    assert_eq!(
        store
            .append("s", events("E", 5..=6), ExpectedVersion::Any)
            .await?
            .version,
        6
    );
    assert_eq!(store.version("s").await?, 6, "[{CASE}] final version");
    Ok(())
}

async fn atomic_appends(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "atomic_appends";
    store
        .append("s", events("E", 1..=2), ExpectedVersion::NoStream)
        .await?;
    let mut batch = events("E", 3..=5);
    batch[2] = batch[2].clone().with_event_id(batch[0].event_id);
    let r = store.append("s", batch, ExpectedVersion::Exact(2)).await;
    assert!(
        matches!(r, Err(Error::EventPersistence { .. })),
        "[{CASE}] a duplicate id in a batch fails: {r:?}"
    );
    assert_eq!(
        store.version("s").await?,
        2,
        "[{CASE}] a failed batch writes none of its events"
    );
    assert_eq!(
        store.count(None).await?,
        2,
        "[{CASE}] nothing else was written"
    );

    let mut batch = events("E", 3..=5);
    batch[1].payload = Payload::from_json_text("{not json");
    let r = store.append("s", batch, ExpectedVersion::Exact(2)).await;
    assert!(
        matches!(r, Err(Error::EventPersistence { .. })),
        "[{CASE}] invalid JSON is refused: {r:?}"
    );
    assert_eq!(
        store.version("s").await?,
        2,
        "[{CASE}] invalid JSON writes nothing"
    );

    let written = store
        .append("s", events("E", 3..=102), ExpectedVersion::Exact(2))
        .await?;
    assert_eq!(written.version, 102, "[{CASE}] a large batch");
    assert_eq!(written.positions.len(), 100);
    assert_increasing(CASE, &written.positions);
    Ok(())
}

async fn idempotent_retries(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "idempotent_retries";
    let batch = events("E", 1..=2);
    let first = store
        .append("s", batch.clone(), ExpectedVersion::NoStream)
        .await?;
    let again = store
        .append("s", batch.clone(), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(
        (again.version, &again.positions),
        (first.version, &first.positions),
        "[{CASE}] retry returns the original result"
    );
    let any = store
        .append("s", batch.clone(), ExpectedVersion::Any)
        .await?;
    assert_eq!(any.positions, first.positions, "[{CASE}] retry with Any");
    assert_eq!(
        store.count(Some("s")).await?,
        2,
        "[{CASE}] a retry writes nothing"
    );

    store
        .append("s", events("E", 3..=3), ExpectedVersion::Exact(2))
        .await?;
    let late = store
        .append("s", batch.clone(), ExpectedVersion::Exact(0))
        .await?;
    assert_eq!(
        (late.version, &late.positions),
        (2, &first.positions),
        "[{CASE}] retry after later appends"
    );

    let reused = vec![event("E", 9), batch[0].clone()];
    let r = store.append("s", reused, ExpectedVersion::Exact(3)).await;
    assert!(
        matches!(&r, Err(Error::DuplicateEvent { stream, event_id, .. }) if stream.as_str() == "s" && *event_id == batch[0].event_id),
        "[{CASE}] a stored id in a new append is a typed duplicate: {r:?}"
    );
    // The same id with other content, where the stream continues: not a retry.
    let mut changed = batch[0].clone();
    changed.payload = Payload::from_json_text(r#"{"n":42}"#);
    let r = store
        .append("s", vec![changed], ExpectedVersion::Exact(3))
        .await;
    assert!(
        matches!(&r, Err(Error::DuplicateEvent { .. })),
        "[{CASE}] a reused id with other content is DuplicateEvent: {r:?}"
    );
    if let Err(
        err @ Error::DuplicateEvent {
            stream, event_id, ..
        },
    ) = &r
    {
        assert!(
            stream.as_str() == "s" && *event_id == batch[0].event_id,
            "[{CASE}] the duplicate names the stream and the id: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("`s`")
                && message.contains(&batch[0].event_id.to_string())
                && message.contains("already stored")
                && message.contains("not an exact retry"),
            "[{CASE}] the message says what happened: {message}"
        );
    }
    let r = store
        .append("other", batch.clone(), ExpectedVersion::NoStream)
        .await;
    assert!(
        matches!(&r, Err(Error::DuplicateEvent { stream, .. }) if stream.as_str() == "other"),
        "[{CASE}] ids are unique across streams: {r:?}"
    );
    let r = store
        .append("s", batch[1..].to_vec(), ExpectedVersion::Exact(0))
        .await;
    assert!(
        r.is_err(),
        "[{CASE}] a retry must match the stored versions: {r:?}"
    );
    // Versions at the end of the range: an error, never an overflow.
    let r = store
        .append("s", batch.clone(), ExpectedVersion::Exact(u64::MAX))
        .await;
    assert!(
        matches!(r, Err(Error::DuplicateEvent { .. })),
        "[{CASE}] a stored id expected at version u64::MAX is not a retry: {r:?}"
    );
    let r = store
        .append("s", vec![event("E", 10)], ExpectedVersion::Exact(u64::MAX))
        .await;
    assert!(
        is_conflict(&r, ExpectedVersion::Exact(u64::MAX), 3),
        "[{CASE}] a new event expected at version u64::MAX conflicts: {r:?}"
    );
    assert_eq!(
        store.count(None).await?,
        3,
        "[{CASE}] refused appends wrote nothing"
    );
    Ok(())
}

async fn global_order(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "global_order";
    let mut expected = Vec::new();
    for round in 0..5u64 {
        for stream in ["x", "y", "z"] {
            let written = store
                .append(stream, events("E", round..=round), ExpectedVersion::Any)
                .await?;
            expected.extend(written.positions);
        }
    }
    let all = store.read_all(0, 1_000, None).await?;
    assert_eq!(
        positions(&all),
        expected,
        "[{CASE}] read_all returns every event in append order"
    );
    let after = store.read_all(expected[4], 3, None).await?;
    assert_eq!(
        positions(&after),
        expected[5..8],
        "[{CASE}] read_all is exclusive of `after` and honours the limit"
    );
    let streamed: Vec<EventEnvelope> = store.stream_all(0, 4, None).try_collect().await?;
    assert_eq!(
        positions(&streamed),
        expected,
        "[{CASE}] stream_all pages through everything"
    );
    let tail: Vec<EventEnvelope> = store
        .stream_all(expected[13], 4, None)
        .try_collect()
        .await?;
    assert_eq!(
        positions(&tail),
        expected[14..],
        "[{CASE}] stream_all is exclusive of `from`"
    );
    let last = store.last_position().await?;
    assert_eq!(last, expected[14], "[{CASE}] last_position");
    assert!(
        store.read_all(last, 10, None).await?.is_empty(),
        "[{CASE}] nothing after the head"
    );
    Ok(())
}

async fn partitions(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "partitions";
    for round in 0..3u64 {
        for s in 0..20 {
            store
                .append(
                    &format!("stream-{s}"),
                    events("E", round..=round),
                    ExpectedVersion::Any,
                )
                .await?;
        }
    }
    let all = store.read_all(0, 1_000, None).await?;
    let mut seen = HashSet::new();
    let mut owners: BTreeMap<String, u32> = BTreeMap::new();
    for index in 0..3 {
        let part = Partition::new(index, 3)?;
        let events: Vec<EventEnvelope> = store.stream_all(0, 7, Some(part)).try_collect().await?;
        assert_increasing(CASE, &positions(&events));
        let mut last_version: BTreeMap<String, u64> = BTreeMap::new();
        for e in &events {
            assert!(
                part.contains(e.stream_id.as_str()),
                "[{CASE}] stream in the partition its hash names"
            );
            assert!(
                seen.insert(e.global_position),
                "[{CASE}] an event in two partitions"
            );
            let owner = owners.entry(e.stream_id.to_string()).or_insert(index);
            assert_eq!(*owner, index, "[{CASE}] a stream split across partitions");
            let last = last_version
                .insert(e.stream_id.to_string(), e.stream_version)
                .unwrap_or(0);
            assert_eq!(
                e.stream_version,
                last + 1,
                "[{CASE}] a stream's events in order"
            );
        }
    }
    assert_eq!(
        seen.len(),
        all.len(),
        "[{CASE}] the partitions cover every event"
    );
    assert!(
        owners.values().collect::<HashSet<_>>().len() > 1,
        "[{CASE}] 20 streams spread over partitions"
    );
    Ok(())
}

async fn by_type(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "by_type";
    let mut placed = Vec::new();
    for n in 0..10u64 {
        let kind = if n % 2 == 0 { "Even" } else { "Odd" };
        let written = store
            .append(
                &format!("s{}", n % 3),
                vec![event(kind, n)],
                ExpectedVersion::Any,
            )
            .await?;
        if kind == "Even" {
            placed.extend(written.positions);
        }
    }
    let evens: Vec<EventEnvelope> = store.stream_by_type("Even", 0, 2).try_collect().await?;
    assert_eq!(
        positions(&evens),
        placed,
        "[{CASE}] stream_by_type in global order"
    );
    assert!(
        evens.iter().all(|e| &*e.event_type == "Even"),
        "[{CASE}] only that type"
    );
    let after = store.read_by_type("Even", placed[1], 2).await?;
    assert_eq!(
        positions(&after),
        placed[2..4],
        "[{CASE}] read_by_type after a position"
    );
    let page = store.find_by_type("Even", 2, 1).await?;
    assert_eq!(
        positions(&page),
        placed[1..3],
        "[{CASE}] find_by_type limit and offset"
    );
    assert!(
        store.find_by_type("Missing", 10, 0).await?.is_empty(),
        "[{CASE}] unknown type"
    );
    Ok(())
}

async fn stream_catalogue(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "stream_catalogue";
    for name in ["c", "a", "b", "d"] {
        store
            .append(name, events("E", 1..=2), ExpectedVersion::NoStream)
            .await?;
    }
    let written = store
        .append("a", events("E", 3..=3), ExpectedVersion::Exact(2))
        .await?;
    let page = store.list_streams(None, 2).await?;
    assert_eq!(
        page,
        ["a", "b"].map(crate::message::StreamId::from),
        "[{CASE}] list_streams is sorted and limited"
    );
    let next = store.list_streams(Some("b"), 10).await?;
    assert_eq!(
        next,
        ["c", "d"].map(crate::message::StreamId::from),
        "[{CASE}] list_streams continues after a stream"
    );
    assert_eq!(store.count(None).await?, 9, "[{CASE}] count of all events");
    assert_eq!(
        store.count(Some("a")).await?,
        3,
        "[{CASE}] count of one stream"
    );
    assert_eq!(
        store.count(Some("zzz")).await?,
        0,
        "[{CASE}] count of a missing stream"
    );
    let info = store.stream_info("a").await?;
    assert!(info.is_some(), "[{CASE}] stream_info of an existing stream");
    if let Some(info) = info {
        assert_eq!(
            (info.version, info.event_count),
            (3, 3),
            "[{CASE}] version and count"
        );
        assert_eq!(
            info.last_position,
            written.last_position(),
            "[{CASE}] last position"
        );
        assert!(
            info.first_position < info.last_position,
            "[{CASE}] first position"
        );
        assert!(
            info.created_at <= info.updated_at,
            "[{CASE}] created before updated"
        );
    }
    assert!(
        store.stream_info("zzz").await?.is_none(),
        "[{CASE}] stream_info of a missing stream"
    );
    Ok(())
}

async fn purge_keeps_versions(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "purge_keeps_versions";
    let written = store
        .append("s", events("E", 1..=5), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(
        store.purge("s", 3).await?,
        3,
        "[{CASE}] purge returns how many went"
    );
    assert_eq!(
        versions(&store.read("s", VersionRange::all()).await?),
        [4, 5],
        "[{CASE}] the rest keep their versions"
    );
    assert_eq!(
        store.version("s").await?,
        5,
        "[{CASE}] the version does not go back"
    );
    assert_eq!(
        store.count(Some("s")).await?,
        2,
        "[{CASE}] count after purge"
    );
    let info = store.stream_info("s").await?.map(|i| i.first_position);
    assert_eq!(
        info,
        Some(Some(written.positions[3])),
        "[{CASE}] first position moves on"
    );
    assert_eq!(
        store
            .append("s", events("E", 6..=6), ExpectedVersion::Exact(5))
            .await?
            .version,
        6
    );
    let all = store.read_all(0, 100, None).await?;
    assert_eq!(
        versions(&all),
        [4, 5, 6],
        "[{CASE}] purged events leave the global log"
    );
    assert_eq!(
        store.purge("s", 3).await?,
        0,
        "[{CASE}] purging again removes nothing"
    );
    assert_eq!(
        store.purge("s", 100).await?,
        3,
        "[{CASE}] purge past the end empties the stream"
    );
    assert!(
        store.exists("s").await?,
        "[{CASE}] a purged stream still exists"
    );
    assert_eq!(
        store
            .append("s", events("E", 7..=7), ExpectedVersion::Exact(6))
            .await?
            .version,
        7
    );
    assert_eq!(
        store.purge("missing", 10).await?,
        0,
        "[{CASE}] purging a missing stream"
    );
    Ok(())
}

async fn delete_stream(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "delete_stream";
    store
        .append("gone", events("E", 1..=3), ExpectedVersion::NoStream)
        .await?;
    store
        .append("kept", events("E", 1..=1), ExpectedVersion::NoStream)
        .await?;
    assert!(
        store.delete_stream("gone").await?,
        "[{CASE}] deleting an existing stream"
    );
    assert!(
        !store.delete_stream("gone").await?,
        "[{CASE}] deleting twice"
    );
    assert_eq!(
        store.version("gone").await?,
        0,
        "[{CASE}] a deleted stream is at 0"
    );
    assert!(
        store.read("gone", VersionRange::all()).await?.is_empty(),
        "[{CASE}] nothing to read"
    );
    assert_eq!(store.count(None).await?, 1, "[{CASE}] its events are gone");
    let all = store.read_all(0, 100, None).await?;
    assert!(
        all.iter().all(|e| e.stream_id == "kept"),
        "[{CASE}] gone from the global log"
    );
    assert!(
        store
            .find_by_type("E", 10, 0)
            .await?
            .iter()
            .all(|e| e.stream_id == "kept"),
        "[{CASE}] gone from the type index"
    );
    let again = store
        .append("gone", events("E", 1..=1), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(again.version, 1, "[{CASE}] the id can be reused");
    assert!(
        again.positions[0] > all[0].global_position,
        "[{CASE}] positions never go back"
    );
    Ok(())
}

async fn bad_events_are_isolated(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "bad_events_are_isolated";
    let unknown = NewEvent::new(
        "nobody.KnowsMe",
        1,
        Payload::from_json_text("{\"x\":1}"),
        MessageMetadata::new(),
    );
    store
        .append(
            "s",
            vec![event("E", 1), unknown, event("E", 3)],
            ExpectedVersion::NoStream,
        )
        .await?;
    let all = store.read("s", VersionRange::all()).await?;
    assert_eq!(
        versions(&all),
        [1, 2, 3],
        "[{CASE}] an unknown type still reads"
    );
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Known {
        n: u64,
    }
    impl crate::message::Event for Known {
        const NAME: &'static str = "E";
        const VERSION: u32 = 1;
    }
    let err = all[1]
        .decode::<Known>()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("version 2 of stream `s`") && err.contains("nobody.KnowsMe"),
        "[{CASE}] error names stream, version and type: {err}"
    );
    assert!(
        all[2].decode::<Known>().is_ok(),
        "[{CASE}] the rest still decodes"
    );
    Ok(())
}

async fn concurrent_writers<S: EventStore>(store: Arc<S>) -> Result<()> {
    const CASE: &str = "concurrent_writers";
    const TASKS: usize = 8;
    const ROUNDS: u64 = 200;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let e = event("Race", task as u64);
                let id = e.event_id;
                let r = store
                    .append("race", vec![e], ExpectedVersion::Exact(round))
                    .await;
                outcomes.push((round, id, r));
            }
            outcomes
        }));
    }
    let mut winners: BTreeMap<u64, Vec<crate::message::EventId>> = BTreeMap::new();
    let mut losers = 0;
    for task in tasks {
        let outcomes = task.await.map_err(|e| Error::StoreConnection {
            backend: "suite",
            reason: format!("writer task failed: {e}"),
            source: None,
        })?;
        for (round, id, r) in outcomes {
            match r {
                Ok(written) => {
                    assert_eq!(written.version, round + 1, "[{CASE}] winner's version");
                    winners.entry(round).or_default().push(id);
                }
                Err(Error::Concurrency(c)) => {
                    assert_eq!(
                        c.actual,
                        round + 1,
                        "[{CASE}] a loser sees the winner's version"
                    );
                    losers += 1;
                }
                Err(other) => return Err(other),
            }
        }
    }
    assert_eq!(
        winners.len() as u64,
        ROUNDS,
        "[{CASE}] every round has a winner"
    );
    assert!(
        winners.values().all(|w| w.len() == 1),
        "[{CASE}] exactly one winner per version"
    );
    assert_eq!(
        losers,
        (TASKS as u64 - 1) * ROUNDS,
        "[{CASE}] every other writer got a ConcurrencyError"
    );
    let stored = store.read("race", VersionRange::all()).await?;
    assert_eq!(
        versions(&stored),
        (1..=ROUNDS).collect::<Vec<_>>(),
        "[{CASE}] no version missing or duplicated"
    );
    for e in &stored {
        assert_eq!(
            Some(&e.event_id),
            winners.get(&(e.stream_version - 1)).and_then(|w| w.first()),
            "[{CASE}] the winner's event is stored"
        );
    }
    Ok(())
}

/// `Shape` v1 `{"w": n}` → v2 `{"width": n}` → v3 `{"width": n, "unit": "px"}`.
fn upcasting_schema() -> Result<SchemaRegistry> {
    let mut schema = SchemaRegistry::new();
    schema
        .register::<ShapeV3>()?
        .upcaster("Shape", 1, 2, |v| Ok(json!({ "width": v["w"] })))?
        .upcaster("Shape", 2, 3, |mut v| {
            v["unit"] = json!("px");
            Ok(v)
        })?;
    Ok(schema)
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ShapeV3 {
    width: u64,
    unit: String,
}

impl crate::message::Event for ShapeV3 {
    const NAME: &'static str = "Shape";
    const VERSION: u32 = 3;
}

async fn upcasting_on_every_read_path(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "upcasting_on_every_read_path";
    let v1 = |w: u64| {
        NewEvent::new(
            "Shape",
            1,
            Payload::from_json_text(json!({ "w": w }).to_string()),
            MessageMetadata::new(),
        )
    };
    let v2 = NewEvent::new(
        "Shape",
        2,
        Payload::from_json_text(r#"{"width":2}"#),
        MessageMetadata::new(),
    );
    store
        .append("shapes", vec![v1(1), v2, v1(3)], ExpectedVersion::NoStream)
        .await?;
    let check = |path: &str, envelopes: &[EventEnvelope]| {
        assert_eq!(envelopes.len(), 3, "[{CASE}] {path}: every event");
        for (e, width) in envelopes.iter().zip(1..) {
            assert_eq!(e.event_version, 3, "[{CASE}] {path}: upcast to v3");
            let decoded = e.decode::<ShapeV3>().ok();
            assert_eq!(
                decoded,
                Some(ShapeV3 {
                    width,
                    unit: "px".into()
                }),
                "[{CASE}] {path}: decodes as v3"
            );
        }
    };
    check("read", &store.read("shapes", VersionRange::all()).await?);
    check("read_all", &store.read_all(0, 10, None).await?);
    check(
        "stream_all",
        &store.stream_all(0, 2, None).try_collect::<Vec<_>>().await?,
    );
    check("read_by_type", &store.read_by_type("Shape", 0, 10).await?);
    check(
        "stream_by_type",
        &store
            .stream_by_type("Shape", 0, 2)
            .try_collect::<Vec<_>>()
            .await?,
    );
    check("find_by_type", &store.find_by_type("Shape", 10, 0).await?);
    Ok(())
}

fn is_invalid_id(result: &Result<impl Sized>) -> bool {
    matches!(result, Err(err @ Error::InvalidStreamId { .. }) if !err.is_retryable())
}

async fn invalid_stream_ids_are_refused_as_input(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "invalid_stream_ids_are_refused_as_input";
    let nul = "order\0-1";
    let r = store
        .append(nul, events("E", 1..=1), ExpectedVersion::NoStream)
        .await;
    assert!(is_invalid_id(&r), "[{CASE}] append with a NUL: {r:?}");
    let r = store.read(nul, VersionRange::all()).await;
    assert!(is_invalid_id(&r), "[{CASE}] read with a NUL: {r:?}");
    let r = store.version(nul).await;
    assert!(is_invalid_id(&r), "[{CASE}] version with a NUL: {r:?}");
    let r = store.stream_info(nul).await;
    assert!(is_invalid_id(&r), "[{CASE}] stream_info with a NUL: {r:?}");
    let r = store.delete_stream(nul).await;
    assert!(is_invalid_id(&r), "[{CASE}] delete with a NUL: {r:?}");
    let r = store.purge(nul, 1).await;
    assert!(is_invalid_id(&r), "[{CASE}] purge with a NUL: {r:?}");

    let long = "x".repeat(1 << 20);
    let r = store
        .append(&long, events("E", 1..=1), ExpectedVersion::NoStream)
        .await;
    assert!(is_invalid_id(&r), "[{CASE}] a 1 MiB stream id");
    let message = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.len() < 400,
        "[{CASE}] the error does not echo a 1 MiB id ({} bytes)",
        message.len()
    );
    let longest = "y".repeat(crate::store::MAX_STREAM_ID_BYTES);
    store
        .append(&longest, events("E", 1..=1), ExpectedVersion::NoStream)
        .await?;
    assert_eq!(
        store.version(&longest).await?,
        1,
        "[{CASE}] the longest id is stored"
    );
    assert_eq!(
        store.count(None).await?,
        1,
        "[{CASE}] refused appends wrote nothing"
    );
    Ok(())
}

async fn closed_store_refuses(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "closed_store_refuses";
    store
        .append("s", events("E", 1..=1), ExpectedVersion::NoStream)
        .await?;
    store.close().await?;
    let r = store
        .append("s", events("E", 2..=2), ExpectedVersion::Any)
        .await;
    assert!(
        matches!(r, Err(Error::StoreClosed { .. })),
        "[{CASE}] append after close: {r:?}"
    );
    let r = store.read("s", VersionRange::all()).await;
    assert!(
        matches!(r, Err(Error::StoreClosed { .. })),
        "[{CASE}] read after close: {r:?}"
    );
    Ok(())
}

async fn read_pages(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "read_pages";
    let mut rare = Vec::new();
    for n in 0..60u64 {
        let kind = if n % 20 == 7 { "Rare" } else { "Common" };
        let written = store
            .append(
                &format!("stream-{}", n % 20),
                vec![event(kind, n)],
                ExpectedVersion::Any,
            )
            .await?;
        if kind == "Rare" {
            rare.extend(written.positions);
        }
    }
    let head = store.last_position().await?;
    let only_rare = ReadFilter::all().event_types(["Rare"]);
    let page = store.read_page(0, 10, &only_rare).await?;
    assert_eq!(
        positions(&page.events),
        rare,
        "[{CASE}] only the rare events come back"
    );
    assert!(
        page.events.iter().all(|e| &*e.event_type == "Rare"),
        "[{CASE}] of the type asked for"
    );
    assert_eq!(
        page.scanned_to, head,
        "[{CASE}] a page that is not full proves the log up to the head"
    );
    let none = ReadFilter::all().event_types(Vec::<String>::new());
    let page = store.read_page(0, 10, &none).await?;
    assert!(
        page.events.is_empty(),
        "[{CASE}] an empty type list matches nothing"
    );
    assert_eq!(page.scanned_to, head, "[{CASE}] and proves the log too");

    // Following `scanned_to` one event at a time finds every rare event, in a bounded
    // number of reads.
    let mut cursor = 0;
    let mut followed = Vec::new();
    for _ in 0..=rare.len() + 1 {
        let page = store.read_page(cursor, 1, &only_rare).await?;
        assert!(
            page.scanned_to >= cursor,
            "[{CASE}] scanned_to never goes back"
        );
        followed.extend(positions(&page.events));
        if page.scanned_to == cursor {
            break;
        }
        cursor = page.scanned_to;
    }
    assert_eq!(followed, rare, "[{CASE}] paging by scanned_to");
    assert_eq!(cursor, head, "[{CASE}] paging reaches the head");

    let set = PartitionSet::new(4, [1, 3])?;
    let all = store.read_all(0, 1_000, None).await?;
    let expected: Vec<u64> = all
        .iter()
        .filter(|e| set.contains(e.stream_id.as_str()))
        .map(|e| e.global_position)
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < all.len(),
        "[{CASE}] 20 streams spread over 4 partitions"
    );
    let page = store
        .read_page(0, 1_000, &ReadFilter::all().partitions(set.clone()))
        .await?;
    assert_eq!(
        positions(&page.events),
        expected,
        "[{CASE}] exactly the events of streams in partitions 1 and 3 of 4"
    );
    let both = ReadFilter::all()
        .event_types(["Rare"])
        .partitions(set.clone());
    let page = store.read_page(0, 1_000, &both).await?;
    assert!(
        page.events
            .iter()
            .all(|e| &*e.event_type == "Rare" && set.contains(e.stream_id.as_str())),
        "[{CASE}] type and partition filters combine"
    );

    let page = store.read_page(0, 5, &ReadFilter::all()).await?;
    assert_eq!(page.events.len(), 5, "[{CASE}] a full page");
    assert_eq!(
        Some(page.scanned_to),
        page.events.last().map(|e| e.global_position),
        "[{CASE}] a full page proves the log up to its last event only"
    );
    let page = store.read_page(7, 0, &ReadFilter::all()).await?;
    assert!(
        page.events.is_empty() && page.scanned_to == 7,
        "[{CASE}] limit 0: nothing, scanned_to = after: {page:?}"
    );
    let page = store.read_page(head, 10, &ReadFilter::all()).await?;
    assert!(
        page.events.is_empty() && page.scanned_to == head,
        "[{CASE}] nothing after the head: {page:?}"
    );
    Ok(())
}

async fn append_signals(store: &impl EventStore) -> Result<()> {
    const CASE: &str = "append_signals";
    let mut signal = store.append_signal();
    let written = store
        .append("s", events("E", 1..=2), ExpectedVersion::NoStream)
        .await?;
    let last = written.last_position().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let woke = tokio::time::timeout_at(deadline, signal.changed()).await;
        assert!(
            matches!(woke, Ok(Some(_))),
            "[{CASE}] an append wakes the signal within 1 s: {woke:?}"
        );
        if let Ok(Some(position)) = woke
            && position >= last
        {
            break;
        }
    }
    assert!(signal.announced() >= last, "[{CASE}] announced");
    store.close().await?;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(1), signal.changed()).await;
    assert!(
        matches!(closed, Ok(None)),
        "[{CASE}] a closed store ends the signal: {closed:?}"
    );
    Ok(())
}
