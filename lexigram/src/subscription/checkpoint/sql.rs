//! The SQL checkpoint store, written once over the [SQL core](crate::store::sql)'s
//! [`Dialect`]: the SQLite and PostgreSQL backends differ only in how they spell time, the
//! larger of two numbers, an event id as text and a lock on one subscription (and in their
//! migration step).
//!
//! Four tables beside the events: `<prefix>subscriptions` (one row per partition: position,
//! status, lease owner, fencing epoch, lease expiry, last error), `<prefix>members` (live
//! nodes), `<prefix>parked` (parked events, one per subscription version and event id) and
//! `<prefix>requests` (control requests, served by the holder of the partition of their stream).
//! Lease times are the database's clock, never a node's.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{
    ControlRequest, Lease, NodeId, ParkedEvent, PartitionKey, PartitionState, ReplayReport,
    RequestKind, RunStatus, SubscriptionSpec, cut, lease_lost, not_registered,
};
use crate::error::{Error, Result};
use crate::message::{EventId, StreamId};
use crate::store::sql::{Dialect, Query, Spelling, SqlDb, to_i64, to_u64};
use crate::store::stream_hash;

/// The longest lease or heartbeat stored (ten years): longer ones are cut to it, so the
/// database's time arithmetic cannot overflow.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a dialect changes in the checkpoint statements.
#[derive(Debug)]
pub(crate) struct CheckpointSpelling {
    /// `$` (PostgreSQL) or `?` (SQLite).
    pub(crate) placeholder: char,
    /// The database's time now, as lease columns hold it.
    pub(crate) now: &'static str,
    /// The time `now` plus the microseconds in the parameter spelled `$n`.
    pub(crate) later: fn(&str) -> String,
    /// The microseconds from now until the time in the column (a `bigint`).
    pub(crate) micros_until: fn(&str) -> String,
    /// The function giving the larger of two numbers (`GREATEST`, SQLite's `MAX`).
    pub(crate) greatest: &'static str,
    /// The `event_id` column as text.
    pub(crate) event_id_text: &'static str,
    /// What makes `ORDER BY name` order by bytes, as the in-memory store does (PostgreSQL's
    /// `COLLATE "C"`; nothing in SQLite, whose default is binary).
    pub(crate) by_bytes: &'static str,
    /// A statement that holds the subscription `$1` (version `$2`) for the rest of the
    /// transaction, where writers run concurrently; `None` where they take turns.
    pub(crate) lock: Option<String>,
    /// A condition (` AND ..`, always true) that lets the statement's transaction commit
    /// without waiting for its log to reach the disk (PostgreSQL's `synchronous_commit`), for
    /// commits that move a checkpoint: losing one in a server crash only means handling a
    /// batch again. Empty where commits cost no such wait.
    pub(crate) relaxed_commit: &'static str,
}

/// Every checkpoint statement of one table prefix (and schema), spelled for one dialect.
#[derive(Debug)]
pub(crate) struct CheckpointSql {
    lock: Option<String>,
    partitions: String,
    insert: String,
    split_copy: String,
    split_fence: String,
    claim: String,
    renew: String,
    release: String,
    fence_commit: String,
    fence_touch: String,
    record_error: String,
    park: String,
    unpark: String,
    parked: String,
    set_status: String,
    states_all: String,
    states_one: String,
    heartbeat: String,
    forget_members: String,
    members: String,
    leave: String,
    request: String,
    open_requests: String,
    finish_request: String,
    request_state: String,
    rebuild: String,
    rebuild_unpark: String,
}

