use lexigram::prelude::*; use lexigram::AggregateRoot;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(name = "bank.Opened", version = 2, kind = integration)]
pub struct Opened {
    pub owner: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
pub struct Deposited {
    pub amount: u64,
}

#[derive(Debug, Command)]
#[command(output = u64)]
pub struct Deposit {
    pub amount: u64,
}

#[derive(Debug, Command)]
pub struct Close;

#[derive(Debug, Query)]
#[query(output = Option<String>)]
pub struct Owner;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    owner: String,
    balance: u64,
}

#[aggregate(name = "Account", snapshot_version = 3)]
impl Account {
    #[apply]
    fn opened(&mut self, event: &Opened) {
        self.owner.clone_from(&event.owner);
    }

    #[apply(check = positive)]
    fn deposited(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }

    fn positive(&self, event: &Deposited) -> Result<(), String> {
        if event.amount == 0 { Err("zero deposit".into()) } else { Ok(()) }
    }
}

fn main() {
    assert_eq!(<Opened as Event>::NAME, "bank.Opened");
    assert_eq!(<Opened as Event>::VERSION, 2);
    assert_eq!(<Deposited as Event>::NAME, "Deposited");
    assert_eq!(<Account as Aggregate>::TYPE, "Account");
    assert_eq!(<Account as Aggregate>::SNAPSHOT_VERSION, 3);
    let _: Option<<Deposit as Command>::Output> = Some(5u64);
    let _: <Close as Command>::Output = ();
    let _: <Owner as Query>::Output = None::<String>;
    let mut root = AggregateRoot::<Account>::new("a-1");
    assert!(root.record(Deposited { amount: 0 }).is_err());
    assert!(root.record(Deposited { amount: 5 }).is_ok());
    let schema = lexigram::registration::discovered_schema().ok();
    assert_eq!(schema.and_then(|s| s.event_type("bank.Opened").map(|e| e.version)), Some(2));
}
