//! PostgreSQL's SQL for the shared write path. Each table is written with
//! one multi-row `INSERT … SELECT FROM UNNEST(arrays)` per batch: one
//! round trip and one plan however many rows, without COPY's staging
//! table (which idempotent inserts would need).

use std::io::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::alerts::{AlertRow, UPSERT_TAIL};
use super::backend::{
    Backend, Deleted, Dialect, Expiring, StoreError, TRACE_TABLES, UtcText, merge_traces_clause,
    migrate, timestamp,
};
use super::rows::{SpanRow, TraceRow};

pub struct PostgresBackend {
    pool: PgPool,
}

impl PostgresBackend {
    /// A pool that connects on first use, so that a database that is down
    /// at start delays writes instead of failing the daemon.
    pub fn open(options: PgConnectOptions, max_connections: u32, acquire: Duration) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire)
            .connect_lazy_with(options.application_name("lookout"));
        PostgresBackend { pool }
    }
}

const INSERT_SPANS: &str = "
INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, service_name, start_time,
                   end_time, duration_ms, status_code, status_message, cost, attributes, events)
SELECT t.trace_id, t.span_id, t.parent_span_id, t.name, t.kind, t.service_name, t.start_time,
       t.end_time, t.duration_ms, t.status_code, t.status_message,
       t.cost_units::numeric / 10000000000, t.attributes::jsonb, t.events::jsonb
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::float8[], $10::text[], $11::text[],
            $12::int8[], $13::text[], $14::text[])
  AS t(trace_id, span_id, parent_span_id, name, kind, service_name, start_time, end_time,
       duration_ms, status_code, status_message, cost_units, attributes, events)
ON CONFLICT (trace_id, span_id) DO NOTHING
RETURNING trace_id, span_id";

/// A batch's trace rows, from arrays; each statement below ends it.
macro_rules! insert_traces {
    () => {
        "
INSERT INTO workflow_traces (id, trace_id, call_id, workflow_name, start_time, end_time,
                             status, total_cost, root_span_id, service_name, span_count,
                             error_count, input_tokens, output_tokens)
SELECT t.id, t.trace_id, t.call_id, t.workflow_name, t.start_time, t.end_time, t.status,
       t.cost_units::numeric / 10000000000, t.root_span_id, t.service_name, t.span_count,
       t.error_count, t.input_tokens, t.output_tokens
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::text[], $7::int8[], $8::text[], $9::text[], $10::int4[], $11::int4[],
            $12::int8[], $13::int8[], $14::uuid[])
  AS t(trace_id, call_id, workflow_name, start_time, end_time, status, cost_units,
       root_span_id, service_name, span_count, error_count, input_tokens, output_tokens, id)
ORDER BY t.trace_id"
    };
}

/// Creates the rows of traces the store has never seen, and names them.
const INSERT_NEW_TRACES: &str = concat!(
    insert_traces!(),
    "
ON CONFLICT (trace_id) DO NOTHING
RETURNING trace_id"
);

/// Merges late spans into known traces' rows (see `merge_traces_clause`).
const MERGE_TRACES: &str = concat!(
    insert_traces!(),
    merge_traces_clause!(least: "LEAST", greatest: "GREATEST", now: "NOW()")
);

const COPY_SPANS: &str = "COPY spans (trace_id, span_id, parent_span_id, name, kind, service_name, \
    start_time, end_time, duration_ms, status_code, status_message, cost, attributes, events) \
    FROM STDIN";

/// The detail tables take plain appends, so they are written with COPY,
/// PostgreSQL's bulk path: tuples are packed a page at a time with one
/// WAL record per page, where INSERT writes one per row.
const COPY_AGENTS: &str = "COPY agent_executions (id, trace_id, agent_type, start_time, end_time, \
    execution_time_ms, success, input_data, output_data, cost, span_id, parent_span_id, span_name, \
    kind, provider, model, input_tokens, output_tokens, error_message) FROM STDIN";

const COPY_COSTS: &str = "COPY cost_details (id, trace_id, cost_type, cost_amount, usage_units, \
    unit_cost, timestamp, usage_unit, span_id, agent_type, model) FROM STDIN";

const COPY_METRICS: &str = "COPY performance_metrics (id, trace_id, metric_type, metric_value, \
    timestamp, metadata, span_id) FROM STDIN";

