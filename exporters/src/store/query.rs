//! The read side of the store, for the API and the CLI: a call's traces
//! with their spans and agents, cost totals by agent, model or cost type
//! per time bucket, and alerts. The SQL is the same on both databases
//! except where noted; each function runs it on whichever pool it has.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqlSafeStr};
use time::OffsetDateTime;

use super::sqlite::sqlite_time;

/// A connection to a store that the exporters write.
#[derive(Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same code on either pool: the row types differ, the code
/// that reads them does not.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRecord {
    pub trace_id: String,
    pub call_id: String,
    pub workflow_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
    pub status: String,
    pub total_cost: Option<f64>,
    pub span_count: i32,
    pub error_count: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanRecord {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    pub duration_ms: f64,
    pub status_code: String,
    pub cost: Option<f64>,
    pub attributes: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRecord {
    pub span_id: String,
    pub agent_type: String,
    pub kind: String,
    pub model: Option<String>,
    pub execution_time_ms: Option<i32>,
    pub success: bool,
    pub cost: Option<f64>,
}

/// A trace with everything stored under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceDetail {
    pub trace: TraceRecord,
    pub spans: Vec<SpanRecord>,
    pub agents: Vec<AgentRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    Agent,
    Model,
    CostType,
}

impl CostGroup {
    fn column(self) -> &'static str {
        match self {
            CostGroup::Agent => "COALESCE(agent_type, '')",
            CostGroup::Model => "COALESCE(model, '')",
            CostGroup::CostType => "cost_type",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostTotal {
    #[serde(with = "time::serde::rfc3339")]
    pub bucket_start: OffsetDateTime,
    /// The agent, model or cost type; empty when the rows did not say.
    pub group: String,
    pub cost: f64,
    pub rows: i64,
}

/// An alert to record in `alert_history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    pub alert_type: String,
    pub severity: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub triggered_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub metadata: Option<serde_json::Value>,
}

const TRACES_BY_CALL: &str = "
SELECT trace_id, call_id, workflow_name, start_time, end_time, status,
       CAST(total_cost AS DOUBLE PRECISION) AS total_cost, span_count, error_count
FROM workflow_traces WHERE call_id = $1 ORDER BY start_time";

const SPANS_OF_TRACE: &str = "
SELECT span_id, parent_span_id, name, kind, start_time, duration_ms, status_code,
       CAST(cost AS DOUBLE PRECISION) AS cost, CAST(attributes AS TEXT) AS attributes
FROM spans WHERE trace_id = $1 ORDER BY start_time, span_id";

const AGENTS_OF_TRACE: &str = "
SELECT span_id, agent_type, kind, model, execution_time_ms, success,
       CAST(cost AS DOUBLE PRECISION) AS cost
FROM agent_executions WHERE trace_id = $1 ORDER BY start_time, span_id";

impl Store {
    pub async fn postgres(url: &str) -> Result<Store, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.application_name("lookout");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Store::Postgres(pool))
    }

    /// Opens an existing database; the exporter creates it.
    pub async fn sqlite(path: &Path) -> Result<Store, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(pool))
    }

    /// Every trace of a call, oldest first, each with its spans and agents.
    pub async fn traces_by_call_id(&self, call_id: &str) -> Result<Vec<TraceDetail>, sqlx::Error> {
        let traces = on_pool!(self, pool => {
            let rows = sqlx::query(TRACES_BY_CALL).bind(call_id).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(TraceRecord {
                trace_id: row.try_get("trace_id")?,
                call_id: row.try_get("call_id")?,
                workflow_name: row.try_get("workflow_name")?,
                start_time: row.try_get("start_time")?,
                end_time: row.try_get("end_time")?,
                status: row.try_get("status")?,
                total_cost: row.try_get("total_cost")?,
                span_count: row.try_get("span_count")?,
                error_count: row.try_get("error_count")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let mut details = Vec::with_capacity(traces.len());
        for trace in traces {
            let (spans, agents) = self.trace_contents(&trace.trace_id).await?;
            details.push(TraceDetail {
                trace,
                spans,
                agents,
            });
        }
        Ok(details)
    }

    async fn trace_contents(
        &self,
        trace_id: &str,
    ) -> Result<(Vec<SpanRecord>, Vec<AgentRecord>), sqlx::Error> {
        on_pool!(self, pool => {
            let span_rows = sqlx::query(SPANS_OF_TRACE).bind(trace_id).fetch_all(pool).await?;
            let spans = span_rows.iter().map(|row| {
                let attributes: String = row.try_get("attributes")?;
                Ok(SpanRecord {
                    span_id: row.try_get("span_id")?,
                    parent_span_id: row.try_get("parent_span_id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    start_time: row.try_get("start_time")?,
                    duration_ms: row.try_get("duration_ms")?,
                    status_code: row.try_get("status_code")?,
                    cost: row.try_get("cost")?,
                    attributes: serde_json::from_str(&attributes)
                        .map_err(|err| sqlx::Error::Decode(Box::new(err)))?,
                })
            }).collect::<Result<Vec<_>, sqlx::Error>>()?;
            let agent_rows = sqlx::query(AGENTS_OF_TRACE).bind(trace_id).fetch_all(pool).await?;
            let agents = agent_rows.iter().map(|row| Ok(AgentRecord {
                span_id: row.try_get("span_id")?,
                agent_type: row.try_get("agent_type")?,
                kind: row.try_get("kind")?,
                model: row.try_get("model")?,
                execution_time_ms: row.try_get("execution_time_ms")?,
                success: row.try_get("success")?,
                cost: row.try_get("cost")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok((spans, agents))
        })
    }

    /// Costs from `cost_details` since `since`, summed per `group` and
    /// per `bucket` (whole seconds, aligned to the Unix epoch).
    pub async fn cost_totals(
        &self,
        group: CostGroup,
        bucket: Duration,
        since: OffsetDateTime,
    ) -> Result<Vec<CostTotal>, sqlx::Error> {
        let seconds = i64::try_from(bucket.as_secs().max(1)).unwrap_or(i64::MAX);
        // Only the epoch seconds of a timestamp are spelled differently.
        let epoch = match self {
            Store::Postgres(_) => "CAST(floor(extract(epoch FROM timestamp)) AS BIGINT)",
            Store::Sqlite(_) => "unixepoch(timestamp)",
        };
        let sql = format!(
            "SELECT ({epoch} / $1) * $1 AS bucket, {group} AS grp, \
                    CAST(SUM(cost_amount) AS DOUBLE PRECISION) AS cost, COUNT(*) AS n \
             FROM cost_details WHERE timestamp >= $2 \
             GROUP BY bucket, grp ORDER BY bucket, grp",
            group = group.column(),
        );
        let rows = match self {
            Store::Postgres(pool) => {
                let query = sqlx::query(sqlx::AssertSqlSafe(sql).into_sql_str());
                cost_rows(query.bind(seconds).bind(since).fetch_all(pool).await?)?
            }
            Store::Sqlite(pool) => {
                let query = sqlx::query(sqlx::AssertSqlSafe(sql).into_sql_str());
                let since = sqlite_time(since);
                cost_rows(query.bind(seconds).bind(since).fetch_all(pool).await?)?
            }
        };
        Ok(rows)
    }

    /// The newest alerts first.
    pub async fn recent_alerts(&self, limit: i64) -> Result<Vec<AlertRecord>, sqlx::Error> {
        const SQL: &str = "
SELECT alert_type, severity, message, triggered_at, resolved_at,
       CAST(metadata AS TEXT) AS metadata
FROM alert_history ORDER BY triggered_at DESC LIMIT $1";
        on_pool!(self, pool => {
            let rows = sqlx::query(SQL).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|row| {
                let metadata: Option<String> = row.try_get("metadata")?;
                Ok(AlertRecord {
                    alert_type: row.try_get("alert_type")?,
                    severity: row.try_get("severity")?,
                    message: row.try_get("message")?,
                    triggered_at: row.try_get("triggered_at")?,
                    resolved_at: row.try_get("resolved_at")?,
                    metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
                })
            }).collect()
        })
    }

    /// Appends an alert to `alert_history`.
    pub async fn record_alert(&self, alert: &AlertRecord) -> Result<(), sqlx::Error> {
        let metadata = alert.metadata.as_ref().map(|m| m.to_string());
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO alert_history \
                     (alert_type, severity, message, triggered_at, resolved_at, metadata) \
                     VALUES ($1, $2, $3, $4, $5, CAST($6 AS JSONB))",
                )
                .bind(&alert.alert_type)
                .bind(&alert.severity)
                .bind(&alert.message)
                .bind(alert.triggered_at)
                .bind(alert.resolved_at)
                .bind(metadata)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO alert_history \
                     (alert_type, severity, message, triggered_at, resolved_at, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&alert.alert_type)
                .bind(&alert.severity)
                .bind(&alert.message)
                .bind(sqlite_time(alert.triggered_at))
                .bind(alert.resolved_at.map(sqlite_time))
                .bind(metadata)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

fn cost_rows<R: Row>(rows: Vec<R>) -> Result<Vec<CostTotal>, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            let bucket: i64 = row.try_get(0)?;
            Ok(CostTotal {
                bucket_start: OffsetDateTime::from_unix_timestamp(bucket)
                    .map_err(|err| sqlx::Error::Decode(Box::new(err)))?,
                group: row.try_get(1)?,
                cost: row.try_get(2)?,
                rows: row.try_get(3)?,
            })
        })
        .collect()
}
