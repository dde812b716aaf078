use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

struct NotAnError;

#[command_handler]
async fn ping(_cmd: Ping) -> Result<(), NotAnError> {
    Ok(())
}

fn main() {}
