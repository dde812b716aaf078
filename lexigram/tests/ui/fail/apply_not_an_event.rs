use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Account;

#[aggregate]
impl Account {
    #[apply]
    fn renamed(&mut self, _name: &String) {}
}

fn main() {}
