use lexigram::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "bank.Opened", version = "2")]
struct Opened;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "bank.Closed", version = 0, kind = external)]
struct Closed;

fn main() {}
