//! `build()` reports every wiring problem at once, sorted, each with `file:line`.
//! (Its own test binary: the duplicate handlers here would clash with any other test's.)

use lexigram::prelude::*;
use lexigram::{App, CommandContext, Dep, EventsConfig, EventsModule};

#[derive(Debug, Command)]
struct Transfer {
    amount: u64,
}

#[derive(Debug, Command)]
struct Close;

#[derive(Debug)]
struct Mailer;

#[command_handler]
async fn transfer(cmd: Transfer) -> lexigram::Result<()> {
    let _ = cmd.amount;
    Ok(())
}

mod legacy {
    use super::*;

    #[command_handler]
    async fn transfer_v1(_cmd: Transfer, _mailer: Dep<Mailer>) -> lexigram::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_problem_is_reported_together_with_locations() {
    let err = lexigram_tests::build_error(App::builder().module(EventsModule::stub())).await;
    let this_file = file!();

    assert!(
        err.starts_with("lexigram bootstrap failed with 3 problems"),
        "{err}"
    );
    // Duplicate handlers: both, with file:line and path.
    assert!(
        err.contains(
            "command `bootstrap_report::Transfer` has 2 handlers (a command must have exactly one)"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> {this_file}:19")) && err.contains("bootstrap_report::transfer"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> {this_file}:28"))
            && err.contains("bootstrap_report::legacy::transfer_v1"),
        "{err}"
    );
    // A command declared with the derive but handled nowhere, with the usual cause.
    assert!(
        err.contains("command `bootstrap_report::Close` has no handler"),
        "{err}"
    );
    assert!(err.contains(&format!("--> {this_file}:13")), "{err}");
    assert!(err.contains("its crate may not be linked"), "{err}");
    // A missing provider.
    assert!(err.contains("handler `bootstrap_report::legacy::transfer_v1` needs `Dep<bootstrap_report::Mailer>`, but no module provides it"), "{err}");
    assert!(
        err.contains("help: provide it with `App::builder().provide(..)`"),
        "{err}"
    );
    // Sorted: the numbering follows the messages' order.
    let first = err.find("[1]").unwrap_or(usize::MAX);
    let second = err.find("[2]").unwrap_or(usize::MAX);
    assert!(first < second, "{err}");
}

#[tokio::test]
async fn providing_the_dependency_and_a_handler_leaves_only_the_duplicate() {
    let err = lexigram_tests::build_error(
        App::builder()
            .module(EventsModule::stub().handlers(|w| {
                w.command::<Close, _>(|_: Close, _: CommandContext| async {
                    Ok::<_, lexigram::Error>(())
                });
            }))
            .provide(Mailer),
    )
    .await;
    assert!(
        err.starts_with("lexigram bootstrap failed with 1 problem\n"),
        "{err}"
    );
    assert!(err.contains("has 2 handlers"), "{err}");
}

#[tokio::test]
async fn scoping_to_one_module_resolves_the_duplicate() -> Result<(), lexigram::Error> {
    let app = App::builder()
        .module(
            EventsModule::stub()
                .handler_modules(["bootstrap_report::legacy"])
                .handlers(|w| {
                    w.command::<Close, _>(|_: Close, _: CommandContext| async {
                        Ok::<_, lexigram::Error>(())
                    });
                }),
        )
        .provide(Mailer)
        .build()
        .await?;
    let name = app.commands().handler_name::<Transfer>();
    assert_eq!(
        name.as_deref(),
        Some("bootstrap_report::legacy::transfer_v1")
    );
    app.shutdown().await
}

#[tokio::test]
async fn an_invalid_config_is_reported_with_the_rest() {
    let mut config = EventsConfig::memory();
    config.snapshots.keep = 0;
    config.event_bus.queue_capacity = 0;
    let err =
        lexigram_tests::build_error(App::builder().module(EventsModule::configure(config))).await;
    assert!(
        err.contains("lexigram bootstrap failed with 5 problems"),
        "{err}"
    );
    assert!(
        err.contains("invalid events configuration: `snapshots.keep` is 0"),
        "{err}"
    );
    assert!(
        err.contains("invalid events configuration: event bus `queue_capacity` is 0"),
        "{err}"
    );
}

#[tokio::test]
async fn a_type_provided_twice_is_reported_with_both_places() {
    let err = lexigram_tests::build_error(
        App::builder()
            .module(EventsModule::stub())
            .provide(Mailer)
            .provide(Mailer),
    )
    .await;
    assert!(
        err.contains("`bootstrap_report::Mailer` is provided twice"),
        "{err}"
    );
    assert!(
        err.contains("first provided here") && err.contains("provided again here"),
        "{err}"
    );
}

#[tokio::test]
async fn providing_what_a_module_provides_is_a_conflict_unless_replaced()
-> Result<(), lexigram::Error> {
    let err = lexigram_tests::build_error(
        App::builder()
            .module(EventsModule::stub().handler_modules(["bootstrap_report::legacy"]))
            .provide(Mailer)
            .provide(EventsConfig::memory()),
    )
    .await;
    assert!(
        err.contains("`lexigram::config::events::EventsConfig` is provided twice"),
        "{err}"
    );
    Ok(())
}
