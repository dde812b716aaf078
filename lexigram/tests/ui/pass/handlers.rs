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

#[handlers]
impl Greeter {
    #[query_handler(cache = true)]
    async fn name(&self, _q: Name, _queries: QueryBus) -> lexigram::Result<String> {
        Ok("lexigram".into())
    }
}

fn main() {}
