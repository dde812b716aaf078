use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Opened;

#[derive(Default, Serialize, Deserialize)]
struct Account;

#[aggregate(nmae = "Account", snapshot_version = 1)]
impl Account {
    #[apply(chek = valid)]
    fn opened(&mut self, _event: &Opened) {}
}

fn main() {}
