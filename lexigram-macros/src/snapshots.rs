//! Expansion snapshots: each macro's output, formatted, compared with `tests/expand/*.rs`.
//! Set `LEXIGRAM_BLESS=1` to rewrite the snapshots after an intended change.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::quote;

fn check(name: &str, tokens: TokenStream) {
    let shown = tokens.to_string();
    let file = syn::parse2::<syn::File>(tokens);
    assert!(
        file.is_ok(),
        "{name}: the expansion is not valid Rust:\n{shown}"
    );
    let pretty = file.map(|f| prettyplease::unparse(&f)).unwrap_or_default();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expand")
        .join(format!("{name}.rs"));
    if std::env::var_os("LEXIGRAM_BLESS").is_some() {
        assert!(
            std::fs::write(&path, &pretty).is_ok(),
            "cannot write {}",
            path.display()
        );
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        pretty, expected,
        "{name}: expansion changed; rerun with LEXIGRAM_BLESS=1 if intended"
    );
    check_docs(name, &pretty);
}

/// `docs/macros.md` shows each expansion after a `<!-- expansion: NAME -->` marker, in a
/// ```` ```rust ```` block (any attributes after `rust`, such as `,standalone_crate`); it must be
/// the real one. The block is a doctest: the lines rustdoc hides (`# ..`), which define the
/// input's types, are not part of the listing.
fn check_docs(name: &str, pretty: &str) {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/macros.md");
    let text = std::fs::read_to_string(&docs).unwrap_or_default();
    let marker = format!("<!-- expansion: {name} -->\n```rust");
    let shown = text
        .split_once(&marker)
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest.split_once("```\n").map_or(rest, |(code, _)| code))
        .map(|code| {
            code.lines()
                .filter(|line| !(line.starts_with("# ") || *line == "#"))
                .map(|line| format!("{line}\n"))
                .collect::<String>()
        });
    assert_eq!(
        shown.as_deref(),
        Some(pretty),
        "docs/macros.md does not show the current `{name}` expansion; paste it after its marker"
    );
}

#[test]
fn derive_event() {
    check(
        "derive_event",
        crate::event::derive(quote! {
            #[event(name = "bank.AccountOpened", version = 2)]
            pub struct AccountOpened { pub owner: String }
        }),
    );
}

#[test]
fn derive_command_and_query() {
    let mut out = crate::message::derive(
        crate::message::Kind::Command,
        quote! {
            #[command(output = AccountId)]
            pub struct OpenAccount { pub owner: String }
        },
    );
    out.extend(crate::message::derive(
        crate::message::Kind::Query,
        quote! {
            #[query(output = Option<u64>)]
            pub struct GetBalance { pub account: AccountId }
        },
    ));
    check("derive_command_and_query", out);
}

#[test]
fn aggregate() {
    check(
        "aggregate",
        crate::aggregate::expand(
            quote!(name = "Account"),
            quote! {
                impl Account {
                    #[apply]
                    fn opened(&mut self, e: &AccountOpened) { self.owner = e.owner.clone(); }
                    #[apply(check = can_withdraw)]
                    fn withdrawn(&mut self, e: &MoneyWithdrawn) { self.balance -= e.amount; }
                    fn can_withdraw(&self, e: &MoneyWithdrawn) -> Result<(), String> {
                        if e.amount > self.balance { Err("insufficient funds".into()) } else { Ok(()) }
                    }
                }
            },
        ),
    );
}

#[test]
fn command_handler() {
    check(
        "command_handler",
        crate::handler::expand(
            crate::handler::Kind::Command,
            TokenStream::new(),
            quote! {
                async fn deposit(cmd: Deposit, accounts: Repository<Account>, log: &Dep<AuditLog>) -> Result<(), BankError> {
                    Ok(())
                }
            },
        ),
    );
}

#[test]
fn query_handler_with_cache() {
    check(
        "query_handler",
        crate::handler::expand(
            crate::handler::Kind::Query,
            quote!(cache_ttl = "30s", cache_size = 500),
            quote! {
                async fn balance(q: GetBalance, view: Dep<BalanceView>) -> Result<u64, BankError> {
                    view.get(q.account).await
                }
            },
        ),
    );
}

#[test]
fn event_handler() {
    check(
        "event_handler",
        crate::handler::expand(
            crate::handler::Kind::Event,
            quote!(priority = 10),
            quote! {
                async fn audit(event: &MoneyDeposited, ctx: EventContext, log: Dep<AuditLog>) -> Result<(), AuditError> {
                    log.write(ctx.stream_id(), event.amount).await
                }
            },
        ),
    );
}

#[test]
fn reaction() {
    check(
        "reaction",
        crate::handler::expand(
            crate::handler::Kind::Reaction,
            quote!(name = "bank.welcome-mail", partitions = 4, start = "now"),
            quote! {
                async fn welcome(event: AccountOpened, ctx: ReactionContext, mailer: Dep<Mailer>) -> Result<(), MailError> {
                    mailer.send(&event.owner, ctx.event_id()).await
                }
            },
        ),
    );
}

#[test]
fn handlers_on_methods() {
    check(
        "handlers",
        crate::handler::expand_impl(
            TokenStream::new(),
            quote! {
                impl Notifier {
                    #[event_handler]
                    async fn opened(&self, event: &AccountOpened) -> Result<(), MailError> {
                        self.mailer.send(&event.owner).await
                    }
                }
            },
        ),
    );
}

#[test]
fn derive_from_container() {
    check(
        "derive_from_container",
        crate::inject::derive(quote! {
            struct Auditor { journal: Dep<Journal>, accounts: Repository<Account> }
        }),
    );
}
