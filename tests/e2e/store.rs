//! The `postgres` and `sqlite` exporters against a real PostgreSQL cluster
//! and a real SQLite file: migrations, exact rows for 10,000 spans sent by
//! the OpenTelemetry Python SDK, replays, a 20 s database outage under
//! load, retention, call-id queries and a wrong password.

use std::process::{Command, Stdio};
use std::time::Duration;

use lookout_exporters::store::query::Store;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::time::Instant;

use crate::harness::{
    Daemon, attribute, metric_value, resource_spans, run_python, string_attribute, traces_body,
};
use crate::postgres_server::{PASSWORD, Postgres};

const TABLES: [&str; 5] = [
    "workflow_traces",
    "agent_executions",
    "cost_details",
    "performance_metrics",
    "spans",
];

/// OTLP in, the normaliser and the cost processor, both stores out.
fn config(postgres_url: Option<&str>, sqlite: bool, extra: &str) -> String {
    let mut exporters = String::new();
    let mut names = Vec::new();
    if let Some(url) = postgres_url {
        exporters += &format!(
            "  postgres:\n    url: {url}\n    retry_on_failure:\n      initial_interval: 500ms\n      \
             max_interval: 2s\n      max_elapsed_time: 180s\n{extra}"
        );
        names.push("postgres");
    }
    if sqlite {
        exporters += &format!("  sqlite:\n    path: {{dir}}/data/lookout.db\n{extra}");
        names.push("sqlite");
    }
    format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
processors:
  genai:
  cost:
    trace_rollup:
      enabled: false
  batch:
    send_batch_size: 2000
    timeout: 50ms
exporters:
{exporters}service:
  telemetry:
    metrics:
      endpoint: {{telemetry}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, cost, batch]
      exporters: [{names}]
",
        names = names.join(", ")
    )
}

/// One number from either database.
async fn scalar(store: &Store, sql: &str) -> f64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT CAST(({sql}) AS DOUBLE PRECISION)"));
    let value: Option<f64> = match store {
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .unwrap_or_else(|err| panic!("query failed: {err}"));
    value.unwrap_or(0.0)
}

async fn row_counts(store: &Store) -> Vec<f64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(scalar(store, &format!("SELECT COUNT(*) FROM {table}")).await);
    }
    counts
}

