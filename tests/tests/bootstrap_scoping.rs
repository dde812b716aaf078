//! Discovery and `handler_modules` scoping (its own binary: it owns the inventory).

use lexigram::error::Error;
use lexigram::prelude::*;
use lexigram::{App, EventsConfig, EventsModule};

/// Commands without the derive, so an excluded handler leaves no "no handler" problem.
struct Bill;
impl Command for Bill {
    type Output = &'static str;
}

struct Ship;
impl Command for Ship {
    type Output = &'static str;
}

mod billing {
    // A module with nothing but one handler: discovered all the same.
    #[lexigram::command_handler]
    async fn bill(_cmd: super::Bill) -> lexigram::Result<&'static str> {
        Ok("billed")
    }
}

mod shipping {
    #[lexigram::command_handler]
    async fn ship(_cmd: super::Ship) -> lexigram::Result<&'static str> {
        Ok("shipped")
    }
}

#[tokio::test]
async fn a_handler_in_an_otherwise_empty_module_is_discovered() -> Result<(), Error> {
    let app = App::builder().module(EventsModule::stub()).build().await?;
    assert_eq!(app.commands().dispatch(Bill).await?, "billed");
    assert_eq!(app.commands().dispatch(Ship).await?, "shipped");
    assert_eq!(
        app.commands().handler_name::<Bill>().as_deref(),
        Some("bootstrap_scoping::billing::bill")
    );
    app.shutdown().await
}

#[tokio::test]
async fn handler_modules_excludes_the_rest() -> Result<(), Error> {
    let config = EventsConfig::memory().handler_modules(vec!["bootstrap_scoping::billing".into()]);
    let app = App::builder()
        .module(EventsModule::configure(config))
        .build()
        .await?;
    assert_eq!(app.commands().dispatch(Bill).await?, "billed");
    let excluded = app.commands().dispatch(Ship).await;
    assert!(
        matches!(
            excluded,
            Err(Error::HandlerNotFound {
                kind: "command",
                ..
            })
        ),
        "{excluded:?}"
    );
    app.shutdown().await
}

#[tokio::test]
async fn a_prefix_matches_whole_path_segments_only() -> Result<(), Error> {
    let config = EventsConfig::memory().handler_modules(vec!["bootstrap_scoping::bill".into()]);
    let app = App::builder()
        .module(EventsModule::configure(config))
        .build()
        .await?;
    assert!(
        !app.commands().has_handler::<Bill>(),
        "`bill` is not a prefix of `billing`"
    );
    app.shutdown().await
}

#[tokio::test]
async fn a_scope_module_adds_a_feature_area() -> Result<(), Error> {
    let app = App::builder()
        .module(EventsModule::stub().handler_modules(["bootstrap_scoping::billing"]))
        .module(EventsModule::scope(
            "shipping",
            ["bootstrap_scoping::shipping"],
        ))
        .build()
        .await?;
    assert_eq!(app.commands().dispatch(Bill).await?, "billed");
    assert_eq!(app.commands().dispatch(Ship).await?, "shipped");
    app.shutdown().await
}
