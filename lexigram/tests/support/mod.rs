//! Helpers shared by the SQL store tests.

#![allow(dead_code)]

use lexigram::error::{EventLoadError, EventLoadErrorKind};
use lexigram::prelude::*;
use lexigram::store::{EventStore, VersionRange};
use serde::{Deserialize, Serialize};

/// The one event type the bad-row checks know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counted {
    pub(crate) n: u64,
}

impl Event for Counted {
    const NAME: &'static str = "test.Counted";
    const VERSION: u32 = 1;
}

/// An aggregate that knows only `Counted`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Counter {
    pub(crate) total: u64,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Counted>().finish()
    }
}

impl Apply<Counted> for Counter {
    fn apply(&mut self, event: &Counted) {
        self.total += event.n;
    }
}

/// `stream` holds, in order: a good `Counted` (v1), a row with corrupt JSON (v2), a row of an
/// unknown type (v3), a good `Counted` (v4). Checks that all four read, that the bad ones fail
/// to decode with typed errors naming stream and version, and that the good ones decode.
pub(crate) async fn check_bad_rows(store: &impl EventStore, stream: &str) {
    let all = store
        .read(stream, VersionRange::all())
        .await
        .expect("the stream reads");
    let versions: Vec<u64> = all.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2, 3, 4], "every row reads, bad ones included");

    let corrupt = all[1]
        .decode::<Counted>()
        .expect_err("corrupt JSON must not decode");
    assert_eq!(
        (corrupt.stream.as_str(), corrupt.stream_version),
        (stream, 2)
    );
    assert!(
        matches!(corrupt.kind, EventLoadErrorKind::Corrupt(_)),
        "{corrupt}"
    );
    assert!(
        corrupt
            .to_string()
            .contains(&format!("version 2 of stream `{stream}`")),
        "{corrupt}"
    );

    let mut counter = Counter::default();
    let unknown = counter
        .apply_stored(&all[2])
        .expect_err("an unknown type must not apply");
    assert_eq!(
        (unknown.stream.as_str(), unknown.stream_version),
        (stream, 3)
    );
    assert!(
        matches!(unknown.kind, EventLoadErrorKind::UnknownType),
        "{unknown}"
    );
    assert!(unknown.to_string().contains("nobody.Knows"), "{unknown}");

    for good in [&all[0], &all[3]] {
        counter
            .apply_stored(good)
            .expect("the good events still apply");
    }
    assert_eq!(counter.total, 1 + 4);
    let tail = store
        .read(stream, VersionRange::from(3))
        .await
        .expect("reads");
    assert_eq!(tail.len(), 2, "reading past a bad row works");
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
