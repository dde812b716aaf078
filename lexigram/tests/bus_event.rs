//! Behaviour of the in-process event bus: queues, ordering, concurrency, retries, dead
//! letters, panics, drain and shutdown, hooks, and the repository publisher.
//!
//! Timing tests run on tokio's paused clock: sleeps and timeouts complete exactly at their
//! deadline, without real waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use lexigram::aggregate::Route;
use lexigram::command::{CommandBus, CommandContext};
use lexigram::error::EventLoadError;
use lexigram::event::{
    EventBus, EventBusConfig, EventContext, EventHandler, HandlerPanicked, SubscribeOptions,
};
use lexigram::message::MessageMetadata;
use lexigram::prelude::*;
use lexigram::{EventEnvelope, InMemoryEventStore, Repository};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl Event for Ping {
    const NAME: &'static str = "test.Ping";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pong {
    n: u32,
}
impl Event for Pong {
    const NAME: &'static str = "test.Pong";
    const VERSION: u32 = 1;
}

#[derive(Debug, thiserror::Error)]
#[error("handler failed on attempt {0}")]
struct Failed(u32);

type Log<T> = Arc<Mutex<Vec<T>>>;

/// The default configuration with exact retry waits, so tests can name them (jitter has a
/// test of its own).
fn config() -> EventBusConfig {
    EventBusConfig::default().retry_jitter(0.0)
}

fn bus_with(change: impl FnOnce(&mut EventBusConfig)) -> Result<EventBus, lexigram::Error> {
    let mut config = config();
    change(&mut config);
    EventBus::with_config(config)
}

/// Records `name(n)` for each event, after sleeping `delay`.
fn tracer(
    name: &'static str,
    delay: Duration,
    log: &Log<String>,
) -> impl Fn(Ping, EventContext) -> futures_like::Ready + Send + Sync + 'static {
    let log = log.clone();
    move |event: Ping, _ctx: EventContext| {
        let log = log.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            log.lock().push(format!("{name}(e{})", event.n));
            Ok(())
        })
    }
}

mod futures_like {
    /// The boxed future the tracer handlers return.
    pub(crate) type Ready = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), std::convert::Infallible>> + Send>,
    >;
}

