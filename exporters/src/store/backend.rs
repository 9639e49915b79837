//! What the PostgreSQL and SQLite stores share: the migrations and how
//! they run, the write path, retention's deletes and the meaning of a
//! database error. A backend supplies only the SQL that truly differs.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use lookout_pipelines::ExportError;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Connection, Database, SqlSafeStr, Transaction};
use time::OffsetDateTime;

use super::rows::{Batch, SpanRow, TraceRow, traces};

/// Every schema change, in order, in both dialects. A change is added
/// here for both backends at once, never edited once released: sqlx
/// refuses to start on a database whose applied migration has another
/// checksum.
const MIGRATIONS: [(i64, &str, &str, &str); 1] = [(
    1,
    "monitoring tables",
    include_str!("migrations/postgres_0001_monitoring_tables.sql"),
    include_str!("migrations/sqlite_0001_monitoring_tables.sql"),
)];

/// sqlx's default bookkeeping table, `_sqlx_migrations`, may already
/// belong to the application that owns the database.
const MIGRATIONS_TABLE: &str = "lookout_schema_migrations";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// The migrator for one dialect.
pub fn migrator(dialect: Dialect) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, postgres, sqlite)| {
            let sql = match dialect {
                Dialect::Postgres => postgres,
                Dialect::Sqlite => sqlite,
            };
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// How long a first connection may take before the database counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects once outside the pool, then applies what is missing (a no-op
/// on an up-to-date database). The pool reports any failure to connect
/// as "timed out"; a direct connection says why: refused, or a wrong
/// password.
pub async fn migrate<DB>(pool: &sqlx::Pool<DB>, dialect: Dialect) -> Result<(), StoreError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let options = pool.connect_options();
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, DB::Connection::connect_with(&options))
        .await
        .map_err(|_| sqlx::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    connection.close().await?;
    migrator(dialect).run(pool).await.map_err(StoreError::from)
}

/// The tables retention deletes from, each by its own (indexed) time
/// column, so that every table is swept the same way and no delete needs
/// another table. Rows of one trace share its times, so they go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    Traces,
    Agents,
    Metrics,
    Costs,
    Spans,
    Alerts,
}

impl Expiring {
    pub const ALL: [Expiring; 6] = [
        Expiring::Traces,
        Expiring::Agents,
        Expiring::Metrics,
        Expiring::Costs,
        Expiring::Spans,
        Expiring::Alerts,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Expiring::Traces => "workflow_traces",
            Expiring::Agents => "agent_executions",
            Expiring::Metrics => "performance_metrics",
            Expiring::Costs => "cost_details",
            Expiring::Spans => "spans",
            Expiring::Alerts => "alert_history",
        }
    }

    pub fn time_column(self) -> &'static str {
        match self {
            Expiring::Traces | Expiring::Agents | Expiring::Spans => "start_time",
            Expiring::Metrics | Expiring::Costs => "timestamp",
            Expiring::Alerts => "triggered_at",
        }
    }
}

/// One database's SQL for the shared write path.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Db: Database;

    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Creates the tables, or checks that they are up to date.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// A transaction that will write.
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;

    /// Inserts the spans not stored yet and returns their keys.
    async fn insert_spans(
        tx: &mut Transaction<'static, Self::Db>,
        spans: &[&SpanRow],
    ) -> Result<Vec<(String, String)>, sqlx::Error>;

    /// Merges each batch's view of a trace into its stored row.
    async fn upsert_traces(
        tx: &mut Transaction<'static, Self::Db>,
        traces: &[TraceRow],
    ) -> Result<(), sqlx::Error>;

    /// The agent executions, costs and metrics of spans new to the store.
    async fn insert_details(
        tx: &mut Transaction<'static, Self::Db>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error>;

    /// Deletes at most `limit` rows of `table` older than `cutoff`.
    async fn delete_expired(
        &self,
        table: Expiring,
        cutoff: OffsetDateTime,
        limit: i64,
    ) -> Result<u64, sqlx::Error>;
}