impl CheckpointSql {
    /// The statements on `<qualifier><prefix>subscriptions`, `members` and `parked`
    /// (`qualifier` is empty or `schema.`).
    pub(crate) fn new(qualifier: &str, prefix: &str, spelling: &CheckpointSpelling) -> Self {
        let subs = format!("{qualifier}{prefix}subscriptions");
        let members = format!("{qualifier}{prefix}members");
        let parked = format!("{qualifier}{prefix}parked");
        let requests = format!("{qualifier}{prefix}requests");
        // The open requests of the partition row being claimed or renewed.
        let open_requests = format!(
            "(SELECT COUNT(*) FROM {requests} r WHERE r.name = {subs}.name AND r.version = {subs}.version
                AND r.finished_at IS NULL AND r.stream_hash % {subs}.partitions = {subs}.partition)"
        );
        let now = spelling.now;
        let later = spelling.later;
        let until = (spelling.micros_until)("s.lease_until");
        let since = (spelling.micros_until)("s.rebuild_started_at");
        let greatest = spelling.greatest;
        let event_id = spelling.event_id_text;
        let by_bytes = spelling.by_bytes;
        let relaxed = spelling.relaxed_commit;
        // `$1` name, `$2` version, `$3` partition, `$4` owner, `$5` epoch: a live lease.
        let fenced = format!(
            "name = $1 AND version = $2 AND partition = $3 AND owner = $4 AND epoch = $5 AND lease_until > {now}"
        );
        let state_columns = format!(
            "s.name, s.version, s.partition, s.partitions, s.position, s.status, s.owner, s.epoch,
             CASE WHEN s.owner IS NOT NULL AND s.lease_until > {now} THEN {until} END,
             s.last_error,
             (SELECT COUNT(*) FROM {parked} k WHERE k.name = s.name AND k.version = s.version
                AND k.stream_hash % s.partitions = s.partition),
             s.rebuild_target,
             CASE WHEN s.rebuild_started_at IS NOT NULL THEN 0 - {since} END"
        );
        let spell = |sql: String| {
            Spelling {
                placeholder: spelling.placeholder,
                settled: None,
                last_position: String::new(),
                held_back: None,
            }
            .spell(sql)
        };
        Self {
            lock: spelling.lock.clone().map(spell),
            partitions: spell(format!(
                "SELECT partitions FROM {subs} WHERE name = $1 AND version = $2 AND partition = 0"
            )),
            insert: spell(format!(
                "INSERT INTO {subs} (name, version, partition, partitions, position, status, epoch, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'running', 0, {now})
                 ON CONFLICT (name, version, partition) DO NOTHING"
            )),
            split_copy: spell(format!(
                "INSERT INTO {subs} (name, version, partition, partitions, position, status, epoch, rebuild_target, rebuild_started_at, updated_at)
                 SELECT name, version, partition + $3, partitions, position, status, 0, rebuild_target, rebuild_started_at, {now}
                 FROM {subs} WHERE name = $1 AND version = $2 AND partition < $3"
            )),
            split_fence: spell(format!(
                "UPDATE {subs} SET partitions = $3, epoch = epoch + 1, owner = NULL, lease_until = NULL, updated_at = {now}
                 WHERE name = $1 AND version = $2"
            )),
            claim: spell(format!(
                "UPDATE {subs} SET owner = $4, epoch = epoch + 1, lease_until = {}, updated_at = {now}
                 WHERE name = $1 AND version = $2 AND partition = $3
                   AND (owner IS NULL OR owner = $4 OR lease_until IS NULL OR lease_until <= {now})
                 RETURNING epoch, partitions, position, status, {open_requests}",
                later("$5")
            )),
            renew: spell(format!(
                "UPDATE {subs} SET lease_until = {} WHERE {fenced} RETURNING partitions, status, {open_requests}",
                later("$6")
            )),
            release: spell(format!(
                "UPDATE {subs} SET owner = NULL, lease_until = NULL, updated_at = {now} WHERE {fenced}"
            )),
            fence_commit: spell(format!(
                "UPDATE {subs} SET position = {greatest}(position, $6), last_error = NULL, updated_at = {now}
                 WHERE {fenced}{relaxed} RETURNING status"
            )),
            fence_touch: spell(format!(
                "UPDATE {subs} SET updated_at = {now} WHERE {fenced} RETURNING partitions"
            )),
            record_error: spell(format!(
                "UPDATE {subs} SET last_error = $6, updated_at = {now} WHERE {fenced}"
            )),
            park: spell(format!(
                "INSERT INTO {parked} (name, version, event_id, position, stream, stream_hash, stream_version, event_type, attempts, error, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {now})
                 ON CONFLICT (name, version, event_id) DO NOTHING"
            )),
            unpark: spell(format!(
                "DELETE FROM {parked} WHERE name = $1 AND version = $2 AND event_id = $3 AND stream_hash % $4 = $5"
            )),
            parked: spell(format!(
                "SELECT position, {event_id}, stream, stream_version, event_type, attempts, error
                 FROM {parked} WHERE name = $1 AND version = $2 ORDER BY position"
            )),
            set_status: spell(format!(
                "UPDATE {subs} SET status = $3, updated_at = {now} WHERE name = $1 AND version = $2 AND status <> $3"
            )),
            states_all: format!(
                "SELECT {state_columns} FROM {subs} s ORDER BY s.name{by_bytes}, s.version, s.partition"
            ),
            states_one: spell(format!(
                "SELECT {state_columns} FROM {subs} s WHERE s.name = $1 ORDER BY s.version, s.partition"
            )),
            heartbeat: spell(format!(
                "INSERT INTO {members} (node, alive_until) VALUES ($1, {})
                 ON CONFLICT (node) DO UPDATE SET alive_until = excluded.alive_until",
                later("$2")
            )),
            forget_members: format!("DELETE FROM {members} WHERE alive_until <= {now}"),
            members: format!("SELECT node FROM {members} WHERE alive_until > {now}"),
            leave: spell(format!("DELETE FROM {members} WHERE node = $1")),
            request: spell(format!(
                "INSERT INTO {requests} (name, version, kind, stream, stream_hash, requested_at)
                 SELECT $1, $2, $3, $4, $5, {now}
                 WHERE EXISTS (SELECT 1 FROM {subs} WHERE name = $1 AND version = $2)
                 RETURNING id"
            )),
            open_requests: spell(format!(
                "SELECT r.id, r.kind, r.stream FROM {requests} r
                 JOIN {subs} s ON s.name = r.name AND s.version = r.version AND s.partition = $3
                 WHERE r.name = $1 AND r.version = $2 AND r.finished_at IS NULL
                   AND r.stream_hash % s.partitions = $3
                 ORDER BY r.id"
            )),
            finish_request: spell(format!(
                "UPDATE {requests} SET finished_at = {now}, served_by = $1, replayed = $2, still_parked = $3, error = $4
                 WHERE id = $5 AND name = $6 AND version = $7 AND finished_at IS NULL AND stream_hash % $8 = $9"
            )),
            rebuild: spell(format!(
                "UPDATE {subs} SET position = 0, epoch = epoch + 1, owner = NULL, lease_until = NULL, last_error = NULL,
                   rebuild_target = $3, rebuild_started_at = {now}, updated_at = {now}
                 WHERE name = $1 AND version = $2"
            )),
            rebuild_unpark: spell(format!(
                "DELETE FROM {parked} WHERE name = $1 AND version = $2"
            )),
            request_state: spell(format!(
                "SELECT id, name, version, kind, stream, served_by, replayed, still_parked, error
                 FROM {requests} WHERE id = $1"
            )),
        }
    }
}

