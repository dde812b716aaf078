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
