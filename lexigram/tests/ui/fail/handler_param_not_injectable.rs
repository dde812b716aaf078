use lexigram::prelude::*;

#[derive(Command)]
struct Ping;

struct Mailer;

#[command_handler]
async fn ping(_cmd: Ping, _mailer: Mailer) -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
