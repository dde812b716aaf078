//! A subscription's definition: its name, what it reads, who reacts, and how it runs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::reactor::Reactor;
use super::sink::ExactlyOnce;
use super::worker::{Runner, runner};
use crate::delivery::{Backoff, RetryPolicy};
use crate::error::{Error, Result};
use crate::message::Event;

/// Where a new subscription starts (a subscription that has a checkpoint goes on from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From the first event ever stored: the subscription sees the whole history.
    #[default]
    Origin,
    /// After the last event stored when the subscription is first registered.
    Now,
    /// After a global position.
    After(u64),
}

/// How a subscription runs. Every field has a default; set the ones that matter with the
/// builder methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SubscriptionOptions {
    /// Events read per page and committed per checkpoint at most. Default 500.
    pub batch_size: usize,
    /// How long one batch may run before it is committed. Default 250 ms.
    pub max_batch_time: Duration,
    /// How often an idle subscription reads the log even without a wake-up. Default 1 s.
    pub poll_interval: Duration,
    /// How long a claimed partition stays ours without a renewal. Default 10 s.
    pub lease_ttl: Duration,
    /// How often a held lease is renewed (below `lease_ttl`). Default 3 s.
    pub renew_every: Duration,
    /// How often a node looks for partitions to claim or to give up. Default 2 s.
    pub claim_interval: Duration,
    /// How long a graceful stop waits for batches in flight. Default 5 s.
    pub drain_timeout: Duration,
    /// How long one attempt of the reactor may run. Default 30 s.
    pub handler_timeout: Duration,
    /// Attempts per event before it is parked (at least 1). Default 10.
    pub max_attempts: u32,
    /// The wait before the first retry. Default 100 ms.
    pub retry_initial: Duration,
    /// The factor between consecutive waits. Default 2.
    pub retry_multiplier: f64,
    /// The longest wait. Default 60 s.
    pub retry_max: Duration,
    /// Random fraction (0 to 1) each wait is shortened by. Default 0.2.
    pub retry_jitter: f64,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_batch_time: Duration::from_millis(250),
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            claim_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            handler_timeout: Duration::from_secs(30),
            max_attempts: 10,
            retry_initial: Duration::from_millis(100),
            retry_multiplier: 2.0,
            retry_max: Duration::from_secs(60),
            retry_jitter: 0.2,
        }
    }
}

impl SubscriptionOptions {
    /// Every problem with these options, one sentence each (empty when they are valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let positive = [
            ("max_batch_time", self.max_batch_time),
            ("poll_interval", self.poll_interval),
            ("lease_ttl", self.lease_ttl),
            ("renew_every", self.renew_every),
            ("claim_interval", self.claim_interval),
            ("handler_timeout", self.handler_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                problems.push(format!("`{name}` must be above zero"));
            }
        }
        if self.batch_size == 0 {
            problems.push("`batch_size` must be at least 1".to_owned());
        }
        if self.max_attempts == 0 {
            problems.push("`max_attempts` must be at least 1".to_owned());
        }
        if self.renew_every >= self.lease_ttl {
            problems.push(format!(
                "`renew_every` ({:?}) must be below `lease_ttl` ({:?}), or leases expire between renewals",
                self.renew_every, self.lease_ttl
            ));
        }
        if !(self.retry_multiplier.is_finite() && self.retry_multiplier >= 1.0) {
            problems.push(format!(
                "`retry_multiplier` ({}) must be a number of at least 1",
                self.retry_multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            problems.push(format!(
                "`retry_jitter` ({}) must be between 0 and 1",
                self.retry_jitter
            ));
        }
        if self.retry_initial > self.retry_max {
            problems.push(format!(
                "`retry_initial` ({:?}) must not be above `retry_max` ({:?})",
                self.retry_initial, self.retry_max
            ));
        }
        problems
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            backoff: Backoff::new(
                self.retry_initial,
                self.retry_multiplier,
                self.retry_max,
                self.retry_jitter,
            ),
        }
    }
}

