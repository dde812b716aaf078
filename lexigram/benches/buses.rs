//! Bus throughput, each beside its raw floor measured in the same run.
//!
//! - `command_dispatch/lexigram` vs `command_dispatch/raw_typeid_map`: one command to a
//!   trivial handler, against a `HashMap<TypeId, Box<dyn Fn>>` returning a boxed future.
//! - `event_publish_drain/*` vs `event_publish_drain/raw_tokio_mpsc`: 10 000 events published
//!   to one handler and drained, against a bounded tokio channel with one consumer task.
//! - `query_cache_miss/full_at_10` and `/full_at_10000`: a miss (handler call, store, one
//!   eviction) in a cache kept full at 10 and at 10 000 entries, against
//!   `query_cache_miss/uncached_floor`, the same handler registered without cache.
//!
//! `cargo bench -p lexigram-events --bench buses -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lexigram::command::{CommandBus, CommandContext};
use lexigram::event::{EventBus, EventContext};
use lexigram::message::{EventEnvelope, MessageMetadata, NewEvent};
use lexigram::query::{CachePolicy, QueryBus, QueryContext};
use lexigram::{Command, Event, Query};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

struct Add(u64);
impl Command for Add {
    type Output = u64;
}

#[derive(Serialize, Deserialize)]
struct Tick {
    n: u64,
}
impl Event for Tick {
    const NAME: &'static str = "bench.Tick";
    const VERSION: u32 = 1;
}

type AnyBox = Box<dyn Any + Send>;
type RawHandler = Box<dyn Fn(AnyBox) -> Pin<Box<dyn Future<Output = AnyBox> + Send>> + Send + Sync>;

fn command_dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("command_dispatch");
    group.throughput(Throughput::Elements(1));

    let bus = CommandBus::new();
    bus.register_fn(|c: Add, _: CommandContext| async move {
        Ok::<_, std::convert::Infallible>(c.0 + 1)
    })
    .unwrap();
    group.bench_function("lexigram", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bus.dispatch(Add(black_box(1))).await.unwrap()) })
    });

    let mut raw: HashMap<TypeId, RawHandler> = HashMap::new();
    raw.insert(
        TypeId::of::<Add>(),
        Box::new(|input: AnyBox| {
            Box::pin(async move {
                let add = input.downcast::<Add>().unwrap();
                Box::new(add.0 + 1) as AnyBox
            })
        }),
    );
    let raw = Arc::new(raw);
    group.bench_function("raw_typeid_map", |b| {
        b.to_async(&rt).iter(|| async {
            let handler = raw.get(&TypeId::of::<Add>()).unwrap();
            let out = handler(Box::new(Add(black_box(1)))).await;
            black_box(*out.downcast::<u64>().unwrap())
        })
    });
    group.finish();
}

const EVENTS: u64 = 10_000;

fn envelope() -> EventEnvelope {
    let new = NewEvent::from_event(&Tick { n: 1 }, MessageMetadata::new()).unwrap();
    EventEnvelope::new(new, "bench-1".into(), 1, 1, chrono::Utc::now())
}

fn event_publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("event_publish_drain");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);
    let template = envelope();

    let bus = EventBus::new();
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    bus.subscribe_type("bench.Tick", move |_: EventContext| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, std::convert::Infallible>(()) }
    });
    group.bench_function("lexigram_envelope_handler", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..EVENTS {
                bus.publish(template.clone()).await.unwrap();
            }
            bus.drain().await;
        })
    });

    let typed = EventBus::new();
    typed.subscribe(|e: Tick, _: EventContext| {
        black_box(e.n);
        async { Ok::<_, std::convert::Infallible>(()) }
    });
    group.bench_function("lexigram_typed_handler_with_decode", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..EVENTS {
                typed.publish(template.clone()).await.unwrap();
            }
            typed.drain().await;
        })
    });

    // The floor: a bounded channel (same capacity as the bus's default queue) drained by one
    // task that calls a trivial handler and signals when the batch is done.
    let (tx, mut rx) = mpsc::channel::<Arc<EventEnvelope>>(1000);
    let done = Arc::new(Notify::new());
    let seen = Arc::new(AtomicU64::new(0));
    {
        let (done, seen) = (done.clone(), seen.clone());
        rt.spawn(async move {
            while let Some(envelope) = rx.recv().await {
                black_box(&envelope);
                if (seen.fetch_add(1, Ordering::Relaxed) + 1) % EVENTS == 0 {
                    done.notify_one();
                }
            }
        });
    }
    group.bench_function("raw_tokio_mpsc", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..EVENTS {
                tx.send(Arc::new(template.clone())).await.unwrap();
            }
            done.notified().await;
        })
    });
    group.finish();
    rt.block_on(bus.shutdown(std::time::Duration::from_secs(5)))
        .unwrap();
    rt.block_on(typed.shutdown(std::time::Duration::from_secs(5)))
        .unwrap();
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Lookup(u64);
impl Query for Lookup {
    type Output = u64;
}

fn query_cache_miss(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("query_cache_miss");
    group.throughput(Throughput::Elements(1));
    let handler =
        |q: Lookup, _: QueryContext| async move { Ok::<_, std::convert::Infallible>(q.0) };

    for size in [10_u64, 10_000] {
        let bus = QueryBus::new();
        bus.register_cached(
            handler,
            CachePolicy::new(std::time::Duration::from_secs(3600), size as usize),
        )
        .unwrap();
        for key in 0..size {
            rt.block_on(bus.execute(Lookup(key))).unwrap();
        }
        // Every key is new: each execution misses, stores and evicts the oldest.
        let next = AtomicU64::new(size);
        group.bench_function(format!("full_at_{size}"), |b| {
            b.to_async(&rt).iter(|| async {
                let key = next.fetch_add(1, Ordering::Relaxed);
                black_box(bus.execute(Lookup(key)).await.unwrap())
            })
        });
    }

    let uncached = QueryBus::new();
    uncached.register(handler).unwrap();
    let next = AtomicU64::new(0);
    group.bench_function("uncached_floor", |b| {
        b.to_async(&rt).iter(|| async {
            let key = next.fetch_add(1, Ordering::Relaxed);
            black_box(uncached.execute(Lookup(key)).await.unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, command_dispatch, event_publish, query_cache_miss);
criterion_main!(benches);
