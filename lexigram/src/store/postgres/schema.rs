//! The PostgreSQL schema: its migrations (tables, the position sequence and the server-side
//! append function), applied under an advisory lock.

use super::statements::{LOCK_CLASS, Statements};
use super::{PgDb, PostgresDialect};
use crate::error::Result;
use crate::store::sql::Dialect;
use crate::store::sql::{Migration, StoreSql, run_migrations};

impl PgDb {
    /// Applies pending migrations up to `target` (all when `None`), under an advisory lock so
    /// processes starting together do not race. Re-running is a no-op.
    pub(crate) async fn migrate(&self, target: Option<i64>) -> Result<()> {
        let (s, p) = (&self.sql.own.schema, &self.sql.prefix);
        let mut tx =
            self.pool.begin().await.map_err(|e| {
                PostgresDialect::unavailable("starting the migration transaction", e)
            })?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS + 1)
            .bind(self.sql.own.lock_key)
            .execute(&mut *tx)
            .await
            .map_err(|e| PostgresDialect::unavailable("locking the schema for migration", e))?;
        for statement in [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s}.{p}migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| PostgresDialect::unavailable(&format!("preparing schema `{s}`"), e))?;
        }
        let current: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(version), 0) FROM {s}.{p}migrations"
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| PostgresDialect::unavailable("reading the schema version", e))?;
        let record = format!("INSERT INTO {s}.{p}migrations (version, name) VALUES ($1, $2)");
        let tables = format!("`{s}.{p}*`");
        run_migrations::<PostgresDialect>(
            &mut tx,
            &migrations(&self.sql),
            current,
            target,
            &record,
            &tables,
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| PostgresDialect::unavailable("committing migrations", e))
    }
}

/// The schema, one step per version. Never edit a released step: add a new one.
fn migrations(names: &StoreSql<Statements>) -> Vec<Migration> {
    let (s, p, key) = (&names.own.schema, &names.prefix, names.own.lock_key);
    let events = format!("{s}.{p}events");
    let streams = format!("{s}.{p}streams");
    let seq = format!("{s}.{p}positions");
    vec![
        Migration {
            version: 1,
            name: "events, streams and the append function",
            statements: vec![
                // CACHE 1 (the default) matters: a cached block per session would break the
                // order of positions against transaction ids.
                format!("CREATE SEQUENCE {seq} AS bigint MINVALUE 1 CACHE 1"),
                format!(
                    "CREATE TABLE {streams} (
                        stream_id text PRIMARY KEY,
                        version bigint NOT NULL,
                        created_at timestamptz NOT NULL,
                        updated_at timestamptz NOT NULL
                    )"
                ),
                format!(
                    "CREATE TABLE {events} (
                        global_position bigint PRIMARY KEY,
                        stream_id text NOT NULL,
                        stream_version bigint NOT NULL,
                        stream_hash bigint NOT NULL,
                        event_id uuid NOT NULL,
                        event_type text NOT NULL,
                        event_version integer NOT NULL,
                        payload text NOT NULL,
                        metadata text NOT NULL,
                        recorded_at timestamptz NOT NULL,
                        xact_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
                        CONSTRAINT {p}events_event_id_key UNIQUE (event_id),
                        CONSTRAINT {p}events_stream_version_key UNIQUE (stream_id, stream_version)
                    )"
                ),
                format!("CREATE INDEX {p}events_by_type ON {events} (event_type, global_position)"),
                append_function(s, p, &events, &streams, &seq, key),
            ],
        },
        Migration {
            version: 2,
            name: "snapshots",
            statements: vec![format!(
                "CREATE TABLE {s}.{p}snapshots (
                    aggregate_id text NOT NULL,
                    version bigint NOT NULL,
                    aggregate_type text NOT NULL,
                    state text NOT NULL,
                    schema_version integer NOT NULL,
                    created_at timestamptz NOT NULL,
                    PRIMARY KEY (aggregate_id, version)
                )"
            )],
        },
        Migration {
            version: 3,
            name: "subscription checkpoints, members and parked events",
            // Integers are bigint throughout, so every backend reads them the same way.
            statements: vec![
                format!(
                    "CREATE TABLE {s}.{p}subscriptions (
                        name text NOT NULL,
                        version bigint NOT NULL,
                        partition bigint NOT NULL,
                        partitions bigint NOT NULL,
                        position bigint NOT NULL DEFAULT 0,
                        status text NOT NULL DEFAULT 'running',
                        owner text,
                        epoch bigint NOT NULL DEFAULT 0,
                        lease_until timestamptz,
                        last_error text,
                        updated_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (name, version, partition)
                    )"
                ),
                format!(
                    "CREATE TABLE {s}.{p}members (
                        node text PRIMARY KEY,
                        alive_until timestamptz NOT NULL
                    )"
                ),
                format!(
                    "CREATE TABLE {s}.{p}parked (
                        name text NOT NULL,
                        version bigint NOT NULL,
                        event_id uuid NOT NULL,
                        position bigint NOT NULL,
                        stream text NOT NULL,
                        stream_hash bigint NOT NULL,
                        stream_version bigint NOT NULL,
                        event_type text NOT NULL,
                        attempts bigint NOT NULL,
                        error text,
                        parked_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (name, version, event_id)
                    )"
                ),
                format!(
                    "CREATE INDEX {p}parked_by_stream ON {s}.{p}parked (name, version, stream, position)"
                ),
            ],
        },
        Migration {
            version: 4,
            name: "subscription control requests",
            statements: vec![
                format!(
                    "CREATE TABLE {s}.{p}requests (
                        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        name text NOT NULL,
                        version bigint NOT NULL,
                        kind text NOT NULL,
                        stream text NOT NULL,
                        stream_hash bigint NOT NULL,
                        requested_at timestamptz NOT NULL DEFAULT now(),
                        finished_at timestamptz,
                        served_by text,
                        replayed bigint,
                        still_parked bigint,
                        error text
                    )"
                ),
                format!(
                    "CREATE INDEX {p}requests_open ON {s}.{p}requests (name, version) WHERE finished_at IS NULL"
                ),
            ],
        },
        Migration {
            version: 5,
            name: "subscription rebuilds",
            statements: vec![format!(
                "ALTER TABLE {s}.{p}subscriptions ADD COLUMN rebuild_target bigint, ADD COLUMN rebuild_started_at timestamptz"
            )],
        },
    ]
}

