//! Helpers shared by the SQL store tests.

#![allow(dead_code)]

use lexigram::EventEnvelope;
use lexigram::aggregate::Route;
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

/// A `tracing` subscriber that counts the events logged while a span of a given name is
/// entered on the logging thread: a span guard held across an `.await` shows up as other
/// tasks' events landing inside it.
pub(crate) mod spans {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use parking_lot::Mutex;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    thread_local! {
        static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    /// Counts events whose message is `message` logged inside a span named `span`.
    pub(crate) struct LeakDetector {
        span: &'static str,
        message: &'static str,
        next: AtomicU64,
        names: Mutex<HashMap<u64, &'static str>>,
        /// (events with the message, of those inside the span, spans of that name opened)
        pub(crate) seen: Arc<(AtomicU64, AtomicU64, AtomicU64)>,
    }

    impl LeakDetector {
        pub(crate) fn new(span: &'static str, message: &'static str) -> Self {
            Self {
                span,
                message,
                next: AtomicU64::new(1),
                names: Mutex::new(HashMap::new()),
                seen: Arc::default(),
            }
        }
    }

    struct Message(Option<String>);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }

    impl Subscriber for LeakDetector {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if span.metadata().name() == self.span {
                self.seen.2.fetch_add(1, Ordering::Relaxed);
            }
            self.names.lock().insert(id, span.metadata().name());
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = Message(None);
            event.record(&mut message);
            if message.0.as_deref() != Some(self.message) {
                return;
            }
            self.seen.0.fetch_add(1, Ordering::Relaxed);
            let names = self.names.lock();
            let inside = ENTERED.with(|stack| {
                stack
                    .borrow()
                    .iter()
                    .any(|id| names.get(id).is_some_and(|n| *n == self.span))
            });
            if inside {
                self.seen.1.fetch_add(1, Ordering::Relaxed);
            }
        }
        fn enter(&self, span: &Id) {
            ENTERED.with(|stack| stack.borrow_mut().push(span.into_u64()));
        }
        fn exit(&self, span: &Id) {
            ENTERED.with(|stack| {
                let mut stack = stack.borrow_mut();
                if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
                    stack.remove(at);
                }
            });
        }
    }

    /// Every span: id -> (name, parent).
    pub(crate) type SpanTree = HashMap<u64, (&'static str, Option<u64>)>;

    /// Records every span's name and parent (explicit, or the span entered on the thread) and
    /// every `follows_from` link, to check that one request is one trace.
    #[derive(Default)]
    pub(crate) struct TraceRecorder {
        next: AtomicU64,
        /// id -> (name, parent)
        pub(crate) spans: Arc<Mutex<SpanTree>>,
        /// (span, the span it follows from)
        pub(crate) follows: Arc<Mutex<Vec<(u64, u64)>>>,
        metadata: Mutex<HashMap<u64, &'static Metadata<'static>>>,
    }

    impl TraceRecorder {
        /// The ids of the spans named `name`.
        pub(crate) fn named(spans: &SpanTree, name: &str) -> Vec<u64> {
            let mut ids: Vec<u64> = spans
                .iter()
                .filter(|(_, (n, _))| *n == name)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        }

        /// Whether `ancestor` is `span` or one of its parents.
        pub(crate) fn within(spans: &SpanTree, mut span: u64, ancestor: u64) -> bool {
            for _ in 0..64 {
                if span == ancestor {
                    return true;
                }
                match spans.get(&span).and_then(|(_, parent)| *parent) {
                    Some(parent) => span = parent,
                    None => return false,
                }
            }
            false
        }
    }

    impl Subscriber for TraceRecorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let parent = span.parent().map(Id::into_u64).or_else(|| {
                if span.is_contextual() {
                    ENTERED.with(|stack| stack.borrow().last().copied())
                } else {
                    None
                }
            });
            self.spans
                .lock()
                .insert(id, (span.metadata().name(), parent));
            self.metadata.lock().insert(id, span.metadata());
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, span: &Id, follows: &Id) {
            self.follows
                .lock()
                .push((span.into_u64(), follows.into_u64()));
        }
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, span: &Id) {
            ENTERED.with(|stack| stack.borrow_mut().push(span.into_u64()));
        }
        fn exit(&self, span: &Id) {
            ENTERED.with(|stack| {
                let mut stack = stack.borrow_mut();
                if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
                    stack.remove(at);
                }
            });
        }
        fn clone_span(&self, span: &Id) -> Id {
            span.clone()
        }
        fn current_span(&self) -> tracing_core::span::Current {
            let current = ENTERED.with(|stack| stack.borrow().last().copied());
            match current.and_then(|id| Some((id, *self.metadata.lock().get(&id)?))) {
                Some((id, metadata)) => {
                    tracing_core::span::Current::new(Id::from_u64(id), metadata)
                }
                None => tracing_core::span::Current::none(),
            }
        }
    }

    /// Runs `appends` on a single-threaded runtime beside a task that logs `unrelated` at
    /// every turn, and returns (unrelated events, of those inside `lexigram.append`,
    /// `lexigram.append` spans opened).
    pub(crate) fn unrelated_events_inside_appends<F>(appends: F) -> (u64, u64, u64)
    where
        F: std::future::Future<Output = ()>,
    {
        let detector = LeakDetector::new("lexigram.append", "unrelated");
        let seen = Arc::clone(&detector.seen);
        let _default = tracing::subscriber::set_default(detector);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let logger = tokio::spawn({
                let stop = Arc::clone(&stop);
                async move {
                    for _ in 0..1_000_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        tracing::info!("unrelated");
                        tokio::task::yield_now().await;
                    }
                }
            });
            appends.await;
            stop.store(true, Ordering::Relaxed);
            let _ = logger.await;
        });
        (
            seen.0.load(Ordering::Relaxed),
            seen.1.load(Ordering::Relaxed),
            seen.2.load(Ordering::Relaxed),
        )
    }
}

