//! Behaviour of the query bus: dispatch, errors, and the result cache (hit, miss, TTL, size,
//! invalidation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lexigram::query::{CachePolicy, QueryBus, QueryContext, QueryHandler};
use lexigram::{Error, Query};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Balance {
    account: String,
}
impl Query for Balance {
    type Output = u64;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Flaky(u32);
impl Query for Flaky {
    type Output = u32;
}

#[derive(Debug, thiserror::Error)]
#[error("view unavailable")]
struct Unavailable;

/// Answers the length of the account name and counts its calls.
struct BalanceView {
    calls: Arc<AtomicU32>,
}

impl QueryHandler<Balance> for BalanceView {
    type Error = Unavailable;

    async fn handle(&self, q: Balance, _ctx: QueryContext) -> Result<u64, Unavailable> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(q.account.len() as u64)
    }
}

fn q(account: &str) -> Balance {
    Balance {
        account: account.to_owned(),
    }
}

fn cached_bus(ttl: Duration, max: usize) -> Result<(QueryBus, Arc<AtomicU32>), Error> {
    let calls = Arc::new(AtomicU32::new(0));
    let bus = QueryBus::new();
    bus.register_cached(
        BalanceView {
            calls: calls.clone(),
        },
        CachePolicy::new(ttl, max),
    )?;
    Ok((bus, calls))
}

