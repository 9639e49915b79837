//! The shared write path, retention and the read side on a real SQLite
//! file. PostgreSQL runs the same paths in the e2e tests.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sqlx::Row;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, write};
use super::query::{AlertRecord, CostGroup, Store};
use super::retention::Retention;
use super::rows::{DEFAULT_CALL_ID_ATTRIBUTES, Mapping};
use super::sqlite::SqliteBackend;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

const NOW_NS: u64 = 1_790_000_000_000_000_000;

/// A root chain span and two priced model calls under it.
fn trace(trace: u8, call_id: &str, start_ns: u64) -> Vec<Span> {
    let span = |id: u8, parent: Option<u8>, attributes: Vec<KeyValue>| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: if parent.is_none() {
            "qualify_lead".into()
        } else {
            format!("chat {id}")
        },
        start_time_unix_nano: start_ns + u64::from(id) * 1_000_000,
        end_time_unix_nano: start_ns + 900_000_000,
        attributes,
        ..Default::default()
    };
    let llm = |usd: f64| {
        vec![
            attribute("lookout.genai.kind", Value::StringValue("chat".into())),
            attribute("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            attribute("gen_ai.usage.input_tokens", Value::IntValue(10)),
            attribute("gen_ai.usage.output_tokens", Value::IntValue(5)),
            attribute("gen_ai.usage.cost", Value::DoubleValue(usd)),
        ]
    };
    vec![
        span(2, Some(1), llm(0.001)),
        span(3, Some(1), llm(0.0025)),
        span(
            1,
            None,
            vec![attribute("call_id", Value::StringValue(call_id.into()))],
        ),
    ]
}

fn resources(spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attribute("service.name", Value::StringValue("svc".into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn mapping() -> Mapping {
    Mapping {
        call_id_attributes: DEFAULT_CALL_ID_ATTRIBUTES.map(String::from).to_vec(),
    }
}

async fn open(dir: &tempfile::TempDir) -> (SqliteBackend, Store) {
    let path = dir.path().join("lookout.db");
    let backend = SqliteBackend::open(&path, Duration::from_secs(5));
    backend.migrate().await.unwrap();
    let store = Store::sqlite(&path).await.unwrap();
    (backend, store)
}

async fn count(backend: &SqliteBackend, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0)
}

const TABLES: [&str; 5] = [
    "workflow_traces",
    "agent_executions",
    "cost_details",
    "performance_metrics",
    "spans",
];

async fn counts(backend: &SqliteBackend) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(count(backend, table).await);
    }
    counts
}

#[tokio::test]
async fn migrations_apply_once_and_again_as_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = open(&dir).await;
    backend.migrate().await.unwrap();
    let applied = count(&backend, "lookout_schema_migrations").await;
    assert_eq!(applied, 1);
}

#[tokio::test]
async fn a_batch_becomes_rows_and_a_replay_adds_none() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open(&dir).await;
    let batch = mapping().batch(&resources(trace(1, "call-1", NOW_NS)));
    let first = write(&backend, &batch).await.unwrap();
    assert_eq!((first.stored, first.duplicates), (3, 0));
    // 1 trace, 2 model calls, 2 costs, the workflow latency, 3 spans.
    assert_eq!(counts(&backend).await, [1, 2, 2, 1, 3]);

    let replay = write(&backend, &batch).await.unwrap();
    assert_eq!((replay.stored, replay.duplicates), (0, 3));
    assert_eq!(counts(&backend).await, [1, 2, 2, 1, 3]);

    let traces = store.traces_by_call_id("call-1").await.unwrap();
    assert_eq!(traces.len(), 1);
    let detail = &traces[0];
    assert_eq!(detail.trace.workflow_name, "qualify_lead");
    assert_eq!(detail.trace.status, "completed");
    assert!((detail.trace.total_cost.unwrap() - 0.0035).abs() < 1e-12);
    assert_eq!(detail.spans.len(), 3);
    assert_eq!(detail.agents.len(), 2);
    assert_eq!(detail.trace.span_count, 3);
}

#[tokio::test]
async fn late_spans_update_the_trace_row() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open(&dir).await;
    let mut spans = trace(1, "call-late", NOW_NS);
    let root = spans.pop().unwrap();
    write(&backend, &mapping().batch(&resources(spans)))
        .await
        .unwrap();
    let early = sqlx::query("SELECT status, call_id, workflow_name FROM workflow_traces")
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert_eq!(early.get::<String, _>(0), "running");
    assert_eq!(early.get::<String, _>(1), "01".repeat(16), "no call id yet");
    assert_eq!(early.get::<String, _>(2), "svc");

    write(&backend, &mapping().batch(&resources(vec![root])))
        .await
        .unwrap();
    let traces = store.traces_by_call_id("call-late").await.unwrap();
    let trace = &traces[0].trace;
    assert_eq!(
        (trace.status.as_str(), trace.workflow_name.as_str()),
        ("completed", "qualify_lead")
    );
    assert!((trace.total_cost.unwrap() - 0.0035).abs() < 1e-12);
}

