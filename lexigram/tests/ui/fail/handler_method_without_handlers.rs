use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

struct Service;

impl Service {
    #[command_handler]
    async fn ping(&self, _cmd: Ping) -> lexigram::Result<()> {
        Ok(())
    }
}

fn main() {}