#[async_trait]
impl Backend for PostgresBackend {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrate(&self.pool, Dialect::Postgres).await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn insert_spans(
        tx: &mut Transaction<'static, Postgres>,
        spans: &[&SpanRow],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let column =
            |f: fn(&SpanRow) -> Option<&str>| spans.iter().map(|s| f(s)).collect::<Vec<_>>();
        let rows = sqlx::query(INSERT_SPANS)
            .bind(
                spans
                    .iter()
                    .map(|s| s.trace_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(spans.iter().map(|s| s.span_id.as_str()).collect::<Vec<_>>())
            .bind(column(|s| s.parent_span_id.as_deref()))
            .bind(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>())
            .bind(column(|s| s.kind.as_deref()))
            .bind(column(|s| s.service_name.as_deref()))
            .bind(times(spans, |s| s.start_ns))
            .bind(times(spans, |s| s.end_ns))
            .bind(spans.iter().map(|s| s.duration_ms).collect::<Vec<_>>())
            .bind(spans.iter().map(|s| s.status_code).collect::<Vec<_>>())
            .bind(column(|s| s.status_message.as_deref()))
            .bind(spans.iter().map(|s| s.cost_units).collect::<Vec<_>>())
            .bind(
                spans
                    .iter()
                    .map(|s| s.attributes.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|s| s.events.as_deref()))
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn insert_new_traces(
        tx: &mut Transaction<'static, Postgres>,
        traces: &[TraceRow],
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = bind_traces(sqlx::query(INSERT_NEW_TRACES), traces)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter().map(|row| row.try_get(0)).collect()
    }

    async fn merge_traces(
        tx: &mut Transaction<'static, Postgres>,
        traces: &[TraceRow],
    ) -> Result<(), sqlx::Error> {
        bind_traces(sqlx::query(MERGE_TRACES), traces)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn copy_spans(
        tx: &mut Transaction<'static, Postgres>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error> {
        copy_in(tx, COPY_SPANS, span_rows(spans)).await
    }

    async fn insert_details(
        tx: &mut Transaction<'static, Postgres>,
        spans: &[&SpanRow],
    ) -> Result<(), sqlx::Error> {
        copy_in(tx, COPY_AGENTS, agent_rows(spans)).await?;
        copy_in(tx, COPY_COSTS, cost_rows(spans)).await?;
        copy_in(tx, COPY_METRICS, metric_rows(spans)).await
    }

    async fn record_alert(&self, alert: &AlertRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO alert_history \
             (id, alert_type, severity, message, triggered_at, resolved_at, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS JSONB)) {UPSERT_TAIL}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(alert.uuid())
            .bind(&alert.alert_type)
            .bind(&alert.severity)
            .bind(&alert.message)
            .bind(alert.triggered_at)
            .bind(alert.resolved_at)
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
        // Short statements through a LIMITed subquery, which lock only the
        // rows they delete, so writers never wait long.
        if what == Expiring::Traces {
            let row = sqlx::query(DELETE_EXPIRED_TRACES)
                .bind(cutoff)
                .bind(limit)
                .fetch_one(&self.pool)
                .await?;
            return Ok(vec![
                (what.table(), row.try_get::<i64, _>(0)? as u64),
                (TRACE_TABLES[0], row.try_get::<i64, _>(1)? as u64),
                (TRACE_TABLES[1], row.try_get::<i64, _>(2)? as u64),
            ]);
        }
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN \
             (SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2)",
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

/// A batch of expired traces with their spans and agent executions, in
/// one statement.
const DELETE_EXPIRED_TRACES: &str = "
WITH expired AS (
    SELECT trace_id FROM workflow_traces WHERE start_time < $1 ORDER BY start_time LIMIT $2
), agents AS (
    DELETE FROM agent_executions WHERE trace_id IN (SELECT trace_id FROM expired) RETURNING 1
), spans AS (
    DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM expired) RETURNING 1
), traces AS (
    DELETE FROM workflow_traces WHERE trace_id IN (SELECT trace_id FROM expired) RETURNING 1
)
SELECT (SELECT COUNT(*) FROM traces), (SELECT COUNT(*) FROM agents), (SELECT COUNT(*) FROM spans)";

type PgQuery = sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>;

fn bind_traces(query: PgQuery, traces: &[TraceRow]) -> PgQuery {
    let text = |f: fn(&TraceRow) -> &str| traces.iter().map(f).collect::<Vec<_>>();
    let times =
        |f: fn(&TraceRow) -> i64| traces.iter().map(|t| timestamp(f(t))).collect::<Vec<_>>();
    query
        .bind(text(|t| &t.trace_id))
        .bind(text(|t| &t.call_id))
        .bind(text(|t| &t.workflow_name))
        .bind(times(|t| t.start_ns))
        .bind(times(|t| t.end_ns))
        .bind(text(|t| t.status))
        .bind(traces.iter().map(|t| t.cost_units).collect::<Vec<_>>())
        .bind(
            traces
                .iter()
                .map(|t| t.root_span_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            traces
                .iter()
                .map(|t| t.service_name.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(traces.iter().map(|t| t.span_count).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.error_count).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.input_tokens).collect::<Vec<_>>())
        .bind(traces.iter().map(|t| t.output_tokens).collect::<Vec<_>>())
        .bind(traces.iter().map(|_| time_ordered_id()).collect::<Vec<_>>())
}

fn span_rows(spans: &[&SpanRow]) -> CopyRows {
    let bytes: usize = spans.iter().map(|s| 256 + s.attributes.len()).sum();
    let mut rows = CopyRows::with_capacity(bytes);
    for span in spans {
        rows.text(&span.trace_id);
        rows.text(&span.span_id);
        rows.optional_text(span.parent_span_id.as_deref());
        rows.text(&span.name);
        rows.optional_text(span.kind.as_deref());
        rows.optional_text(span.service_name.as_deref());
        rows.time(span.start_ns);
        rows.time(span.end_ns);
        rows.optional_float(Some(span.duration_ms));
        rows.text(span.status_code);
        rows.optional_text(span.status_message.as_deref());
        rows.optional_cost(span.cost_units);
        rows.json(&span.attributes);
        rows.optional_json(span.events.as_deref());
        rows.end_row();
    }
    rows
}

fn times(spans: &[&SpanRow], f: fn(&SpanRow) -> i64) -> Vec<OffsetDateTime> {
    spans.iter().map(|s| timestamp(f(s))).collect()
}

fn agent_rows(spans: &[&SpanRow]) -> CopyRows {
    let bytes: usize = spans
        .iter()
        .filter_map(|s| s.agent.as_ref())
        .map(|a| {
            384 + a.input_data.as_ref().map_or(0, String::len)
                + a.output_data.as_ref().map_or(0, String::len)
        })
        .sum();
    let mut rows = CopyRows::with_capacity(bytes);
    for (span, agent) in spans.iter().filter_map(|s| Some((*s, s.agent.as_ref()?))) {
        rows.id();
        rows.text(&span.trace_id);
        rows.text(&agent.agent_type);
        rows.time(span.start_ns);
        rows.time(span.end_ns);
        rows.int(agent.execution_time_ms);
        rows.bool(agent.success);
        rows.optional_json(agent.input_data.as_deref());
        rows.optional_json(agent.output_data.as_deref());
        rows.optional_cost(span.cost_units);
        rows.text(&span.span_id);
        rows.optional_text(span.parent_span_id.as_deref());
        rows.text(&span.name);
        rows.text(&agent.kind);
        rows.optional_text(agent.provider.as_deref());
        rows.optional_text(agent.model.as_deref());
        rows.optional_int(span.input_tokens);
        rows.optional_int(span.output_tokens);
        rows.optional_text(agent.error_message.as_deref());
        rows.end_row();
    }
    rows
}

fn cost_rows(spans: &[&SpanRow]) -> CopyRows {
    let mut rows = CopyRows::with_capacity(spans.len() * 192);
    for span in spans {
        let (Some(cost), Some(units)) = (&span.cost, span.cost_units) else {
            continue;
        };
        rows.id();
        rows.text(&span.trace_id);
        rows.text(&cost.cost_type);
        rows.optional_cost(Some(units));
        rows.optional_int(cost.usage_units);
        rows.optional_float(cost.unit_cost);
        rows.time(span.end_ns);
        rows.optional_text(cost.usage_unit);
        rows.text(&span.span_id);
        rows.optional_text(cost.agent_type.as_deref());
        rows.optional_text(cost.model.as_deref());
        rows.end_row();
    }
    rows
}

fn metric_rows(spans: &[&SpanRow]) -> CopyRows {
    let mut rows = CopyRows::with_capacity(spans.len() * 320);
    for span in spans {
        for metric in &span.metrics {
            rows.id();
            rows.text(&span.trace_id);
            rows.text(metric.metric_type);
            rows.optional_float(Some(metric.value));
            rows.time(span.end_ns);
            rows.json(&metric.metadata);
            rows.text(&span.span_id);
            rows.end_row();
        }
    }
    rows
}

/// A time-ordered id (UUIDv7) rather than the schema's random default:
/// inserts then land on the primary key's rightmost leaf instead of a
/// random page. The random bits come from a fast PRNG: they need to be
/// unique, not secret, and the system's generator costs a syscall.
fn time_ordered_id() -> Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    fastrand::fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    statement: &str,
    rows: CopyRows,
) -> Result<(), sqlx::Error> {
    if rows.count == 0 {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(rows.text).await?;
    copy.finish().await?;
    Ok(())
}

/// Rows in COPY's text format: tab-separated fields, `\N` for NULL,
/// backslash escapes for the characters that would break a field.
#[derive(Default)]
struct CopyRows {
    text: Vec<u8>,
    count: usize,
    /// Whether the current row has a field yet.
    in_row: bool,
}

impl CopyRows {
    fn with_capacity(bytes: usize) -> CopyRows {
        CopyRows {
            text: Vec::with_capacity(bytes),
            ..CopyRows::default()
        }
    }

    fn separator(&mut self) {
        if self.in_row {
            self.text.push(b'\t');
        }
        self.in_row = true;
    }

    fn end_row(&mut self) {
        self.text.push(b'\n');
        self.count += 1;
        self.in_row = false;
    }

    fn display(&mut self, value: impl std::fmt::Display) {
        self.separator();
        // Writing to a Vec cannot fail.
        let _ = write!(self.text, "{value}");
    }

    fn id(&mut self) {
        let id = time_ordered_id();
        self.raw(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }

    fn raw(&mut self, value: &str) {
        self.separator();
        self.text.extend_from_slice(value.as_bytes());
    }

    fn text(&mut self, value: &str) {
        self.separator();
        let mut rest = value.as_bytes();
        if memchr::memchr(b'\r', rest).is_some() {
            // Rare enough for the byte-by-byte path.
            for byte in rest {
                self.escaped(*byte);
            }
            return;
        }
        // Copied in runs between the few bytes that need an escape.
        while let Some(at) = memchr::memchr3(b'\\', b'\t', b'\n', rest) {
            self.text.extend_from_slice(&rest[..at]);
            self.escaped(rest[at]);
            rest = &rest[at + 1..];
        }
        self.text.extend_from_slice(rest);
    }

    /// JSON text from serde_json, which escapes every control character:
    /// only its backslashes need COPY's escape, in one pass.
    fn json(&mut self, value: &str) {
        self.separator();
        let mut rest = value.as_bytes();
        while let Some(at) = memchr::memchr(b'\\', rest) {
            self.text.extend_from_slice(&rest[..=at]);
            self.text.push(b'\\');
            rest = &rest[at + 1..];
        }
        self.text.extend_from_slice(rest);
    }

    fn optional_json(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.json(value),
            None => self.null(),
        }
    }

    fn escaped(&mut self, byte: u8) {
        match byte {
            b'\\' => self.text.extend_from_slice(b"\\\\"),
            b'\t' => self.text.extend_from_slice(b"\\t"),
            b'\n' => self.text.extend_from_slice(b"\\n"),
            b'\r' => self.text.extend_from_slice(b"\\r"),
            other => self.text.push(other),
        }
    }

    fn null(&mut self) {
        self.raw("\\N");
    }

    fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    fn int(&mut self, value: impl Into<i64>) {
        self.display(value.into());
    }

    fn optional_int(&mut self, value: Option<impl Into<i64>>) {
        match value {
            Some(value) => self.int(value),
            None => self.null(),
        }
    }

    fn optional_float(&mut self, value: Option<f64>) {
        match value.filter(|v| v.is_finite()) {
            Some(value) => self.display(value),
            None => self.null(),
        }
    }

    fn bool(&mut self, value: bool) {
        self.raw(if value { "t" } else { "f" });
    }

    /// ISO 8601 in UTC, which timestamptz reads.
    fn time(&mut self, unix_ns: i64) {
        self.display(UtcText(timestamp(unix_ns)));
    }

    /// Whole 1e-10 USD units as an exact decimal.
    fn optional_cost(&mut self, units: Option<i64>) {
        match units {
            Some(units) => self.display(format_args!(
                "{}.{:010}",
                units / 10_000_000_000,
                units % 10_000_000_000
            )),
            None => self.null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_would_end_a_field_or_a_row() {
        let mut rows = CopyRows::default();
        rows.text("a\tb\nc\\d\re");
        rows.json(r#"{"prompt":"line\nnext \"quoted\""}"#);
        rows.optional_text(None);
        rows.optional_cost(Some(12_300_000));
        rows.end_row();
        let text = String::from_utf8(rows.text).unwrap();
        assert_eq!(
            text,
            "a\\tb\\nc\\\\d\\re\t{\"prompt\":\"line\\\\nnext \\\\\"quoted\\\\\"\"}\t\\N\t0.0012300000\n"
        );
    }
}
