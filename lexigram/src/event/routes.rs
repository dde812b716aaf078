//! Who handles which event type: subscriptions, and the ordered routes dispatch reads.

use std::collections::HashMap;
use std::sync::Arc;

use super::handler::{ErasedEventHandler, SubscriptionId};
use super::hooks::Hooks;

pub(super) struct Subscriber {
    pub(super) id: SubscriptionId,
    pub(super) name: Arc<str>,
    pub(super) priority: i32,
    pub(super) handler: Box<dyn ErasedEventHandler>,
}

pub(super) type Handlers = Arc<[Arc<Subscriber>]>;

/// What the dispatch path reads: handlers per event type (already merged and ordered) and
/// hooks. Replaced as a whole on every change.
pub(super) struct Routes {
    pub(super) by_type: HashMap<Arc<str>, Handlers>,
    pub(super) all: Handlers,
    pub(super) hooks: Hooks,
}

impl Routes {
    pub(super) fn handlers_for(&self, event_type: &str) -> &Handlers {
        self.by_type.get(event_type).unwrap_or(&self.all)
    }
}

#[derive(Default)]
pub(super) struct Subscriptions {
    pub(super) by_type: HashMap<Arc<str>, Vec<Arc<Subscriber>>>,
    pub(super) all: Vec<Arc<Subscriber>>,
    pub(super) hooks: Hooks,
    pub(super) next_id: u64,
}

pub(super) fn ordered(subscribers: &[Arc<Subscriber>]) -> Vec<Arc<Subscriber>> {
    let mut list = subscribers.to_vec();
    list.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    list
}

impl Subscriptions {
    pub(super) fn routes(&self) -> Routes {
        let all = ordered(&self.all);
        let by_type = self
            .by_type
            .iter()
            .map(|(event_type, subscribers)| {
                let mut list = all.clone();
                list.extend(ordered(subscribers));
                (Arc::clone(event_type), Handlers::from(list))
            })
            .collect();
        Routes {
            by_type,
            all: Handlers::from(all),
            hooks: self.hooks.clone(),
        }
    }

    pub(super) fn find(&self, id: SubscriptionId) -> Option<Arc<Subscriber>> {
        self.all
            .iter()
            .chain(self.by_type.values().flatten())
            .find(|s| s.id == id)
            .cloned()
    }
}
