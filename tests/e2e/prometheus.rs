//! The `prometheus` exporter: its page passes `promtool check metrics`,
//! and a real Prometheus server scrapes it and answers PromQL with the
//! costs the `cost` processor computed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lookout_pipelines::Payload;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::harness::{Daemon, free_port, traces_body};

const PIPELINES: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
processors:
  genai:
  cost:
    trace_rollup:
      grace_period: 100ms
  batch:
    timeout: 50ms
exporters:
  prometheus:
    endpoint: {extra}
service:
  telemetry:
    metrics:
      endpoint: {telemetry}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, cost, batch]
      exporters: [prometheus]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
";

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

fn llm(id: u8, agent: &str, model: &str, input: i64, cache_read: i64, output: i64) -> Span {
    Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        parent_span_id: vec![1; 8],
        name: format!("chat {model}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_200_000_000,
        attributes: vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.request.model", model),
            s("gen_ai.agent.name", agent),
            kv("gen_ai.usage.input_tokens", Value::IntValue(input)),
            kv(
                "gen_ai.usage.cache_read.input_tokens",
                Value::IntValue(cache_read),
            ),
            kv("gen_ai.usage.output_tokens", Value::IntValue(output)),
        ],
        ..Default::default()
    }
}

fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![s("service.name", name)],
        ..Default::default()
    })
}

/// Three calls, one of an unknown model; the known two cost, by the
/// published prices: gpt-4o-mini 1000 in / 200 out = $0.00027;
/// claude-sonnet-4-5 2000 in (500 cache reads) / 100 out = $0.00615.
const EXPECTED_TOTAL: f64 = 0.00027 + 0.00615;

fn traces() -> Vec<ResourceSpans> {
    let root = Span {
        trace_id: vec![9; 16],
        span_id: vec![1; 8],
        name: "support_workflow".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_003_000_000_000,
        ..Default::default()
    };
    let spans = vec![
        llm(2, "triage", "gpt-4o-mini", 1000, 0, 200),
        llm(3, "writer", "claude-sonnet-4-5-20250929", 2000, 500, 100),
        llm(4, "writer", "acme-private-llm", 10, 0, 10),
        root,
    ];
    vec![ResourceSpans {
        resource: resource("support-bot"),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn app_metrics() -> Vec<ResourceMetrics> {
    let ratio = Metric {
        name: "cache.hit_ratio".into(),
        description: "Share of prompt cache hits.".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![s("cache", "prompt")],
                value: Some(number_data_point::Value::AsDouble(0.75)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    vec![ResourceMetrics {
        resource: resource("orchestrator"),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![ratio],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

async fn send(daemon: &Daemon) {
    let response = daemon.post_traces(traces_body(traces())).await;
    assert!(response.status().is_success(), "{}", response.status());
    let body = Payload::Metrics(app_metrics()).encode_request();
    let response = reqwest::Client::new()
        .post(daemon.http_url("/v1/metrics"))
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("the daemon answers");
    assert!(response.status().is_success(), "{}", response.status());
}

async fn page(daemon: &Daemon) -> String {
    let url = format!("http://{}/metrics", daemon.extra);
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_finds_nothing_wrong_with_the_page() {
    let daemon = Daemon::start(PIPELINES).await;
    send(&daemon).await;
    let mut text = String::new();
    for _ in 0..100 {
        text = page(&daemon).await;
        if text.contains("lookout_workflow_cost_usd_count") && text.contains("cache_hit_ratio") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("lookout_workflow_cost_usd_count"),
        "{text}\n{}",
        daemon.log()
    );
    assert!(text.contains("status=\"ok\""), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = promtool.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool said:\n{said}\non:\n{text}"
    );
    // The unknown model is counted in the self-telemetry, whose counters
    // the components register while the config is built.
    let telemetry = daemon.metrics().await;
    let unknown = "lookout_cost_unknown_model_spans_total{processor=\"cost\"} 1";
    assert!(telemetry.contains(unknown), "{telemetry}");
}

/// A Prometheus server on a free port in a temp directory, killed on drop.
struct PrometheusServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus on a free port; a start that loses its port to a
    /// parallel test (it exits at once) is tried again on another.
    async fn start(target: &str) -> PrometheusServer {
        for _ in 0..5 {
            let mut server = PrometheusServer::spawn(target);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if server.child.try_wait().expect("wait").is_none() {
                return server;
            }
        }
        panic!("prometheus did not start");
    }

    fn spawn(target: &str) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lookout\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed by scripts/test (Debian package prometheus)");
        PrometheusServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, promql: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/query?query={}",
                self.url,
                url_encode(promql)
            ))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_sums_the_cost() {
    let daemon = Daemon::start(PIPELINES).await;
    send(&daemon).await;
    let prometheus = PrometheusServer::start(&daemon.extra.to_string()).await;
    let mut total = None;
    let mut ratio = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline && (total.is_none() || ratio.is_none()) {
        total = prometheus.query("sum(lookout_llm_cost_usd_total)").await;
        ratio = prometheus
            .query("cache_hit_ratio{service=\"orchestrator\",cache=\"prompt\"}")
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = total.unwrap_or_else(|| {
        panic!(
            "no answer from Prometheus:\n{}\n{}",
            prometheus.log(),
            daemon.log()
        )
    });
    assert!(
        (total - EXPECTED_TOTAL).abs() < 1e-9,
        "sum(lookout_llm_cost_usd_total) = {total}, want {EXPECTED_TOTAL}"
    );
    assert_eq!(ratio, Some(0.75));
    let requests = prometheus.query("sum(lookout_llm_requests_total)").await;
    assert_eq!(requests, Some(3.0));
    let workflows = prometheus
        .query("sum(lookout_workflow_cost_usd_count)")
        .await;
    assert_eq!(workflows, Some(1.0));
}