#[tokio::test]
async fn retention_deletes_only_expired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open(&dir).await;
    let day_ns = 86_400 * 1_000_000_000;
    let old = trace(1, "old", NOW_NS - 40 * day_ns);
    let recent = trace(2, "recent", NOW_NS - 5 * day_ns);
    write(
        &backend,
        &mapping().batch(&resources([old, recent].concat())),
    )
    .await
    .unwrap();
    let alert = |days: i64| AlertRecord {
        alert_type: "cost_spike".into(),
        severity: "warning".into(),
        message: format!("{days} days ago"),
        triggered_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(NOW_NS)).unwrap()
            - time::Duration::days(days),
        resolved_at: None,
        metadata: Some(serde_json::json!({"days": days})),
    };
    store.record_alert(&alert(40)).await.unwrap();
    store.record_alert(&alert(1)).await.unwrap();

    let retention = Retention {
        days: 30,
        interval: Duration::from_secs(3600),
        batch_size: 2,
    };
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(NOW_NS)).unwrap();
    let deleted = retention
        .sweep(
            &backend,
            retention.cutoff(now),
            "test",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        deleted,
        1 + 2 + 3 + 2 + 1 + 1,
        "a trace, its rows and an alert"
    );
    assert_eq!(counts(&backend).await, [1, 2, 2, 1, 3]);
    assert!(store.traces_by_call_id("old").await.unwrap().is_empty());
    assert_eq!(store.traces_by_call_id("recent").await.unwrap().len(), 1);
    let alerts = store.recent_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].metadata, Some(serde_json::json!({"days": 1})));
}

#[tokio::test]
async fn cost_totals_group_by_model_and_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open(&dir).await;
    let spans = [trace(1, "a", NOW_NS), trace(2, "b", NOW_NS)].concat();
    write(&backend, &mapping().batch(&resources(spans)))
        .await
        .unwrap();
    let since = OffsetDateTime::from_unix_timestamp_nanos(i128::from(NOW_NS)).unwrap()
        - time::Duration::hours(1);
    let totals = store
        .cost_totals(CostGroup::Model, Duration::from_secs(3600), since)
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].group.as_str(), totals[0].rows), ("gpt-4o", 4));
    assert!((totals[0].cost - 0.007).abs() < 1e-12);
    assert_eq!(totals[0].bucket_start.unix_timestamp() % 3600, 0);
}

#[tokio::test]
async fn spans_stored_without_their_trace_row_fall_back_to_the_checked_path() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = open(&dir).await;
    let batch = mapping().batch(&resources(trace(1, "call-1", NOW_NS)));
    write(&backend, &batch).await.unwrap();
    sqlx::query("DELETE FROM workflow_traces")
        .execute(backend.pool())
        .await
        .unwrap();
    let again = write(&backend, &batch).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3));
    assert_eq!(count(&backend, "agent_executions").await, 2);
}

#[tokio::test]
async fn an_alert_episode_is_one_row_resolved_in_place() {
    use super::alerts::AlertRow;
    use lookout_pipelines::alert::{Alert, AlertSeverity, AlertStatus, NotificationReason};
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = open(&dir).await;
    let mut alert = Alert::example();
    alert.severity = AlertSeverity::Warning;
    backend.record_alert(&AlertRow::of(&alert)).await.unwrap();
    alert.severity = AlertSeverity::Critical;
    alert.reason = NotificationReason::SeverityRaised;
    backend.record_alert(&AlertRow::of(&alert)).await.unwrap();
    alert.status = AlertStatus::Resolved;
    alert.reason = NotificationReason::Resolved;
    alert.ends_at = Some(alert.starts_at + time::Duration::minutes(3));
    alert.summary = "error_rate is back to 1.0% over 5m".into();
    backend.record_alert(&AlertRow::of(&alert)).await.unwrap();
    let rows: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT alert_type, severity, message, resolved_at FROM alert_history")
            .fetch_all(backend.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let (alert_type, severity, message, resolved_at) = &rows[0];
    assert_eq!(alert_type, "agent_error_rate");
    assert_eq!(severity, "critical");
    assert!(message.contains("20"), "{message}");
    assert!(resolved_at.is_some());
}
