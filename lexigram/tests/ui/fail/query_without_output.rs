use lexigram::Query;

#[derive(Query)]
struct Balance {
    account: String,
}

fn main() {}
