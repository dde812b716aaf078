//! The `[reactions]` section: whether the app runs its durable reactions, as which node, and
//! per reaction the settings an operator changes without a rebuild.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::subscription::{NodeId, SubscriptionBuilder, SubscriptionOptions};

/// Durable reactions (`#[reaction]`): started by the events module when the app starts,
/// drained when it shuts down.
///
/// ```
/// # #[cfg(feature = "toml")] { // the `toml` cargo feature (on by default)
/// use lexigram::config::EventsConfig;
///
/// let config = EventsConfig::from_toml_str(r#"
///     [reactions]
///     node_id = "api-1"
///     [reactions.subscriptions."bank.welcome-mail"]
///     partitions = 4
///     handler_timeout_ms = 5000
/// "#)?;
/// assert!(config.reactions.enabled);
/// assert_eq!(config.reactions.subscriptions["bank.welcome-mail"].partitions, Some(4));
/// assert!(config.validate().is_empty());
/// # }
/// # Ok::<(), lexigram::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReactionsConfig {
    /// Whether this process runs the reactions at all (a process that only serves commands
    /// may leave them to others). Default `true`.
    pub enabled: bool,
    /// This node's id in the checkpoint tables (1 to 200 bytes); default
    /// `hostname-pid-random`, new at every start.
    pub node_id: Option<String>,
    /// Settings per reaction name; a name no reaction declares is an error (a typo would
    /// otherwise change nothing, silently).
    pub subscriptions: BTreeMap<String, ReactionSettings>,
}

impl Default for ReactionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            node_id: None,
            subscriptions: BTreeMap::new(),
        }
    }
}

/// The settings of one reaction; each left out keeps what the code declares, or the default
/// of [`SubscriptionOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReactionSettings {
    /// Whether this process runs this reaction. Default `true`.
    pub enabled: Option<bool>,
    /// Partitions (1 to 1024). More partitions only ever split existing ones in two: from
    /// 4, use 8 or 16.
    pub partitions: Option<u32>,
    /// Events per page and per checkpoint at most.
    pub batch_size: Option<usize>,
    /// How long one batch may run before it is committed, in milliseconds.
    pub max_batch_time_ms: Option<u64>,
    /// How often an idle reaction reads the log without a wake-up, in milliseconds.
    pub poll_interval_ms: Option<u64>,
    /// How long a claimed partition stays this node's without a renewal, in milliseconds.
    pub lease_ttl_ms: Option<u64>,
    /// How often a held lease is renewed, in milliseconds (below `lease_ttl_ms`).
    pub renew_every_ms: Option<u64>,
    /// How often a node looks for partitions to claim or give up, in milliseconds.
    pub claim_interval_ms: Option<u64>,
    /// How long a graceful stop waits for the batches in flight, in milliseconds.
    pub drain_timeout_ms: Option<u64>,
    /// How long one attempt of the handler may run, in milliseconds.
    pub handler_timeout_ms: Option<u64>,
    /// Attempts per event before it is parked.
    pub max_attempts: Option<u32>,
}

impl ReactionsConfig {
    /// Every problem, one sentence each, with its key.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if let Some(node) = &self.node_id
            && NodeId::new(node.as_str()).is_err()
        {
            problems.push(
                "`reactions.node_id` must be 1 to 200 bytes without NUL; leave it out for `hostname-pid-random`"
                    .into(),
            );
        }
        for (name, settings) in &self.subscriptions {
            let mut options = SubscriptionOptions::default();
            settings.apply(&mut options);
            for problem in options.problems() {
                problems.push(format!("`reactions.subscriptions.{name}`: {problem}"));
            }
            if settings
                .partitions
                .is_some_and(|p| !(1..=1024).contains(&p))
            {
                problems.push(format!(
                    "`reactions.subscriptions.{name}.partitions` must be between 1 and 1024"
                ));
            }
        }
    }

    /// This node's id: the configured one, or a new `hostname-pid-random`.
    pub(crate) fn node(&self) -> NodeId {
        self.node_id
            .as_deref()
            .and_then(|id| NodeId::new(id).ok())
            .unwrap_or_else(NodeId::generate)
    }

    /// Whether the reaction `name` runs in this process.
    pub(crate) fn runs(&self, name: &str) -> bool {
        self.enabled
            && self
                .subscriptions
                .get(name)
                .and_then(|s| s.enabled)
                .unwrap_or(true)
    }

    /// `builder` with the settings configured for `name` on top.
    pub(crate) fn configure(
        &self,
        name: &str,
        builder: SubscriptionBuilder,
    ) -> SubscriptionBuilder {
        match self.subscriptions.get(name) {
            Some(settings) => builder
                .partitions_if(settings.partitions)
                .map_options(|options| settings.apply(options)),
            None => builder,
        }
    }
}

impl ReactionSettings {
    /// Writes the settings given into `options`.
    fn apply(&self, options: &mut SubscriptionOptions) {
        let ms = Duration::from_millis;
        if let Some(v) = self.batch_size {
            options.batch_size = v;
        }
        if let Some(v) = self.max_batch_time_ms {
            options.max_batch_time = ms(v);
        }
        if let Some(v) = self.poll_interval_ms {
            options.poll_interval = ms(v);
        }
        if let Some(v) = self.lease_ttl_ms {
            options.lease_ttl = ms(v);
        }
        if let Some(v) = self.renew_every_ms {
            options.renew_every = ms(v);
        }
        if let Some(v) = self.claim_interval_ms {
            options.claim_interval = ms(v);
        }
        if let Some(v) = self.drain_timeout_ms {
            options.drain_timeout = ms(v);
        }
        if let Some(v) = self.handler_timeout_ms {
            options.handler_timeout = ms(v);
        }
        if let Some(v) = self.max_attempts {
            options.max_attempts = v;
        }
    }
}
