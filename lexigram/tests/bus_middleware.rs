//! Behaviour of bus middleware: onion order, short-circuit, wrapping results, and the shipped
//! middleware (timing, timeout, retry, validation, correlation, tracing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lexigram::command::{CommandBus, CommandContext};
use lexigram::message::{CorrelationId, MessageMetadata};
use lexigram::middleware::{
    self, CorrelationMiddleware, MessageKind, Middleware, Next, Request, Response, RetryMiddleware,
    TimeoutMiddleware, Timing, TimingMiddleware, TracingMiddleware, Validate, ValidationMiddleware,
};
use lexigram::query::{QueryBus, QueryContext};
use lexigram::{Command, Error, Query};
use parking_lot::Mutex;
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone)]
struct Double(u64);
impl Command for Double {
    type Output = u64;
}

#[derive(Debug)]
struct Slow;
impl Command for Slow {
    type Output = ();
}

#[derive(Debug, Clone)]
struct Register {
    email: String,
}
impl Command for Register {
    type Output = ();
}
impl Validate for Register {
    fn validate(&self) -> Result<(), Vec<String>> {
        if self.email.contains('@') {
            Ok(())
        } else {
            Err(vec![format!("email `{}` has no @", self.email)])
        }
    }
}

#[derive(Debug, Clone)]
struct WhoAmI;
impl Query for WhoAmI {
    type Output = MessageMetadata;
}

#[derive(Debug, thiserror::Error)]
#[error("transient")]
struct Transient;

type Trace = Arc<Mutex<Vec<String>>>;

/// Records "<name> before" / "<name> after" around `next`.
struct Recorder {
    name: &'static str,
    trace: Trace,
}

impl Middleware for Recorder {
    async fn handle(&self, request: Request, next: Next) -> lexigram::Result<Response> {
        self.trace.lock().push(format!("{} before", self.name));
        let response = next.run(request).await;
        self.trace.lock().push(format!("{} after", self.name));
        response
    }
}

fn doubling_bus(trace: &Trace) -> Result<CommandBus, Error> {
    let bus = CommandBus::new();
    let log = trace.clone();
    bus.register_fn(move |c: Double, _: CommandContext| {
        log.lock().push("handler".to_owned());
        async move { Ok::<_, Transient>(c.0 * 2) }
    })?;
    Ok(bus)
}

#[tokio::test]
async fn middleware_runs_as_an_onion_first_added_outermost() -> TestResult {
    let trace = Trace::default();
    let bus = doubling_bus(&trace)?;
    bus.add_middleware(Recorder {
        name: "A",
        trace: trace.clone(),
    });
    bus.add_middleware(Recorder {
        name: "B",
        trace: trace.clone(),
    });
    assert_eq!(bus.dispatch(Double(4)).await?, 8);
    assert_eq!(
        *trace.lock(),
        ["A before", "B before", "handler", "B after", "A after"]
    );
    Ok(())
}

#[tokio::test]
async fn a_middleware_can_short_circuit_without_calling_the_handler() -> TestResult {
    let trace = Trace::default();
    let bus = doubling_bus(&trace)?;
    bus.add_middleware(middleware::from_fn(
        |request: Request, next: Next| async move {
            match request.message::<Double>() {
                Some(Double(0)) => Ok(Response::new(u64::MAX)),
                _ => next.run(request).await,
            }
        },
    ));
    assert_eq!(bus.dispatch(Double(0)).await?, u64::MAX);
    assert!(trace.lock().is_empty(), "handler not called");
    assert_eq!(bus.dispatch(Double(1)).await?, 2);
    assert_eq!(*trace.lock(), ["handler"]);
    Ok(())
}

#[tokio::test]
async fn a_middleware_can_change_the_message_and_wrap_the_result() -> TestResult {
    let trace = Trace::default();
    let bus = doubling_bus(&trace)?;
    bus.add_middleware(middleware::from_fn(
        |mut request: Request, next: Next| async move {
            if let Some(cmd) = request.message_mut::<Double>() {
                cmd.0 += 1;
            }
            let mut response = next.run(request).await?;
            if let Some(out) = response.downcast_mut::<u64>() {
                *out += 1000;
            }
            Ok(response)
        },
    ));
    assert_eq!(bus.dispatch(Double(1)).await?, 1004);
    Ok(())
}

