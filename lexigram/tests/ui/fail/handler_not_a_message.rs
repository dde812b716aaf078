use lexigram::prelude::*;

struct Ping;

#[command_handler]
async fn ping(_cmd: Ping) -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
