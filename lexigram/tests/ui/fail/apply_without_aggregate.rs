use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Opened;

#[derive(Default, Serialize, Deserialize)]
struct Account;

impl Account {
    #[apply]
    fn opened(&mut self, _event: &Opened) {}
}

fn main() {}
