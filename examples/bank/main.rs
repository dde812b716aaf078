//! A small bank on lexigram: commands open and credit accounts, an event handler keeps a
//! balance view, a query reads it, two tellers racing on one account meet optimistic
//! concurrency, and a durable reaction sends each new customer one welcome mail, across a
//! restart of the app.
//!
//! Run: `cargo run --example bank`

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lexigram::Error;
use lexigram::message::EventId;
use lexigram::prelude::*;
use lexigram::subscription::{ReactionContext, Reactions};
use lexigram::{AggregateId, App, Dep, EventContext, EventsConfig, EventsModule, Repository};
use serde::{Deserialize, Serialize};

// ---- events ----

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bank.AccountOpened", version = 1)]
struct AccountOpened {
    owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bank.MoneyDeposited", version = 1)]
struct MoneyDeposited {
    amount: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bank.MoneyWithdrawn", version = 1)]
struct MoneyWithdrawn {
    amount: u64,
}

// ---- the aggregate ----

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: u64,
}

#[aggregate(name = "Account")]
impl Account {
    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
        self.owner.clone_from(&event.owner);
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
    }

    #[apply(check = can_withdraw)]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
    }

    fn can_withdraw(&self, event: &MoneyWithdrawn) -> Result<(), String> {
        if event.amount > self.balance {
            return Err(format!(
                "insufficient funds: balance {}, asked {}",
                self.balance, event.amount
            ));
        }
        Ok(())
    }
}

// ---- commands and queries ----

#[derive(Debug, Command)]
#[command(output = AggregateId)]
struct OpenAccount {
    owner: String,
}

#[derive(Debug, Command)]
struct Deposit {
    account: AggregateId,
    amount: u64,
}

#[derive(Debug, Command)]
struct Withdraw {
    account: AggregateId,
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Query)]
#[query(output = Option<u64>)]
struct GetBalance {
    account: AggregateId,
}

// ---- handlers ----

#[command_handler]
async fn open_account(
    cmd: OpenAccount,
    accounts: Repository<Account>,
) -> lexigram::Result<AggregateId> {
    let mut account = accounts.load(AggregateId::new()).await?;
    // Recorded inside a handler: the event's causation is this command, automatically.
    account.record(AccountOpened { owner: cmd.owner })?;
    accounts.save(&mut account).await?;
    Ok(account.id().clone())
}

#[command_handler]
async fn deposit(cmd: Deposit, accounts: Repository<Account>) -> lexigram::Result<()> {
    let mut account = accounts.load_or_error(&cmd.account).await?;
    account.record(MoneyDeposited { amount: cmd.amount })?;
    accounts.save(&mut account).await?;
    Ok(())
}

#[command_handler]
async fn withdraw(cmd: Withdraw, accounts: Repository<Account>) -> lexigram::Result<()> {
    let mut account = accounts.load_or_error(&cmd.account).await?;
    account.record(MoneyWithdrawn { amount: cmd.amount })?;
    accounts.save(&mut account).await?;
    Ok(())
}

/// The read model: balances by account, kept up to date by event handlers.
#[derive(Debug, Default)]
struct Balances(Mutex<HashMap<String, i64>>);

impl Balances {
    fn add(&self, account: &str, delta: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(account.to_owned()).or_default() += delta;
    }

    fn get(&self, account: &str) -> Option<u64> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(account).and_then(|b| u64::try_from(*b).ok())
    }
}

#[event_handler(priority = 10)]
async fn on_opened(
    _event: &AccountOpened,
    ctx: EventContext,
    view: Dep<Balances>,
) -> lexigram::Result<()> {
    view.add(ctx.stream_id().as_str(), 0);
    Ok(())
}

#[event_handler]
async fn on_deposited(
    event: &MoneyDeposited,
    ctx: EventContext,
    view: Dep<Balances>,
) -> lexigram::Result<()> {
    view.add(
        ctx.stream_id().as_str(),
        i64::try_from(event.amount).unwrap_or(i64::MAX),
    );
    println!(
        "  event: +{:<4} on {} (v{}, #{})",
        event.amount,
        ctx.stream_id(),
        ctx.stream_version(),
        ctx.global_position()
    );
    Ok(())
}

#[event_handler]
async fn on_withdrawn(
    event: &MoneyWithdrawn,
    ctx: EventContext,
    view: Dep<Balances>,
) -> lexigram::Result<()> {
    view.add(
        ctx.stream_id().as_str(),
        -i64::try_from(event.amount).unwrap_or(i64::MAX),
    );
    println!(
        "  event: -{:<4} on {} (v{}, #{})",
        event.amount,
        ctx.stream_id(),
        ctx.stream_version(),
        ctx.global_position()
    );
    Ok(())
}

/// The mail server of the example: mails by the event that caused them, so a mail delivered
/// again (a reaction is at-least-once) is sent only once.
#[derive(Debug, Default)]
struct Mailer {
    sent: Mutex<BTreeMap<EventId, String>>,
    /// How many times the reaction asked to send (a redelivery would count twice).
    deliveries: std::sync::atomic::AtomicUsize,
}

impl Mailer {
    fn send(&self, key: EventId, text: String) {
        self.deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.entry(key).or_insert(text);
    }

