//! A small bank on lexigram's write side: accounts are aggregates, every change is an event,
//! and two tellers racing on one account meet optimistic concurrency.
//!
//! Run: `cargo run --example bank`

use std::sync::Arc;

use lexigram::prelude::*;
use lexigram::repository::EventPublisher;
use lexigram::snapshot::{InMemorySnapshotStore, SnapshotStore};
use lexigram::store::VersionRange;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountOpened {
    owner: String,
}
impl Event for AccountOpened {
    const NAME: &'static str = "bank.AccountOpened";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoneyDeposited {
    amount: u64,
}
impl Event for MoneyDeposited {
    const NAME: &'static str = "bank.MoneyDeposited";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoneyWithdrawn {
    amount: u64,
}
impl Event for MoneyWithdrawn {
    const NAME: &'static str = "bank.MoneyWithdrawn";
    const VERSION: u32 = 1;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event)
            .on::<AccountOpened>()
            .on::<MoneyDeposited>()
            .on::<MoneyWithdrawn>()
            .finish()
    }
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, event: &AccountOpened) {
        self.owner.clone_from(&event.owner);
    }
}

impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
    }
}

impl Apply<MoneyWithdrawn> for Account {
    fn check(&self, event: &MoneyWithdrawn) -> Result<(), String> {
        if event.amount > self.balance {
            return Err(format!(
                "insufficient funds: balance {}, asked {}",
                self.balance, event.amount
            ));
        }
        Ok(())
    }
    fn apply(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
    }
}

/// Prints every event the repository stores, as an event bus subscriber would see it.
#[derive(Debug)]
struct Ledger;

#[async_trait::async_trait]
impl EventPublisher for Ledger {
    async fn publish(&self, envelopes: &[EventEnvelope]) -> lexigram::Result<()> {
        for e in envelopes {
            println!(
                "  ledger: #{:<3} {:<20} v{} of {:<8} {}",
                e.global_position,
                e.event_type,
                e.stream_version,
                e.stream_id,
                e.payload.as_str()
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), lexigram::Error> {
    let store = InMemoryEventStore::new();
    let snapshots = InMemorySnapshotStore::new();
    let accounts = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::EveryEvents(5))
        .with_publisher(Arc::new(Ledger));

    println!("Opening two accounts");
    for (id, owner, deposit) in [("acc-ada", "Ada", 100), ("acc-bob", "Bob", 20)] {
        let mut account = accounts.load(id).await?;
        account.record(AccountOpened {
            owner: owner.into(),
        })?;
        account.record(MoneyDeposited { amount: deposit })?;
        accounts.save(&mut account).await?;
    }

    println!("Bob tries to withdraw 50");
    let mut bob = accounts.load_or_error("acc-bob").await?;
    match bob.record(MoneyWithdrawn { amount: 50 }) {
        Err(err) => println!("  refused: {err}"),
        Ok(()) => println!("  accepted (unexpected)"),
    }

    println!("Two tellers credit Ada at the same time");
    let mut teller_1 = accounts.load("acc-ada").await?;
    let mut teller_2 = accounts.load("acc-ada").await?;
    teller_1.record(MoneyDeposited { amount: 10 })?;
    teller_2.record(MoneyDeposited { amount: 25 })?;
    accounts.save(&mut teller_1).await?;
    match accounts.save(&mut teller_2).await {
        Err(Error::Concurrency(conflict)) => {
            println!("  teller 2 lost the race: {conflict}");
            let mut retry = accounts.load("acc-ada").await?;
            retry.record(MoneyDeposited { amount: 25 })?;
            accounts.save(&mut retry).await?;
            println!("  teller 2 reloaded and retried");
        }
        other => println!("  teller 2: {other:?}"),
    }

    println!("Ada withdraws 30 twice");
    for _ in 0..2 {
        let mut ada = accounts.load("acc-ada").await?;
        ada.record(MoneyWithdrawn { amount: 30 })?;
        accounts.save(&mut ada).await?;
    }

    let ada = accounts.load_or_error("acc-ada").await?;
    let bob = accounts.load_or_error("acc-bob").await?;
    let snapshot = snapshots.latest("acc-ada").await?.map(|s| s.version);
    println!("Balances");
    println!(
        "  {}: {} (version {}, snapshot at {:?})",
        ada.state().owner,
        ada.state().balance,
        ada.version(),
        snapshot
    );
    println!(
        "  {}: {} (version {})",
        bob.state().owner,
        bob.state().balance,
        bob.version()
    );
    let history = store.read("acc-ada", VersionRange::all()).await?;
    println!(
        "Ada's stream holds {} events; the store holds {}",
        history.len(),
        store.count(None).await?
    );
    assert_eq!(ada.state().balance, 100 + 10 + 25 - 60);
    Ok(())
}
