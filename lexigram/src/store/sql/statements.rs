//! The statements every SQL backend runs the same way, written once in PostgreSQL's `$n`
//! placeholder style and spelled for each dialect by [`Spelling`].

use super::COLUMNS;

/// The tables of one store, as statements name them (qualified by a schema where the
/// dialect has one). Names are validated identifiers, so they are spliced in unquoted.
#[derive(Debug)]
pub(crate) struct Tables {
    /// `<prefix>events`: one row per event.
    pub(crate) events: String,
    /// `<prefix>streams`: one row per stream, holding its version.
    pub(crate) streams: String,
    /// `<prefix>snapshots`: aggregate states at a version.
    pub(crate) snapshots: String,
}

impl Tables {
    /// The tables named `<qualifier><prefix><table>` (`qualifier` is empty or `schema.`).
    pub(crate) fn new(qualifier: &str, prefix: &str) -> Self {
        Self {
            events: format!("{qualifier}{prefix}events"),
            streams: format!("{qualifier}{prefix}streams"),
            snapshots: format!("{qualifier}{prefix}snapshots"),
        }
    }
}

/// What a dialect changes in the shared statements.
#[derive(Debug)]
pub(crate) struct Spelling {
    /// The character of a numbered parameter: `$` (`$1`, PostgreSQL) or `?` (`?1`, SQLite).
    pub(crate) placeholder: char,
    /// A condition every read of the global log adds, when committed rows may still be
    /// missing below the newest one (PostgreSQL's settled rows); `None` when they cannot.
    pub(crate) settled: Option<&'static str>,
    /// The statement that gives the highest position a reader can continue after.
    pub(crate) last_position: String,
    /// The statement that says what holds readers back (see
    /// [`EventStore::held_back`](crate::store::EventStore::held_back)); `None` where nothing
    /// can.
    pub(crate) held_back: Option<String>,
}

impl Spelling {
    /// `sql` (written with `$n` parameters) with this dialect's placeholders.
    pub(crate) fn spell(&self, sql: String) -> String {
        if self.placeholder == '$' {
            return sql;
        }
        let mut spelled = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
            spelled.push(if numbered { self.placeholder } else { c });
        }
        spelled
    }

    /// ` AND <settled>`, or nothing.
    fn and_settled(&self) -> String {
        self.settled
            .map(|settled| format!(" AND {settled}"))
            .unwrap_or_default()
    }
}

/// Every statement of one store: those the core runs, built here for one table prefix (and
/// schema) and spelling, and the backend's own (`B`).
#[derive(Debug)]
pub(crate) struct StoreSql<B> {
    /// The table prefix.
    pub(crate) prefix: String,
    pub(crate) events: EventSql,
    pub(crate) snapshots: SnapshotSql,
    /// The statements only this backend runs.
    pub(crate) own: B,
}

impl<B> StoreSql<B> {
    /// The shared statements on `tables` (named with `prefix`), spelled for one dialect,
    /// beside the backend's `own`.
    pub(crate) fn new(prefix: &str, tables: &Tables, spelling: &Spelling, own: B) -> Self {
        Self {
            prefix: prefix.to_owned(),
            events: EventSql::new(tables, spelling),
            snapshots: SnapshotSql::new(tables, spelling),
            own,
        }
    }
}

/// The statements on the events and streams tables.
#[derive(Debug)]
pub(crate) struct EventSql {
    /// `$1` stream, `$2`..`$3` versions (inclusive), `$4` limit.
    pub(crate) read: String,
    /// `$1` after position, `$2` limit.
    pub(crate) read_all: String,
    /// `$1` after position, `$2` limit, `$3` partitions, `$4` partition index.
    pub(crate) read_partition: String,
    /// `$1` event type, `$2` after position, `$3` limit.
    pub(crate) read_by_type: String,
    /// `$1` event type, `$2` limit, `$3` offset.
    pub(crate) find_by_type: String,
    /// `$1` stream.
    pub(crate) version: String,
    /// `$1` stream: version, created, updated, count, first and last position.
    pub(crate) info: String,
    /// `$1` after stream id (or null), `$2` limit.
    pub(crate) list: String,
    pub(crate) count_all: String,
    /// `$1` stream.
    pub(crate) count_stream: String,
    pub(crate) last_position: String,
    pub(crate) held_back: Option<String>,
    /// `$1` stream.
    pub(crate) delete_events: String,
    /// `$1` stream.
    pub(crate) delete_stream: String,
    /// `$1` stream, `$2` up to version.
    pub(crate) purge: String,
    /// `$1` event id: its stream and version.
    pub(crate) find_id: String,
    /// `$1` stream, versions above `$2` up to `$3`: the slots a retry is compared with.
    pub(crate) slots: String,
    /// A filtered page and the high water of the same snapshot (built per filter).
    pub(crate) read_page: super::page::PageSql,
}

