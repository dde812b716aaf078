use lexigram::prelude::*;

struct Mailer;

#[derive(FromContainer)]
struct Notifier {
    mailer: Mailer,
    metadata: MessageMetadata,
}

fn main() {}
