//! Two event types or two aggregates under one stored name are reported at `build()`, with
//! both places. (Its own binary: the clashing registrations would break other tests.)

use lexigram::prelude::*;
use lexigram::{App, EventsModule};
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(name = "shop.OrderPlaced")]
    pub(crate) struct OrderPlaced;

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub(crate) struct Order;

    #[aggregate(name = "Order")]
    impl Order {
        #[apply]
        fn placed(&mut self, _e: &OrderPlaced) {}
    }
}

mod v2 {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(name = "shop.OrderPlaced", version = 2)]
    pub(crate) struct OrderPlaced;

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub(crate) struct Order;

    #[aggregate(name = "Order")]
    impl Order {
        #[apply]
        fn placed(&mut self, _e: &OrderPlaced) {}
    }
}

#[tokio::test]
async fn clashing_names_are_reported_with_both_declarations() {
    let err = lexigram_tests::build_error(App::builder().module(EventsModule::stub())).await;
    let file = file!();
    assert!(
        err.starts_with("lexigram bootstrap failed with 2 problems"),
        "{err}"
    );
    assert!(
        err.contains("aggregate name `Order` is used by 2 types"),
        "{err}"
    );
    assert!(
        err.contains("bootstrap_names::v1::Order") && err.contains("bootstrap_names::v2::Order"),
        "{err}"
    );
    assert!(
        err.contains("event name `shop.OrderPlaced` is registered twice"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> {file}:13")) && err.contains(&format!("--> {file}:30")),
        "{err}"
    );
}
