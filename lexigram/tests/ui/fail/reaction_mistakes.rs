use lexigram::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Opened;

// No name: it keys the checkpoints.
#[lexigram::reaction(partitions = 2)]
async fn unnamed(_event: Opened) -> lexigram::Result<()> {
    Ok(())
}

// `start` is "origin" or "now".
#[lexigram::reaction(name = "mailer", start = "yesterday")]
async fn bad_start(_event: Opened) -> lexigram::Result<()> {
    Ok(())
}

// Too many partitions, and zero is not a batch size.
#[lexigram::reaction(name = "mailer", partitions = 5000, batch_size = 0)]
async fn too_many(_event: Opened) -> lexigram::Result<()> {
    Ok(())
}

// A reaction takes the event, not `&mut`.
#[lexigram::reaction(name = "mailer")]
async fn by_mut(_event: &mut Opened) -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
