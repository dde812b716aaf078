//! Behaviour of the command bus: registration, dispatch, errors, metadata inheritance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use lexigram::command::{CommandBus, CommandContext, CommandHandler};
use lexigram::message::MessageMetadata;
use lexigram::query::{QueryBus, QueryContext};
use lexigram::{Command, Error, Query};
use parking_lot::Mutex;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone)]
struct Deposit {
    amount: u64,
}
impl Command for Deposit {
    type Output = u64;
}

#[derive(Debug)]
struct Withdraw;
impl Command for Withdraw {
    type Output = ();
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: {0}")]
struct Insufficient(u64);

/// A handler type with state, implemented with `async fn`.
struct DepositHandler {
    balance: Mutex<u64>,
}

impl CommandHandler<Deposit> for DepositHandler {
    type Error = Insufficient;

    async fn handle(&self, cmd: Deposit, _ctx: CommandContext) -> Result<u64, Insufficient> {
        let mut balance = self.balance.lock();
        *balance += cmd.amount;
        Ok(*balance)
    }
}

#[tokio::test]
async fn a_handler_type_handles_its_command_and_returns_the_output() -> TestResult {
    let bus = CommandBus::new();
    bus.register(DepositHandler {
        balance: Mutex::new(10),
    })?;
    assert_eq!(bus.dispatch(Deposit { amount: 5 }).await?, 15);
    assert_eq!(bus.dispatch(Deposit { amount: 1 }).await?, 16);
    assert!(bus.has_handler::<Deposit>());
    assert!(!bus.has_handler::<Withdraw>());
    assert_eq!(
        bus.handler_name::<Deposit>().as_deref(),
        Some(std::any::type_name::<DepositHandler>())
    );
    Ok(())
}

#[tokio::test]
async fn a_second_handler_is_a_duplicate_naming_the_first_and_where_it_was_registered() -> TestResult
{
    let bus = CommandBus::new();
    bus.register_fn(
        |c: Deposit, _: CommandContext| async move { Ok::<_, Insufficient>(c.amount) },
    )?;
    let second = bus.register(DepositHandler {
        balance: Mutex::new(0),
    });
    let Err(Error::DuplicateHandler {
        kind,
        message_type,
        existing,
    }) = second
    else {
        return Err(format!("expected DuplicateHandler, got {second:?}").into());
    };
    assert_eq!(kind, "command");
    assert_eq!(message_type, std::any::type_name::<Deposit>());
    assert!(existing.contains("tests/bus_command.rs:"), "{existing}");
    // The first handler is still the one called.
    assert_eq!(bus.dispatch(Deposit { amount: 7 }).await?, 7);
    Ok(())
}

#[tokio::test]
async fn replace_swaps_the_handler_explicitly_and_unregister_removes_it() -> TestResult {
    let bus = CommandBus::new();
    assert!(
        !bus.replace(
            |c: Deposit, _: CommandContext| async move { Ok::<_, Insufficient>(c.amount) }
        )
    );
    assert!(bus.replace(|c: Deposit, _: CommandContext| async move {
        Ok::<_, Insufficient>(c.amount * 100)
    }));
    assert_eq!(bus.dispatch(Deposit { amount: 2 }).await?, 200);
    assert!(bus.unregister::<Deposit>());
    assert!(!bus.unregister::<Deposit>());
    assert_eq!(bus.handler_count(), 0);
    Ok(())
}

#[tokio::test]
async fn an_unknown_command_is_handler_not_found() -> TestResult {
    let bus = CommandBus::new();
    let result = bus.dispatch(Withdraw).await;
    let Err(Error::HandlerNotFound { kind, message_type }) = result else {
        return Err(format!("expected HandlerNotFound, got {result:?}").into());
    };
    assert_eq!(
        (kind, message_type),
        ("command", std::any::type_name::<Withdraw>())
    );
    Ok(())
}

#[tokio::test]
async fn a_handler_error_is_wrapped_naming_command_and_handler_with_the_source_downcastable()
-> TestResult {
    let bus = CommandBus::new();
    bus.register_fn(|c: Deposit, _: CommandContext| async move {
        Err::<u64, _>(Insufficient(c.amount))
    })?;
    let result = bus.dispatch(Deposit { amount: 9 }).await;
    let Err(err @ Error::CommandExecution { .. }) = result else {
        return Err(format!("expected CommandExecution, got {result:?}").into());
    };
    let Error::CommandExecution {
        command_type,
        handler,
        source,
    } = &err
    else {
        return Err("unreachable".into());
    };
    assert_eq!(*command_type, std::any::type_name::<Deposit>());
    assert!(handler.contains("bus_command"), "{handler}");
    let insufficient = source.downcast_ref::<Insufficient>();
    assert_eq!(insufficient.map(|e| e.0), Some(9));
    assert!(
        !err.to_string().contains("insufficient funds"),
        "the message does not repeat its source: {err}"
    );
    assert!(
        format!("{err:?}").ends_with("Caused by:\n    insufficient funds: 9"),
        "{err:?}"
    );
    // The standard error chain reaches it too.
    let chained = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(chained.as_deref(), Some("insufficient funds: 9"));
    Ok(())
}

#[derive(Debug)]
struct Outer;
impl Command for Outer {
    type Output = (MessageMetadata, MessageMetadata, MessageMetadata);
}

#[derive(Debug)]
struct Inner;
impl Command for Inner {
    type Output = MessageMetadata;
}

#[derive(Debug)]
struct Lookup;
impl Query for Lookup {
    type Output = MessageMetadata;
}

#[tokio::test]
async fn a_command_sent_from_a_handler_inherits_correlation_and_gets_the_parent_as_causation()
-> TestResult {
    let bus = CommandBus::new();
    let queries = QueryBus::new();
    bus.register_fn(|_: Inner, ctx: CommandContext| async move {
        Ok::<_, Insufficient>(ctx.metadata().clone())
    })?;
    queries.register_fn(|_: Lookup, ctx: QueryContext| async move {
        Ok::<_, Insufficient>(ctx.metadata().clone())
    })?;
    let inner_bus = bus.clone();
    bus.register_fn(move |_: Outer, ctx: CommandContext| {
        let bus = inner_bus.clone();
        let queries = queries.clone();
        async move {
            let child = bus.dispatch(Inner).await.map_err(|e| e.to_string())?;
            let looked_up = queries.execute(Lookup).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((ctx.metadata().clone(), child, looked_up))
        }
    })?;

    let root = MessageMetadata::new()
        .with_user_id("ada")
        .with_tenant_id("acme");
    let (outer, child, looked_up) = bus.dispatch_with(Outer, root.clone()).await?;
    assert_eq!(outer, root);
    for nested in [&child, &looked_up] {
        assert_eq!(nested.correlation_id(), root.correlation_id());
        assert_eq!(nested.causation_id(), Some(root.message_id()));
        assert_eq!(nested.user_id(), Some("ada"));
        assert_eq!(nested.tenant_id(), Some("acme"));
        assert_ne!(nested.message_id(), root.message_id());
    }
    assert_ne!(child.message_id(), looked_up.message_id());

    // Outside any handler, a dispatch starts a new conversation.
    let (first, ..) = bus.dispatch(Outer).await?;
    let (second, ..) = bus.dispatch(Outer).await?;
    assert_eq!(first.causation_id(), None);
    assert_ne!(first.correlation_id(), second.correlation_id());
    Ok(())
}

#[tokio::test]
async fn the_context_metadata_is_stable_within_one_dispatch() -> TestResult {
    let bus = CommandBus::new();
    bus.register_fn(|_: Inner, ctx: CommandContext| async move {
        let first = ctx.metadata().message_id();
        let copy = ctx.clone();
        assert_eq!(copy.message_id(), first);
        Ok::<_, Insufficient>(ctx.metadata().clone())
    })?;
    let meta = bus.dispatch(Inner).await?;
    assert_eq!(meta.causation_id(), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_serves_many_tasks_at_once_and_registration_does_not_disturb_dispatch() -> TestResult
{
    let bus = CommandBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    bus.register_fn(move |c: Deposit, _: CommandContext| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Insufficient>(c.amount) }
    })?;
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let mut sum = 0;
            for j in 0..250u64 {
                sum += bus
                    .dispatch(Deposit {
                        amount: i * 1000 + j,
                    })
                    .await?;
            }
            Ok::<u64, Error>(sum)
        }));
    }
    // Registering other types while dispatching is safe.
    bus.register_fn(|_: Withdraw, _: CommandContext| async { Ok::<_, Insufficient>(()) })?;
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let expected: u64 = (0..8u64)
        .map(|i| (0..250u64).map(|j| i * 1000 + j).sum::<u64>())
        .sum();
    assert_eq!(total, expected);
    assert_eq!(calls.load(Ordering::Relaxed), 2000);
    bus.dispatch(Withdraw).await?;
    Ok(())
}
