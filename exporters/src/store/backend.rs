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

use super::alerts::AlertRow;
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

/// What retention sweeps. A trace goes with its spans and agent
/// executions, found by trace id (which their keys and indexes lead
/// with); metrics, costs and alerts expire by their own indexed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    Traces,
    Metrics,
    Costs,
    Alerts,
}

impl Expiring {
    pub const ALL: [Expiring; 4] = [
        Expiring::Traces,
        Expiring::Metrics,
        Expiring::Costs,
        Expiring::Alerts,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Expiring::Traces => "workflow_traces",
            Expiring::Metrics => "performance_metrics",
            Expiring::Costs => "cost_details",
            Expiring::Alerts => "alert_history",
        }
    }

    pub fn time_column(self) -> &'static str {
        match self {
            Expiring::Traces => "start_time",
            Expiring::Metrics | Expiring::Costs => "timestamp",
            Expiring::Alerts => "triggered_at",
        }
    }
}

/// The tables rows left with a trace, besides its own.
pub const TRACE_TABLES: [&str; 2] = ["agent_executions", "spans"];

/// Rows one retention batch deleted: of the swept table first, then of the
/// tables that went with it.
pub type Deleted = Vec<(&'static str, u64)>;

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

    /// Creates the rows of traces the store has not seen yet, from the
    /// batch's view of them, and returns their ids.
    async fn insert_new_traces(
        tx: &mut Transaction<'static, Self::Db>,
        traces: &[TraceRow],
    ) -> Result<Vec<String>, sqlx::Error>;

    /// Merges each batch's view of a trace into its stored row.
    async fn merge_traces(
        tx: &mut Transaction<'static, Self::Db>,
        traces: &[TraceRow],
    ) -> Result<(), sqlx::Error>;

    /// Appends spans known to be new, on the bulk path.
    async fn copy_spans(
        tx: &mut Transaction<'static, Self::Db>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error>;

    /// The agent executions, costs and metrics of spans new to the store.
    async fn insert_details(
        tx: &mut Transaction<'static, Self::Db>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error>;

    /// Writes one alert notification into `alert_history`.
    async fn record_alert(&self, alert: &AlertRow) -> Result<(), sqlx::Error>;

    /// Deletes at most `limit` expired rows of `what` (for traces, with
    /// their spans and agent executions).
    async fn delete_expired(
        &self,
        what: Expiring,
        cutoff: OffsetDateTime,
        limit: i64,
    ) -> Result<Deleted, sqlx::Error>;
}

/// How a batch's view of a trace merges into its stored row, the same in
/// both dialects but for the names of the two-argument minimum and maximum
/// and of the clock: totals grow by the batch's new spans only; the root
/// span, whenever it comes, decides the name and status; a real call id
/// replaces the trace id standing in for it.
macro_rules! merge_traces_clause {
    (least: $least:literal, greatest: $greatest:literal, now: $now:literal) => {
        concat!(
            "
ON CONFLICT (trace_id) DO UPDATE SET
    call_id = CASE WHEN workflow_traces.call_id = workflow_traces.trace_id
                   THEN EXCLUDED.call_id ELSE workflow_traces.call_id END,
    workflow_name = CASE WHEN EXCLUDED.root_span_id IS NOT NULL
                         THEN EXCLUDED.workflow_name ELSE workflow_traces.workflow_name END,
    status = CASE WHEN EXCLUDED.root_span_id IS NOT NULL
                  THEN EXCLUDED.status ELSE workflow_traces.status END,
    root_span_id = COALESCE(EXCLUDED.root_span_id, workflow_traces.root_span_id),
    start_time = ",
            $least,
            "(workflow_traces.start_time, EXCLUDED.start_time),
    end_time = ",
            $greatest,
            "(workflow_traces.end_time, EXCLUDED.end_time),
    total_cost = COALESCE(workflow_traces.total_cost, 0) + EXCLUDED.total_cost,
    service_name = COALESCE(workflow_traces.service_name, EXCLUDED.service_name),
    span_count = workflow_traces.span_count + EXCLUDED.span_count,
    error_count = workflow_traces.error_count + EXCLUDED.error_count,
    input_tokens = workflow_traces.input_tokens + EXCLUDED.input_tokens,
    output_tokens = workflow_traces.output_tokens + EXCLUDED.output_tokens,
    updated_at = ",
            $now
        )
    };
}
pub(super) use merge_traces_clause;

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
    match write_fast(backend, &spans).await {
        Err(err) if is_unique_violation(&err) => write_checked(backend, &spans).await,
        written => written,
    }
}

/// Most spans belong to traces the store has not seen: once a trace's row
/// is created here, its spans cannot exist yet (a concurrent writer of the
/// same trace waits on that row), so they are appended on the bulk path
/// with no conflict check. Spans of known traces (late spans, replays) go
/// through `insert_spans`, which skips those already stored.
async fn write_fast<B: Backend>(backend: &B, spans: &[&SpanRow]) -> Result<Written, sqlx::Error> {
    let mut tx = backend.begin_write().await?;
    let created = B::insert_new_traces(&mut tx, &traces(spans.iter().copied())).await?;
    let created: HashSet<&str> = created.iter().map(String::as_str).collect();
    let (of_new_traces, of_known_traces): (Vec<&SpanRow>, Vec<&SpanRow>) = spans
        .iter()
        .partition(|s| created.contains(s.trace_id.as_str()));
    B::copy_spans(&mut tx, &of_new_traces).await?;
    let late = insert_unstored::<B>(&mut tx, &of_known_traces).await?;
    if !late.is_empty() {
        B::merge_traces(&mut tx, &traces(late.iter().copied())).await?;
    }
    let fresh: Vec<&SpanRow> = of_new_traces.into_iter().chain(late).collect();
    B::insert_details(&mut tx, &fresh).await?;
    tx.commit().await?;
    Ok(Written {
        stored: fresh.len(),
        duplicates: spans.len() - fresh.len(),
    })
}

/// Every span through the conflict check: the fallback for spans stored
/// without their trace's row (rows deleted by hand, say), on which the
/// bulk path fails.
async fn write_checked<B: Backend>(
    backend: &B,
    spans: &[&SpanRow],
) -> Result<Written, sqlx::Error> {
    let mut tx = backend.begin_write().await?;
    let fresh = insert_unstored::<B>(&mut tx, spans).await?;
    if !fresh.is_empty() {
        B::merge_traces(&mut tx, &traces(fresh.iter().copied())).await?;
        B::insert_details(&mut tx, &fresh).await?;
    }
    tx.commit().await?;
    Ok(Written {
        stored: fresh.len(),
        duplicates: spans.len() - fresh.len(),
    })
}

/// Inserts the spans not stored yet and returns them.
async fn insert_unstored<'a, B: Backend>(
    tx: &mut Transaction<'static, B::Db>,
    spans: &[&'a SpanRow],
) -> Result<Vec<&'a SpanRow>, sqlx::Error> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let inserted = B::insert_spans(tx, spans).await?;
    let new_keys: HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(trace, span)| (trace.as_str(), span.as_str()))
        .collect();
    Ok(spans
        .iter()
        .copied()
        .filter(|s| new_keys.contains(&(s.trace_id.as_str(), s.span_id.as_str())))
        .collect())
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// A UTC timestamp from OTLP nanoseconds; out-of-range values (past year
/// 9999) are clamped rather than failing a batch.
pub fn timestamp(unix_ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or_else(|_| OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT))
}

/// A time as fixed-width ISO 8601 UTC text with microseconds
/// ("2026-11-21T18:00:00.123456Z"): what SQLite stores, where comparing
/// text must compare times, and what PostgreSQL's COPY reads.
pub struct UtcText(pub OffsetDateTime);

impl std::fmt::Display for UtcText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
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
