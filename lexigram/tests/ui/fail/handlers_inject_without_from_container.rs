use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

struct Service;

#[handlers(inject)]
impl Service {
    #[command_handler]
    async fn ping(&self, _cmd: Ping) -> lexigram::Result<()> {
        Ok(())
    }
}

fn main() {}