/// The checkpoint tables of one SQL database, sharing the event store's pool (clones share
/// everything).
pub(crate) struct SqlCheckpoints<D: Dialect> {
    pub(crate) db: SqlDb<D>,
    pub(crate) sql: Arc<CheckpointSql>,
}

impl<D: Dialect> SqlCheckpoints<D> {
    /// The checkpoint tables beside the event store in `db`, named
    /// `<qualifier><prefix>subscriptions` and so on (`qualifier` is empty or `schema.`).
    pub(crate) fn new(db: SqlDb<D>, qualifier: &str, spelling: &CheckpointSpelling) -> Self {
        let sql = CheckpointSql::new(qualifier, &db.sql.prefix, spelling);
        Self {
            db,
            sql: Arc::new(sql),
        }
    }
}

impl<D: Dialect> Clone for SqlCheckpoints<D> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            sql: Arc::clone(&self.sql),
        }
    }
}

/// A lease's length in microseconds, cut to [`MAX_TTL`].
fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.min(MAX_TTL).as_micros()).unwrap_or(i64::MAX)
}

/// The error for a row the checkpoint store cannot read back.
fn damaged<D: Dialect>(what: &str) -> Error {
    Error::StoreConnection {
        backend: D::BACKEND,
        reason: format!(
            "{what}; the checkpoint tables were changed outside lexigram: fix the row, or remove the subscription's rows to start it again"
        ),
        source: None,
    }
}

fn status_text(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Paused => "paused",
        RunStatus::Failed => "failed",
    }
}

