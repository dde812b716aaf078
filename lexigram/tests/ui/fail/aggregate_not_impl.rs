use lexigram::aggregate;

#[aggregate]
struct Account {
    balance: u64,
}

fn main() {}
