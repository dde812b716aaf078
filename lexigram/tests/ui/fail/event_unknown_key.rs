use lexigram::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(nam = "bank.Opened", version = 1)]
struct Opened;

fn main() {}
