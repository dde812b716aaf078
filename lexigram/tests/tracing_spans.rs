//! One request is one trace: a command's span contains what its handler does, and the span
//! in which the event bus handles the events it saved follows from it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::sync::Arc;

use common::{Account, Deposited, Opened};
use lexigram::command::{CommandBus, CommandContext};
use lexigram::event::{EventBus, EventContext};
use lexigram::{Command, InMemoryEventStore, Repository};
use support::spans::TraceRecorder;

#[derive(Debug)]
struct Open;
impl Command for Open {
    type Output = ();
}

#[test]
fn an_event_handlers_span_follows_from_the_command_that_saved_the_event() {
    if !support::alone("an_event_handlers_span_follows_from_the_command_that_saved_the_event") {
        return;
    }
    let recorder = TraceRecorder::default();
    let (spans, follows) = (Arc::clone(&recorder.spans), Arc::clone(&recorder.follows));
    let _default = tracing::subscriber::set_default(recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events = EventBus::new();
        events.subscribe(|_: Deposited, _: EventContext| async {
            tracing::info!("audited");
            Ok::<_, std::convert::Infallible>(())
        });
        let accounts = Repository::<Account>::new(InMemoryEventStore::new())
            .with_publisher(Arc::new(events.clone()));
        let commands = CommandBus::new();
        commands
            .register_fn(move |_: Open, _: CommandContext| {
                let accounts = accounts.clone();
                async move {
                    let mut account = accounts.load("acc-1").await?;
                    account.record(Opened {
                        owner: "ada".into(),
                    })?;
                    account.record(Deposited { amount: 5 })?;
                    accounts.save(&mut account).await?;
                    Ok::<_, lexigram::Error>(())
                }
            })
            .unwrap();
        commands.dispatch(Open).await.unwrap();
        events.drain().await;
        events
            .shutdown(std::time::Duration::from_secs(5))
            .await
            .unwrap();
    });

    let spans = spans.lock();
    let follows = follows.lock();
    let command = TraceRecorder::named(&spans, "lexigram.command");
    assert_eq!(
        command.len(),
        1,
        "the dispatch is traced by default: {spans:?}"
    );
    let handled = TraceRecorder::named(&spans, "lexigram.event");
    assert!(!handled.is_empty(), "the bus traces each event it handles");
    for event_span in &handled {
        let cause = follows
            .iter()
            .find(|(span, _)| span == event_span)
            .map(|(_, cause)| *cause)
            .expect("the handling span follows from the span that published it");
        assert!(
            TraceRecorder::within(&spans, cause, command[0]),
            "it follows from the command's span (or a span inside it): {:?}",
            spans.get(&cause)
        );
    }
}

#[tokio::test]
async fn the_w3c_trace_context_of_a_command_is_stored_with_its_events_and_reaches_their_handlers() {
    use lexigram::message::{MessageMetadata, TraceContext};
    use lexigram::store::{EventStore, VersionRange};

    let context =
        TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let events = EventBus::new();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    events.subscribe(move |_: Deposited, ctx: EventContext| {
        log.lock()
            .push(ctx.envelope().metadata.trace_context().cloned());
        async { Ok::<_, std::convert::Infallible>(()) }
    });
    let store = InMemoryEventStore::new();
    let accounts =
        Repository::<Account>::new(store.clone()).with_publisher(Arc::new(events.clone()));
    let commands = CommandBus::new();
    commands
        .register_fn(move |_: Open, _: CommandContext| {
            let accounts = accounts.clone();
            async move {
                let mut account = accounts.load("acc-1").await?;
                account.record(Deposited { amount: 5 })?;
                accounts.save(&mut account).await?;
                Ok::<_, lexigram::Error>(())
            }
        })
        .unwrap();
    commands
        .dispatch_with(
            Open,
            MessageMetadata::new().with_trace_context(context.clone()),
        )
        .await
        .unwrap();
    events.drain().await;
    let stored = store.read("acc-1", VersionRange::all()).await.unwrap();
    assert_eq!(
        stored[0].metadata.trace_context(),
        Some(&context),
        "stored with the event"
    );
    assert_eq!(*seen.lock(), [Some(context)], "the event handler sees it");
}

