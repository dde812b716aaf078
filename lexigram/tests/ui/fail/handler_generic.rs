use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

#[command_handler]
async fn ping<T: Send>(_cmd: Ping) -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
