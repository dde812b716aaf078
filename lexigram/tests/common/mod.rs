//! A small bank account aggregate shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use lexigram::EventEnvelope;
use lexigram::aggregate::Route;
use lexigram::error::EventLoadError;
use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub owner: String,
}
impl Event for Opened {
    const NAME: &'static str = "bank.Opened";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: u64,
}
impl Event for Deposited {
    const NAME: &'static str = "bank.Deposited";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub amount: u64,
}
impl Event for Withdrawn {
    const NAME: &'static str = "bank.Withdrawn";
    const VERSION: u32 = 1;
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: String,
    pub balance: u64,
    pub movements: u32,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event)
            .on::<Opened>()
            .on::<Deposited>()
            .on::<Withdrawn>()
            .finish()
    }
}

impl Apply<Opened> for Account {
    fn apply(&mut self, event: &Opened) {
        self.owner.clone_from(&event.owner);
    }
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount;
        self.movements += 1;
    }
}

impl Apply<Withdrawn> for Account {
    fn check(&self, event: &Withdrawn) -> Result<(), String> {
        if event.amount > self.balance {
            return Err(format!(
                "cannot withdraw {} from a balance of {}",
                event.amount, self.balance
            ));
        }
        Ok(())
    }
    fn apply(&mut self, event: &Withdrawn) {
        self.balance -= event.amount;
        self.movements += 1;
    }
}
