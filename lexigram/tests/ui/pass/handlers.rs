use lexigram::prelude::*; use lexigram::{CommandBus, CommandContext, EventBus, EventContext, MessageMetadata, QueryBus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
struct Pinged;

#[derive(Debug, Command)]
#[command(output = u8)]
struct Ping;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Query)]
#[query(output = String)]
struct Name;

struct Greeter;

#[command_handler(name = "pinger")]
async fn ping(_cmd: Ping, _meta: MessageMetadata, _ctx: CommandContext, _events: EventBus) -> Result<u8, std::io::Error> {
    Ok(1)
}

#[event_handler(priority = -3)]
async fn pinged(_event: &Pinged, _ctx: &EventContext, _commands: CommandBus) -> lexigram::Result<()> {
    Ok(())
}

#[lexigram::reaction(name = "pinger.audit", partitions = 4, batch_size = 100, version = 2, start = "now")]
async fn audit(_event: Pinged, _ctx: lexigram::subscription::ReactionContext, _meta: MessageMetadata) -> Result<(), std::io::Error> {
    Ok(())
}

#[handlers]
impl Greeter {
    #[query_handler(cache = true)]
    async fn name(&self, _q: Name, _queries: QueryBus) -> lexigram::Result<String> {
        Ok("lexigram".into())
    }

    #[lexigram::reaction(name = "pinger.audit")]
    async fn also(&self, _event: &Pinged, _commands: CommandBus) -> lexigram::Result<()> {
        Ok(())
    }
}

fn main() {}