/// A durable subscription: a named, checkpointed reader of the global log that calls a
/// [`Reactor`] for each event it selects. Build one with [`Subscription::builder`] and start
/// it with [`Reactions::start`](super::Reactions::start).
#[derive(Clone)]
pub struct Subscription {
    pub(crate) name: Arc<str>,
    pub(crate) version: u32,
    pub(crate) partitions: u32,
    pub(crate) start: StartFrom,
    pub(crate) event_types: Option<Arc<[Arc<str>]>>,
    pub(crate) reaction: Reaction,
    pub(crate) options: SubscriptionOptions,
}

/// Who handles a subscription's events, and how their effects commit.
#[derive(Clone)]
pub(crate) enum Reaction {
    /// A [`Reactor`]: at-least-once effects anywhere; the checkpoint commits on its own.
    AtLeastOnce(Arc<dyn Runner>),
    /// A transactional reactor: its writes commit with the checkpoint.
    ExactlyOnce(ExactlyOnce),
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("partitions", &self.partitions)
            .field("start", &self.start)
            .field("event_types", &self.event_types)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Starts building a subscription named `name` (stable: its checkpoints are kept under
    /// it, so renaming it starts it again from [`StartFrom`]).
    pub fn builder(name: impl Into<Arc<str>>) -> SubscriptionBuilder {
        SubscriptionBuilder {
            name: name.into(),
            version: 1,
            partitions: 1,
            start: StartFrom::Origin,
            event_types: None,
            reactor: None,
            exactly_once: None,
            options: SubscriptionOptions::default(),
        }
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many partitions it asks for.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// How it runs.
    pub fn options(&self) -> &SubscriptionOptions {
        &self.options
    }
}

/// Builds a [`Subscription`]; from [`Subscription::builder`].
///
/// ```
/// use std::time::Duration;
/// use lexigram::subscription::{reactor_fn, StartFrom, Subscription};
///
/// let mailer = Subscription::builder("bank.mailer")
///     .event_type_names(["bank.AccountOpened"])
///     .partitions(4)
///     .start_from(StartFrom::Origin)
///     .batch_size(100)
///     .retry(Duration::from_millis(100), 2.0, Duration::from_secs(60), 0.2, 10)
///     .reactor(reactor_fn(|_event, _ctx| async { Ok(()) }))
///     .build()?;
/// assert_eq!(mailer.partitions(), 4);
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Clone)]
pub struct SubscriptionBuilder {
    name: Arc<str>,
    version: u32,
    partitions: u32,
    start: StartFrom,
    event_types: Option<Vec<Arc<str>>>,
    reactor: Option<Arc<dyn Runner>>,
    exactly_once: Option<ExactlyOnce>,
    options: SubscriptionOptions,
}

impl fmt::Debug for SubscriptionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl SubscriptionBuilder {
    /// The subscription's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Who reacts to the events (required).
    #[must_use]
    pub fn reactor(mut self, reactor: impl Reactor) -> Self {
        self.reactor = Some(runner(reactor));
        self
    }

    /// Who reacts to the events with writes to the events' own SQL database, committed
    /// with the checkpoint ([`ExactlyOnce`]); instead of [`reactor`](Self::reactor).
    #[must_use]
    pub fn exactly_once(mut self, sink: ExactlyOnce) -> Self {
        self.exactly_once = Some(sink);
        self
    }

    /// Adds an event type the subscription reads (by default it reads every type).
    #[must_use]
    pub fn event_type<E: Event>(self) -> Self {
        self.event_type_names([E::NAME])
    }

    /// Adds event types by their stable names.
    #[must_use]
    pub fn event_type_names(
        mut self,
        names: impl IntoIterator<Item = impl Into<Arc<str>>>,
    ) -> Self {
        let types = self.event_types.get_or_insert_with(Vec::new);
        types.extend(names.into_iter().map(Into::into));
        self
    }

