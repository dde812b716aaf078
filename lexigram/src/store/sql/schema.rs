//! Migrations: each backend lists its schema as numbered steps; running them is shared.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::Dialect;
use crate::error::Result;

/// One step of a backend's schema. Steps run in `version` order, each once, and are recorded
/// in the `<prefix>migrations` table.
#[derive(Debug)]
pub(crate) struct Migration {
    /// 1-based, dense.
    pub(crate) version: i64,
    /// What the step does, recorded beside its version.
    pub(crate) name: &'static str,
    /// The statements, run in order.
    pub(crate) statements: Vec<String>,
}

/// Runs the steps of `migrations` above `current` (and not above `target`) on `conn`, in the
/// transaction the backend holds there, recording each with `record` (bound to the step's
/// version and name). `tables` names the tables in an error (``the `lexigram_` tables``).
pub(crate) async fn run_migrations<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    migrations: &[Migration],
    current: i64,
    target: Option<i64>,
    record: &str,
    tables: &str,
) -> Result<()>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    let pending = migrations
        .iter()
        .filter(|m| m.version > current && target.is_none_or(|t| m.version <= t));
    for migration in pending {
        for statement in &migration.statements {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    let (version, name) = (migration.version, migration.name);
                    D::unavailable(&format!("migration {version} ({name}) of {tables}"), e)
                })?;
        }
        sqlx::query(record)
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *conn)
            .await
            .map_err(|e| D::unavailable("recording a migration", e))?;
    }
    Ok(())
}
