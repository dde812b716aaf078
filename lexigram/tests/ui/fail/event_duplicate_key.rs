use lexigram::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "bank.Opened", version = 1, version = 2)]
struct Opened;

fn main() {}
