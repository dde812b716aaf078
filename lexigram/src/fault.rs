//! Fault points: named places in the runners where a test can make the process abort,
//! panic or stall, to prove what survives a crash at exactly that point.
//!
//! Without the `testing` feature every point is an empty inline function. With it, a point
//! fires when armed in-process ([`arm`]) or through the `LEXIGRAM_FAULT` environment variable
//! of a child process: `point=abort`, `point=panic` or `point=pause:<ms>`, optionally
//! `@<n>` to fire at the n-th pass only (from 1), several separated by `,`. For example
//! `LEXIGRAM_FAULT=subscription.after_handle=abort@37`.

/// What an armed fault point does.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `std::process::abort()`: the process dies at once, as with SIGKILL.
    Abort,
    /// Panics in the task passing the point.
    Panic,
    /// Sleeps this long (tokio time) before going on.
    Pause(std::time::Duration),
}

#[cfg(feature = "testing")]
mod armed {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::Fault;

    struct Armed {
        fault: Fault,
        /// Fire at this pass only (1-based), or at every pass.
        at: Option<u64>,
        passes: u64,
    }

    /// Whether any point may be armed: every pass checks this first, so an unarmed point
    /// costs one atomic load, even in a test build.
    static ANY_ARMED: AtomicBool = AtomicBool::new(false);

    fn table() -> &'static Mutex<HashMap<String, Armed>> {
        static TABLE: OnceLock<Mutex<HashMap<String, Armed>>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let table = from_env();
            if !table.is_empty() {
                ANY_ARMED.store(true, Ordering::Release);
            }
            Mutex::new(table)
        })
    }

    fn from_env() -> HashMap<String, Armed> {
        let mut table = HashMap::new();
        let Ok(spec) = std::env::var("LEXIGRAM_FAULT") else {
            return table;
        };
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let Some((point, action)) = item.trim().split_once('=') else {
                continue;
            };
            let (action, at) = match action.split_once('@') {
                Some((action, at)) => (action, at.parse().ok()),
                None => (action, None),
            };
            let fault = match action.split_once(':') {
                Some(("pause", ms)) => match ms.parse() {
                    Ok(ms) => Fault::Pause(Duration::from_millis(ms)),
                    Err(_) => continue,
                },
                None if action == "abort" => Fault::Abort,
                None if action == "panic" => Fault::Panic,
                _ => continue,
            };
            table.insert(
                point.to_owned(),
                Armed {
                    fault,
                    at,
                    passes: 0,
                },
            );
        }
        table
    }

    pub(crate) fn arm(point: &str, fault: Fault, at: Option<u64>) {
        ANY_ARMED.store(true, Ordering::Release);
        table().lock().insert(
            point.to_owned(),
            Armed {
                fault,
                at,
                passes: 0,
            },
        );
    }

    pub(crate) fn disarm(point: &str) {
        table().lock().remove(point);
    }

    pub(crate) fn passes(point: &str) -> u64 {
        table().lock().get(point).map_or(0, |armed| armed.passes)
    }

    pub(crate) async fn fire(point: &str) {
        // The table reads the environment on first use; after that, the flag says it all.
        let table = table();
        if !ANY_ARMED.load(Ordering::Acquire) {
            return;
        }
        let fault = {
            let mut table = table.lock();
            let Some(armed) = table.get_mut(point) else {
                return;
            };
            armed.passes += 1;
            match armed.at {
                Some(at) if at != armed.passes => return,
                _ => armed.fault,
            }
        };
        match fault {
            Fault::Abort => {
                tracing::error!(point, "fault point: aborting the process");
                std::process::abort()
            }
            #[allow(clippy::panic)] // the armed fault is a panic, by request of a test
            Fault::Panic => panic!("fault point `{point}` armed to panic"),
            Fault::Pause(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// Passes the fault point `point`: does what a test armed it to do, if anything.
#[inline]
pub(crate) async fn point(point: &'static str) {
    #[cfg(feature = "testing")]
    armed::fire(point).await;
    #[cfg(not(feature = "testing"))]
    let _ = point;
}

/// Arms `point` to `fault`, at every pass or at the `at`-th pass only.
#[cfg(feature = "testing")]
pub fn arm(point: &str, fault: Fault, at: Option<u64>) {
    armed::arm(point, fault, at);
}

/// Disarms `point`.
#[cfg(feature = "testing")]
pub fn disarm(point: &str) {
    armed::disarm(point);
}

/// How often an armed `point` was passed.
#[cfg(feature = "testing")]
pub fn passes(point: &str) -> u64 {
    armed::passes(point)
}
