//! Exactly-once projections run by [`EventsModule`](super::EventsModule): a subscription and
//! what writes its model (a `TransactionalReactor` for one SQL backend, or an in-memory
//! model), made a running subscription once the module has opened the store (the sink needs
//! the store's own database, or the memory checkpoint store).

use std::fmt;

use crate::config::ConcreteStore;
use crate::error::Result;
use crate::subscription::{ExactlyOnce, Subscription, SubscriptionBuilder};

/// Makes the sink of a projection over the opened store; `None` for another backend.
type MakeSink = Box<dyn Fn(&ConcreteStore) -> Option<ExactlyOnce> + Send + Sync>;

/// A projection declared on the module, waiting for its store.
pub(crate) struct DeclaredProjection {
    builder: SubscriptionBuilder,
    backend: &'static str,
    sink: MakeSink,
}

impl fmt::Debug for DeclaredProjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeclaredProjection")
            .field("name", self.builder.name())
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl DeclaredProjection {
    /// A projection writing to the events' SQLite database.
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(
        builder: SubscriptionBuilder,
        reactor: impl crate::subscription::TransactionalReactor<sqlx::Sqlite>,
    ) -> Self {
        let reactor = std::sync::Arc::new(reactor);
        Self {
            builder,
            backend: "sqlite",
            sink: Box::new(move |store| match store {
                ConcreteStore::Sqlite(events) => {
                    Some(ExactlyOnce::sqlite(events, std::sync::Arc::clone(&reactor)))
                }
                _ => None,
            }),
        }
    }

    /// A projection writing to the events' PostgreSQL database.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(
        builder: SubscriptionBuilder,
        reactor: impl crate::subscription::TransactionalReactor<sqlx::Postgres>,
    ) -> Self {
        let reactor = std::sync::Arc::new(reactor);
        Self {
            builder,
            backend: "postgres",
            sink: Box::new(move |store| match store {
                ConcreteStore::Postgres(events) => Some(ExactlyOnce::postgres(
                    events,
                    std::sync::Arc::clone(&reactor),
                )),
                _ => None,
            }),
        }
    }

    /// A projection kept in memory, over the memory store.
    pub(crate) fn memory<P: crate::subscription::MemoryProjection>(
        builder: SubscriptionBuilder,
        projection: crate::subscription::InMemoryProjection<P>,
    ) -> Self {
        Self {
            builder,
            backend: "memory",
            sink: Box::new(move |store| match store {
                ConcreteStore::Memory(checkpoints) => {
                    Some(ExactlyOnce::memory(checkpoints, &projection))
                }
                #[allow(unreachable_patterns)]
                _ => None,
            }),
        }
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        self.builder.name()
    }

    /// The backend it writes to.
    pub(crate) fn backend(&self) -> &'static str {
        self.backend
    }

    /// The subscription over `store`, with `configure` applied (the `[reactions]` settings);
    /// `None` when the store is of another backend.
    pub(crate) fn subscription(
        &self,
        store: &ConcreteStore,
        configure: impl Fn(&str, SubscriptionBuilder) -> SubscriptionBuilder,
    ) -> Option<Result<Subscription>> {
        let sink = (self.sink)(store)?;
        let builder = configure(self.name(), self.builder.clone());
        Some(builder.exactly_once(sink).build())
    }
}
