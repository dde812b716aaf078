//! Registrations made with the macros in this crate are discovered by lexigram at run time.

use lexigram::prelude::*;
use lexigram::{InMemoryEventStore, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(name = "shop.OrderPlaced", version = 3, kind = integration)]
struct OrderPlaced {
    total: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    total: u64,
}

#[aggregate(name = "shop.Order")]
impl Order {
    #[apply]
    fn placed(&mut self, event: &OrderPlaced) {
        self.total = event.total;
    }
}

#[test]
fn events_declared_in_another_crate_are_discovered() -> Result<(), lexigram::Error> {
    let schema = lexigram::registration::discovered_schema()?;
    let placed = schema.event_type("shop.OrderPlaced").copied();
    assert_eq!(
        placed.map(|e| (e.version, e.kind)),
        Some((3, lexigram::message::EventKind::Integration))
    );
    assert!(placed.is_some_and(|e| e.rust_type.ends_with("OrderPlaced")));
    Ok(())
}

#[test]
fn aggregates_are_registered_with_their_location() {
    let order = lexigram::registration::aggregates().find(|a| a.name == "shop.Order");
    assert!(
        order.is_some_and(|a| a.location.file.ends_with("discovery.rs") && a.location.line > 0)
    );
}

#[tokio::test]
async fn a_macro_aggregate_round_trips_through_the_repository() -> Result<(), lexigram::Error> {
    let orders = Repository::<Order>::new(InMemoryEventStore::new());
    let mut order = orders.load("o-1").await?;
    order.record(OrderPlaced { total: 42 })?;
    orders.save(&mut order).await?;
    assert_eq!(orders.load_or_error("o-1").await?.state().total, 42);
    Ok(())
}
