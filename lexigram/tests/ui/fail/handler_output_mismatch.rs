use lexigram::prelude::*;

#[derive(Command)]
#[command(output = u32)]
struct Count;

#[command_handler]
async fn count(_cmd: Count) -> Result<String, std::io::Error> {
    Ok("one".into())
}

#[derive(Query)]
#[query(output = u64)]
struct Balance;

#[query_handler]
async fn balance(_q: Balance) -> lexigram::Result<i64> {
    Ok(1)
}

fn main() {}
