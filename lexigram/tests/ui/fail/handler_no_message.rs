use lexigram::prelude::*;

#[command_handler]
async fn ping() -> lexigram::Result<()> {
    Ok(())
}

fn main() {}
