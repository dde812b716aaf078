//! The event log over one dialect: every [`EventStore`](crate::store::EventStore) operation
//! but the append, written once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::append::{StoredSlot, retry_result};
use super::{Dialect, EventRow, Interner, SqlDb, limit_i64, to_i64, to_u64};
use crate::error::Result;
use crate::message::{EventEnvelope, NewEvent, StreamId};
use crate::schema::SchemaRegistry;
use crate::store::{
    AppendResult, ExpectedVersion, Partition, StreamInfo, VersionRange, check_stream_id,
    not_a_retry, retry_span,
};

/// A statement with its arguments, for dialect `D`.
pub(crate) type Query<'q, D> =
    sqlx::query::Query<'q, <D as Dialect>::Db, <<D as Dialect>::Db as Database>::Arguments<'q>>;

/// The state every SQL event store holds: its database, whether it was closed, and the
/// schema that upcasts what it reads. Clones share all three.
pub(crate) struct EventLog<D: Dialect> {
    pub(crate) db: SqlDb<D>,
    closed: Arc<AtomicBool>,
    schema: Option<Arc<SchemaRegistry>>,
    /// Wakes this process's live readers after each append through the log.
    pub(crate) appended: crate::store::AppendNotifier,
    /// The backend's watcher of other processes' appends, once started.
    pub(crate) watcher: crate::store::Watcher,
}

impl<D: Dialect> Clone for EventLog<D> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            closed: Arc::clone(&self.closed),
            schema: self.schema.clone(),
            appended: self.appended.clone(),
            watcher: self.watcher.clone(),
        }
    }
}

impl<D: Dialect> EventLog<D> {
    /// An open log over `db`, without upcasting.
    pub(crate) fn new(db: SqlDb<D>) -> Self {
        Self {
            db,
            closed: Arc::new(AtomicBool::new(false)),
            schema: None,
            appended: crate::store::AppendNotifier::default(),
            watcher: crate::store::Watcher::default(),
        }
    }

    /// Upcasts with `schema` on every read.
    pub(crate) fn set_schema(&mut self, schema: Arc<SchemaRegistry>) {
        self.schema = Some(schema);
    }

    /// Whether [`close`](Self::close) was called (on any clone).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Fails with [`Error::StoreClosed`](crate::Error::StoreClosed) once closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(D::closed())
        } else {
            Ok(())
        }
    }

    /// What every append checks before it touches the database: a valid stream id, an
    /// open store, a valid batch.
    pub(crate) fn check_append(&self, stream: &str, events: &[NewEvent]) -> Result<()> {
        check_stream_id(stream)?;
        self.check_open()?;
        super::check_batch(stream, events)
    }

    pub(super) fn upcast(&self, envelopes: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
        match &self.schema {
            Some(schema) => schema.upcast_read(envelopes),
            None => envelopes,
        }
    }
}

