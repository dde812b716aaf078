use lexigram::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Wrapped<T> {
    inner: T,
}

fn main() {}