    /// How many partitions the log is split into (default 1). Every event of a stream falls
    /// into one partition; partitions are shared by the nodes running the subscription.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// The version of the subscription's checkpoints (default 1); a new version starts over.
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Where a new subscription starts (default [`StartFrom::Origin`]).
    #[must_use]
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// All options at once.
    #[must_use]
    pub fn options(mut self, options: SubscriptionOptions) -> Self {
        self.options = options;
        self
    }

    /// Changes the options in place (how configuration overrides reach a builder).
    #[must_use]
    pub(crate) fn map_options(mut self, change: impl FnOnce(&mut SubscriptionOptions)) -> Self {
        change(&mut self.options);
        self
    }

    /// Sets the partitions unless `partitions` is `None`.
    #[must_use]
    pub(crate) fn partitions_if(self, partitions: Option<u32>) -> Self {
        match partitions {
            Some(partitions) => self.partitions(partitions),
            None => self,
        }
    }

    /// Events per page and per checkpoint commit at most.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.options.batch_size = batch_size;
        self
    }

    /// How often an idle subscription polls without a wake-up.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.options.poll_interval = interval;
        self
    }

    /// Lease length, renewal period and claim period.
    #[must_use]
    pub fn leases(
        mut self,
        ttl: Duration,
        renew_every: Duration,
        claim_interval: Duration,
    ) -> Self {
        self.options.lease_ttl = ttl;
        self.options.renew_every = renew_every;
        self.options.claim_interval = claim_interval;
        self
    }

    /// The retry policy: waits from `initial` growing by `multiplier` up to `max`, each cut
    /// by up to `jitter`, `attempts` attempts in all before the event is parked.
    #[must_use]
    pub fn retry(
        mut self,
        initial: Duration,
        multiplier: f64,
        max: Duration,
        jitter: f64,
        attempts: u32,
    ) -> Self {
        self.options.retry_initial = initial;
        self.options.retry_multiplier = multiplier;
        self.options.retry_max = max;
        self.options.retry_jitter = jitter;
        self.options.max_attempts = attempts;
        self
    }

    /// Checks the definition and builds it; every problem is reported at once.
    pub fn build(self) -> Result<Subscription> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() || self.name.len() > 200 || self.name.contains('\0') {
            problems.push(
                "the name must be 1 to 200 bytes without NUL (it keys the checkpoints)".to_owned(),
            );
        }
        if self.version == 0 {
            problems.push("`version` must be at least 1".to_owned());
        }
        if !(1..=1024).contains(&self.partitions) {
            problems.push(format!(
                "`partitions` ({}) must be between 1 and 1024",
                self.partitions
            ));
        }
        if self.event_types.as_ref().is_some_and(Vec::is_empty) {
            problems.push("the list of event types is empty: it would read nothing".to_owned());
        }
        problems.extend(self.options.problems());
        let reaction = match (self.reactor, self.exactly_once) {
            (Some(reactor), None) => Some(Reaction::AtLeastOnce(reactor)),
            (None, Some(sink)) => Some(Reaction::ExactlyOnce(sink)),
            (None, None) => {
                problems.push(
                    "no reactor: call `.reactor(...)` (or `.exactly_once(...)` for writes committed with the checkpoint)"
                        .to_owned(),
                );
                None
            }
            (Some(_), Some(_)) => {
                problems.push(
                    "both `.reactor(...)` and `.exactly_once(...)` are set; a subscription has one reaction: keep one, or make two subscriptions"
                        .to_owned(),
                );
                None
            }
        };
        match reaction {
            Some(reaction) if problems.is_empty() => {
                let event_types = self.event_types.map(|mut types| {
                    types.sort();
                    types.dedup();
                    Arc::from(types)
                });
                Ok(Subscription {
                    name: self.name,
                    version: self.version,
                    partitions: self.partitions,
                    start: self.start,
                    event_types,
                    reaction,
                    options: self.options,
                })
            }
            _ => Err(Error::Config {
                problems: problems
                    .into_iter()
                    .map(|problem| format!("subscription `{}`: {problem}", self.name))
                    .collect(),
            }),
        }
    }
}
