//! Procedural macros for [lexigram](https://docs.rs/lexigram).
//!
//! Do not depend on this crate directly: `lexigram` re-exports every macro at a pinned version,
//! and the generated code only reaches into `::lexigram::__private` and lexigram's public API.
//!
//! Each entry point is one line that routes to a plain function over
//! `proc_macro2::TokenStream` (unit-testable). Set `LEXIGRAM_MACROS_DEBUG=1` to print every
//! expansion to stderr while compiling.

mod aggregate;
mod attr;
mod event;
mod handler;
mod inject;
mod message;
#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;

/// Implements `lexigram::Event` and registers the type with lexigram's schema registry.
///
/// `#[event(name = "bank.AccountOpened", version = 1, kind = integration)]`; `name` defaults to
/// the type's name, `version` to 1, `kind` to `domain`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand("derive(Event)", event::derive(input.into()))
}

/// Implements `lexigram::Command`: `#[command(output = T)]` (default `()`).
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    expand(
        "derive(Command)",
        message::derive(message::Kind::Command, input.into()),
    )
}

/// Implements `lexigram::Query`: `#[query(output = T)]` (required).
#[proc_macro_derive(Query, attributes(query))]
pub fn derive_query(input: TokenStream) -> TokenStream {
    expand(
        "derive(Query)",
        message::derive(message::Kind::Query, input.into()),
    )
}

/// On an `impl` block of an aggregate's state: implements `lexigram::Aggregate` and one
/// `lexigram::Apply<E>` per `#[apply]` method, and registers the aggregate.
///
/// `#[aggregate(name = "Account", snapshot_version = 1)]`; each `#[apply]` method has the
/// shape `fn name(&mut self, event: &E)`; `#[apply(check = method)]` names a
/// `fn method(&self, event: &E) -> Result<(), String>` that rejects events breaking an
/// invariant.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("aggregate", aggregate::expand(args.into(), item.into()))
}

/// Implements `lexigram::module::FromContainer` for a struct: each field (`Dep<T>`,
/// `Repository<A>`, a bus handle) is resolved from the container. `#[handlers(inject)]` builds
/// its `self` this way.
#[proc_macro_derive(FromContainer)]
pub fn derive_from_container(input: TokenStream) -> TokenStream {
    expand("derive(FromContainer)", inject::derive(input.into()))
}

/// Registers an `async fn` as the handler of the command type of its first parameter.
///
/// Parameters after the command are supplied by the app: `Dep<T>`, `Repository<A>`, the
/// buses, `MessageMetadata`, `CommandContext`. The function stays as written.
/// `#[command_handler(name = "...")]` overrides the handler's name (its path by default).
#[proc_macro_attribute]
pub fn command_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(
        "command_handler",
        handler::expand(handler::Kind::Command, args.into(), item.into()),
    )
}

/// Registers an `async fn` as the handler of the query type of its first parameter.
///
/// `#[query_handler(cache_ttl = "30s", cache_size = 1000)]` caches results per query value
/// (the query must be `Hash + Eq + Clone`, its output `Clone`); `cache = true` caches with
/// the defaults (5 minutes, 1000 entries).
#[proc_macro_attribute]
pub fn query_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(
        "query_handler",
        handler::expand(handler::Kind::Query, args.into(), item.into()),
    )
}

/// Subscribes an `async fn` to the event type of its first parameter (`E` or `&E`).
///
/// `#[event_handler(priority = 10, name = "audit")]`: higher priorities run first.
#[proc_macro_attribute]
pub fn event_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(
        "event_handler",
        handler::expand(handler::Kind::Event, args.into(), item.into()),
    )
}

/// Declares a durable, at-least-once reaction to the event type of the first parameter
/// (`E` or `&E`): the events module runs it as a checkpointed subscription of the stored log,
/// from the app's start to its shutdown, shared with the other processes of the deployment.
///
/// `#[reaction(name = "bank.welcome-mail", partitions = 4, batch_size = 100, version = 1,
/// start = "now")]`: `name` (required) keys the checkpoints; functions with the same name form
/// one reaction (one subscription reading all their event types). Parameters after the event
/// are supplied like a handler's (`Dep<T>`, the buses, `MessageMetadata`, `ReactionContext`).
/// Unset settings come from `[reactions.subscriptions."<name>"]` or the defaults.
#[proc_macro_attribute]
pub fn reaction(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(
        "reaction",
        handler::expand(handler::Kind::Reaction, args.into(), item.into()),
    )
}

/// On an `impl` block: its methods marked `#[command_handler]`, `#[query_handler]`,
/// `#[event_handler]` or `#[reaction]` become handlers called on the instance the app provides (`Dep<Self>`:
/// register it with `.provide(..)`), or, with `#[handlers(inject)]`, on an instance built
/// from its injected fields (`#[derive(FromContainer)]`).
#[proc_macro_attribute]
pub fn handlers(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("handlers", handler::expand_impl(args.into(), item.into()))
}

/// Marks an apply method inside an `#[aggregate]` impl block. Alone, it is an error.
#[proc_macro_attribute]
pub fn apply(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item: proc_macro2::TokenStream = item.into();
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        "`#[apply]` only works on methods of an `impl` block marked `#[aggregate]`; add `#[aggregate]` to the enclosing `impl`",
    )
    .to_compile_error();
    quote::quote!(#error #item).into()
}

fn expand(name: &str, tokens: proc_macro2::TokenStream) -> TokenStream {
    if std::env::var_os("LEXIGRAM_MACROS_DEBUG").is_some() {
        eprintln!("lexigram-macros: #[{name}] expands to:\n{tokens}\n");
    }
    tokens.into()
}