#[tokio::test]
async fn replacing_the_result_with_another_type_is_a_typed_error() -> TestResult {
    let trace = Trace::default();
    let bus = doubling_bus(&trace)?;
    bus.add_middleware(middleware::from_fn(|_: Request, _: Next| async {
        Ok(Response::new("not a number"))
    }));
    let result = bus.dispatch(Double(1)).await;
    let Err(Error::MiddlewareType { what, expected, .. }) = result else {
        return Err(format!("expected MiddlewareType, got {result:?}").into());
    };
    assert_eq!((what, expected), ("result", "u64"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn timing_reports_the_exact_duration_to_its_hook() -> TestResult {
    let bus = CommandBus::new();
    bus.register_fn(|_: Slow, _: CommandContext| async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok::<_, Transient>(())
    })?;
    let seen: Arc<Mutex<Vec<Timing>>> = Arc::default();
    let sink = seen.clone();
    bus.add_middleware(TimingMiddleware::new(move |t| sink.lock().push(t.clone())));
    bus.dispatch(Slow).await?;
    let seen = seen.lock();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].elapsed, Duration::from_millis(250));
    assert_eq!(seen[0].kind, MessageKind::Command);
    assert_eq!(seen[0].message_type, std::any::type_name::<Slow>());
    assert!(seen[0].succeeded);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_a_slow_handler_at_the_limit() -> TestResult {
    let bus = CommandBus::new();
    let finished = Arc::new(AtomicU32::new(0));
    let flag = finished.clone();
    bus.register_fn(move |_: Slow, _: CommandContext| {
        let flag = flag.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            flag.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Transient>(())
        }
    })?;
    bus.add_middleware(TimeoutMiddleware::new(Duration::from_secs(1)));
    let start = Instant::now();
    let result = bus.dispatch(Slow).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let Err(Error::Timeout { after, operation }) = result else {
        return Err(format!("expected Timeout, got {result:?}").into());
    };
    assert_eq!(after, Duration::from_secs(1));
    assert!(operation.contains("Slow"), "{operation}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the handler was cancelled"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retry_waits_with_exponential_backoff_and_succeeds() -> TestResult {
    let bus = CommandBus::new();
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = calls.clone();
    bus.register_fn(move |c: Double, _: CommandContext| {
        let n = {
            let mut log = log.lock();
            log.push(Instant::now());
            log.len()
        };
        async move { if n < 3 { Err(Transient) } else { Ok(c.0 * 2) } }
    })?;
    bus.cloneable::<Double>();
    bus.add_middleware(RetryMiddleware::new(3, Duration::from_millis(100)).jitter(0.0));
    assert_eq!(bus.dispatch(Double(21)).await?, 42);
    let calls = calls.lock();
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_max_retries_with_the_last_error() -> TestResult {
    let bus = CommandBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.register_fn(move |_: Double, _: CommandContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<u64, _>(Transient) }
    })?;
    bus.cloneable::<Double>();
    bus.add_middleware(
        RetryMiddleware::new(2, Duration::from_millis(50))
            .multiplier(3.0)
            .jitter(0.0),
    );
    let start = Instant::now();
    let result = bus.dispatch(Double(1)).await;
    assert!(
        matches!(result, Err(Error::CommandExecution { .. })),
        "{result:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(50 + 150));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retry_does_not_rerun_a_message_that_is_not_cloneable() -> TestResult {
    let bus = CommandBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.register_fn(move |_: Slow, _: CommandContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(Transient) }
    })?;
    bus.add_middleware(RetryMiddleware::new(3, Duration::from_millis(100)));
    assert!(bus.dispatch(Slow).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn validation_rejects_invalid_messages_before_the_handler() -> TestResult {
    let bus = CommandBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.register_fn(move |_: Register, _: CommandContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Transient>(()) }
    })?;
    let trace = Trace::default();
    let log = trace.clone();
    bus.register_fn(move |c: Double, _: CommandContext| {
        log.lock().push("double".to_owned());
        async move { Ok::<_, Transient>(c.0) }
    })?;
    bus.add_middleware(ValidationMiddleware::new().validate::<Register>());

    let result = bus
        .dispatch(Register {
            email: "nope".into(),
        })
        .await;
    let Err(Error::Validation { problems, kind, .. }) = result else {
        return Err(format!("expected Validation, got {result:?}").into());
    };
    assert_eq!(kind, "command");
    assert_eq!(problems, ["email `nope` has no @"]);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    bus.dispatch(Register {
        email: "a@b.c".into(),
    })
    .await?;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(bus.dispatch(Double(3)).await?, 3, "types not named pass");
    Ok(())
}

#[tokio::test]
async fn correlation_middleware_takes_the_id_from_outside_for_new_conversations_only() -> TestResult
{
    let bus = QueryBus::new();
    bus.register_fn(|_: WhoAmI, ctx: QueryContext| async move {
        Ok::<_, Transient>(ctx.metadata().clone())
    })?;
    let incoming = CorrelationId::new();
    bus.add_middleware(CorrelationMiddleware::new().with_source(move || Some(incoming)));
    let meta = bus.execute(WhoAmI).await?;
    assert_eq!(meta.correlation_id(), incoming);

    // A message that already has a cause keeps its conversation.
    let parent = MessageMetadata::new();
    let child = MessageMetadata::caused_by(&parent);
    let meta = bus.execute_with(WhoAmI, child.clone()).await?;
    assert_eq!(meta.correlation_id(), parent.correlation_id());
    Ok(())
}

#[tokio::test]
async fn the_same_middleware_serves_the_query_bus_and_tracing_passes_results_through() -> TestResult
{
    let bus = QueryBus::new();
    bus.register_fn(|_: WhoAmI, ctx: QueryContext| async move {
        Ok::<_, Transient>(ctx.metadata().clone())
    })?;
    let trace = Trace::default();
    bus.add_middleware(TracingMiddleware::new());
    bus.add_middleware(Recorder {
        name: "Q",
        trace: trace.clone(),
    });
    let kinds: Arc<Mutex<Vec<MessageKind>>> = Arc::default();
    let sink = kinds.clone();
    bus.add_middleware(TimingMiddleware::new(move |t| sink.lock().push(t.kind)));
    let meta = MessageMetadata::new();
    assert_eq!(bus.execute_with(WhoAmI, meta.clone()).await?, meta);
    assert_eq!(*trace.lock(), ["Q before", "Q after"]);
    assert_eq!(*kinds.lock(), [MessageKind::Query]);
    Ok(())
}
