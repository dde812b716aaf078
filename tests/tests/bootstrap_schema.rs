//! The events module's schema: events an aggregate applies must be registered, and upcasters
//! given to `EventsModule::schema` apply to what repositories load. (Its own binary.)

use lexigram::error::Error;
use lexigram::message::{MessageMetadata, NewEvent, Payload};
use lexigram::module::Stores;
use lexigram::prelude::*;
use lexigram::store::EventStore;
use lexigram::{App, EventsModule, ExpectedVersion};
use serde::{Deserialize, Serialize};

/// Implemented by hand: not registered by a derive.
#[derive(Debug, Serialize, Deserialize)]
struct Renamed {
    first: String,
    last: String,
}
impl Event for Renamed {
    const NAME: &'static str = "user.Renamed";
    const VERSION: u32 = 2;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct User {
    name: String,
}

#[aggregate]
impl User {
    #[apply]
    fn renamed(&mut self, e: &Renamed) {
        self.name = format!("{} {}", e.first, e.last);
    }
}

#[tokio::test]
async fn an_applied_event_that_is_not_registered_is_reported() {
    let err = lexigram_tests::build_error(App::builder().module(EventsModule::stub())).await;
    assert!(
        err.contains(
            "aggregate `User` applies event `user.Renamed`, which is not a registered event type"
        ),
        "{err}"
    );
    assert!(err.contains(&format!("--> {}:29", file!())), "{err}");
}

#[tokio::test]
async fn schema_setup_registers_events_and_upcasters_that_loads_use() -> Result<(), lexigram::Error>
{
    let module = EventsModule::stub().schema(|s| {
        s.register::<Renamed>()?
            .upcaster("user.Renamed", 1, 2, |v| {
                let name = v["name"].as_str().unwrap_or_default().to_owned();
                let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
                Ok(serde_json::json!({ "first": first, "last": last }))
            })?;
        Ok(())
    });
    let app = App::builder().module(module).build().await?;
    let store = app.get::<dyn EventStore>().ok_or(Error::Config {
        problems: vec!["no store".into()],
    })?;
    let v1 = NewEvent::new(
        "user.Renamed",
        1,
        Payload::from_json_text(r#"{"name":"Ada Lovelace"}"#),
        MessageMetadata::new(),
    );
    store
        .append("u-1", vec![v1], ExpectedVersion::NoStream)
        .await?;
    let users = app
        .get::<Stores>()
        .map(|s| s.repository::<User>())
        .ok_or(Error::Config {
            problems: vec!["no stores".into()],
        })?;
    assert_eq!(
        users.load_or_error("u-1").await?.state().name,
        "Ada Lovelace"
    );
    app.shutdown().await
}

#[tokio::test]
async fn a_bad_schema_setup_is_reported() {
    let module = EventsModule::stub().schema(|s| {
        s.register::<Renamed>()?
            .upcaster("user.Renamed", 2, 1, Ok)?;
        Ok(())
    });
    let err = lexigram_tests::build_error(App::builder().module(module)).await;
    assert!(
        err.contains("invalid schema setup: upcaster for `user.Renamed` goes from v2 to v1"),
        "{err}"
    );
}
