use lexigram::prelude::*; use lexigram::MessageMetadata;

struct Mailer;

#[derive(FromContainer)]
struct Notifier {
    mailer: Mailer,
    metadata: MessageMetadata,
}

fn main() {}