/// The server-side append: one round trip, one transaction. See the module docs for the steps
/// and `docs/postgres-ordering.md` for why positions are taken the way they are.
///
/// PL/pgSQL runs a statement that reads no table as a "simple expression" (no executor
/// start-up) and every other statement through the executor, which on a small server costs
/// tens of microseconds each. So a one-event append (the common case) takes its position with
/// `ARRAY[nextval(..)]` instead of `ARRAY(SELECT .. FROM generate_series(..))`, and inserts
/// with `VALUES` instead of `INSERT .. SELECT .. FROM generate_series(..)`; larger appends keep
/// the set-based statements.
fn append_function(s: &str, p: &str, events: &str, streams: &str, seq: &str, key: i32) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION {s}.{p}append(
    p_stream text, p_hash bigint, p_expected bigint,
    p_ids uuid[], p_types text[], p_versions integer[], p_payloads text[], p_metadata text[],
    p_strict boolean,
    OUT o_status integer, OUT o_version bigint, OUT o_positions bigint[], OUT o_recorded_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
BEGIN
    o_recorded_at := now();
    -- 1. An empty append only checks the version. (A non-empty one checks it in step 3, where
    --    it also claims it; a stale writer then leaves a hole in the positions, which is fine.
    --    Retries are recognised by the client: on a conflict, or on the event-id key.)
    IF n = 0 THEN
        SELECT st.version INTO o_version FROM {streams} st WHERE st.stream_id = p_stream;
        o_version := coalesce(o_version, 0);
        o_status := CASE WHEN p_expected >= 0 AND o_version <> p_expected THEN 1 ELSE 0 END;
        o_positions := '{{}}';
        RETURN;
    END IF;
    -- 2. Positions in transaction-id order: the transaction id is assigned in the same
    --    critical section that takes the positions. (For one event every statement of the
    --    section is a simple expression: no executor run while the lock is held.)
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'a lexigram append must be the first write of its transaction'
            USING ERRCODE = 'LXG01';
    END IF;
    IF p_strict THEN
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {key});
        PERFORM pg_current_xact_id();
        IF n = 1 THEN
            o_positions := ARRAY[nextval('{seq}')];
        ELSE
            o_positions := ARRAY(SELECT nextval('{seq}') FROM generate_series(1, n));
        END IF;
    ELSE
        BEGIN
            PERFORM pg_advisory_lock({LOCK_CLASS}, {key});
            PERFORM pg_current_xact_id();
            IF n = 1 THEN
                o_positions := ARRAY[nextval('{seq}')];
            ELSE
                o_positions := ARRAY(SELECT nextval('{seq}') FROM generate_series(1, n));
            END IF;
            PERFORM pg_advisory_unlock({LOCK_CLASS}, {key});
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            PERFORM pg_advisory_unlock({LOCK_CLASS}, {key});
            RAISE;
        END;
    END IF;
    -- 3. Claim the versions; the stream's row lock orders the writers of one stream.
    IF p_expected < 0 THEN
        INSERT INTO {streams} AS st (stream_id, version, created_at, updated_at)
        VALUES (p_stream, n, o_recorded_at, o_recorded_at)
        ON CONFLICT (stream_id) DO UPDATE SET version = st.version + n, updated_at = o_recorded_at
        RETURNING st.version INTO o_version;
    ELSIF p_expected = 0 THEN
        INSERT INTO {streams} AS st (stream_id, version, created_at, updated_at)
        VALUES (p_stream, n, o_recorded_at, o_recorded_at)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING st.version INTO o_version;
    ELSE
        UPDATE {streams} AS st SET version = st.version + n, updated_at = o_recorded_at
        WHERE st.stream_id = p_stream AND st.version = p_expected
        RETURNING st.version INTO o_version;
    END IF;
    IF NOT FOUND THEN
        SELECT st.version INTO o_version FROM {streams} st WHERE st.stream_id = p_stream;
        o_version := coalesce(o_version, 0);
        o_positions := NULL;
        o_status := 1;
        RETURN;
    END IF;
    -- 4. The events, in one statement.
    IF n = 1 THEN
        INSERT INTO {events} (global_position, stream_id, stream_version, stream_hash, event_id,
                              event_type, event_version, payload, metadata, recorded_at)
        VALUES (o_positions[1], p_stream, o_version, p_hash, p_ids[1],
                p_types[1], p_versions[1], p_payloads[1], p_metadata[1], o_recorded_at);
    ELSE
        INSERT INTO {events} (global_position, stream_id, stream_version, stream_hash, event_id,
                              event_type, event_version, payload, metadata, recorded_at)
        SELECT o_positions[i], p_stream, o_version - n + i, p_hash, p_ids[i],
               p_types[i], p_versions[i], p_payloads[i], p_metadata[i], o_recorded_at
        FROM generate_series(1, n) AS g(i);
    END IF;
    o_status := 0;
END
$fn$"#
    )
}