impl<D: Dialect> EventLog<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
    for<'r> Option<String>: Decode<'r, D::Db>,
    for<'r> Option<i64>: Decode<'r, D::Db>,
    for<'r> Option<i32>: Decode<'r, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// Runs `query` (which selects [`COLUMNS`](super::COLUMNS)) and turns its rows into
    /// upcast envelopes, sharing strings between rows.
    async fn fetch_events(&self, query: Query<'_, D>, what: &str) -> Result<Vec<EventEnvelope>> {
        self.check_open()?;
        let rows = query
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        let mut names = Interner::default();
        let envelopes = rows
            .iter()
            .map(|row| D::event_row(row, &mut names).map(EventRow::into_envelope))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.upcast(envelopes))
    }

    #[tracing::instrument(name = "lexigram.read", level = "debug", skip_all, fields(backend = D::BACKEND, stream = stream, from = range.from))]
    pub(crate) async fn read(
        &self,
        stream: &str,
        range: VersionRange,
    ) -> Result<Vec<EventEnvelope>> {
        check_stream_id(stream)?;
        if range.is_empty() {
            self.check_open()?;
            return Ok(Vec::new());
        }
        let query = sqlx::query(&self.db.events().read)
            .bind(stream)
            .bind(to_i64(range.start()))
            .bind(to_i64(range.to.unwrap_or(u64::MAX)))
            .bind(range.limit.map_or(i64::MAX, limit_i64));
        self.fetch_events(query, &format!("reading stream `{stream}`"))
            .await
    }

    /// The version of `stream` as `executor` sees it (0 when it does not exist).
    pub(crate) async fn stream_version<'c, E>(&self, executor: E, stream: &str) -> Result<u64>
    where
        E: Executor<'c, Database = D::Db>,
    {
        let version: Option<i64> = sqlx::query_scalar(&self.db.events().version)
            .bind(stream)
            .fetch_optional(executor)
            .await
            .map_err(|e| D::unavailable(&format!("reading the version of stream `{stream}`"), e))?;
        Ok(version.map_or(0, to_u64))
    }

    pub(crate) async fn version(&self, stream: &str) -> Result<u64> {
        check_stream_id(stream)?;
        self.check_open()?;
        self.stream_version(&self.db.pool, stream).await
    }

    pub(crate) async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>> {
        check_stream_id(stream)?;
        self.check_open()?;
        #[allow(clippy::type_complexity)]
        let row: Option<(i64, D::Time, D::Time, i64, Option<i64>, Option<i64>)> =
            sqlx::query_as(&self.db.events().info)
                .bind(stream)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(|e| D::unavailable(&format!("reading stream `{stream}`"), e))?;
        Ok(row.map(|(version, created, updated, count, first, last)| {
            StreamInfo::new(
                StreamId::from(stream),
                to_u64(version),
                to_u64(count),
                first.map(to_u64),
                last.map(to_u64),
                D::time(created, "created_at"),
                D::time(updated, "updated_at"),
            )
        }))
    }

    pub(crate) async fn list_streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamId>> {
        self.check_open()?;
        let ids: Vec<String> = sqlx::query_scalar(&self.db.events().list)
            .bind(after)
            .bind(limit_i64(limit))
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| D::unavailable("listing streams", e))?;
        Ok(ids.into_iter().map(StreamId::from).collect())
    }

    pub(crate) async fn count(&self, stream: Option<&str>) -> Result<u64> {
        self.check_open()?;
        let sql = self.db.events();
        let query = match stream {
            None => sqlx::query_scalar(&sql.count_all),
            Some(stream) => sqlx::query_scalar(&sql.count_stream).bind(stream),
        };
        let count: i64 = query
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| D::unavailable("counting events", e))?;
        Ok(to_u64(count))
    }

    pub(crate) async fn read_all(
        &self,
        after: u64,
        limit: usize,
        partition: Option<Partition>,
    ) -> Result<Vec<EventEnvelope>> {
        let sql = self.db.events();
        let query = match partition {
            None => sqlx::query(&sql.read_all)
                .bind(to_i64(after))
                .bind(limit_i64(limit)),
            Some(p) => sqlx::query(&sql.read_partition)
                .bind(to_i64(after))
                .bind(limit_i64(limit))
                .bind(i64::from(p.total()))
                .bind(i64::from(p.index())),
        };
        self.fetch_events(query, "reading the global log").await
    }

    pub(crate) async fn read_by_type(
        &self,
        event_type: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let query = sqlx::query(&self.db.events().read_by_type)
            .bind(event_type)
            .bind(to_i64(after))
            .bind(limit_i64(limit));
        self.fetch_events(query, &format!("reading events of type `{event_type}`"))
            .await
    }

    pub(crate) async fn find_by_type(
        &self,
        event_type: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<EventEnvelope>> {
        let query = sqlx::query(&self.db.events().find_by_type)
            .bind(event_type)
            .bind(limit_i64(limit))
            .bind(limit_i64(offset));
        self.fetch_events(query, &format!("finding events of type `{event_type}`"))
            .await
    }

    pub(crate) async fn last_position(&self) -> Result<u64> {
        self.check_open()?;
        let last: i64 = sqlx::query_scalar(&self.db.events().last_position)
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| D::unavailable("reading the last position", e))?;
        Ok(to_u64(last))
    }

    pub(crate) async fn held_back(&self) -> Result<Option<crate::store::HeldBack>> {
        self.check_open()?;
        let Some(sql) = &self.db.events().held_back else {
            return Ok(None);
        };
        let what = "reading what holds readers of the log back";
        let row = sqlx::query(sql)
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        let read = |e| D::unavailable(what, e);
        let unsettled: i64 = row.try_get(0).map_err(read)?;
        let pid: Option<i32> = row.try_get(1).map_err(read)?;
        let (Some(pid), true) = (pid, unsettled > 0) else {
            return Ok(None);
        };
        let open_for: Option<i64> = row.try_get(5).map_err(read)?;
        Ok(Some(crate::store::HeldBack {
            unsettled: to_u64(unsettled),
            pid,
            database: row.try_get(2).map_err(read)?,
            application: row.try_get(3).map_err(read)?,
            state: row.try_get(4).map_err(read)?,
            open_for: std::time::Duration::from_micros(to_u64(open_for.unwrap_or(0))),
        }))
    }

    pub(crate) async fn delete_stream(&self, stream: &str) -> Result<bool> {
        check_stream_id(stream)?;
        self.check_open()?;
        let what = format!("deleting stream `{stream}`");
        let mut write = self.db.begin_write(&what).await?;
        // The stream's row first: where writers run concurrently (PostgreSQL), deleting it
        // waits for an append in flight on the stream (which holds the row's lock until it
        // commits), and an append that starts later waits for this transaction. The events
        // are deleted after that, by a statement that sees every append committed before;
        // then the aggregate's snapshots. A stream created again under this id starts from
        // nothing.
        let gone = sqlx::query(&self.db.events().delete_stream)
            .bind(stream)
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        for statement in [
            &self.db.events().delete_events,
            &self.db.snapshots().delete_all,
        ] {
            sqlx::query(statement)
                .bind(stream)
                .execute(&mut *write.tx)
                .await
                .map_err(|e| D::unavailable(&what, e))?;
        }
        write.commit(&what).await?;
        Ok(D::rows_affected(&gone) > 0)
    }

    pub(crate) async fn purge(&self, stream: &str, up_to_version: u64) -> Result<u64> {
        check_stream_id(stream)?;
        self.check_open()?;
        let query = sqlx::query(&self.db.events().purge)
            .bind(stream)
            .bind(to_i64(up_to_version));
        self.db
            .write_one(query, &format!("purging stream `{stream}`"))
            .await
    }

    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.watcher.stop();
        self.appended.close();
        self.db.pool.close().await;
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.check_open()?;
        sqlx::query("SELECT 1")
            .execute(&self.db.pool)
            .await
            .map(drop)
            .map_err(|e| D::unavailable("ping", e))
    }

    /// If the first event's id is stored, the result of the original append (or an error when
    /// this is not an exact retry of it): every event stored, in order, in `stream`, at the
    /// versions this append would have given them.
    pub(crate) async fn previous_append(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        stream: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
    ) -> Result<Option<AppendResult>> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let found: Option<(String, i64)> = sqlx::query_as(&self.db.events().find_id)
            .bind(D::event_id(first.event_id))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::unavailable("looking up an event id", e))?;
        let Some((first_stream, first_version)) = found else {
            return Ok(None);
        };
        let first_version = to_u64(first_version);
        let Some((start, end)) = retry_span(expected, first_version, events.len()) else {
            return Err(not_a_retry(
                stream,
                first.event_id,
                &first_stream,
                first_version,
            ));
        };
        let rows = sqlx::query(&self.db.events().slots)
            .bind(stream)
            .bind(to_i64(start))
            .bind(to_i64(end))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| D::unavailable("reading stored events for a retry", e))?;
        let stored = rows
            .iter()
            .map(D::stored_slot)
            .collect::<Result<Vec<StoredSlot>>>()?;
        retry_result(stream, events, start, &first_stream, first_version, &stored).map(Some)
    }
}

