use lexigram::prelude::*;

#[derive(Query)]
struct Balance {
    account: String,
}

#[query_handler]
async fn balance(q: Balance) -> lexigram::Result<u64> {
    Ok(q.account.len() as u64)
}

fn main() {}