#[test]
fn the_default_configuration_is_the_seeds() -> TestResult {
    let c = EventBusConfig::default();
    assert_eq!(c.max_concurrent_handlers, 10);
    assert_eq!(c.handler_timeout, Duration::from_secs(30));
    assert!(c.retry_failed_handlers);
    assert_eq!(c.max_handler_retries, 3);
    assert_eq!(c.retry_initial_backoff, Duration::from_millis(100));
    assert_eq!(c.retry_backoff_multiplier, 2.0);
    assert!(c.enable_dead_letter && c.allow_no_handlers && c.parallel_dispatch);
    assert!(c.continue_on_error);
    assert_eq!(c.queue_capacity, 1000);
    assert_eq!(c.worker_idle_timeout, Duration::from_secs(30));

    let json = serde_json::to_value(&c)?;
    assert_eq!(json["handler_timeout_ms"], 30_000);
    assert_eq!(json["worker_idle_timeout_ms"], 30_000);
    let missing: EventBusConfig = serde_json::from_str("{}")?;
    assert_eq!(missing, c, "serde defaults are the documented defaults");
    let back: EventBusConfig = serde_json::from_value(json)?;
    assert_eq!(back, c);

    let bad = EventBusConfig::default()
        .queue_capacity(0)
        .max_concurrent_handlers(0);
    let Err(lexigram::Error::Config { problems }) = EventBus::with_config(bad) else {
        return Err("expected a config error".into());
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retry_waits_are_jittered_by_default_within_a_fifth_of_each_backoff() -> TestResult {
    let bus = EventBus::new();
    assert_eq!(bus.config().retry_jitter, 0.2);
    let calls: Log<(u32, Instant)> = Arc::default();
    for n in 0..20 {
        let log = calls.clone();
        bus.subscribe_with(
            move |_: Ping, ctx: EventContext| {
                log.lock().push((n, Instant::now()));
                let attempt = ctx.attempt();
                async move { Err::<(), _>(Failed(attempt)) }
            },
            SubscribeOptions::new().name(format!("flaky-{n}")),
        );
    }
    bus.publish_event("s-1", &Ping { n: 1 }).await?;
    bus.drain().await;
    let calls = calls.lock();
    let mut gaps = Vec::new();
    for n in 0..20 {
        let times: Vec<Instant> = calls
            .iter()
            .filter(|(h, _)| *h == n)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(times.len(), 4, "1 + 3 retries");
        for (wait, nominal) in times.windows(2).map(|w| w[1] - w[0]).zip([100, 200, 400]) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                wait <= nominal && wait >= nominal.mul_f64(0.8),
                "a wait of {wait:?} for a nominal {nominal:?}"
            );
            gaps.push(wait);
        }
    }
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(
        distinct.len() > 20,
        "20 handlers failing together do not retry in lockstep"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_handler_failing_twice_is_called_three_times_100ms_and_200ms_apart_without_dead_letter()
-> TestResult {
    let bus = bus_with(|_| ())?;
    let calls: Log<Instant> = Arc::default();
    let log = calls.clone();
    bus.subscribe(move |_: Ping, ctx: EventContext| {
        log.lock().push(Instant::now());
        let attempt = ctx.attempt();
        async move {
            if attempt < 3 {
                Err(Failed(attempt))
            } else {
                Ok(())
            }
        }
    });
    bus.publish_event("s-1", &Ping { n: 1 }).await?;
    bus.drain().await;
    let calls = calls.lock();
    assert_eq!(calls.len(), 3);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
    assert_eq!(bus.dead_letter_count(), 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_always_failing_handler_is_called_four_times_and_dead_lettered_once_and_replay_redelivers()
-> TestResult {
    let bus = bus_with(|_| ())?;
    let calls = Arc::new(AtomicU32::new(0));
    let healthy = Arc::new(AtomicU32::new(0));
    let (counter, fixed) = (calls.clone(), healthy.clone());
    bus.subscribe_with(
        move |_: Ping, ctx: EventContext| {
            counter.fetch_add(1, Ordering::SeqCst);
            let ok = fixed.load(Ordering::SeqCst) == 1;
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(Failed(ctx.attempt()))
                }
            }
        },
        SubscribeOptions::new().name("mailer"),
    );
    let start = Instant::now();
    bus.publish_event("s-1", &Ping { n: 7 }).await?;
    bus.drain().await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(100 + 200 + 400));

    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(bus.dead_letter_count(), 1);
    let letter = &letters[0];
    assert_eq!(&*letter.handler, "mailer");
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.error, "handler failed on attempt 4");
    assert_eq!(letter.envelope.decode::<Ping>()?, Ping { n: 7 });

    // Replaying while it still fails: dead-lettered again under a new id, error returned.
    let again = bus.replay_dead_letter(letter.id).await;
    let Err(lexigram::Error::EventHandler {
        attempts, handler, ..
    }) = again
    else {
        return Err(format!("expected EventHandler error, got {again:?}").into());
    };
    assert_eq!((attempts, &*handler), (4, "mailer"));
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_ne!(letters[0].id, letter.id);

    // Once the handler is fixed, replay delivers it and empties the queue.
    healthy.store(1, Ordering::SeqCst);
    bus.replay_dead_letter(letters[0].id).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 9);
    assert_eq!(bus.dead_letter_count(), 0);
    assert!(matches!(
        bus.replay_dead_letter(letters[0].id).await,
        Err(lexigram::Error::DeadLetterNotFound { .. })
    ));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn dead_letters_can_be_deleted_and_are_kept_when_their_handler_is_gone() -> TestResult {
    let bus = bus_with(|c| c.retry_failed_handlers = false)?;
    let id = bus.subscribe(|_: Ping, _: EventContext| async { Err::<(), _>(Failed(1)) });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Ping { n: 2 }).await?;
    bus.drain().await;
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].attempts, 1, "retries off: one attempt");
    assert!(bus.delete_dead_letter(letters[0].id));
    assert!(!bus.delete_dead_letter(letters[0].id));
    assert!(bus.unsubscribe(id));
    let replay = bus.replay_dead_letter(letters[1].id).await;
    assert!(
        matches!(replay, Err(lexigram::Error::DeadLetterReplay { .. })),
        "{replay:?}"
    );
    assert_eq!(bus.dead_letter_count(), 1, "kept for later");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn sequential_dispatch_runs_each_handler_in_turn_event_after_event() -> TestResult {
    let bus = bus_with(|c| c.parallel_dispatch = false)?;
    let log: Log<String> = Arc::default();
    // h1 is slower: in parallel it would finish after h2.
    bus.subscribe_with(
        tracer("h1", Duration::from_millis(50), &log),
        SubscribeOptions::new().priority(1),
    );
    bus.subscribe(tracer("h2", Duration::from_millis(10), &log));
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Ping { n: 2 }).await?;
    bus.drain().await;
    assert_eq!(*log.lock(), ["h1(e1)", "h2(e1)", "h1(e2)", "h2(e2)"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn parallel_dispatch_runs_the_handlers_of_an_event_together() -> TestResult {
    let bus = EventBus::new();
    let log: Log<String> = Arc::default();
    bus.subscribe(tracer("h1", Duration::from_millis(50), &log));
    bus.subscribe(tracer("h2", Duration::from_millis(10), &log));
    let start = Instant::now();
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.drain().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50),
        "not 60: they overlapped"
    );
    assert_eq!(*log.lock(), ["h2(e1)", "h1(e1)"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn handlers_of_all_events_run_first_then_by_priority() -> TestResult {
    let bus = bus_with(|c| c.parallel_dispatch = false)?;
    let log: Log<String> = Arc::default();
    let zero = Duration::ZERO;
    bus.subscribe_with(
        tracer("low", zero, &log),
        SubscribeOptions::new().priority(-5),
    );
    bus.subscribe(tracer("default", zero, &log));
    bus.subscribe_with(
        tracer("high", zero, &log),
        SubscribeOptions::new().priority(10),
    );
    let all = log.clone();
    bus.subscribe_all(move |ctx: EventContext| {
        all.lock().push(format!("all({})", ctx.event_type()));
        async { Ok::<_, Failed>(()) }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Pong { n: 2 }).await?;
    bus.drain().await;
    assert_eq!(
        *log.lock(),
        [
            "all(test.Ping)",
            "high(e1)",
            "default(e1)",
            "low(e1)",
            "all(test.Pong)"
        ]
    );
    assert_eq!(bus.handler_count("test.Ping"), 4);
    assert_eq!(bus.handler_count("test.Pong"), 1);
    Ok(())
}

#[tokio::test]
async fn events_of_one_type_are_handled_in_publish_order() -> TestResult {
    let bus = EventBus::new();
    let seen: Log<u32> = Arc::default();
    let log = seen.clone();
    bus.subscribe(move |e: Ping, _: EventContext| {
        log.lock().push(e.n);
        async { Ok::<_, Failed>(()) }
    });
    for n in 0..500 {
        bus.publish_event("s", &Ping { n }).await?;
    }
    bus.drain().await;
    assert_eq!(*seen.lock(), (0..500).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn unsubscribe_removes_a_handler_and_says_whether_it_did() -> TestResult {
    let bus = EventBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let id = bus.subscribe(move |_: Ping, _: EventContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Failed>(()) }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.drain().await;
    assert!(bus.unsubscribe(id));
    assert!(!bus.unsubscribe(id));
    bus.publish_event("s", &Ping { n: 2 }).await?;
    bus.drain().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn no_handlers_is_fine_by_default_and_an_error_when_not_allowed() -> TestResult {
    let bus = EventBus::new();
    bus.publish_event("s", &Ping { n: 1 }).await?;
    assert_eq!(bus.live_tasks(), 0, "nothing to run, no task started");

    let strict = bus_with(|c| c.allow_no_handlers = false)?;
    let result = strict.publish_event("s", &Ping { n: 1 }).await;
    let Err(lexigram::Error::Publish { event_type, reason }) = result else {
        return Err(format!("expected Publish error, got {result:?}").into());
    };
    assert_eq!(&*event_type, "test.Ping");
    assert!(reason.contains("allow_no_handlers"), "{reason}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_publish_wait() -> TestResult {
    let bus = bus_with(|c| c.queue_capacity = 2)?;
    bus.subscribe(|_: Ping, _: EventContext| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Failed>(())
    });
    let start = Instant::now();
    for n in 1..=3 {
        bus.publish_event("s", &Ping { n }).await?;
    }
    // e1 is being handled, e2 and e3 fill the queue.
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the first three are accepted at once"
    );
    bus.publish_event("s", &Ping { n: 4 }).await?;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the 4th waited until e1 was done and e2 left the queue"
    );
    bus.drain().await;
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_cap_is_never_exceeded() -> TestResult {
    let bus = bus_with(|c| c.max_concurrent_handlers = 2)?;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let (running, peak) = (running.clone(), peak.clone());
        bus.subscribe(move |_: Ping, _: EventContext| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failed>(())
            }
        });
    }
    // A second event type shares the same bus-wide cap.
    let (r2, p2) = (running.clone(), peak.clone());
    bus.subscribe(move |_: Pong, _: EventContext| {
        let (running, peak) = (r2.clone(), p2.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Failed>(())
        }
    });
    let start = Instant::now();
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Pong { n: 1 }).await?;
    bus.drain().await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(300),
        "6 calls, 2 at a time"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_dead_lettered_and_the_bus_keeps_running() -> TestResult {
    let bus = EventBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.subscribe_with(
        move |e: Ping, _: EventContext| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if e.n == 1 {
                    #[allow(clippy::panic)]
                    {
                        panic!("boom on {}", e.n);
                    }
                }
                Ok::<_, Failed>(())
            }
        },
        SubscribeOptions::new().name("fragile"),
    );
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Ping { n: 2 }).await?;
    bus.drain().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4 + 1,
        "4 attempts on e1, then e2"
    );
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].error,
        HandlerPanicked {
            message: "boom on 1".into()
        }
        .to_string()
    );
    assert_eq!(letters[0].envelope.decode::<Ping>()?, Ping { n: 1 });
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_times_out_per_attempt() -> TestResult {
    let bus = bus_with(|c| {
        c.handler_timeout = Duration::from_secs(1);
        c.max_handler_retries = 1;
    })?;
    bus.subscribe(|_: Ping, _: EventContext| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Failed>(())
    });
    let start = Instant::now();
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.drain().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1000 + 100 + 1000));
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
    assert!(
        letters[0].error.contains("timed out after 1s"),
        "{}",
        letters[0].error
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_continue_on_error_later_handlers_are_skipped_and_dead_lettered() -> TestResult {
    let bus = bus_with(|c| {
        c.parallel_dispatch = false;
        c.continue_on_error = false;
        c.retry_failed_handlers = false;
    })?;
    let log: Log<String> = Arc::default();
    bus.subscribe_with(
        |_: Ping, _: EventContext| async { Err::<(), _>(Failed(1)) },
        SubscribeOptions::new().name("first").priority(1),
    );
    bus.subscribe_with(
        tracer("second", Duration::ZERO, &log),
        SubscribeOptions::new().name("second"),
    );
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.drain().await;
    assert!(log.lock().is_empty());
    let letters = bus.dead_letters();
    let summary: Vec<(&str, u32)> = letters.iter().map(|l| (&*l.handler, l.attempts)).collect();
    assert_eq!(summary, [("first", 1), ("second", 0)]);
    assert!(
        letters[1].error.contains("`first` failed before it"),
        "{}",
        letters[1].error
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn hooks_see_published_handled_and_failed_events() -> TestResult {
    let bus = bus_with(|c| c.retry_failed_handlers = false)?;
    bus.subscribe_with(
        |e: Ping, _: EventContext| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if e.n == 2 { Err(Failed(1)) } else { Ok(()) }
        },
        SubscribeOptions::new().name("h"),
    );
    let events: Log<String> = Arc::default();
    let (a, b, c) = (events.clone(), events.clone(), events.clone());
    bus.on_published(move |env| a.lock().push(format!("published {}", env.event_type)));
    bus.on_handled(move |r| {
        b.lock().push(format!(
            "handled {} by {} in {:?}",
            r.envelope.event_type, r.handler, r.elapsed
        ));
    });
    bus.on_failed(move |r| {
        let error = r.error.map(ToString::to_string).unwrap_or_default();
        c.lock().push(format!(
            "failed {} after {}: {error}",
            r.handler, r.attempts
        ));
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.drain().await;
    bus.publish_event("s", &Ping { n: 2 }).await?;
    bus.drain().await;
    assert_eq!(
        *events.lock(),
        [
            "published test.Ping",
            "handled test.Ping by h in 5ms",
            "published test.Ping",
            "failed h after 1: handler failed on attempt 1",
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_queued_events_and_retries() -> TestResult {
    let bus = EventBus::new();
    let done = Arc::new(AtomicU32::new(0));
    let counter = done.clone();
    bus.subscribe(move |_: Ping, ctx: EventContext| {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if ctx.attempt() == 1 {
                return Err(Failed(1));
            }
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    for n in 0..3 {
        bus.publish_event("s", &Ping { n }).await?;
    }
    assert_eq!(bus.pending(), 3);
    bus.drain().await;
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert_eq!(bus.pending(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_no_bus_task_is_alive_and_publish_fails() -> TestResult {
    let bus = EventBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.subscribe(move |_: Ping, _: EventContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Failed>(()) }
    });
    bus.subscribe_all(|_: EventContext| async { Ok::<_, Failed>(()) });
    for n in 0..100 {
        bus.publish_event("s", &Ping { n }).await?;
        bus.publish_event("s", &Pong { n }).await?;
    }
    assert_eq!(bus.live_tasks(), 2, "one per event type");
    bus.shutdown(Duration::from_secs(5)).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        100,
        "accepted events were handled first"
    );
    assert_eq!(bus.live_tasks(), 0);
    assert!(bus.is_shut_down());
    let late = bus.publish_event("s", &Ping { n: 0 }).await;
    assert!(
        matches!(late, Err(lexigram::Error::Publish { .. })),
        "{late:?}"
    );
    assert_eq!(bus.live_tasks(), 0, "a late publish starts nothing");
    Ok(())
}

/// Sets a flag when dropped: proves a cancelled handler future was dropped.
struct DropFlag(Arc<AtomicU32>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_hung_handler_stops_everything_at_the_deadline() -> TestResult {
    let bus = EventBus::new();
    let dropped = Arc::new(AtomicU32::new(0));
    let flag = dropped.clone();
    bus.subscribe(move |_: Ping, _: EventContext| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, Failed>(())
        }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    bus.publish_event("s", &Ping { n: 2 }).await?;
    tokio::task::yield_now().await;
    assert_eq!(bus.live_tasks(), 1);
    let start = Instant::now();
    let result = bus.shutdown(Duration::from_secs(2)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let Err(lexigram::Error::ShutdownTimeout { abandoned, .. }) = result else {
        return Err(format!("expected ShutdownTimeout, got {result:?}").into());
    };
    assert_eq!(abandoned, 2);
    assert_eq!(bus.live_tasks(), 0);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the hung handler was dropped"
    );
    bus.drain().await; // returns at once after shutdown
    Ok(())
}

/// A handler type with a dependency, written with `async fn`.
struct Forwarder {
    commands: CommandBus,
}

#[derive(Debug)]
struct Notify;
impl Command for Notify {
    type Output = ();
}

impl EventHandler<Ping> for Forwarder {
    type Error = lexigram::Error;

    async fn handle(&self, _event: Ping, _ctx: EventContext) -> Result<(), lexigram::Error> {
        self.commands.dispatch(Notify).await
    }
}

#[tokio::test]
async fn a_command_sent_from_an_event_handler_is_caused_by_the_event() -> TestResult {
    let commands = CommandBus::new();
    let seen: Log<MessageMetadata> = Arc::default();
    let log = seen.clone();
    commands.register_fn(move |_: Notify, ctx: CommandContext| {
        log.lock().push(ctx.metadata().clone());
        async { Ok::<_, Failed>(()) }
    })?;
    let bus = EventBus::new();
    bus.subscribe(Forwarder { commands });
    let cause = MessageMetadata::new().with_user_id("ada");
    let new = lexigram::message::NewEvent::from_event(&Ping { n: 1 }, cause.clone())?;
    bus.publish(EventEnvelope::new(
        new,
        "s".into(),
        1,
        1,
        chrono::Utc::now(),
    ))
    .await?;
    bus.drain().await;
    let seen = seen.lock();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].correlation_id(), cause.correlation_id());
    assert_eq!(seen[0].causation_id(), Some(cause.message_id()));
    assert_eq!(seen[0].user_id(), Some("ada"));
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: u32,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Ping>().finish()
    }
}

impl Apply<Ping> for Counter {
    fn apply(&mut self, event: &Ping) {
        self.total += event.n;
    }
}

#[tokio::test]
async fn the_repository_publishes_saved_events_with_stream_version_and_position() -> TestResult {
    let bus = EventBus::new();
    let seen: Log<(String, u64, u64, u32)> = Arc::default();
    let log = seen.clone();
    bus.subscribe(move |e: Ping, ctx: EventContext| {
        log.lock().push((
            ctx.stream_id().to_string(),
            ctx.stream_version(),
            ctx.global_position(),
            e.n,
        ));
        async { Ok::<_, Failed>(()) }
    });
    let counters =
        Repository::<Counter>::new(InMemoryEventStore::new()).with_publisher(Arc::new(bus.clone()));
    let mut other = counters.load("c-0").await?;
    other.record(Ping { n: 100 })?;
    counters.save(&mut other).await?;
    let mut counter = counters.load("c-1").await?;
    counter.record(Ping { n: 1 })?;
    counter.record(Ping { n: 2 })?;
    counters.save(&mut counter).await?;
    bus.drain().await;
    assert_eq!(
        *seen.lock(),
        [
            ("c-0".to_owned(), 1, 1, 100),
            ("c-1".to_owned(), 1, 2, 1),
            ("c-1".to_owned(), 2, 3, 2)
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_dead_letter_queue_keeps_the_newest_up_to_its_capacity() -> TestResult {
    let bus = bus_with(|c| {
        c.retry_failed_handlers = false;
        c.dead_letter_capacity = 2;
    })?;
    bus.subscribe(|e: Ping, _: EventContext| async move { Err::<(), _>(Failed(e.n)) });
    for n in 1..=3 {
        bus.publish_event("s", &Ping { n }).await?;
    }
    bus.drain().await;
    let kept: Vec<u32> = bus
        .dead_letters()
        .iter()
        .map(|l| l.envelope.decode::<Ping>().map(|p| p.n))
        .collect::<Result<_, _>>()?;
    assert_eq!(kept, [2, 3], "the oldest dead letter went first");
    assert!(
        bus_with(|c| c.dead_letter_capacity = 0).is_err(),
        "a zero capacity with dead letters on is refused"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_event_that_does_not_decode_is_dead_lettered_without_retries() -> TestResult {
    let bus = bus_with(|_| {})?;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    bus.subscribe(move |_: Ping, _: EventContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Failed>(()) }
    });
    let broken = lexigram::message::NewEvent::new(
        "test.Ping",
        1,
        lexigram::message::Payload::from_json_text(r#"{"n":"not a number"}"#),
        lexigram::MessageMetadata::new(),
    );
    let start = Instant::now();
    bus.publish(lexigram::EventEnvelope::new(
        broken,
        "s".into(),
        3,
        9,
        chrono::Utc::now(),
    ))
    .await?;
    bus.drain().await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never saw it");
    assert_eq!(start.elapsed(), Duration::ZERO, "no backoff was waited");
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert!(
        letters[0].error.contains("version 3 of stream `s`"),
        "{}",
        letters[0].error
    );
    Ok(())
}

/// Waits for `drain`, or says it did not return within an hour (instant on the paused clock).
async fn drained(bus: &EventBus) -> bool {
    tokio::time::timeout(Duration::from_secs(3600), bus.drain())
        .await
        .is_ok()
}

/// An envelope of the event type named `event_type`, with an empty payload.
fn raw_envelope(event_type: &str) -> EventEnvelope {
    let new = lexigram::message::NewEvent::new(
        event_type.to_owned(),
        1,
        lexigram::message::Payload::from_json_text("{}"),
        MessageMetadata::new(),
    );
    EventEnvelope::new(new, "s".into(), 0, 0, chrono::Utc::now())
}

#[tokio::test(start_paused = true)]
async fn a_queue_capacity_above_what_tokio_can_hold_is_refused_by_validate() -> TestResult {
    let too_big = bus_with(|c| c.queue_capacity = tokio::sync::Semaphore::MAX_PERMITS + 1);
    let Err(lexigram::Error::Config { problems }) = too_big else {
        return Err(format!("expected a config error, got {too_big:?}").into());
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("queue_capacity"), "{problems:?}");

    // The largest accepted capacity works.
    let bus = bus_with(|c| c.queue_capacity = tokio::sync::Semaphore::MAX_PERMITS)?;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.subscribe(move |_: Ping, _: EventContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Failed>(()) }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    assert!(drained(&bus).await);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_longest_durations_are_accepted_and_saturate_instead_of_overflowing() -> TestResult {
    let bus = bus_with(|c| {
        c.handler_timeout = Duration::MAX;
        c.retry_initial_backoff = Duration::from_millis(100);
        c.retry_max_backoff = Duration::MAX;
        c.retry_backoff_multiplier = f64::MAX;
        c.max_handler_retries = u32::MAX;
    })?;
    bus.subscribe(|_: Ping, ctx: EventContext| async move {
        if ctx.attempt() < 3 {
            Err(Failed(ctx.attempt()))
        } else {
            Ok(())
        }
    });
    let start = Instant::now();
    bus.publish_event("s", &Ping { n: 1 }).await?;
    // The second wait (100 ms × f64::MAX) saturates at `retry_max_backoff`: it never ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bus.pending(), 1);
    assert!(start.elapsed() >= Duration::from_millis(100));
    bus.shutdown(Duration::MAX)
        .await
        .err()
        .map_or(Ok(()), |e| match e {
            lexigram::Error::ShutdownTimeout { .. } => Ok(()),
            other => Err(other),
        })?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn no_retry_wait_is_longer_than_retry_max_backoff_not_even_the_first() -> TestResult {
    let bus = bus_with(|c| {
        c.retry_initial_backoff = Duration::from_secs(10);
        c.retry_max_backoff = Duration::from_secs(1);
    })?;
    let calls: Log<Instant> = Arc::default();
    let log = calls.clone();
    bus.subscribe(move |_: Ping, ctx: EventContext| {
        log.lock().push(Instant::now());
        async move {
            if ctx.attempt() < 2 {
                Err(Failed(ctx.attempt()))
            } else {
                Ok(())
            }
        }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    assert!(drained(&bus).await);
    let calls = calls.lock();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1] - calls[0], Duration::from_secs(1));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_envelope_handler_that_panics_before_returning_its_future_is_dead_lettered() -> TestResult
{
    let bus = bus_with(|c| c.retry_failed_handlers = false)?;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.subscribe_type_with(
        "test.Ping",
        move |ctx: EventContext| {
            if ctx.stream_id().as_str() == "bad" {
                #[allow(clippy::panic)]
                {
                    panic!("boom before the future");
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Failed>(()) }
        },
        SubscribeOptions::new().name("eager"),
    );
    bus.publish_event("bad", &Ping { n: 1 }).await?;
    bus.publish_event("good", &Ping { n: 2 }).await?;
    assert!(drained(&bus).await, "drain returned");
    bus.publish_event("good", &Ping { n: 3 }).await?;
    assert!(drained(&bus).await, "drain returned");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the worker kept running");
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(&*letters[0].handler, "eager");
    assert_eq!(
        letters[0].error,
        HandlerPanicked {
            message: "boom before the future".into()
        }
        .to_string()
    );
    bus.shutdown(Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_publish_cancelled_while_waiting_for_room_is_not_counted() -> TestResult {
    let bus = bus_with(|c| c.queue_capacity = 1)?;
    let handled: Log<u32> = Arc::default();
    let log = handled.clone();
    bus.subscribe(move |e: Ping, _: EventContext| {
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            log.lock().push(e.n);
            Ok::<_, Failed>(())
        }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    tokio::task::yield_now().await; // e1 leaves the queue and is being handled
    bus.publish_event("s", &Ping { n: 2 }).await?; // fills the queue
    let cancelled = tokio::time::timeout(
        Duration::from_millis(10),
        bus.publish_event("s", &Ping { n: 3 }),
    )
    .await;
    assert!(cancelled.is_err(), "the third publish was still waiting");
    assert_eq!(bus.pending(), 2);
    assert!(drained(&bus).await, "drain returned");
    assert_eq!(bus.pending(), 0);
    assert_eq!(*handled.lock(), [1, 2]);
    bus.shutdown(Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_by_its_deadline_even_when_a_handler_blocks_its_thread() -> TestResult {
    let bus = EventBus::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    bus.subscribe(move |_: Ping, _: EventContext| {
        signal.notify_one();
        async {
            // Blocking on purpose: the deadline must hold even so.
            std::thread::sleep(Duration::from_secs(2));
            Ok::<_, Failed>(())
        }
    });
    bus.publish_event("s", &Ping { n: 1 }).await?;
    started.notified().await;
    let start = std::time::Instant::now();
    let result = bus.shutdown(Duration::from_millis(200)).await;
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let Err(lexigram::Error::ShutdownTimeout { abandoned, .. }) = result else {
        return Err(format!("expected ShutdownTimeout, got {result:?}").into());
    };
    assert_eq!(abandoned, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn idle_workers_end_and_are_started_again_on_demand() -> TestResult {
    const TYPES: usize = 20_000;
    let bus = EventBus::new();
    let seen: Log<String> = Arc::default();
    let log = seen.clone();
    bus.subscribe_all(move |ctx: EventContext| {
        log.lock().push(ctx.event_type().to_owned());
        async { Ok::<_, Failed>(()) }
    });
    for i in 0..TYPES {
        bus.publish(raw_envelope(&format!("test.Type{i}"))).await?;
    }
    assert!(drained(&bus).await);
    assert_eq!(seen.lock().len(), TYPES);
    assert_eq!(bus.live_tasks(), TYPES, "one worker per event type");

    let idle = bus.config().worker_idle_timeout;
    assert_eq!(idle, Duration::from_secs(30), "the documented default");
    tokio::time::sleep(idle - Duration::from_millis(1)).await;
    assert_eq!(bus.live_tasks(), TYPES, "not idle long enough yet");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(bus.live_tasks(), 0, "idle workers ended");

    bus.publish(raw_envelope("test.Type7")).await?;
    bus.publish(raw_envelope("test.Type7")).await?;
    assert!(drained(&bus).await);
    assert_eq!(
        seen.lock().len(),
        TYPES + 2,
        "a new worker took the next events"
    );
    assert_eq!(bus.live_tasks(), 1);
    bus.shutdown(Duration::from_secs(1)).await?;
    assert_eq!(bus.live_tasks(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_idle_workers_end_are_never_lost_nor_reordered() -> TestResult {
    // Workers end whenever their queue is empty, and a queue of one makes publishers wait
    // for room: every gap between two events races a worker that is ending against a
    // publish that already holds its lane.
    let bus = bus_with(|c| {
        c.worker_idle_timeout = Duration::ZERO;
        c.queue_capacity = 1;
    })?;
    let pings: Log<u32> = Arc::default();
    let pongs: Log<u32> = Arc::default();
    let (a, b) = (pings.clone(), pongs.clone());
    bus.subscribe(move |e: Ping, _: EventContext| {
        a.lock().push(e.n);
        async { Ok::<_, Failed>(()) }
    });
    bus.subscribe(move |e: Pong, _: EventContext| {
        b.lock().push(e.n);
        async { Ok::<_, Failed>(()) }
    });
    const N: u32 = 10_000;
    let (ping_bus, pong_bus) = (bus.clone(), bus.clone());
    let ping = tokio::spawn(async move {
        for n in 0..N {
            ping_bus.publish_event("s", &Ping { n }).await?;
            if n % 3 == 0 {
                tokio::task::yield_now().await;
            }
        }
        Ok::<_, lexigram::Error>(())
    });
    let pong = tokio::spawn(async move {
        for n in 0..N {
            pong_bus.publish_event("s", &Pong { n }).await?;
            tokio::task::yield_now().await;
        }
        Ok::<_, lexigram::Error>(())
    });
    ping.await??;
    pong.await??;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), bus.drain())
            .await
            .is_ok(),
        "drain returned"
    );
    assert_eq!(*pings.lock(), (0..N).collect::<Vec<_>>());
    assert_eq!(*pongs.lock(), (0..N).collect::<Vec<_>>());
    assert_eq!(bus.pending(), 0);
    bus.shutdown(Duration::from_secs(5)).await?;
    assert_eq!(bus.live_tasks(), 0);
    Ok(())
}