/// Implements [`EventStore`](crate::store::EventStore) for a SQL store of a dialect: a type
/// with a field `log: EventLog<dialect>` (every read, delete, purge, close and ping go to it) and an inherent
/// `append_events` with the signature of [`EventStore::append`](crate::store::EventStore::append)
/// (the one operation each dialect writes its own way), called after
/// [`EventLog::check_append`] inside the `lexigram.append` span, and an inherent
/// `watch_other_processes(&self)` that starts (once, through `log.watcher`) the backend's
/// watcher of other processes' appends.
///
/// It also gives the store the inherent methods every SQL store has: `with_schema`,
/// `snapshot_store` and `pool` (their doc comments, which say where the snapshots and the
/// connections are, written with their signatures in the call), and the crate's `db`.
macro_rules! sql_event_store {
    (
        $store:ty, $dialect:ty, {
            $(#[$snapshots_attr:meta])*
            pub fn snapshot_store(&self) -> $snapshots:ty;
            $(#[$pool_attr:meta])*
            pub fn pool(&self) -> &$pool:ty;
        }
    ) => {
        impl $store {
            /// Upcasts old events with `schema` on every read.
            #[must_use]
            pub fn with_schema(
                mut self,
                schema: ::std::sync::Arc<$crate::schema::SchemaRegistry>,
            ) -> Self {
                self.log.set_schema(schema);
                self
            }

            $(#[$snapshots_attr])*
            pub fn snapshot_store(&self) -> $snapshots {
                <$snapshots>::from_db(self.log.db.clone(), false)
            }

            $(#[$pool_attr])*
            pub fn pool(&self) -> &$pool {
                &self.log.db.pool
            }

            /// The database behind the store (pool, statements and, where the dialect takes
            /// turns, the writer's turn), for crate code that keeps its own tables in it.
            pub(crate) fn db(&self) -> &$crate::store::sql::SqlDb<$dialect> {
                &self.log.db
            }
        }

        #[::async_trait::async_trait]
        impl $crate::store::EventStore for $store {
            fn backend(&self) -> &'static str {
                <$dialect as $crate::store::sql::Dialect>::BACKEND
            }

            #[::tracing::instrument(
                                name = "lexigram.append",
                                level = "debug",
                                skip_all,
                                fields(
                                    backend = <$dialect as $crate::store::sql::Dialect>::BACKEND,
                                    stream = stream,
                                    events = events.len(),
                                    expected = %expected
                                )
                            )]
            async fn append(
                &self,
                stream: &str,
                events: ::std::vec::Vec<$crate::message::NewEvent>,
                expected: $crate::store::ExpectedVersion,
            ) -> $crate::Result<$crate::store::AppendResult> {
                self.log.check_append(stream, &events)?;
                let done = self.append_events(stream, events, expected).await?;
                if let ::std::option::Option::Some(last) = done.last_position() {
                    self.log.appended.announce(last);
                }
                ::std::result::Result::Ok(done)
            }

            fn append_signal(&self) -> $crate::store::AppendSignal {
                if !self.log.is_closed() {
                    self.watch_other_processes();
                }
                self.log.appended.subscribe()
            }

            async fn read_page(
                &self,
                after: u64,
                limit: usize,
                filter: &$crate::store::ReadFilter,
            ) -> $crate::Result<$crate::store::Page> {
                self.log.read_page(after, limit, filter).await
            }

            async fn read(
                &self,
                stream: &str,
                range: $crate::store::VersionRange,
            ) -> $crate::Result<::std::vec::Vec<$crate::message::EventEnvelope>> {
                self.log.read(stream, range).await
            }

            async fn version(&self, stream: &str) -> $crate::Result<u64> {
                self.log.version(stream).await
            }

            async fn stream_info(
                &self,
                stream: &str,
            ) -> $crate::Result<::std::option::Option<$crate::store::StreamInfo>> {
                self.log.stream_info(stream).await
            }

            async fn list_streams(
                &self,
                after: ::std::option::Option<&str>,
                limit: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::message::StreamId>> {
                self.log.list_streams(after, limit).await
            }

            async fn count(&self, stream: ::std::option::Option<&str>) -> $crate::Result<u64> {
                self.log.count(stream).await
            }

            async fn read_all(
                &self,
                after: u64,
                limit: usize,
                partition: ::std::option::Option<$crate::store::Partition>,
            ) -> $crate::Result<::std::vec::Vec<$crate::message::EventEnvelope>> {
                self.log.read_all(after, limit, partition).await
            }

            async fn read_by_type(
                &self,
                event_type: &str,
                after: u64,
                limit: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::message::EventEnvelope>> {
                self.log.read_by_type(event_type, after, limit).await
            }

            async fn find_by_type(
                &self,
                event_type: &str,
                limit: usize,
                offset: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::message::EventEnvelope>> {
                self.log.find_by_type(event_type, limit, offset).await
            }

            async fn last_position(&self) -> $crate::Result<u64> {
                self.log.last_position().await
            }

            async fn held_back(
                &self,
            ) -> $crate::Result<::std::option::Option<$crate::store::HeldBack>> {
                self.log.held_back().await
            }

            async fn delete_stream(&self, stream: &str) -> $crate::Result<bool> {
                self.log.delete_stream(stream).await
            }

            async fn purge(&self, stream: &str, up_to_version: u64) -> $crate::Result<u64> {
                self.log.purge(stream, up_to_version).await
            }

            async fn close(&self) -> $crate::Result<()> {
                self.log.close().await
            }

            async fn ping(&self) -> $crate::Result<()> {
                self.log.ping().await
            }
        }
    };
}

pub(crate) use sql_event_store;
