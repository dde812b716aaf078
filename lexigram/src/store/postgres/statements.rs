//! Every PostgreSQL statement of one schema and table prefix (validated identifiers, spliced
//! in once), with the names and lock keys they use.

use super::PostgresConfig;
use crate::store::sql::{Spelling, StoreSql, Tables};
use crate::store::stream_hash;

/// The first key of every advisory lock lexigram takes (`lxg1`); the second names the tables.
pub(crate) const LOCK_CLASS: i32 = 0x6c78_6731;

/// Rows every transaction below this line has finished writing: see the
/// [module docs](super#global-order).
const SETTLED: &str = "xact_id < pg_snapshot_xmin(pg_current_snapshot())";

/// The PostgreSQL statements of one schema and prefix (beside the shared ones, which read
/// past settled rows only): the call of the server-side append, with the names and lock key.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) schema: String,
    /// The LISTEN/NOTIFY channel: `<schema>_<prefix>events`.
    pub(crate) channel: String,
    /// The second key of this store's advisory locks (a hash of `schema.prefix`).
    pub(crate) lock_key: i32,
    /// `$1` stream, `$2` its hash, `$3` expected version (-1: any), `$4`..`$8` the events'
    /// ids, types, versions, payloads and metadata, `$9` strict ordering.
    pub(crate) append: String,
}

impl Statements {
    /// Every statement of the store `config` describes.
    pub(crate) fn all(config: &PostgresConfig) -> StoreSql<Self> {
        let (s, p) = (&config.schema, &config.table_prefix);
        let tables = Tables::new(&format!("{s}."), p);
        let spelling = Spelling {
            placeholder: '$',
            settled: Some(SETTLED),
            last_position: format!(
                "SELECT COALESCE(MAX(global_position), 0) FROM {events} WHERE {SETTLED}",
                events = tables.events
            ),
            // Committed events readers cannot see yet, and the oldest open transaction with
            // an id on the server (any database: ids are cluster-wide), which holds them back.
            held_back: Some(format!(
                "SELECT (SELECT COALESCE(MAX(global_position), 0) FROM {events})
                      - (SELECT COALESCE(MAX(global_position), 0) FROM {events} WHERE {SETTLED}),
                        a.pid, a.datname, a.application_name, a.state,
                        CAST(EXTRACT(EPOCH FROM (now() - a.xact_start)) * 1000000 AS bigint)
                 FROM (SELECT 1) one
                 LEFT JOIN LATERAL (
                     SELECT pid, datname, application_name, state, xact_start FROM pg_stat_activity
                     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
                     ORDER BY xact_start LIMIT 1
                 ) a ON true",
                events = tables.events
            )),
        };
        let own = Self {
            schema: s.clone(),
            channel: config.channel(),
            lock_key: i32::from_ne_bytes(stream_hash(&format!("{s}.{p}")).to_ne_bytes()),
            append: format!(
                "SELECT o_status, o_version, o_positions, o_recorded_at FROM {s}.{p}append($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
        };
        StoreSql::new(p, &tables, &spelling, own)
    }
}
