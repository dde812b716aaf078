use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

#[command_handler]
fn ping(_cmd: Ping) -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
