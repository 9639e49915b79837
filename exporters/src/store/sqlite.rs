//! SQLite's SQL for the shared write path. A batch travels as one JSON
//! array per table, unpacked by `json_each` inside SQLite: SQLite's
//! counterpart of PostgreSQL's `UNNEST`, with one statement per table
//! instead of one per row.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;

use super::alerts::{AlertRow, UPSERT_TAIL};
use super::backend::{
    Backend, Deleted, Dialect, Expiring, StoreError, TRACE_TABLES, UtcText, merge_traces_clause,
    migrate, timestamp,
};
use super::rows::{SpanRow, TraceRow};

pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    /// WAL lets readers run beside the writer; `synchronous = NORMAL` is
    /// WAL's durable-across-crashes setting. Two connections: one writes,
    /// one serves reads and retention.
    pub fn open(path: &Path, busy_timeout: Duration) -> Self {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(busy_timeout)
            .connect_lazy_with(options);
        SqliteBackend { pool }
    }
}

/// Fixed-width UTC text, so that comparing text compares times.
pub fn sqlite_time(t: OffsetDateTime) -> String {
    UtcText(t).to_string()
}

fn time_of(unix_ns: i64) -> String {
    sqlite_time(timestamp(unix_ns))
}

macro_rules! insert_spans {
    () => {
        "
INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, service_name, start_time,
                   end_time, duration_ms, status_code, status_message, cost, attributes, events)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
       value->>7, value->>8, value->>9, value->>10, value->>11 / 1e10, value->>12, value->>13
FROM json_each(?1) WHERE true"
    };
}

/// `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join clause.
const INSERT_SPANS: &str = concat!(
    insert_spans!(),
    "
ON CONFLICT (trace_id, span_id) DO NOTHING
RETURNING trace_id, span_id"
);

const COPY_SPANS: &str = insert_spans!();

macro_rules! insert_traces {
    () => {
        "
INSERT INTO workflow_traces (trace_id, call_id, workflow_name, start_time, end_time, status,
                             total_cost, root_span_id, service_name, span_count, error_count,
                             input_tokens, output_tokens)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 / 1e10,
       value->>7, value->>8, value->>9, value->>10, value->>11, value->>12
FROM json_each(?1) WHERE true
ORDER BY value->>0"
    };
}

const INSERT_NEW_TRACES: &str = concat!(
    insert_traces!(),
    "
ON CONFLICT (trace_id) DO NOTHING
RETURNING trace_id"
);

const MERGE_TRACES: &str = concat!(
    insert_traces!(),
    merge_traces_clause!(least: "MIN", greatest: "MAX", now: "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")
);

const INSERT_AGENTS: &str = "
INSERT INTO agent_executions (trace_id, agent_type, start_time, end_time, execution_time_ms,
                              success, input_data, output_data, cost, span_id, parent_span_id,
                              span_name, kind, provider, model, input_tokens, output_tokens,
                              error_message)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
       value->>7, value->>8 / 1e10, value->>9, value->>10, value->>11, value->>12,
       value->>13, value->>14, value->>15, value->>16, value->>17
FROM json_each(?1)";

const INSERT_COSTS: &str = "
INSERT INTO cost_details (trace_id, cost_type, cost_amount, usage_units, unit_cost, timestamp,
                          usage_unit, span_id, agent_type, model)
SELECT value->>0, value->>1, value->>2 / 1e10, value->>3, value->>4, value->>5, value->>6,
       value->>7, value->>8, value->>9
FROM json_each(?1)";

const INSERT_METRICS: &str = "
INSERT INTO performance_metrics (trace_id, metric_type, metric_value, timestamp, metadata,
                                 span_id)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5
FROM json_each(?1)";

