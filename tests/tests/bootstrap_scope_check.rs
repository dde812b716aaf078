//! The "command without handler" check runs after every module wired, so a handler that a
//! scope module wires counts. (Its own binary: it owns the inventory.)

use lexigram::prelude::*;
use lexigram::{App, EventsModule};

#[derive(Debug, Command)]
struct Pack;

mod packing {
    #[lexigram::command_handler]
    async fn pack(_cmd: super::Pack) -> lexigram::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_scope_module_handles_what_the_events_module_excludes() -> Result<(), lexigram::Error> {
    let app = App::builder()
        .module(EventsModule::stub().handler_modules(["bootstrap_scope_check::elsewhere"]))
        .module(EventsModule::scope(
            "packing",
            ["bootstrap_scope_check::packing"],
        ))
        .build()
        .await?;
    app.commands().dispatch(Pack).await?;
    app.shutdown().await
}

#[tokio::test]
async fn without_the_scope_the_command_has_no_handler() {
    let err = lexigram_tests::build_error(
        App::builder()
            .module(EventsModule::stub().handler_modules(["bootstrap_scope_check::elsewhere"])),
    )
    .await;
    assert!(
        err.contains("command `bootstrap_scope_check::Pack` has no handler"),
        "{err}"
    );
    assert!(err.contains("`handler_modules` excludes it"), "{err}");
}
