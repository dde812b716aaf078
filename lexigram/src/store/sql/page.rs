//! [`EventStore::read_page`](crate::store::EventStore::read_page) over one dialect: the
//! filters pushed into SQL, and the page and the high water read by one statement, so both
//! come from the same snapshot.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{COLUMNS, Dialect, EventLog, EventRow, Interner, Spelling, limit_i64, to_i64, to_u64};
use crate::error::Result;
use crate::store::{Page, PartitionSet, ReadFilter};

/// The parts of the `read_page` statement that do not depend on the filter.
#[derive(Debug)]
pub(crate) struct PageSql {
    /// `WITH hw(p) AS (...) SELECT e.<columns>, hw.p FROM hw LEFT JOIN (SELECT <columns>
    /// FROM <events> WHERE global_position > $1 AND global_position <= (SELECT p FROM hw)
    /// <settled>` — the filters and the end follow.
    head: String,
    /// The dialect's parameter character.
    placeholder: char,
}

/// The index of the high water column, after the [`COLUMNS`].
const HIGH_WATER: usize = 9;

impl PageSql {
    /// The statement's fixed part for the events table `events`.
    pub(crate) fn new(events: &str, spelling: &Spelling) -> Self {
        let outer = COLUMNS
            .split(", ")
            .map(|column| format!("e.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        let settled = spelling
            .settled
            .map(|settled| format!(" AND {settled}"))
            .unwrap_or_default();
        // The high water is the backend's `last_position`: on PostgreSQL the highest settled
        // position (nothing at or below it can commit later, docs/postgres-ordering.md); on
        // SQLite the highest position handed out (writers are serialised).
        let head = spelling.spell(format!(
            "WITH hw(p) AS ({last}) SELECT {outer}, hw.p FROM hw LEFT JOIN (SELECT {COLUMNS} FROM {events} \
             WHERE global_position > $1 AND global_position <= (SELECT p FROM hw){settled}",
            last = spelling.last_position
        ));
        Self {
            head,
            placeholder: spelling.placeholder,
        }
    }

    /// The whole statement for `filter`: `$1` after, `$2` limit, `$3..` the event types.
    /// Partition members are validated numbers, spliced in as literals.
    fn statement(&self, filter: &ReadFilter) -> String {
        let mut sql = self.head.clone();
        if let Some(types) = filter.types() {
            if types.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let params = (0..types.len())
                    .map(|i| format!("{}{}", self.placeholder, i + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                sql.push_str(&format!(" AND event_type IN ({params})"));
            }
        }
        if let Some(set) = filter.partition_set() {
            sql.push_str(&partition_condition(set));
        }
        sql.push_str(&format!(
            " ORDER BY global_position LIMIT {}2) e ON 1 = 1 ORDER BY e.global_position",
            self.placeholder
        ));
        sql
    }
}

/// ` AND stream_hash % <total> IN (<members>)`.
fn partition_condition(set: &PartitionSet) -> String {
    let members = set
        .members()
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(" AND stream_hash % {} IN ({members})", set.total())
}

impl<D: Dialect> EventLog<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// Up to `limit` events after `after` that pass `filter`, and the high water of the
    /// same snapshot: `scanned_to` is the last position returned when the page is full, else
    /// the high water (never below `after`).
    pub(crate) async fn read_page(
        &self,
        after: u64,
        limit: usize,
        filter: &ReadFilter,
    ) -> Result<Page> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Page::new(Vec::new(), after));
        }
        let sql = self.db.events().read_page.statement(filter);
        let mut query = sqlx::query(&sql).bind(to_i64(after)).bind(limit_i64(limit));
        for event_type in filter.types().unwrap_or_default() {
            query = query.bind(&**event_type);
        }
        let what = "reading a page of the global log";
        let rows = query
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        let mut names = Interner::default();
        let mut high_water = 0;
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in &rows {
            let hw: i64 = row
                .try_get(HIGH_WATER)
                .map_err(|e| D::unavailable(what, e))?;
            high_water = to_u64(hw);
            // The one row of an empty page carries the high water and no event.
            let position: Option<i64> = row.try_get(0).map_err(|e| D::unavailable(what, e))?;
            if position.is_some() {
                envelopes.push(D::event_row(row, &mut names).map(EventRow::into_envelope)?);
            }
        }
        let scanned_to = match envelopes.last() {
            Some(last) if envelopes.len() >= limit => last.global_position,
            _ => high_water,
        };
        Ok(Page::new(self.upcast(envelopes), scanned_to.max(after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::Tables;

    #[test]
    fn filters_become_parameters_and_literal_partitions() -> Result<()> {
        let sqlite = Spelling {
            placeholder: '?',
            settled: None,
            last_position: "SELECT 7".into(),
            held_back: None,
        };
        let page = PageSql::new(&Tables::new("", "p_").events, &sqlite);
        let filter = ReadFilter::all()
            .event_types(["a", "b"])
            .partitions(PartitionSet::new(4, [3, 1])?);
        let sql = page.statement(&filter);
        assert!(sql.starts_with("WITH hw(p) AS (SELECT 7) SELECT e.global_position"));
        assert!(sql.contains("global_position > ?1 AND"), "{sql}");
        assert!(
            sql.contains("AND event_type IN (?3, ?4) AND stream_hash % 4 IN (1, 3) ORDER BY global_position LIMIT ?2)"),
            "{sql}"
        );
        assert!(
            page.statement(&ReadFilter::all().event_types(Vec::<String>::new()))
                .contains("AND 1 = 0")
        );
        Ok(())
    }
}