fn parse_status<D: Dialect>(text: &str, key: &PartitionKey) -> Result<RunStatus> {
    match text {
        "running" => Ok(RunStatus::Running),
        "paused" => Ok(RunStatus::Paused),
        "failed" => Ok(RunStatus::Failed),
        other => Err(damaged::<D>(&format!(
            "partition {} of subscription `{}` (version {}) has the unknown status `{other}` (expected `running`, `paused` or `failed`)",
            key.partition, key.subscription, key.version
        ))),
    }
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

impl<D: Dialect> SqlCheckpoints<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
    for<'r> Option<String>: Decode<'r, D::Db>,
    for<'r> Option<i64>: Decode<'r, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// The query with a lease's fencing parameters `$1`..`$5` bound.
    fn fenced<'q>(statement: &'q str, lease: &'q Lease) -> Query<'q, D> {
        sqlx::query(statement)
            .bind(&*lease.key.subscription)
            .bind(i64::from(lease.key.version))
            .bind(i64::from(lease.key.partition))
            .bind(lease.owner.as_str())
            .bind(to_i64(lease.epoch))
    }

    pub(crate) async fn register(&self, spec: &SubscriptionSpec) -> Result<u32> {
        let name = &*spec.name;
        let what = format!("registering subscription `{name}`");
        let want = spec.partitions.max(1);
        let mut write = self.db.begin_write(&what).await?;
        self.lock(&mut write.tx, name, spec.version, &what).await?;
        let have = self
            .partition_count(&mut write.tx, name, spec.version, &what)
            .await?;
        let count = match have {
            None => {
                for partition in 0..want {
                    sqlx::query(&self.sql.insert)
                        .bind(name)
                        .bind(i64::from(spec.version))
                        .bind(i64::from(partition))
                        .bind(i64::from(want))
                        .bind(to_i64(spec.start_after))
                        .execute(&mut *write.tx)
                        .await
                        .map_err(|e| D::unavailable(&what, e))?;
                }
                want
            }
            Some(have) if have == want => have,
            Some(mut have) => {
                if want < have || !want.is_multiple_of(have) || !(want / have).is_power_of_two() {
                    return Err(super::not_a_doubling(name, have, want));
                }
                // At most 31 doublings fit in a u32.
                while have < want {
                    have = self
                        .split_in(&mut write.tx, name, spec.version, have, &what)
                        .await?;
                }
                have
            }
        };
        write.commit(&what).await?;
        Ok(count)
    }

    async fn lock(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        name: &str,
        version: u32,
        what: &str,
    ) -> Result<()> {
        if let Some(lock) = &self.sql.lock {
            sqlx::query(lock)
                .bind(name)
                .bind(i64::from(version))
                .execute(&mut *conn)
                .await
                .map_err(|e| D::unavailable(what, e))?;
        }
        Ok(())
    }

    async fn partition_count(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        name: &str,
        version: u32,
        what: &str,
    ) -> Result<Option<u32>> {
        let count: Option<i64> = sqlx::query_scalar(&self.sql.partitions)
            .bind(name)
            .bind(i64::from(version))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        Ok(count.map(|c| to_u32(c).max(1)))
    }

    /// Splits `have` partitions into twice as many, in the caller's transaction.
    async fn split_in(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        name: &str,
        version: u32,
        have: u32,
        what: &str,
    ) -> Result<u32> {
        let doubled = have.checked_mul(2).ok_or_else(|| Error::InvalidArgument {
            reason: format!(
                "subscription `{name}` (version {version}) has {have} partitions and cannot be split further"
            ),
        })?;
        sqlx::query(&self.sql.split_copy)
            .bind(name)
            .bind(i64::from(version))
            .bind(i64::from(have))
            .execute(&mut *conn)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        sqlx::query(&self.sql.split_fence)
            .bind(name)
            .bind(i64::from(version))
            .bind(i64::from(doubled))
            .execute(&mut *conn)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        Ok(doubled)
    }

    /// [`rebuild`](super::CheckpointStore::rebuild) in the caller's transaction (after the
    /// caller emptied the read model in it): every partition back to the origin with a new
    /// epoch (fencing every lease), the target noted, the parked events forgotten.
    pub(crate) async fn rebuild_in(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        name: &str,
        version: u32,
        target: u64,
    ) -> Result<u32> {
        let what = format!("resetting the checkpoints of subscription `{name}` for a rebuild");
        self.lock(&mut *conn, name, version, &what).await?;
        let reset = sqlx::query(&self.sql.rebuild)
            .bind(name)
            .bind(i64::from(version))
            .bind(to_i64(target))
            .execute(&mut *conn)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        let partitions = D::rows_affected(&reset);
        if partitions == 0 {
            return Err(not_registered(name, version));
        }
        sqlx::query(&self.sql.rebuild_unpark)
            .bind(name)
            .bind(i64::from(version))
            .execute(&mut *conn)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        Ok(u32::try_from(partitions).unwrap_or(u32::MAX))
    }

    pub(crate) async fn rebuild(&self, name: &str, version: u32, target: u64) -> Result<u32> {
        let what = format!("rebuilding subscription `{name}`");
        let mut write = self.db.begin_write(&what).await?;
        let partitions = self
            .rebuild_in(&mut write.tx, name, version, target)
            .await?;
        write.commit(&what).await?;
        Ok(partitions)
    }

    pub(crate) async fn split(&self, name: &str, version: u32) -> Result<u32> {
        let what = format!("splitting subscription `{name}`");
        let mut write = self.db.begin_write(&what).await?;
        self.lock(&mut write.tx, name, version, &what).await?;
        let have = self
            .partition_count(&mut write.tx, name, version, &what)
            .await?
            .ok_or_else(|| Error::InvalidArgument {
                reason: format!("no subscription `{name}` (version {version}) to split"),
            })?;
        let count = self
            .split_in(&mut write.tx, name, version, have, &what)
            .await?;
        write.commit(&what).await?;
        Ok(count)
    }

    pub(crate) async fn claim(
        &self,
        key: &PartitionKey,
        me: &NodeId,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let started = tokio::time::Instant::now();
        let what = format!(
            "claiming partition {} of subscription `{}`",
            key.partition, key.subscription
        );
        let query = sqlx::query(&self.sql.claim)
            .bind(&*key.subscription)
            .bind(i64::from(key.version))
            .bind(i64::from(key.partition))
            .bind(me.as_str())
            .bind(micros(ttl));
        let Some(row) = self.db.write_returning(query, &what).await? else {
            return Ok(None);
        };
        let read = |e| D::unavailable(&what, e);
        let status: String = row.try_get(3).map_err(read)?;
        Ok(Some(Lease {
            key: key.clone(),
            owner: me.clone(),
            epoch: to_u64(row.try_get(0).map_err(read)?),
            partitions: to_u32(row.try_get(1).map_err(read)?),
            position: to_u64(row.try_get(2).map_err(read)?),
            status: parse_status::<D>(&status, key)?,
            open_requests: to_u64(row.try_get(4).map_err(read)?),
            valid_until: started + ttl,
        }))
    }

    pub(crate) async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let started = tokio::time::Instant::now();
        let what = format!(
            "renewing the lease on partition {} of subscription `{}`",
            lease.key.partition, lease.key.subscription
        );
        let query = Self::fenced(&self.sql.renew, lease).bind(micros(ttl));
        let row = self
            .db
            .write_returning(query, &what)
            .await?
            .ok_or_else(|| lease_lost(lease))?;
        let read = |e| D::unavailable(&what, e);
        let status: String = row.try_get(1).map_err(read)?;
        let mut renewed = lease.clone();
        renewed.partitions = to_u32(row.try_get(0).map_err(read)?);
        renewed.status = parse_status::<D>(&status, &lease.key)?;
        renewed.open_requests = to_u64(row.try_get(2).map_err(read)?);
        renewed.valid_until = started + ttl;
        Ok(renewed)
    }

    pub(crate) async fn release(&self, lease: &Lease) -> Result<()> {
        let what = format!(
            "releasing partition {} of subscription `{}`",
            lease.key.partition, lease.key.subscription
        );
        self.db
            .write_one(Self::fenced(&self.sql.release, lease), &what)
            .await?;
        Ok(())
    }

    /// [`commit`](super::CheckpointStore::commit) in the caller's transaction: the fence
    /// first (so a lost lease writes nothing, and the partition's row is locked for the rest
    /// of the transaction), then the parked events. On [`Error::LeaseLost`] the caller must
    /// roll back. Returns the partition's status as the commit found it.
    pub(crate) async fn commit_in(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> Result<RunStatus>
    where
        for<'q> D::EventIdArg: Encode<'q, D::Db>,
    {
        let what = format!(
            "committing the checkpoint of partition {} of subscription `{}`",
            lease.key.partition, lease.key.subscription
        );
        let status: Option<String> = Self::fenced(&self.sql.fence_commit, lease)
            .bind(to_i64(position))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::unavailable(&what, e))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| D::unavailable(&what, e))?;
        let status = parse_status::<D>(&status.ok_or_else(|| lease_lost(lease))?, &lease.key)?;
        for event in parked {
            let error = cut(&event.error);
            sqlx::query(&self.sql.park)
                .bind(&*lease.key.subscription)
                .bind(i64::from(lease.key.version))
                .bind(D::event_id(event.event_id))
                .bind(to_i64(event.position))
                .bind(event.stream.as_str())
                .bind(i64::from(stream_hash(event.stream.as_str())))
                .bind(to_i64(event.stream_version))
                .bind(event.event_type.as_str())
                .bind(i64::from(event.attempts))
                .bind(error.as_str())
                .execute(&mut *conn)
                .await
                .map_err(|e| D::unavailable(&what, e))?;
        }
        Ok(status)
    }

    pub(crate) async fn commit(
        &self,
        lease: &Lease,
        position: u64,
        parked: &[ParkedEvent],
    ) -> Result<RunStatus>
    where
        for<'q> D::EventIdArg: Encode<'q, D::Db>,
    {
        let what = "committing a checkpoint";
        if parked.is_empty() {
            // The common case: one statement, in a transaction of its own.
            let query = Self::fenced(&self.sql.fence_commit, lease).bind(to_i64(position));
            let row = self
                .db
                .write_returning(query, what)
                .await?
                .ok_or_else(|| lease_lost(lease))?;
            let status: String = row.try_get(0).map_err(|e| D::unavailable(what, e))?;
            return parse_status::<D>(&status, &lease.key);
        }
        let mut write = self.db.begin_write(what).await?;
        // On an error the transaction is dropped, which rolls it back.
        let status = self
            .commit_in(&mut write.tx, lease, position, parked)
            .await?;
        write.commit(what).await?;
        Ok(status)
    }

    pub(crate) async fn record_error(&self, lease: &Lease, error: &str) -> Result<()> {
        let what = format!(
            "recording an error on partition {} of subscription `{}`",
            lease.key.partition, lease.key.subscription
        );
        let error = cut(error);
        let changed = self
            .db
            .write_one(
                Self::fenced(&self.sql.record_error, lease).bind(error.as_str()),
                &what,
            )
            .await?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    pub(crate) async fn parked(&self, name: &str, version: u32) -> Result<Vec<ParkedEvent>> {
        let what = format!("reading the parked events of subscription `{name}`");
        let rows = sqlx::query(&self.sql.parked)
            .bind(name)
            .bind(i64::from(version))
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        let read = |e| D::unavailable(&what, e);
        let mut parked = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(1).map_err(read)?;
            let event_id = uuid::Uuid::parse_str(&id)
                .map(EventId::from_uuid)
                .map_err(|_| {
                    damaged::<D>(&format!(
                        "a parked event of subscription `{name}` (version {version}) has the event id `{id}`, which is not a UUID"
                    ))
                })?;
            let stream: String = row.try_get(2).map_err(read)?;
            let error: Option<String> = row.try_get(6).map_err(read)?;
            parked.push(ParkedEvent {
                position: to_u64(row.try_get(0).map_err(read)?),
                event_id,
                stream: StreamId::from(stream.as_str()),
                stream_version: to_u64(row.try_get(3).map_err(read)?),
                event_type: row.try_get(4).map_err(read)?,
                attempts: to_u32(row.try_get(5).map_err(read)?),
                error: error.unwrap_or_default(),
            });
        }
        Ok(parked)
    }

    pub(crate) async fn unpark(&self, lease: &Lease, event_ids: &[EventId]) -> Result<u64>
    where
        for<'q> D::EventIdArg: Encode<'q, D::Db>,
    {
        let what = format!(
            "removing parked events of subscription `{}`",
            lease.key.subscription
        );
        let mut write = self.db.begin_write(&what).await?;
        let removed = self.unpark_in(&mut write.tx, lease, event_ids).await?;
        write.commit(&what).await?;
        Ok(removed)
    }

    /// The fence of a write in the caller's transaction: touches the partition's row if the
    /// lease still holds it (locking it for the rest of the transaction) and returns the
    /// partition count; [`Error::LeaseLost`] otherwise.
    async fn touch_in(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        lease: &Lease,
        what: &str,
    ) -> Result<i64> {
        let partitions: Option<i64> = sqlx::query_scalar(&self.sql.fence_touch)
            .bind(&*lease.key.subscription)
            .bind(i64::from(lease.key.version))
            .bind(i64::from(lease.key.partition))
            .bind(lease.owner.as_str())
            .bind(to_i64(lease.epoch))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        partitions.ok_or_else(|| lease_lost(lease))
    }

    /// [`unpark`](Self::unpark) in the caller's transaction: fenced first, so on
    /// [`Error::LeaseLost`] the caller must roll back.
    pub(crate) async fn unpark_in(
        &self,
        conn: &mut <D::Db as Database>::Connection,
        lease: &Lease,
        event_ids: &[EventId],
    ) -> Result<u64>
    where
        for<'q> D::EventIdArg: Encode<'q, D::Db>,
    {
        let what = format!(
            "removing parked events of subscription `{}`",
            lease.key.subscription
        );
        let partitions = self.touch_in(conn, lease, &what).await?;
        let mut removed = 0;
        for id in event_ids {
            let done = sqlx::query(&self.sql.unpark)
                .bind(&*lease.key.subscription)
                .bind(i64::from(lease.key.version))
                .bind(D::event_id(*id))
                .bind(partitions)
                .bind(i64::from(lease.key.partition))
                .execute(&mut *conn)
                .await
                .map_err(|e| D::unavailable(&what, e))?;
            removed += D::rows_affected(&done);
        }
        Ok(removed)
    }

    pub(crate) async fn set_status(
        &self,
        name: &str,
        version: u32,
        status: RunStatus,
    ) -> Result<u64> {
        let what = format!("setting the status of subscription `{name}`");
        let query = sqlx::query(&self.sql.set_status)
            .bind(name)
            .bind(i64::from(version))
            .bind(status_text(status));
        self.db.write_one(query, &what).await
    }

    pub(crate) async fn states(&self, subscription: Option<&str>) -> Result<Vec<PartitionState>> {
        let what = "reading the state of subscriptions";
        let rows = match subscription {
            Some(name) => {
                sqlx::query(&self.sql.states_one)
                    .bind(name)
                    .fetch_all(&self.db.pool)
                    .await
            }
            None => {
                sqlx::query(&self.sql.states_all)
                    .fetch_all(&self.db.pool)
                    .await
            }
        }
        .map_err(|e| D::unavailable(what, e))?;
        let read = |e| D::unavailable(what, e);
        let mut states = Vec::with_capacity(rows.len());
        let mut name: Option<Arc<str>> = None;
        for row in &rows {
            let text: String = row.try_get(0).map_err(read)?;
            // One `Arc` per subscription, shared by its partitions.
            let subscription = match &name {
                Some(shared) if **shared == *text => Arc::clone(shared),
                _ => {
                    let shared: Arc<str> = text.into();
                    name = Some(Arc::clone(&shared));
                    shared
                }
            };
            let key = PartitionKey {
                subscription,
                version: to_u32(row.try_get(1).map_err(read)?),
                partition: to_u32(row.try_get(2).map_err(read)?),
            };
            let status: String = row.try_get(5).map_err(read)?;
            let owner: Option<String> = row.try_get(6).map_err(read)?;
            let remaining: Option<i64> = row.try_get(8).map_err(read)?;
            let owner = match (owner, remaining) {
                (Some(owner), Some(_)) => Some(NodeId::new(owner).map_err(|_| {
                    damaged::<D>(&format!(
                        "partition {} of subscription `{}` (version {}) has an owner that is not a node id",
                        key.partition, key.subscription, key.version
                    ))
                })?),
                _ => None,
            };
            states.push(PartitionState {
                partitions: to_u32(row.try_get(3).map_err(read)?),
                position: to_u64(row.try_get(4).map_err(read)?),
                status: parse_status::<D>(&status, &key)?,
                epoch: to_u64(row.try_get(7).map_err(read)?),
                lease_expires_in: remaining
                    .filter(|_| owner.is_some())
                    .map(|us| Duration::from_micros(to_u64(us))),
                owner,
                last_error: row.try_get(9).map_err(read)?,
                parked: to_u64(row.try_get(10).map_err(read)?),
                rebuild_target: row.try_get::<Option<i64>, _>(11).map_err(read)?.map(to_u64),
                rebuild_elapsed: row
                    .try_get::<Option<i64>, _>(12)
                    .map_err(read)?
                    .map(|us| Duration::from_micros(to_u64(us))),
                key,
            });
        }
        Ok(states)
    }

    pub(crate) async fn heartbeat(&self, me: &NodeId, ttl: Duration) -> Result<Vec<NodeId>> {
        let what = "recording a heartbeat";
        let mut write = self.db.begin_write(what).await?;
        sqlx::query(&self.sql.heartbeat)
            .bind(me.as_str())
            .bind(micros(ttl))
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        sqlx::query(&self.sql.forget_members)
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        let nodes: Vec<String> = sqlx::query_scalar(&self.sql.members)
            .fetch_all(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(what, e))?;
        write.commit(what).await?;
        // Sorted here, by bytes: the database's collation may order text otherwise. A row
        // that is not a node id (written outside lexigram) is left out.
        let mut members: Vec<NodeId> = nodes
            .into_iter()
            .filter_map(|node| NodeId::new(node).ok())
            .collect();
        members.sort();
        Ok(members)
    }

    pub(crate) async fn request(
        &self,
        name: &str,
        version: u32,
        kind: &RequestKind,
    ) -> Result<u64> {
        let what = format!("filing a control request for subscription `{name}`");
        let (kind_text, stream) = match kind {
            RequestKind::ReplayParked { stream } => ("replay_parked", stream),
        };
        let query = sqlx::query(&self.sql.request)
            .bind(name)
            .bind(i64::from(version))
            .bind(kind_text)
            .bind(stream.as_str())
            .bind(i64::from(stream_hash(stream.as_str())));
        let row = self
            .db
            .write_returning(query, &what)
            .await?
            .ok_or_else(|| not_registered(name, version))?;
        Ok(to_u64(
            row.try_get(0).map_err(|e| D::unavailable(&what, e))?,
        ))
    }

    /// The request kind stored as `kind` for `stream`.
    fn kind_of(kind: &str, stream: String, id: u64) -> Result<RequestKind> {
        match kind {
            "replay_parked" => Ok(RequestKind::ReplayParked {
                stream: StreamId::from(stream.as_str()),
            }),
            other => Err(damaged::<D>(&format!(
                "control request {id} has the unknown kind `{other}` (expected `replay_parked`)"
            ))),
        }
    }

    pub(crate) async fn open_requests(&self, lease: &Lease) -> Result<Vec<ControlRequest>> {
        let what = format!(
            "reading the control requests of partition {} of subscription `{}`",
            lease.key.partition, lease.key.subscription
        );
        let rows = sqlx::query(&self.sql.open_requests)
            .bind(&*lease.key.subscription)
            .bind(i64::from(lease.key.version))
            .bind(i64::from(lease.key.partition))
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        let read = |e| D::unavailable(&what, e);
        let mut requests = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = to_u64(row.try_get(0).map_err(read)?);
            let kind: String = row.try_get(1).map_err(read)?;
            requests.push(ControlRequest {
                id,
                subscription: lease.key.subscription.to_string(),
                version: lease.key.version,
                kind: Self::kind_of(&kind, row.try_get(2).map_err(read)?, id)?,
                outcome: None,
                served_by: None,
            });
        }
        Ok(requests)
    }

    pub(crate) async fn finish_request(
        &self,
        lease: &Lease,
        id: u64,
        outcome: &ReplayReport,
    ) -> Result<()>
    where
        for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    {
        let what = format!(
            "finishing control request {id} of subscription `{}`",
            lease.key.subscription
        );
        let mut write = self.db.begin_write(&what).await?;
        let partitions = self.touch_in(&mut write.tx, lease, &what).await?;
        let error = outcome.error.as_deref().map(cut);
        sqlx::query(&self.sql.finish_request)
            .bind(lease.owner.as_str())
            .bind(to_i64(outcome.replayed))
            .bind(to_i64(outcome.still_parked))
            .bind(error.as_deref())
            .bind(to_i64(id))
            .bind(&*lease.key.subscription)
            .bind(i64::from(lease.key.version))
            .bind(partitions)
            .bind(i64::from(lease.key.partition))
            .execute(&mut *write.tx)
            .await
            .map_err(|e| D::unavailable(&what, e))?;
        write.commit(&what).await
    }

    pub(crate) async fn request_state(&self, id: u64) -> Result<Option<ControlRequest>> {
        let what = format!("reading control request {id}");
        let Some(row) = sqlx::query(&self.sql.request_state)
            .bind(to_i64(id))
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| D::unavailable(&what, e))?
        else {
            return Ok(None);
        };
        let read = |e| D::unavailable(&what, e);
        let kind: String = row.try_get(3).map_err(read)?;
        let served_by: Option<String> = row.try_get(5).map_err(read)?;
        let replayed: Option<i64> = row.try_get(6).map_err(read)?;
        let still_parked: Option<i64> = row.try_get(7).map_err(read)?;
        let error: Option<String> = row.try_get(8).map_err(read)?;
        Ok(Some(ControlRequest {
            id,
            subscription: row.try_get(1).map_err(read)?,
            version: to_u32(row.try_get(2).map_err(read)?),
            kind: Self::kind_of(&kind, row.try_get(4).map_err(read)?, id)?,
            outcome: replayed.map(|replayed| ReplayReport {
                replayed: to_u64(replayed),
                still_parked: to_u64(still_parked.unwrap_or(0)),
                error,
            }),
            served_by: served_by.and_then(|node| NodeId::new(node).ok()),
        }))
    }

    pub(crate) async fn leave(&self, me: &NodeId) -> Result<()> {
        self.db
            .write_one(
                sqlx::query(&self.sql.leave).bind(me.as_str()),
                "leaving the members",
            )
            .await?;
        Ok(())
    }
}

