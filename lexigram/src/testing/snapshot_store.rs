//! The `SnapshotStore` behavioural suite.

use std::future::Future;

use serde_json::json;

use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotStore};

/// Runs every case of the snapshot store contract, each against a fresh store from `make`
/// (which must keep at least 3 snapshots per aggregate).
pub async fn snapshot_store_suite<S, F, Fut>(make: F) -> Result<()>
where
    S: SnapshotStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S>>,
{
    latest_and_by_version(&make().await?).await?;
    delete_old_and_all(&make().await?).await?;
    closed_store_refuses(&make().await?).await?;
    Ok(())
}

fn snapshot(id: &str, version: u64) -> Snapshot {
    Snapshot::new(
        id.into(),
        "Account",
        version,
        json!({ "balance": version }),
        1,
    )
}

async fn latest_and_by_version(store: &impl SnapshotStore) -> Result<()> {
    const CASE: &str = "latest_and_by_version";
    assert!(
        store.latest("a").await?.is_none(),
        "[{CASE}] no snapshot yet"
    );
    store.save(snapshot("a", 20)).await?;
    store.save(snapshot("a", 10)).await?;
    store.save(snapshot("b", 99)).await?;
    let latest = store.latest("a").await?;
    assert_eq!(
        latest.as_ref().map(|s| s.version),
        Some(20),
        "[{CASE}] latest is the highest version, not the last saved"
    );
    if let Some(latest) = latest {
        assert_eq!(
            latest.state,
            json!({ "balance": 20 }),
            "[{CASE}] state kept"
        );
        assert_eq!(
            (&*latest.aggregate_type, latest.schema_version),
            ("Account", 1),
            "[{CASE}] type and schema version kept"
        );
        assert_eq!(latest.aggregate_id.as_str(), "a", "[{CASE}] id kept");
    }
    assert_eq!(
        store.by_version("a", 10).await?.map(|s| s.version),
        Some(10),
        "[{CASE}] by_version"
    );
    assert!(
        store.by_version("a", 15).await?.is_none(),
        "[{CASE}] by_version of a missing version"
    );
    let mut replaced = snapshot("a", 20);
    replaced.state = json!({ "balance": -1 });
    store.save(replaced).await?;
    let state = store.latest("a").await?.map(|s| s.state);
    assert_eq!(
        state,
        Some(json!({ "balance": -1 })),
        "[{CASE}] same version replaces"
    );
    Ok(())
}

async fn delete_old_and_all(store: &impl SnapshotStore) -> Result<()> {
    const CASE: &str = "delete_old_and_all";
    for version in [1, 2, 3] {
        store.save(snapshot("a", version)).await?;
    }
    store.save(snapshot("b", 1)).await?;
    assert_eq!(
        store.delete_old("a", 1).await?,
        2,
        "[{CASE}] delete_old returns how many went"
    );
    assert_eq!(
        store.latest("a").await?.map(|s| s.version),
        Some(3),
        "[{CASE}] the newest stays"
    );
    assert!(
        store.by_version("a", 2).await?.is_none(),
        "[{CASE}] older ones went"
    );
    assert_eq!(
        store.delete_old("a", 5).await?,
        0,
        "[{CASE}] nothing over the limit"
    );
    assert_eq!(store.delete_all("a").await?, 1, "[{CASE}] delete_all");
    assert!(store.latest("a").await?.is_none(), "[{CASE}] none left");
    assert!(
        store.latest("b").await?.is_some(),
        "[{CASE}] other aggregates untouched"
    );
    Ok(())
}

async fn closed_store_refuses(store: &impl SnapshotStore) -> Result<()> {
    const CASE: &str = "closed_store_refuses";
    store.close().await?;
    let r = store.save(snapshot("a", 1)).await;
    assert!(
        matches!(r, Err(Error::StoreClosed { .. })),
        "[{CASE}] save after close: {r:?}"
    );
    Ok(())
}
