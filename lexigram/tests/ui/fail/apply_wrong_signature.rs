use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Opened;

#[derive(Default, Serialize, Deserialize)]
struct Account;

#[aggregate]
impl Account {
    #[apply]
    fn opened(&self, event: Opened) {}
}

fn main() {}
