//! A small bank on lexigram: commands open and credit accounts, a durable projection keeps
//! the balances in the SQLite file beside the events (exactly once, across restarts), a query
//! reads them, two tellers racing on one account meet optimistic concurrency, in-process event
//! handlers print each movement, and a durable reaction sends each new customer one welcome
//! mail, across a restart of the app.
//!
//! The file stays between runs (`LEXIGRAM_BANK_DB` names it; delete it to start over): a
//! second run reports the accounts of the first, and mails nobody twice.
//!
//! Run: `cargo run --example bank`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lexigram::error::BoxError;
use lexigram::message::{EventEnvelope, EventId};
use lexigram::prelude::*;
use lexigram::store::SqliteEventStore;
use lexigram::subscription::{ReactionContext, Reactions, Subscription, TransactionalReactor};
use lexigram::{AggregateId, App, Dep, EventContext, EventsConfig, EventsModule, Repository};
use lexigram::{Error, async_trait};
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

/// The read model: balances by account in the events' SQLite file, written by a projection in
/// the transaction that commits its checkpoint, so each event counts exactly once, whatever
/// crashes or restarts.
struct BalancesProjection;

#[async_trait]
impl TransactionalReactor<sqlx::Sqlite> for BalancesProjection {
    async fn setup(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn react(
        &self,
        conn: &mut sqlx::SqliteConnection,
        event: &EventEnvelope,
        ctx: &ReactionContext,
    ) -> Result<(), BoxError> {
        let account = ctx.stream_id().as_str();
        let (sql, owner, delta) = match &*event.event_type {
            AccountOpened::NAME => {
                let opened: AccountOpened = event.decode()?;
                (
                    "INSERT INTO balances (account, owner, balance) VALUES (?1, ?2, 0)",
                    opened.owner,
                    0,
                )
            }
            MoneyDeposited::NAME => {
                let deposited: MoneyDeposited = event.decode()?;
                (
                    "UPDATE balances SET balance = balance + ?3 WHERE account = ?1",
                    String::new(),
                    i64::try_from(deposited.amount)?,
                )
            }
            MoneyWithdrawn::NAME => {
                let withdrawn: MoneyWithdrawn = event.decode()?;
                (
                    "UPDATE balances SET balance = balance - ?3 WHERE account = ?1",
                    String::new(),
                    i64::try_from(withdrawn.amount)?,
                )
            }
            _ => return Ok(()),
        };
        sqlx::query(sql)
            .bind(account)
            .bind(owner)
            .bind(delta)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), BoxError> {
        self.setup(&mut *conn).await?;
        sqlx::query("DELETE FROM balances")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The projection's subscription: the events it reads, two partitions.
fn balances() -> lexigram::subscription::SubscriptionBuilder {
    Subscription::builder("bank.balances")
        .event_type::<AccountOpened>()
        .event_type::<MoneyDeposited>()
        .event_type::<MoneyWithdrawn>()
        .partitions(2)
}

/// Waits until the projection and the welcome mails have handled every event stored so far
/// (on SQLite `last_position` is the exact head; on PostgreSQL wait for the position an append
/// returned, see docs/subscriptions.md).
async fn caught_up(app: &App) -> Result<(), lexigram::Error> {
    let (Some(store), Some(reactions)) = (app.get::<dyn EventStore>(), app.get::<Reactions>())
    else {
        return Ok(());
    };
    let head = store.last_position().await?;
    for name in ["bank.balances", "bank.welcome-mail"] {
        reactions
            .wait_for(name, head, Duration::from_secs(10))
            .await?;
    }
    Ok(())
}

/// Every account in the read model: (owner, balance).
async fn read_accounts(app: &App) -> Result<Vec<(String, i64)>, lexigram::Error> {
    let Some(store) = app.get::<SqliteEventStore>() else {
        return Ok(Vec::new());
    };
    sqlx::query_as("SELECT owner, balance FROM balances ORDER BY owner, account")
        .fetch_all(store.pool())
        .await
        .map_err(|e| Error::InvalidArgument {
            reason: format!("reading the balances: {e}"),
        })
}

#[event_handler(priority = 10)]
async fn on_opened(event: &AccountOpened, ctx: EventContext) -> lexigram::Result<()> {
    println!("  event: {} opened {}", event.owner, ctx.stream_id());
    Ok(())
}

#[event_handler]
async fn on_deposited(event: &MoneyDeposited, ctx: EventContext) -> lexigram::Result<()> {
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
async fn on_withdrawn(event: &MoneyWithdrawn, ctx: EventContext) -> lexigram::Result<()> {
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

/// Reads the projection (after the caller waited for it to catch up: read-your-writes).
#[query_handler]
async fn balance(query: GetBalance, store: Dep<SqliteEventStore>) -> lexigram::Result<Option<u64>> {
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM balances WHERE account = ?1")
            .bind(query.account.as_str())
            .fetch_optional(store.pool())
            .await
            .map_err(|e| Error::InvalidArgument {
                reason: format!("reading the balance of {}: {e}", query.account),
            })?;
    Ok(balance.and_then(|b| u64::try_from(b).ok()))
}

#[tokio::main]
async fn main() -> Result<(), lexigram::Error> {
    // The embedded durable default: a SQLite file, kept between runs.
    let path = std::env::var_os("LEXIGRAM_BANK_DB").map_or_else(
        || std::env::temp_dir().join("lexigram-bank-example.db"),
        std::path::PathBuf::from,
    );
    println!(
        "Events and balances are stored in {} (delete it to start over)",
        path.display()
    );
    let config = EventsConfig::sqlite(&path);
    let mailer = Arc::new(Mailer::default());
    let app = App::builder()
        .module(
            EventsModule::configure(config.clone())
                .sqlite_projection(balances(), BalancesProjection),
        )
        .provide_arc(Arc::clone(&mailer))
        .build()
        .await?;
    // Earlier runs' accounts: the projection kept them (and caught up on anything new).
    caught_up(&app).await?;
    let earlier = read_accounts(&app).await?;
    println!(
        "Accounts in the read model before this run: {}",
        earlier.len()
    );
    for (owner, balance) in &earlier {
        println!("  {owner}: {balance}");
    }
    // Nobody from an earlier run is mailed again: the reaction went on from its checkpoint.
    let mailed_before = mailer.deliveries();

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
    caught_up(&app).await?;

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
        .module(EventsModule::configure(config).sqlite_projection(balances(), BalancesProjection))
        .provide_arc(Arc::clone(&mailer))
        .build()
        .await?;
    again
        .commands()
        .dispatch(OpenAccount {
            owner: "Carol".into(),
        })
        .await?;
    caught_up(&again).await?;
    let now = read_accounts(&again).await?;
    println!(
        "Accounts in the read model after the restart: {} ({} from earlier runs)",
        now.len(),
        earlier.len()
    );
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
    if now.len() != earlier.len() + 3 {
        return Err(Error::Config {
            problems: vec![format!(
                "expected the {} earlier accounts and 3 new ones in the read model, found {}",
                earlier.len(),
                now.len()
            )],
        });
    }
    if mailed_before != 0 || mails.len() != 3 || mailer.deliveries() != 3 {
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