/// Declares a backend's checkpoint store, a struct holding its [`SqlCheckpoints`] in a
/// `core` field (written as usual inside the macro), and gives it `commit_in` and
/// [`CheckpointStore`](super::CheckpointStore) by delegation (written once for every dialect).
macro_rules! sql_checkpoint_store {
    (
        $(#[$attr:meta])*
        pub struct $store:ident {
            core: SqlCheckpoints<$dialect:ty>,
        }
    ) => {
        $(#[$attr])*
        pub struct $store {
            core: $crate::subscription::checkpoint::sql::SqlCheckpoints<$dialect>,
        }

        impl $store {
            /// [`commit`](crate::subscription::CheckpointStore::commit) inside the caller's
            /// transaction (on SQLite, one from `SqliteEventStore::write_tx`, which holds the
            /// writer's turn; on PostgreSQL, its first statement on the partition's row locks
            /// it until the caller commits): fenced by the lease, so on
            /// [`Error::LeaseLost`](crate::Error::LeaseLost) the caller must roll back and
            /// nothing of its own writes lands either.
            pub(crate) async fn commit_in(
                &self,
                conn: &mut <<$dialect as $crate::store::sql::Dialect>::Db as ::sqlx::Database>::Connection,
                lease: &$crate::subscription::Lease,
                position: u64,
                parked: &[$crate::subscription::ParkedEvent],
            ) -> $crate::Result<$crate::subscription::RunStatus> {
                self.core.commit_in(conn, lease, position, parked).await
            }

            /// [`rebuild`](crate::subscription::CheckpointStore::rebuild) inside the caller's
            /// transaction, after the caller emptied the read model in it.
            pub(crate) async fn rebuild_in(
                &self,
                conn: &mut <<$dialect as $crate::store::sql::Dialect>::Db as ::sqlx::Database>::Connection,
                subscription: &str,
                version: u32,
                target: u64,
            ) -> $crate::Result<u32> {
                self.core.rebuild_in(conn, subscription, version, target).await
            }

            /// [`unpark`](crate::subscription::CheckpointStore::unpark) inside the caller's
            /// transaction, fenced like [`commit_in`](Self::commit_in).
            pub(crate) async fn unpark_in(
                &self,
                conn: &mut <<$dialect as $crate::store::sql::Dialect>::Db as ::sqlx::Database>::Connection,
                lease: &$crate::subscription::Lease,
                event_ids: &[$crate::message::EventId],
            ) -> $crate::Result<u64> {
                self.core.unpark_in(conn, lease, event_ids).await
            }
        }

        #[::async_trait::async_trait]
        impl $crate::subscription::CheckpointStore for $store {
            fn backend(&self) -> &'static str {
                <$dialect as $crate::store::sql::Dialect>::BACKEND
            }

            async fn register(
                &self,
                spec: &$crate::subscription::SubscriptionSpec,
            ) -> $crate::Result<u32> {
                self.core.register(spec).await
            }

            async fn claim(
                &self,
                key: &$crate::subscription::PartitionKey,
                me: &$crate::subscription::NodeId,
                ttl: ::std::time::Duration,
            ) -> $crate::Result<Option<$crate::subscription::Lease>> {
                self.core.claim(key, me, ttl).await
            }

            async fn renew(
                &self,
                lease: &$crate::subscription::Lease,
                ttl: ::std::time::Duration,
            ) -> $crate::Result<$crate::subscription::Lease> {
                self.core.renew(lease, ttl).await
            }

            async fn release(&self, lease: &$crate::subscription::Lease) -> $crate::Result<()> {
                self.core.release(lease).await
            }

            async fn commit(
                &self,
                lease: &$crate::subscription::Lease,
                position: u64,
                parked: &[$crate::subscription::ParkedEvent],
            ) -> $crate::Result<$crate::subscription::RunStatus> {
                self.core.commit(lease, position, parked).await
            }

            async fn record_error(
                &self,
                lease: &$crate::subscription::Lease,
                error: &str,
            ) -> $crate::Result<()> {
                self.core.record_error(lease, error).await
            }

            async fn parked(
                &self,
                subscription: &str,
                version: u32,
            ) -> $crate::Result<Vec<$crate::subscription::ParkedEvent>> {
                self.core.parked(subscription, version).await
            }

            async fn unpark(
                &self,
                lease: &$crate::subscription::Lease,
                event_ids: &[$crate::message::EventId],
            ) -> $crate::Result<u64> {
                self.core.unpark(lease, event_ids).await
            }

            async fn set_status(
                &self,
                subscription: &str,
                version: u32,
                status: $crate::subscription::RunStatus,
            ) -> $crate::Result<u64> {
                self.core.set_status(subscription, version, status).await
            }

            async fn states(
                &self,
                subscription: Option<&str>,
            ) -> $crate::Result<Vec<$crate::subscription::PartitionState>> {
                self.core.states(subscription).await
            }

            async fn heartbeat(
                &self,
                me: &$crate::subscription::NodeId,
                ttl: ::std::time::Duration,
            ) -> $crate::Result<Vec<$crate::subscription::NodeId>> {
                self.core.heartbeat(me, ttl).await
            }

            async fn leave(&self, me: &$crate::subscription::NodeId) -> $crate::Result<()> {
                self.core.leave(me).await
            }

            async fn split(&self, subscription: &str, version: u32) -> $crate::Result<u32> {
                self.core.split(subscription, version).await
            }

            async fn rebuild(
                &self,
                subscription: &str,
                version: u32,
                target: u64,
            ) -> $crate::Result<u32> {
                self.core.rebuild(subscription, version, target).await
            }

            async fn request(
                &self,
                subscription: &str,
                version: u32,
                kind: &$crate::subscription::RequestKind,
            ) -> $crate::Result<u64> {
                self.core.request(subscription, version, kind).await
            }

            async fn open_requests(
                &self,
                lease: &$crate::subscription::Lease,
            ) -> $crate::Result<Vec<$crate::subscription::ControlRequest>> {
                self.core.open_requests(lease).await
            }

            async fn finish_request(
                &self,
                lease: &$crate::subscription::Lease,
                id: u64,
                outcome: &$crate::subscription::ReplayReport,
            ) -> $crate::Result<()> {
                self.core.finish_request(lease, id, outcome).await
            }

            async fn request_state(
                &self,
                id: u64,
            ) -> $crate::Result<Option<$crate::subscription::ControlRequest>> {
                self.core.request_state(id).await
            }
        }
    };
}
pub(crate) use sql_checkpoint_store;
