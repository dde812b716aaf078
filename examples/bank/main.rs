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
