//! Every SQLite statement, with the table prefix spliced in once (it is a validated
//! identifier).

use crate::store::sql::{Spelling, StoreSql, Tables};

/// The two statements the SQLite append runs, beside the shared ones (spelled with `?n`
/// parameters).
#[derive(Debug)]
pub(crate) struct Statements {
    /// `?1` stream, `?2` version, `?3` time: creates the stream's row or moves its version.
    pub(crate) upsert_stream: String,
    /// `?1`..`?9`: one event.
    pub(crate) insert: String,
}

impl Statements {
    /// Every statement of the store with table prefix `p`.
    pub(crate) fn all(p: &str) -> StoreSql<Self> {
        let tables = Tables::new("", p);
        let events = &tables.events;
        let spelling = Spelling {
            held_back: None,
            placeholder: '?',
            // Writers are serialised, so positions are handed out in commit order.
            settled: None,
            // `AUTOINCREMENT` keeps the highest position ever handed out, even once deleted.
            last_position: format!(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{events}'), 0)"
            ),
        };
        let own = Self {
            upsert_stream: format!(
                "INSERT INTO {streams} (stream_id, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                streams = tables.streams
            ),
            insert: format!(
                "INSERT INTO {events} (stream_id, stream_version, stream_hash, event_id, event_type, event_version, payload, metadata, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
        };
        StoreSql::new(p, &tables, &spelling, own)
    }
}
