use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Pinged;

#[event_handler(prio = 10, priority = 1, priority = 2)]
async fn pinged(_event: &Pinged) -> lexigram::Result<()> {
    Ok(())
}

#[derive(Clone, PartialEq, Eq, Hash, Query)]
#[query(output = u8)]
struct Count;

#[query_handler(cache_ttl = "soon")]
async fn count(_q: Count) -> lexigram::Result<u8> {
    Ok(1)
}

fn main() {}