    fn deliveries(&self) -> usize {
        self.deliveries.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sent(&self) -> Vec<String> {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.values().cloned().collect()
    }
}

/// A durable reaction: its checkpoint lives in the SQLite file beside the events, so after a
/// restart it goes on from there and never mails a customer twice.
#[reaction(name = "bank.welcome-mail")]
async fn welcome_mail(
    event: AccountOpened,
    ctx: ReactionContext,
    mailer: Dep<Mailer>,
) -> lexigram::Result<()> {
    mailer.send(
        ctx.event_id(),
        format!("Welcome to the bank, {}!", event.owner),
    );
    Ok(())
}

/// Waits until the welcome mail reaction has handled everything up to the store's head (on
/// SQLite `last_position` is the exact head; on PostgreSQL wait for the position an append
/// returned, see docs/subscriptions.md).
async fn mails_sent(app: &App) -> Result<(), lexigram::Error> {
    let (Some(store), Some(reactions)) = (app.get::<dyn EventStore>(), app.get::<Reactions>())
    else {
        return Ok(());
    };
    let head = store.last_position().await?;
    reactions
        .wait_for("bank.welcome-mail", head, Duration::from_secs(10))
        .await
}

#[query_handler(cache_ttl = "1s")]
async fn balance(query: GetBalance, view: Dep<Balances>) -> lexigram::Result<Option<u64>> {
    Ok(view.get(query.account.as_str()))
}

#[tokio::main]
async fn main() -> Result<(), lexigram::Error> {
    // The embedded durable default: a SQLite file (fresh for each run of the example).
    let path = std::env::temp_dir().join("lexigram-bank-example.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("Events are stored in {}", path.display());
    let config = EventsConfig::sqlite(&path);
    let mailer = Arc::new(Mailer::default());
    let app = App::builder()
        .module(EventsModule::configure(config.clone()))
        .provide(Balances::default())
        .provide_arc(Arc::clone(&mailer))
        .build()
        .await?;

    println!("Opening accounts for Ada and Bob");
    let ada = app
        .commands()
        .dispatch(OpenAccount {
            owner: "Ada".into(),
        })
        .await?;
    let bob = app
        .commands()
        .dispatch(OpenAccount {
            owner: "Bob".into(),
        })
        .await?;

    println!("Crediting them");
    app.commands()
        .dispatch(Deposit {
            account: ada.clone(),
            amount: 100,
        })
        .await?;
    app.commands()
        .dispatch(Deposit {
            account: bob.clone(),
            amount: 20,
        })
        .await?;
    app.commands()
        .dispatch(Withdraw {
            account: ada.clone(),
            amount: 30,
        })
        .await?;
    app.events().drain().await;

    println!("Bob tries to withdraw 50");
    if let Err(err) = app
        .commands()
        .dispatch(Withdraw {
            account: bob.clone(),
            amount: 50,
        })
        .await
    {
        // The message names the command and handler; the handler's own error is its source.
        let reason = std::error::Error::source(&err).map_or_else(String::new, |e| format!(": {e}"));
        println!("  refused: {err}{reason}");
    }

    println!("Two tellers credit Ada at the same time");
    let accounts = app.repository::<Account>();
    if let Some(accounts) = accounts {
        let mut teller_1 = accounts.load(&ada).await?;
        let mut teller_2 = accounts.load(&ada).await?;
        teller_1.record(MoneyDeposited { amount: 10 })?;
        teller_2.record(MoneyDeposited { amount: 25 })?;
        accounts.save(&mut teller_1).await?;
        if let Err(Error::Concurrency(conflict)) = accounts.save(&mut teller_2).await {
            println!("  teller 2 lost the race: {conflict}");
            app.commands()
                .dispatch(Deposit {
                    account: ada.clone(),
                    amount: 25,
                })
                .await?;
            println!("  teller 2 sent the deposit again as a command");
        }
    }
    app.events().drain().await;

    let ada_balance = app
        .queries()
        .execute(GetBalance {
            account: ada.clone(),
        })
        .await?;
    let bob_balance = app
        .queries()
        .execute(GetBalance {
            account: bob.clone(),
        })
        .await?;
    println!("Balances (from the read model, through the query bus)");
    println!("  Ada: {}", ada_balance.unwrap_or_default());
    println!("  Bob: {}", bob_balance.unwrap_or_default());

    mails_sent(&app).await?;
    println!("Welcome mails sent: {:?}", mailer.sent());

    let health = app.health().await;
    println!("Health: {:?}", health.status);
    for component in &health.components {
        println!(
            "  {}: {:?}, {}",
            component.name, component.status, component.detail
        );
    }
    app.shutdown().await?;

    println!("Restarting the app on the same file; Carol opens an account");
    let again = App::builder()
        .module(EventsModule::configure(config))
        .provide(Balances::default())
        .provide_arc(Arc::clone(&mailer))
        .build()
        .await?;
    again
        .commands()
        .dispatch(OpenAccount {
            owner: "Carol".into(),
        })
        .await?;
    mails_sent(&again).await?;
    let mails = mailer.sent();
    println!(
        "Welcome mails sent: {mails:?}, from {} deliveries: the restarted reaction resumed from its checkpoint",
        mailer.deliveries()
    );
    again.shutdown().await?;
    if ada_balance != Some(105) || bob_balance != Some(20) {
        return Err(Error::Config {
            problems: vec!["the bank's books do not balance".into()],
        });
    }
    if mails.len() != 3 || mailer.deliveries() != 3 {
        return Err(Error::Config {
            problems: vec![format!(
                "expected 3 welcome mails from 3 deliveries, sent {} from {}",
                mails.len(),
                mailer.deliveries()
            )],
        });
    }
    Ok(())
}