#[tokio::test]
async fn execute_returns_the_output_and_unknown_queries_are_not_found() -> TestResult {
    let bus = QueryBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    bus.register(BalanceView {
        calls: calls.clone(),
    })?;
    assert_eq!(bus.execute(q("abc")).await?, 3);
    assert_eq!(bus.execute(q("abc")).await?, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no cache unless asked for");
    assert_eq!(bus.cache_stats::<Balance>(), None);

    let missing = bus.execute(Flaky(1)).await;
    let Err(Error::HandlerNotFound { kind, .. }) = missing else {
        return Err(format!("expected HandlerNotFound, got {missing:?}").into());
    };
    assert_eq!(kind, "query");

    let duplicate =
        bus.register_fn(|_: Balance, _: QueryContext| async { Ok::<_, Unavailable>(0) });
    assert!(matches!(
        duplicate,
        Err(Error::DuplicateHandler { kind: "query", .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_handler_error_is_wrapped_in_query_execution_with_the_source() -> TestResult {
    let bus = QueryBus::new();
    bus.register_fn(|_: Flaky, _: QueryContext| async { Err::<u32, _>(Unavailable) })?;
    let result = bus.execute(Flaky(0)).await;
    let Err(Error::QueryExecution {
        query_type, source, ..
    }) = result
    else {
        return Err(format!("expected QueryExecution, got {result:?}").into());
    };
    assert_eq!(query_type, std::any::type_name::<Flaky>());
    assert!(source.downcast_ref::<Unavailable>().is_some());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn equal_queries_hit_the_cache_until_the_ttl_passes() -> TestResult {
    let (bus, calls) = cached_bus(Duration::from_secs(30), 100)?;
    assert_eq!(bus.execute(q("abc")).await?, 3);
    assert_eq!(bus.execute(q("abc")).await?, 3);
    assert_eq!(
        bus.execute(q("abcd")).await?,
        4,
        "another value is another key"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    tokio::time::advance(Duration::from_millis(29_999)).await;
    bus.execute(q("abc")).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "still fresh just before the TTL"
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    bus.execute(q("abc")).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "expired exactly at the TTL"
    );

    let stats = bus.cache_stats::<Balance>().ok_or("no stats")?;
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 3, 2));
    Ok(())
}

#[tokio::test]
async fn the_cache_keeps_at_most_max_entries_dropping_the_oldest() -> TestResult {
    let (bus, calls) = cached_bus(Duration::from_secs(60), 2)?;
    bus.execute(q("a")).await?;
    bus.execute(q("bb")).await?;
    bus.execute(q("ccc")).await?; // evicts "a"
    assert_eq!(bus.cache_stats::<Balance>().map(|s| s.entries), Some(2));
    bus.execute(q("bb")).await?;
    bus.execute(q("ccc")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "bb and ccc were cached");
    bus.execute(q("a")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "a was evicted");
    Ok(())
}

#[tokio::test]
async fn invalidation_drops_one_value_one_type_or_everything() -> TestResult {
    let (bus, calls) = cached_bus(Duration::from_secs(60), 100)?;
    bus.execute(q("a")).await?;
    bus.execute(q("b")).await?;
    assert!(bus.invalidate(&q("a")));
    assert!(!bus.invalidate(&q("a")));
    bus.execute(q("a")).await?;
    bus.execute(q("b")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "only a was recomputed");

    assert_eq!(bus.invalidate_all::<Balance>(), 2);
    bus.execute(q("a")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    bus.clear_caches();
    bus.execute(q("a")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        bus.invalidate_all::<Flaky>(),
        0,
        "no handler, nothing to drop"
    );
    Ok(())
}

#[tokio::test]
async fn errors_are_never_cached() -> TestResult {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let bus = QueryBus::new();
    bus.register_cached(
        move |f: Flaky, _: QueryContext| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(Unavailable) } else { Ok(f.0) } }
        },
        CachePolicy::default(),
    )?;
    assert!(bus.execute(Flaky(7)).await.is_err());
    assert_eq!(bus.execute(Flaky(7)).await?, 7);
    assert_eq!(bus.execute(Flaky(7)).await?, 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn replacing_a_cached_handler_starts_with_an_empty_cache() -> TestResult {
    let (bus, calls) = cached_bus(Duration::from_secs(60), 100)?;
    bus.execute(q("a")).await?;
    let fresh = Arc::new(AtomicU32::new(0));
    assert!(bus.replace_cached(
        BalanceView {
            calls: fresh.clone()
        },
        CachePolicy::default()
    ));
    bus.execute(q("a")).await?;
    bus.execute(q("a")).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(fresh.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_cache_ttl_of_duration_max_means_the_result_never_expires() -> TestResult {
    let (bus, calls) = cached_bus(Duration::MAX, 10)?;
    assert_eq!(bus.execute(q("abc")).await?, 3);
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    assert_eq!(bus.execute(q("abc")).await?, 3);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "still cached a century later"
    );
    Ok(())
}

/// Answers after 10 ms (tokio's clock), counting calls; the first call fails when `fail_first`.
fn slow_flaky_bus(fail_first: bool) -> Result<(QueryBus, Arc<AtomicU32>), Error> {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let bus = QueryBus::new();
    bus.register_cached(
        move |f: Flaky, _: QueryContext| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if fail_first && n == 0 {
                    Err(Unavailable)
                } else {
                    Ok(f.0)
                }
            }
        },
        CachePolicy::default(),
    )?;
    Ok((bus, calls))
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_of_one_query_call_the_handler_once_and_share_its_result() -> TestResult {
    let (bus, calls) = slow_flaky_bus(false)?;
    let results = futures_util::future::join_all((0..10).map(|_| bus.execute(Flaky(7)))).await;
    for result in results {
        assert_eq!(result?, 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = bus.cache_stats::<Flaky>().ok_or("no stats")?;
    assert_eq!((stats.hits, stats.misses, stats.entries), (9, 1, 1));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn when_a_shared_miss_fails_its_caller_gets_the_error_and_the_waiters_retry_once()
-> TestResult {
    let (bus, calls) = slow_flaky_bus(true)?;
    let results = futures_util::future::join_all((0..5).map(|_| bus.execute(Flaky(7)))).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 1, "only the caller whose call failed: {results:?}");
    for result in results.into_iter().skip(1) {
        assert_eq!(result?, 7);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one failed call, one retry"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_on_a_shared_miss_does_not_strand_the_waiters() -> TestResult {
    let (bus, calls) = slow_flaky_bus(false)?;
    let first = tokio::time::timeout(Duration::from_millis(5), bus.execute(Flaky(7)));
    let second = bus.execute(Flaky(7));
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_err(), "the first caller gave up");
    assert_eq!(second?, 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    Ok(())
}

/// The cost of a miss in a full cache is measured by the `query_cache_miss` benchmark (10
/// against 10 000 entries, beside the uncached floor); this test holds the behaviour there:
/// a full cache of 10 000 evicts exactly its oldest entries, one per miss, and stays full.
#[tokio::test]
async fn a_full_cache_of_10_000_entries_evicts_exactly_its_oldest_entry_per_miss() -> TestResult {
    let (bus, calls) = cached_bus(Duration::from_secs(3600), 10_000)?;
    for i in 0..10_000 {
        bus.execute(q(&i.to_string())).await?;
    }
    for i in 0..301 {
        bus.execute(q(&format!("miss-{i}"))).await?;
    }
    assert_eq!(
        bus.cache_stats::<Balance>().map(|s| s.entries),
        Some(10_000)
    );
    let before = calls.load(Ordering::SeqCst);
    // The 301 oldest are gone (each is a miss again), the next one is still cached.
    bus.execute(q("300")).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "entry 300 was evicted"
    );
    bus.execute(q("302")).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "entry 302 is still cached"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_query_invalidated_while_its_call_runs_answers_its_callers_but_is_not_stored()
-> TestResult {
    let (bus, calls) = slow_flaky_bus(false)?;
    let invalidate = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        bus.invalidate(&Flaky(7))
    };
    let (first, waiter, invalidated) =
        tokio::join!(bus.execute(Flaky(7)), bus.execute(Flaky(7)), invalidate);
    assert_eq!((first?, waiter?), (7, 7));
    assert!(!invalidated, "nothing was stored yet");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(bus.cache_stats::<Flaky>().map(|s| s.entries), Some(0));
    bus.execute(Flaky(7)).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "called again after the invalidation"
    );
    Ok(())
}