/// What one write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub stored: usize,
    /// Spans already stored: a replay, or a retry after a lost reply.
    pub duplicates: usize,
}

/// Writes a batch in one transaction. Idempotent: a span already stored
/// (same trace id and span id) adds nothing to any table, so a retry or a
/// replay is harmless, and trace totals grow only by new spans.
pub async fn write<B: Backend>(backend: &B, batch: &Batch) -> Result<Written, sqlx::Error> {
    let mut spans: Vec<&SpanRow> = batch.spans.iter().collect();
    // Sorted, so that concurrent writers take row locks in one order;
    // deduplicated, so that a payload that repeats a span counts it once.
    spans.sort_unstable_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    spans.dedup_by(|a, b| a.trace_id == b.trace_id && a.span_id == b.span_id);
    if spans.is_empty() {
        return Ok(Written::default());
    }
    let mut tx = backend.begin_write().await?;
    let new_keys: HashSet<(String, String)> = B::insert_spans(&mut tx, &spans)
        .await?
        .into_iter()
        .collect();
    let fresh: Vec<&SpanRow> = spans
        .iter()
        .copied()
        .filter(|s| new_keys.contains(&(s.trace_id.clone(), s.span_id.clone())))
        .collect();
    if !fresh.is_empty() {
        B::upsert_traces(&mut tx, &traces(fresh.iter().copied())).await?;
        B::insert_details(&mut tx, &fresh).await?;
    }
    tx.commit().await?;
    Ok(Written {
        stored: fresh.len(),
        duplicates: spans.len() - fresh.len(),
    })
}

/// A UTC timestamp from OTLP nanoseconds; out-of-range values (past year
/// 9999) are clamped rather than failing a batch.
pub fn timestamp(unix_ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or_else(|_| OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT))
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Schema(String),
}

impl From<MigrateError> for StoreError {
    fn from(err: MigrateError) -> StoreError {
        match err {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
                match inner.as_database_error().and_then(|e| e.code()).as_deref() {
                    Some("42P07") => StoreError::Schema(format!(
                        "a monitoring table already exists but was not created by lookout ({inner}); \
                         give lookout its own database or schema"
                    )),
                    _ => StoreError::Database(inner),
                }
            }
            MigrateError::VersionMissing(version) => StoreError::Schema(format!(
                "the database has schema version {version}, which this lookout does not know: \
                 a newer lookout migrated it"
            )),
            MigrateError::VersionMismatch(version) => StoreError::Schema(format!(
                "schema version {version} in the database differs from this lookout's"
            )),
            other => StoreError::Schema(format!("cannot migrate the schema: {other}")),
        }
    }
}

impl StoreError {
    /// Whether waiting can help: an outage, a restart, a busy database.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(err) => is_transient(err),
            StoreError::Schema(_) => false,
        }
    }

    pub fn into_export_error(self) -> ExportError {
        if self.is_transient() {
            ExportError::transient(self.to_string())
        } else {
            ExportError::permanent(self.to_string())
        }
    }
}

/// Connection trouble, a database restarting or out of resources, and
/// lock conflicts pass; authentication, missing objects and rejected
/// data do not.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes; the low byte is the primary one:
                // BUSY, LOCKED, IOERR, FULL.
                let primary = code.parse::<i64>().map_or(0, |extended| extended & 0xff);
                return matches!(primary, 5 | 6 | 10 | 13);
            }
            // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback
            // (deadlock, serialization), 53 resources, 57 operator
            // intervention (shutdown, starting up), 58 system I/O.
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_every_migration() {
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let migrator = migrator(dialect);
            let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
            assert_eq!(versions, [1]);
        }
    }

    #[test]
    fn timestamps_clamp_instead_of_failing() {
        assert_eq!(timestamp(0), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(timestamp(i64::MAX).year(), 2262);
    }
}