/// Polls until `table` holds `rows` rows.
async fn wait_for_rows(store: &Store, table: &str, rows: f64, timeout: Duration, daemon: &Daemon) {
    let deadline = Instant::now() + timeout;
    loop {
        let count = scalar(store, &format!("SELECT COUNT(*) FROM {table}")).await;
        if count == rows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} has {count} rows, not {rows}, after {timeout:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn send_with_python(daemon: &Daemon, traces: u32, spans_per_trace: u32, base_ns: u64) {
    let (traces, spans_per_trace) = (traces.to_string(), spans_per_trace.to_string());
    let endpoint = daemon.http_url("");
    let base_ns = base_ns.to_string();
    run_python(
        "store_load.py",
        &[
            "--endpoint",
            &endpoint,
            "--traces",
            &traces,
            "--spans-per-trace",
            &spans_per_trace,
            "--seed",
            "7",
            "--base-ns",
            &base_ns,
        ],
    );
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// Every table holds exactly the rows 1,000 traces of 10 chat spans make,
/// and every trace's total is the sum of its spans' costs.
async fn assert_exact_rows(store: &Store, exact_sums: bool) {
    // Per span: one agent execution and one cost; per trace a workflow
    // latency metric.
    assert_eq!(
        row_counts(store).await,
        [1_000.0, 10_000.0, 10_000.0, 1_000.0, 10_000.0]
    );
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT trace_id, span_id FROM agent_executions) d";
    assert_eq!(scalar(store, distinct).await, 10_000.0);
    let calls = "SELECT COUNT(DISTINCT call_id) FROM workflow_traces WHERE call_id LIKE 'call-%'";
    assert_eq!(scalar(store, calls).await, 1_000.0);
    let named = "SELECT COUNT(*) FROM workflow_traces \
                 WHERE workflow_name = 'qualify_lead' AND status = 'completed' AND span_count = 10";
    assert_eq!(scalar(store, named).await, 1_000.0);
    let priced = "SELECT COUNT(*) FROM cost_details \
                  WHERE cost_type = 'llm' AND cost_amount > 0 AND usage_unit = 'tokens'";
    assert_eq!(scalar(store, priced).await, 10_000.0);
    // PostgreSQL sums NUMERIC exactly; SQLite sums REAL.
    let tolerance = if exact_sums { "0" } else { "1e-9" };
    let wrong_totals = format!(
        "SELECT COUNT(*) FROM workflow_traces w WHERE w.total_cost IS NULL OR \
         ABS(w.total_cost - (SELECT SUM(s.cost) FROM spans s WHERE s.trace_id = w.trace_id)) > {tolerance}"
    );
    assert_eq!(scalar(store, &wrong_totals).await, 0.0);
    let spans = scalar(store, "SELECT SUM(cost) FROM spans").await;
    let costs = scalar(store, "SELECT SUM(cost_amount) FROM cost_details").await;
    assert!(
        spans > 0.0 && (spans - costs).abs() < 1e-9,
        "{spans} vs {costs}"
    );
}

async fn assert_call_query(store: &Store) {
    let traces = store.traces_by_call_id("call-7").await.expect("query");
    assert_eq!(traces.len(), 1);
    let detail = &traces[0];
    assert_eq!(detail.trace.workflow_name, "qualify_lead");
    assert_eq!(detail.spans.len(), 10);
    assert_eq!(detail.agents.len(), 10);
    assert_eq!(
        detail
            .spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .count(),
        1
    );
    let agent_costs: f64 = detail.agents.iter().filter_map(|a| a.cost).sum();
    let total = detail.trace.total_cost.expect("a total");
    assert!(
        (agent_costs - total).abs() < 1e-9,
        "{agent_costs} vs {total}"
    );
    assert!(detail.spans[0].attributes["gen_ai.request.model"] == "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sdk_spans_become_exact_rows_on_both_backends_and_a_replay_adds_none() {
    let postgres = Postgres::start();
    let mut daemon = Daemon::start(&config(Some(&postgres.url()), true, "")).await;
    let base_ns = now_ns() - 3_600_000_000_000;
    send_with_python(&daemon, 1_000, 10, base_ns);

    let pg = Store::postgres(&postgres.url()).await.expect("connect");
    let sqlite = Store::sqlite(&daemon.path("data/lookout.db"))
        .await
        .expect("open");
    for store in [&pg, &sqlite] {
        wait_for_rows(store, "spans", 10_000.0, Duration::from_secs(60), &daemon).await;
    }
    assert_exact_rows(&pg, true).await;
    assert_exact_rows(&sqlite, false).await;
    assert_call_query(&pg).await;
    assert_call_query(&sqlite).await;

    // The same spans again: same ids, same times.
    send_with_python(&daemon, 1_000, 10, base_ns);
    for exporter in ["postgres", "sqlite"] {
        let series =
            format!("lookout_store_spans_total{{exporter=\"{exporter}\",result=\"duplicate\"}}");
        wait_for_metric(&daemon, &series, 10_000.0, Duration::from_secs(60)).await;
    }
    assert_exact_rows(&pg, true).await;
    assert_exact_rows(&sqlite, false).await;
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

/// Trace `t` of `spans` chat spans, its root carrying `call-{t}`; ids
/// derive from `t`, so sending it twice sends the same spans.
fn llm_trace(t: u64, spans: u64, start_ns: u64) -> Vec<Span> {
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
    (0..spans)
        .map(|s| {
            let span_id = ((t + 1) << 16 | (s + 1)).to_be_bytes().to_vec();
            let mut attributes = vec![
                string_attribute("gen_ai.operation.name", "chat"),
                string_attribute("gen_ai.provider.name", "openai"),
                string_attribute("gen_ai.request.model", "gpt-4o-mini"),
                attribute("gen_ai.usage.input_tokens", Value::IntValue(120)),
                attribute("gen_ai.usage.output_tokens", Value::IntValue(30)),
            ];
            let parent_span_id = if s == 0 {
                attributes.push(string_attribute("call_id", format!("call-{t}")));
                Vec::new()
            } else {
                ((t + 1) << 16 | 1).to_be_bytes().to_vec()
            };
            Span {
                trace_id: trace_id.to_vec(),
                span_id,
                parent_span_id,
                name: "chat gpt-4o-mini".into(),
                start_time_unix_nano: start_ns + s * 1_000_000,
                end_time_unix_nano: start_ns + s * 1_000_000 + 800_000,
                attributes,
                ..Default::default()
            }
        })
        .collect()
}

fn body(traces: std::ops::Range<u64>, start_ns: u64) -> Vec<u8> {
    let spans = traces.flat_map(|t| llm_trace(t, 10, start_ns)).collect();
    traces_body(resource_spans("outage", spans))
}

/// Polls the daemon's `/metrics` until `series` reads `value`.
async fn wait_for_metric(daemon: &Daemon, series: &str, value: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while metric_value(&daemon.metrics().await, series) != Some(value) {
        assert!(
            Instant::now() < deadline,
            "{series} is not {value} after {timeout:?}:\n{}\n{}",
            daemon.metrics().await,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts until the daemon accepts, as an OTLP client retries a 503.
async fn post_until_accepted(daemon: &Daemon, body: Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = daemon.post_traces(body.clone()).await;
        if response.status().is_success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "refused for 120 s: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_and_for_20s_mid_load_stores_every_span_exactly_once() {
    let postgres = Postgres::start();
    postgres.stop();
    // Unreachable at start: the daemon starts and waits for the database.
    let mut daemon = Daemon::start(&config(Some(&postgres.url()), false, "")).await;
    assert!(
        daemon.log().contains("database unreachable at start"),
        "{}",
        daemon.log()
    );
    postgres.start_again();

    let start_ns = now_ns() - 60_000_000_000;
    let load_started = Instant::now();
    let mut stopped_at = None;
    // 1,000 traces of 10 spans in 100 requests over about 20 s; the
    // database goes down 5 s in and comes back 20 s later.
    for request in 0..100u64 {
        if request == 25 {
            postgres.stop();
            stopped_at = Some(Instant::now());
        }
        post_until_accepted(&daemon, body(request * 10..request * 10 + 10, start_ns)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped_at = stopped_at.expect("stopped");
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(stopped_at.elapsed())).await;
    postgres.start_again();
    let outage = stopped_at.elapsed();
    assert!(outage >= Duration::from_secs(20), "{outage:?}");
    assert!(load_started.elapsed() > Duration::from_secs(20));

    let pg = Store::postgres(&postgres.url()).await.expect("connect");
    wait_for_rows(&pg, "spans", 10_000.0, Duration::from_secs(120), &daemon).await;
    assert_eq!(
        row_counts(&pg).await,
        [1_000.0, 10_000.0, 10_000.0, 1_000.0, 10_000.0]
    );
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT trace_id, span_id FROM agent_executions) d";
    assert_eq!(scalar(&pg, distinct).await, 10_000.0);
    let wrong_totals = "SELECT COUNT(*) FROM workflow_traces w WHERE w.total_cost IS DISTINCT FROM \
                        (SELECT SUM(s.cost) FROM spans s WHERE s.trace_id = w.trace_id)";
    assert_eq!(scalar(&pg, wrong_totals).await, 0.0);
    let metrics = daemon.metrics().await;
    let retries = metric_value(
        &metrics,
        "lookout_exporter_retries_total{exporter=\"postgres\"}",
    );
    assert!(
        retries.unwrap_or(0.0) > 0.0,
        "the outage caused no retry:\n{metrics}"
    );
    let failed = metric_value(
        &metrics,
        "lookout_exporter_send_failed_spans_total{exporter=\"postgres\"}",
    );
    assert_eq!(failed.unwrap_or(0.0), 0.0, "{metrics}");
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_reapply_as_a_no_op_and_retention_deletes_only_expired_rows() {
    let postgres = Postgres::start();
    let retention = "    retention_interval: 500ms\n    retention_batch_size: 3\n";
    let config = config(Some(&postgres.url()), false, retention);
    let mut first = Daemon::start(&config).await;
    assert!(first.terminate().await.success(), "{}", first.log());
    // A second start finds the schema up to date.
    let mut daemon = Daemon::start(&config).await;
    let pg = Store::postgres(&postgres.url()).await.expect("connect");
    let migrations = "SELECT COUNT(*) FROM lookout_schema_migrations";
    assert_eq!(scalar(&pg, migrations).await, 1.0);

    let day_ns = 86_400_000_000_000;
    let now = now_ns();
    // Traces 0-3 ended 40 days ago, 4-6 one day ago; the default keeps 30.
    post_until_accepted(&daemon, body(0..4, now - 40 * day_ns)).await;
    post_until_accepted(&daemon, body(4..7, now - day_ns)).await;
    let series = "lookout_store_spans_total{exporter=\"postgres\",result=\"stored\"}";
    wait_for_metric(&daemon, series, 70.0, Duration::from_secs(30)).await;
    // Retention sweeps in batches of 3 rows: wait for it to finish.
    for (table, rows) in TABLES.iter().zip([3.0, 30.0, 30.0, 3.0, 30.0]) {
        wait_for_rows(&pg, table, rows, Duration::from_secs(30), &daemon).await;
    }
    assert_eq!(
        row_counts(&pg).await,
        [3.0, 30.0, 30.0, 3.0, 30.0],
        "the recent traces keep every row; the expired ones keep none"
    );
    let recent =
        "SELECT COUNT(*) FROM workflow_traces WHERE call_id IN ('call-4', 'call-5', 'call-6')";
    assert_eq!(scalar(&pg, recent).await, 3.0);
    assert!(
        pg.traces_by_call_id("call-0")
            .await
            .expect("query")
            .is_empty()
    );
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

/// Runs the daemon with a postgres exporter on `url`, expects it to fail
/// to start, and returns its log.
fn failed_start(url: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.yaml");
    let config = config(Some(url), false, "")
        .replace("{http}", "127.0.0.1:0")
        .replace("{telemetry}", "127.0.0.1:0");
    std::fs::write(&config_path, config).expect("write config");
    let output = Command::new(crate::harness::lookout_bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .output()
        .expect("run lookout");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "lookout started:\n{log}");
    log
}

#[tokio::test]
async fn a_wrong_password_fails_the_start_with_a_clear_error_that_hides_it() {
    let postgres = Postgres::start();
    let wrong = "not-the-password-42";
    let url = postgres.url().replace(PASSWORD, wrong);
    let log = failed_start(&url);
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(log.contains("exporter postgres"), "{log}");
    assert!(!log.contains(wrong), "the password leaked:\n{log}");
}

#[tokio::test]
async fn a_table_lookout_did_not_create_fails_the_start_with_a_clear_error() {
    let postgres = Postgres::start();
    let Store::Postgres(pool) = Store::postgres(&postgres.url()).await.expect("connect") else {
        unreachable!("a PostgreSQL store");
    };
    // The design documents' own table, created by the application before.
    sqlx::query("CREATE TABLE workflow_traces (id UUID PRIMARY KEY, trace_id VARCHAR(255))")
        .execute(&pool)
        .await
        .expect("create");
    let log = failed_start(&postgres.url());
    assert!(
        log.contains("already exists but was not created by lookout"),
        "{log}"
    );
}
