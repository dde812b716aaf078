use lexigram::prelude::*;

#[derive(Command)]
#[command(output = u32)]
struct Count;

#[command_handler]
async fn count(_cmd: Count) -> u32 {
    1
}

#[command_handler]
async fn count_again(_cmd: Count) {}

fn main() {}
