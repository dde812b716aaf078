use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Opened;

#[derive(Default, Serialize, Deserialize)]
struct Account;

#[aggregate]
impl Account {
    #[apply]
    async fn opened(&mut self, event: &Opened) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
