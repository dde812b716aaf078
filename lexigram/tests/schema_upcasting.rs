//! Schema evolution seen from the aggregate: events stored at v1 load as v3.

use std::sync::Arc;

use lexigram::aggregate::Route;
use lexigram::error::{EventLoadError, EventLoadErrorKind, SchemaError};
use lexigram::message::{MessageMetadata, NewEvent, Payload};
use lexigram::schema::SchemaRegistry;
use lexigram::store::{EventStore, ExpectedVersion, VersionRange};
use lexigram::{Aggregate, Apply, Event, EventEnvelope, InMemoryEventStore, Repository, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// v1: `{"name": "Ada Lovelace"}`; v2: `{"first", "last"}`; v3: adds `"title"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Renamed {
    first: String,
    last: String,
    title: Option<String>,
}
impl Event for Renamed {
    const NAME: &'static str = "user.Renamed";
    const VERSION: u32 = 3;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct User {
    names: Vec<String>,
}
impl Aggregate for User {
    const TYPE: &'static str = "User";
    fn apply_stored(&mut self, event: &EventEnvelope) -> Result<(), EventLoadError> {
        Route::new(self, event).on::<Renamed>().finish()
    }
}
impl Apply<Renamed> for User {
    fn apply(&mut self, e: &Renamed) {
        self.names.push(format!(
            "{}|{}|{}",
            e.first,
            e.last,
            e.title.as_deref().unwrap_or("-")
        ));
    }
}

fn schema() -> Result<SchemaRegistry, SchemaError> {
    let mut schema = SchemaRegistry::new();
    schema
        .register::<Renamed>()?
        .upcaster("user.Renamed", 1, 2, |v| {
            let name = v["name"].as_str().ok_or("v1 payload has no `name`")?;
            let (first, last) = name.split_once(' ').unwrap_or((name, ""));
            Ok(json!({ "first": first, "last": last }))
        })?
        .upcaster("user.Renamed", 2, 3, |mut v| {
            v["title"] = serde_json::Value::Null;
            Ok(v)
        })?;
    Ok(schema)
}

fn v1(name: &str) -> NewEvent {
    NewEvent::new(
        "user.Renamed",
        1,
        Payload::from_json_text(json!({ "name": name }).to_string()),
        MessageMetadata::new(),
    )
}

/// An event stored at the current version (v3).
fn grace(title: Option<&str>) -> Result<NewEvent> {
    NewEvent::from_event(
        &Renamed {
            first: "Grace".into(),
            last: "Hopper".into(),
            title: title.map(str::to_owned),
        },
        MessageMetadata::new(),
    )
}

#[tokio::test]
async fn an_aggregate_loads_v1_events_through_the_chain() -> Result<()> {
    let store = InMemoryEventStore::new().with_schema(Arc::new(schema()?));
    let v3 = grace(Some("RAdm"))?;
    store
        .append(
            "u-1",
            vec![v1("Ada Lovelace"), v3],
            ExpectedVersion::NoStream,
        )
        .await?;
    let user = Repository::<User>::new(store).load_or_error("u-1").await?;
    assert_eq!(user.state().names, ["Ada|Lovelace|-", "Grace|Hopper|RAdm"]);
    Ok(())
}

#[tokio::test]
async fn without_the_schema_old_events_fail_with_a_clear_error() -> Result<()> {
    let store = InMemoryEventStore::new();
    store
        .append("u-1", vec![v1("Ada Lovelace")], ExpectedVersion::NoStream)
        .await?;
    let err = Repository::<User>::new(store)
        .load("u-1")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("`user.Renamed` at version 1 of stream `u-1`"),
        "{err}"
    );
    assert!(
        err.contains("register upcasters for every step from v1 to v3"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_gap_in_the_chain_names_the_missing_step() -> Result<()> {
    let mut schema = SchemaRegistry::new();
    schema
        .register::<Renamed>()?
        .upcaster("user.Renamed", 2, 3, Ok)?;
    let store = InMemoryEventStore::new();
    store
        .append("u-1", vec![v1("Ada Lovelace")], ExpectedVersion::NoStream)
        .await?;
    let stored = store.read("u-1", VersionRange::all()).await?;
    let err = schema.decode::<Renamed>(&stored[0]).err();
    assert!(
        matches!(
            &err,
            Some(EventLoadError {
                kind: EventLoadErrorKind::Upcast(SchemaError::NoMigrationPath { missing: 1, .. }),
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("no migration path from v1 to v3 for `user.Renamed`"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_upcaster_leaves_the_event_readable_and_reports_precisely() -> Result<()> {
    let store = InMemoryEventStore::new().with_schema(Arc::new(schema()?));
    let broken = NewEvent::new(
        "user.Renamed",
        1,
        Payload::from_json_text(r#"{"nom":"x"}"#),
        MessageMetadata::new(),
    );
    store
        .append(
            "u-1",
            vec![broken, v1("Ada Lovelace")],
            ExpectedVersion::NoStream,
        )
        .await?;
    let stored = store.read("u-1", VersionRange::all()).await?;
    assert_eq!(stored.len(), 2, "one bad event does not hide the rest");
    assert_eq!((stored[0].event_version, stored[1].event_version), (1, 3));
    let err = schema()?
        .decode::<Renamed>(&stored[0])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("version 1 of stream `u-1`") && err.contains("v1 payload has no `name`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn two_types_under_one_name_are_refused() {
    #[derive(Serialize, Deserialize)]
    struct Impostor;
    impl Event for Impostor {
        const NAME: &'static str = "user.Renamed";
        const VERSION: u32 = 1;
    }
    let mut schema = SchemaRegistry::new();
    let err = schema
        .register::<Renamed>()
        .and_then(|s| s.register::<Impostor>())
        .err();
    assert!(matches!(err, Some(SchemaError::DuplicateEventName { .. })));
}

#[tokio::test]
async fn a_subscription_page_upcasts_old_events_and_shares_the_current_ones() -> Result<()> {
    use lexigram::store::ReadFilter;

    let store = InMemoryEventStore::new().with_schema(Arc::new(schema()?));
    let v3 = grace(None)?;
    store
        .append(
            "u-1",
            vec![v1("Ada Lovelace"), v3],
            ExpectedVersion::NoStream,
        )
        .await?;
    let page = store.read_page(0, 10, &ReadFilter::all()).await?;
    let versions: Vec<u32> = page.events.iter().map(|e| e.event_version).collect();
    assert_eq!(
        versions,
        [3, 3],
        "the v1 event is read at the current version"
    );
    let first: Renamed = page.events[0].decode()?;
    assert_eq!(
        (first.first.as_str(), first.last.as_str()),
        ("Ada", "Lovelace")
    );
    let again = store.read_page(0, 10, &ReadFilter::all()).await?;
    assert!(
        Arc::ptr_eq(&page.events[1], &again.events[1]),
        "an event stored at the current version is shared, not copied"
    );
    assert!(
        !Arc::ptr_eq(&page.events[0], &again.events[0]),
        "an upcast event is a copy (the stored one stays as it was written)"
    );
    Ok(())
}