#[async_trait]
impl Backend for SqliteBackend {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrate(&self.pool, Dialect::Sqlite).await
    }

    /// `IMMEDIATE` takes the write lock up front: a deferred transaction
    /// that later needs it fails with SQLITE_BUSY instead of waiting.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn insert_spans(
        tx: &mut Transaction<'static, Sqlite>,
        spans: &[&SpanRow],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = span_rows(spans);
        let rows = sqlx::query(INSERT_SPANS)
            .bind(rows)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn insert_new_traces(
        tx: &mut Transaction<'static, Sqlite>,
        traces: &[TraceRow],
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = trace_rows(traces);
        let rows = sqlx::query(INSERT_NEW_TRACES)
            .bind(rows)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter().map(|row| row.try_get(0)).collect()
    }

    async fn merge_traces(
        tx: &mut Transaction<'static, Sqlite>,
        traces: &[TraceRow],
    ) -> Result<(), sqlx::Error> {
        let rows = trace_rows(traces);
        execute(tx, MERGE_TRACES, rows).await
    }

    async fn copy_spans(
        tx: &mut Transaction<'static, Sqlite>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error> {
        let rows = span_rows(spans);
        execute(tx, COPY_SPANS, rows).await
    }

    async fn insert_details(
        tx: &mut Transaction<'static, Sqlite>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error> {
        let agents = spans.iter().filter_map(|s| {
            let a = s.agent.as_ref()?;
            Some(json!([
                s.trace_id,
                a.agent_type,
                time_of(s.start_ns),
                time_of(s.end_ns),
                a.execution_time_ms,
                a.success,
                a.input_data,
                a.output_data,
                s.cost_units,
                s.span_id,
                s.parent_span_id,
                s.name,
                a.kind,
                a.provider,
                a.model,
                s.input_tokens,
                s.output_tokens,
                a.error_message,
            ]))
        });
        let costs = spans.iter().filter_map(|s| {
            let c = s.cost.as_ref()?;
            Some(json!([
                s.trace_id,
                c.cost_type,
                s.cost_units?,
                c.usage_units,
                c.unit_cost,
                time_of(s.end_ns),
                c.usage_unit,
                s.span_id,
                c.agent_type,
                c.model,
            ]))
        });
        let metrics = spans.iter().flat_map(|s| {
            s.metrics.iter().map(|m| {
                json!([
                    s.trace_id,
                    m.metric_type,
                    m.value,
                    time_of(s.end_ns),
                    m.metadata,
                    s.span_id,
                ])
            })
        });
        // Encoded before the first await: the iterators borrow `spans`.
        let (agents, costs, metrics) = (array(agents), array(costs), array(metrics));
        execute(tx, INSERT_AGENTS, agents).await?;
        execute(tx, INSERT_COSTS, costs).await?;
        execute(tx, INSERT_METRICS, metrics).await
    }

    async fn record_alert(&self, alert: &AlertRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO alert_history \
             (id, alert_type, severity, message, triggered_at, resolved_at, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) {UPSERT_TAIL}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(alert.integer_id())
            .bind(&alert.alert_type)
            .bind(&alert.severity)
            .bind(&alert.message)
            .bind(sqlite_time(alert.triggered_at))
            .bind(alert.resolved_at.map(sqlite_time))
            .bind(&alert.metadata)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_expired(
        &self,
        what: Expiring,
        cutoff: OffsetDateTime,
        limit: i64,
    ) -> Result<Deleted, sqlx::Error> {
        let cutoff = sqlite_time(cutoff);
        if what == Expiring::Traces {
            // One write transaction: the same ordered subquery picks the
            // same traces for each of the three deletes.
            let expired = "SELECT trace_id FROM workflow_traces WHERE start_time < ?1 \
                           ORDER BY start_time, trace_id LIMIT ?2";
            let mut tx = self.begin_write().await?;
            let mut deleted = Vec::new();
            for table in [TRACE_TABLES[0], TRACE_TABLES[1], what.table()] {
                let sql = format!("DELETE FROM {table} WHERE trace_id IN ({expired})");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&cutoff)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?;
                deleted.push((table, done.rows_affected()));
            }
            tx.commit().await?;
            deleted.rotate_right(1);
            return Ok(deleted);
        }
        let sql = format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)",
            table = what.table(),
            column = what.time_column(),
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(vec![(what.table(), done.rows_affected())])
    }
}

fn span_rows(spans: &[&SpanRow]) -> String {
    array(spans.iter().map(|s| {
        json!([
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.name,
            s.kind,
            s.service_name,
            time_of(s.start_ns),
            time_of(s.end_ns),
            s.duration_ms,
            s.status_code,
            s.status_message,
            s.cost_units,
            s.attributes,
            s.events,
        ])
    }))
}

fn trace_rows(traces: &[TraceRow]) -> String {
    array(traces.iter().map(|t| {
        json!([
            t.trace_id,
            t.call_id,
            t.workflow_name,
            time_of(t.start_ns),
            time_of(t.end_ns),
            t.status,
            t.cost_units,
            t.root_span_id,
            t.service_name,
            t.span_count,
            t.error_count,
            t.input_tokens,
            t.output_tokens,
        ])
    }))
}

fn array(rows: impl Iterator<Item = Value>) -> String {
    Value::Array(rows.collect()).to_string()
}

async fn execute(
    tx: &mut Transaction<'static, Sqlite>,
    sql: &'static str,
    rows: String,
) -> Result<(), sqlx::Error> {
    if rows != "[]" {
        sqlx::query(sql).bind(rows).execute(&mut **tx).await?;
    }
    Ok(())
}