/// The global log holds `good` `Counted` events and, at the stream versions in `damaged`,
/// rows of `stream` that the store could not read in full. Checks that every reader of the log
/// gets every row in order (the damaged ones marked, at their positions), that a damaged row
/// fails to decode with a typed error naming its stream and version, that the events after it
/// decode, and that loading the aggregate reports the damaged row instead of a wrong state.
pub(crate) async fn check_damaged_rows(
    store: &impl EventStore,
    stream: &str,
    total: usize,
    damaged: &[(u64, &str)],
) {
    use futures_util::TryStreamExt;

    let all = store
        .read_all(0, 1000, None)
        .await
        .expect("the log reads past damaged rows");
    assert_eq!(all.len(), total, "every row is in the log: {all:?}");
    assert!(
        all.windows(2)
            .all(|w| w[0].global_position < w[1].global_position)
    );
    let streamed: Vec<_> = store
        .stream_all(0, 2, None)
        .try_collect()
        .await
        .expect("a follower in pages of 2 passes the damaged rows");
    assert_eq!(streamed.len(), total);
    let first_damaged = all
        .iter()
        .position(|e| e.defect().is_some())
        .expect("a damaged row is marked");
    let rest = store
        .read_all(all[first_damaged].global_position, 1000, None)
        .await
        .expect("reading after a damaged row");
    assert_eq!(
        rest.len(),
        total - first_damaged - 1,
        "a checkpoint moves past it"
    );

    for envelope in &all {
        let expected = damaged
            .iter()
            .find(|(v, _)| envelope.stream_id == stream && *v == envelope.stream_version);
        let is_damaged = expected.is_some();
        match envelope.defect() {
            Some(reason) => {
                assert!(
                    is_damaged,
                    "only the damaged rows are marked: {envelope:?} ({reason})"
                );
                if let Some((_, column)) = expected {
                    assert!(
                        reason.contains(column),
                        "the defect names the column: {reason}"
                    );
                }
                let err = envelope
                    .decode::<Counted>()
                    .expect_err("a damaged row never decodes");
                assert!(
                    matches!(err.kind, EventLoadErrorKind::DamagedRow { .. }),
                    "{err}"
                );
                assert_eq!(err.stream.as_str(), stream, "{err}");
                assert!(
                    err.to_string().contains(&format!("stream `{stream}`")),
                    "the error names the stream: {err}"
                );
            }
            None => {
                assert!(!is_damaged, "a damaged row is marked: {envelope:?}");
                envelope.decode::<Counted>().expect("good rows decode");
            }
        }
    }

    let stream_events = store
        .read(stream, VersionRange::all())
        .await
        .expect("the stream reads past damaged rows");
    let mut counter = Counter::default();
    let err = stream_events
        .iter()
        .try_for_each(|e| counter.apply_stored(e))
        .expect_err("an aggregate over a damaged history does not load");
    assert!(
        matches!(err.kind, EventLoadErrorKind::DamagedRow { .. }),
        "{err}"
    );
    assert_eq!(err.stream_version, damaged[0].0, "{err}");
}

/// Runs the calling test alone, in a child process of this test binary: `tracing` keeps its
/// callsite cache per process, so a test that checks spans must not share the process with
/// tests running beside it. Returns `true` in the child, which then runs the test's body; in
/// the parent it waits for the child, fails if the child failed or ran nothing, and returns
/// `false`.
pub(crate) fn alone(test: &str) -> bool {
    const ROLE: &str = "LEXIGRAM_TEST_ALONE";
    if std::env::var_os(ROLE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ROLE, test)
        .output()
        .expect("the test binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "`{test}` failed alone:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "`{test}` did not run alone:\n{stdout}"
    );
    false
}