impl EventSql {
    /// The statements on `tables`, spelled for one dialect.
    pub(crate) fn new(tables: &Tables, spelling: &Spelling) -> Self {
        let Tables {
            events, streams, ..
        } = tables;
        let select = format!("SELECT {COLUMNS} FROM {events}");
        let settled = spelling.and_settled();
        let spell = |sql: String| spelling.spell(sql);
        Self {
            read: spell(format!(
                "{select} WHERE stream_id = $1 AND stream_version >= $2 AND stream_version <= $3 ORDER BY stream_version LIMIT $4"
            )),
            read_all: spell(format!(
                "{select} WHERE global_position > $1{settled} ORDER BY global_position LIMIT $2"
            )),
            read_partition: spell(format!(
                "{select} WHERE global_position > $1{settled} AND stream_hash % $3 = $4 ORDER BY global_position LIMIT $2"
            )),
            read_by_type: spell(format!(
                "{select} WHERE event_type = $1 AND global_position > $2{settled} ORDER BY global_position LIMIT $3"
            )),
            find_by_type: spell(format!(
                "{select} WHERE event_type = $1{settled} ORDER BY global_position LIMIT $2 OFFSET $3"
            )),
            version: spell(format!(
                "SELECT version FROM {streams} WHERE stream_id = $1"
            )),
            info: spell(format!(
                "SELECT s.version, s.created_at, s.updated_at, COUNT(e.global_position), MIN(e.global_position), MAX(e.global_position)
                 FROM {streams} s LEFT JOIN {events} e ON e.stream_id = s.stream_id
                 WHERE s.stream_id = $1 GROUP BY s.stream_id, s.version, s.created_at, s.updated_at"
            )),
            list: spell(format!(
                "SELECT stream_id FROM {streams} WHERE CAST($1 AS text) IS NULL OR stream_id > $1 ORDER BY stream_id LIMIT $2"
            )),
            count_all: format!("SELECT COUNT(*) FROM {events}"),
            count_stream: spell(format!(
                "SELECT COUNT(*) FROM {events} WHERE stream_id = $1"
            )),
            last_position: spelling.last_position.clone(),
            held_back: spelling.held_back.clone(),
            delete_events: spell(format!("DELETE FROM {events} WHERE stream_id = $1")),
            delete_stream: spell(format!("DELETE FROM {streams} WHERE stream_id = $1")),
            purge: spell(format!(
                "DELETE FROM {events} WHERE stream_id = $1 AND stream_version <= $2"
            )),
            find_id: spell(format!(
                "SELECT stream_id, stream_version FROM {events} WHERE event_id = $1"
            )),
            read_page: super::page::PageSql::new(events, spelling),
            slots: spell(format!(
                "SELECT stream_version, event_id, global_position, recorded_at FROM {events}
                 WHERE stream_id = $1 AND stream_version > $2 AND stream_version <= $3"
            )),
        }
    }
}

/// The statements on the snapshots table.
#[derive(Debug)]
pub(crate) struct SnapshotSql {
    /// `$1`..`$6` in [`SNAPSHOT_COLUMNS`] order; replaces the snapshot at that version.
    pub(crate) save: String,
    /// `$1` aggregate.
    pub(crate) latest: String,
    /// `$1` aggregate, `$2` version.
    pub(crate) by_version: String,
    /// `$1` aggregate, `$2` how many to keep.
    pub(crate) delete_old: String,
    /// `$1` aggregate.
    pub(crate) delete_all: String,
}

/// The columns of a snapshot row, in the order the store reads and writes them.
const SNAPSHOT_COLUMNS: &str =
    "aggregate_id, version, aggregate_type, state, schema_version, created_at";

impl SnapshotSql {
    /// The statements on `tables`, spelled for one dialect.
    pub(crate) fn new(tables: &Tables, spelling: &Spelling) -> Self {
        let snapshots = &tables.snapshots;
        let columns = SNAPSHOT_COLUMNS;
        let spell = |sql: String| spelling.spell(sql);
        Self {
            save: spell(format!(
                "INSERT INTO {snapshots} ({columns}) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (aggregate_id, version) DO UPDATE SET aggregate_type = excluded.aggregate_type,
                 state = excluded.state, schema_version = excluded.schema_version, created_at = excluded.created_at"
            )),
            latest: spell(format!(
                "SELECT {columns} FROM {snapshots} WHERE aggregate_id = $1 ORDER BY version DESC LIMIT 1"
            )),
            by_version: spell(format!(
                "SELECT {columns} FROM {snapshots} WHERE aggregate_id = $1 AND version = $2"
            )),
            delete_old: spell(format!(
                "DELETE FROM {snapshots} WHERE aggregate_id = $1 AND version NOT IN
                 (SELECT version FROM {snapshots} WHERE aggregate_id = $1 ORDER BY version DESC LIMIT $2)"
            )),
            delete_all: spell(format!("DELETE FROM {snapshots} WHERE aggregate_id = $1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_spelled_per_dialect_and_nothing_else_changes() {
        let sqlite = Spelling {
            placeholder: '?',
            settled: None,
            last_position: String::new(),
            held_back: None,
        };
        assert_eq!(
            sqlite.spell("a = $1 AND b = $12 AND c = '$x'".into()),
            "a = ?1 AND b = ?12 AND c = '$x'"
        );
        let postgres = Spelling {
            placeholder: '$',
            settled: Some("ok"),
            last_position: String::new(),
            held_back: None,
        };
        let sql = EventSql::new(&Tables::new("s.", "p_"), &postgres);
        assert!(
            sql.read_all
                .contains("FROM s.p_events WHERE global_position > $1 AND ok ")
        );
        let sql = EventSql::new(&Tables::new("", "p_"), &sqlite);
        assert!(sql.read_all.contains("global_position > ?1 ORDER BY"));
    }
}
