//! Core benchmarks: in-memory appends and reads, aggregate loads with and without snapshot.
//!
//! Run: `cargo bench -p lexigram-events --bench core`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lexigram::aggregate::Route;
use lexigram::error::EventLoadError;
use lexigram::message::{MessageMetadata, NewEvent};
use lexigram::snapshot::{InMemorySnapshotStore, SnapshotPolicy};
use lexigram::store::{EventStore, ExpectedVersion, VersionRange};
use lexigram::{Aggregate, Apply, Event, EventEnvelope, InMemoryEventStore, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const NAME: &'static str = "bank.Deposited";
    const VERSION: u32 = 1;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
}
impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Deposited>().finish()
    }
}
impl Apply<Deposited> for Account {
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }
}

fn new_event(amount: u64) -> NewEvent {
    NewEvent::from_event(&Deposited { amount }, MessageMetadata::new()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let store = InMemoryEventStore::new();
    let mut group = c.benchmark_group("memory_store");
    let mut n = 0u64;
    group.bench_function("append_1", |b| {
        b.iter_batched(
            || vec![new_event(1)],
            |events| {
                n += 1;
                rt.block_on(store.append(&format!("s-{}", n % 1_000), events, ExpectedVersion::Any))
                    .unwrap()
            },
            BatchSize::SmallInput,
        );
    });
    group.throughput(criterion::Throughput::Elements(100));
    group.bench_function("append_100", |b| {
        b.iter_batched(
            || (1..=100).map(new_event).collect::<Vec<_>>(),
            |events| {
                n += 1;
                rt.block_on(store.append(&format!("b-{}", n % 1_000), events, ExpectedVersion::Any))
                    .unwrap()
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn reads_and_loads(c: &mut Criterion) {
    let rt = runtime();
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    rt.block_on(async {
        // Another stream first so positions and versions differ.
        store
            .append(
                "noise",
                (1..=500).map(new_event).collect(),
                ExpectedVersion::Any,
            )
            .await
            .unwrap();
        store
            .append(
                "big",
                (1..=1001).map(new_event).collect(),
                ExpectedVersion::NoStream,
            )
            .await
            .unwrap();
        let with_snapshots = Repository::<Account>::new(store.clone())
            .with_snapshots(snapshots.clone(), SnapshotPolicy::Never);
        let mut root = with_snapshots.load("big").await.unwrap();
        with_snapshots.force_snapshot(&mut root).await.unwrap();
    });
    let plain = Repository::<Account>::new(store.clone());
    let snapshotted =
        Repository::<Account>::new(store.clone()).with_snapshots(snapshots, SnapshotPolicy::Never);

    let mut group = c.benchmark_group("memory_store");
    group.throughput(criterion::Throughput::Elements(1000));
    group.bench_function("read_1000", |b| {
        b.iter(|| {
            rt.block_on(store.read("big", VersionRange::from(2).limit(1000)))
                .unwrap()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("repository");
    group.bench_function("load_1001_events", |b| {
        b.iter(|| {
            let root = rt.block_on(plain.load("big")).unwrap();
            assert_eq!(root.version(), 1001);
            root
        });
    });
    group.bench_function("load_1001_events_with_snapshot", |b| {
        b.iter(|| {
            let root = rt.block_on(snapshotted.load("big")).unwrap();
            assert_eq!(root.version(), 1001);
            root
        });
    });
    group.finish();
}

criterion_group!(benches, appends, reads_and_loads);
criterion_main!(benches);