/// What was logged (the message) and in which span (the one entered at the time).
type Logged = Vec<(String, Option<u64>)>;

/// Records the `traceparent` of every `lexigram.reaction` span, and the span each event was
/// logged in.
#[derive(Default, Clone)]
struct ReactionSpans {
    next: Arc<std::sync::atomic::AtomicU64>,
    /// span id -> traceparent, for the reaction spans.
    traceparents: Arc<parking_lot::Mutex<std::collections::HashMap<u64, String>>>,
    /// (event message, the span entered when it was logged).
    logged_in: Arc<parking_lot::Mutex<Logged>>,
}

thread_local! {
    static ENTERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        ));
    }
}

impl tracing::Subscriber for ReactionSpans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if span.metadata().name() == "lexigram.reaction" {
            let mut fields = Vec::new();
            span.record(&mut Fields(&mut fields));
            let traceparent = fields
                .into_iter()
                .find(|(name, _)| name == "traceparent")
                .map(|(_, value)| value)
                .unwrap_or_default();
            self.traceparents.lock().insert(id, traceparent);
        }
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let message = fields
            .into_iter()
            .find(|(name, _)| name == "message")
            .map(|(_, value)| value)
            .unwrap_or_default();
        let current = ENTERED.with(|stack| stack.borrow().last().copied());
        self.logged_in.lock().push((message, current));
    }
    fn enter(&self, span: &tracing::span::Id) {
        ENTERED.with(|stack| stack.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, span: &tracing::span::Id) {
        ENTERED.with(|stack| {
            let mut stack = stack.borrow_mut();
            if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
                stack.remove(at);
            }
        });
    }
}

#[test]
fn a_durable_reaction_runs_in_a_span_that_carries_the_trace_context_stored_with_its_event() {
    use lexigram::message::{MessageMetadata, NewEvent, Payload, TraceContext};
    use lexigram::store::{EventStore, ExpectedVersion};
    use lexigram::subscription::{InMemoryCheckpointStore, Reactions, Subscription, reactor_fn};

    if !support::alone(
        "a_durable_reaction_runs_in_a_span_that_carries_the_trace_context_stored_with_its_event",
    ) {
        return;
    }
    let recorder = ReactionSpans::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(InMemoryEventStore::new());
        let reactions = Reactions::new(store.clone(), Arc::new(InMemoryCheckpointStore::new()));
        let subscription = Subscription::builder("traced")
            .reactor(reactor_fn(|_, _| async {
                tracing::info!("reacted");
                Ok(())
            }))
            .build()
            .unwrap();
        reactions.start(subscription).await.unwrap();
        let metadata =
            MessageMetadata::new().with_trace_context(TraceContext::parse(traceparent).unwrap());
        let event = NewEvent::new("bank.Deposited", 1, Payload::from_json_text("{}"), metadata);
        let done = store
            .append("acc-1", vec![event], ExpectedVersion::Any)
            .await
            .unwrap();
        reactions
            .wait_for(
                "traced",
                done.last_position().unwrap(),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap();
        reactions.shutdown().await.unwrap();
    });
    let traceparents = recorder.traceparents.lock();
    assert_eq!(traceparents.len(), 1, "one reaction span: {traceparents:?}");
    let (span, recorded) = traceparents.iter().next().unwrap();
    assert_eq!(recorded, traceparent, "the span carries the stored context");
    let logged = recorder.logged_in.lock();
    assert!(
        logged
            .iter()
            .any(|(message, within)| message == "reacted" && *within == Some(*span)),
        "what the reaction logs is inside its span: {logged:?}"
    );
}
