//! The `langsmith` exporter against the LangSmith-compatible test server:
//! conformance with the official SDK, faults, the spool across a restart,
//! and a wrong key.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::{Value, json};

use crate::harness::{
    Daemon, eventually, metric_value, python, python_script, resource_spans, string_attribute,
    traces_body,
};
use crate::langsmith_server::{FakeLangSmith, default_info};

fn config(endpoint: &str, spool: &Path, extra: &str) -> String {
    format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
processors:
  genai: {{}}
  cost:
    trace_rollup:
      grace_period: 0s
exporters:
  langsmith:
    endpoint: {endpoint}
    api_key: test-key
    project: lookout
    batch_size: 20
    flush_interval: 200ms
    rate_limit: 0
    timeout: 2s
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 1s
      max_elapsed_time: 0s
    spool:
      directory: {spool}
{extra}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, cost]
      exporters: [langsmith]
  telemetry:
    metrics:
      endpoint: {{telemetry}}
",
        spool = spool.display()
    )
}

/// `traces` agent traces of four spans (root → llm, root → tool → llm),
/// children listed before their parents as SDKs export them.
fn trees(first: u64, traces: u64) -> Vec<ResourceSpans> {
    let mut spans = Vec::new();
    for t in first..first + traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&0x1a2b_u64.to_be_bytes());
        trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
        let span_id = |n: u64| ((t + 1) * 16 + n).to_be_bytes().to_vec();
        let start = 1_790_000_000_000_000_000 + t * 1_000_000_000;
        let span = |n: u64, parent: Option<u64>, name: &str, attributes: Vec<KeyValue>| Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(n),
            parent_span_id: parent.map(span_id).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: start + n * 1_000_000,
            end_time_unix_nano: start + 500_000_000 - n * 1_000_000,
            attributes,
            ..Default::default()
        };
        let llm = |n, parent| {
            span(
                n,
                Some(parent),
                "chat gpt-4o-mini",
                vec![
                    string_attribute("gen_ai.operation.name", "chat"),
                    string_attribute("gen_ai.request.model", "gpt-4o-mini"),
                    string_attribute(
                        "gen_ai.input.messages",
                        r#"[{"role":"user","parts":[{"type":"text","content":"hi"}]}]"#,
                    ),
                ],
            )
        };
        spans.push(llm(4, 3));
        spans.push(span(
            3,
            Some(1),
            "get_weather",
            vec![string_attribute("gen_ai.operation.name", "execute_tool")],
        ));
        spans.push(llm(2, 1));
        spans.push(span(
            1,
            None,
            "agent",
            vec![string_attribute("gen_ai.operation.name", "invoke_agent")],
        ));
    }
    resource_spans("e2e", spans)
}

async fn send_trees(daemon: &Daemon, first: u64, traces: u64) {
    for chunk in (first..first + traces).step_by(10) {
        let count = (first + traces - chunk).min(10);
        let response = daemon.post_traces(traces_body(trees(chunk, count))).await;
        assert!(response.status().is_success(), "{}", response.status());
    }
}

/// Every run stored exactly once, with a consistent tree.
fn assert_complete(server: &FakeLangSmith, expected: usize) {
    let runs = server.runs();
    assert_eq!(runs.len(), expected);
    let by_id: HashMap<&str, &Value> = runs.iter().map(|(id, run)| (id.as_str(), run)).collect();
    for run in runs.values() {
        match run["parent_run_id"].as_str() {
            None => assert_eq!(run["id"], run["trace_id"]),
            Some(parent) => {
                let parent = by_id.get(parent).expect("the parent run was delivered too");
                let prefix = format!("{}.", parent["dotted_order"].as_str().unwrap());
                assert!(run["dotted_order"].as_str().unwrap().starts_with(&prefix));
            }
        }
    }
}

async fn status(daemon: &Daemon) -> (u16, Value) {
    let url = format!("http://{}/api/langsmith-status", daemon.telemetry);
    let response = reqwest::get(url).await.unwrap();
    let code = response.status().as_u16();
    (
        code,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_match_what_the_official_sdk_sends() {
    let server = FakeLangSmith::start(default_info()).await;
    let spool = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(&server.url(), spool.path(), "")).await;
    let output = std::process::Command::new(python())
        .arg(python_script("langsmith_conformance.py"))
        .env("LANGSMITH_ENDPOINT", server.url())
        .env("LANGSMITH_API_KEY", "test-key")
        .env("OTLP_ENDPOINT", daemon.http_url("/v1/traces"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(eventually(Duration::from_secs(20), || server.run_count() >= 6).await);
    let runs = server.runs();
    let project = |name: &str| -> HashMap<String, Value> {
        runs.values()
            .filter(|run| run["session_name"] == name)
            .map(|run| (run["name"].as_str().unwrap().to_string(), run.clone()))
            .collect()
    };
    let (sdk, ours) = (project("sdk"), project("lookout"));
    assert_eq!(sdk.len(), 3, "{sdk:#?}");
    assert_eq!(ours.len(), 3, "{ours:#?}");
    for (name, expected) in &sdk {
        let actual = &ours[name];
        for field in ["run_type", "name", "inputs", "error"] {
            assert_eq!(actual[field], expected[field], "{name}.{field}");
        }
        let outputs = |run: &Value| match &run["outputs"] {
            Value::Null => json!({}),
            other => other.clone(),
        };
        assert_eq!(outputs(actual), outputs(expected), "{name}.outputs");
        for field in ["start_time", "end_time"] {
            assert_eq!(
                instant(&actual[field]),
                instant(&expected[field]),
                "{name}.{field}"
            );
        }
        // The same tree: same depth, same timestamps, root first.
        let stamps = |run: &Value| -> Vec<String> {
            run["dotted_order"]
                .as_str()
                .unwrap()
                .split('.')
                .map(|segment| segment[..22].to_string())
                .collect()
        };
        assert_eq!(stamps(actual), stamps(expected), "{name}.dotted_order");
        let usage = |run: &Value| run["extra"]["metadata"]["usage_metadata"].clone();
        let (ours_usage, sdk_usage) = (usage(actual), usage(expected));
        for key in ["input_tokens", "output_tokens", "total_tokens"] {
            assert_eq!(ours_usage[key], sdk_usage[key], "{name}.usage.{key}");
        }
        for key in ["input_cost", "output_cost", "total_cost"] {
            if let Some(cost) = sdk_usage[key].as_f64() {
                let ours = ours_usage[key].as_f64().unwrap_or(-1.0);
                assert!(
                    (ours - cost).abs() < 1e-12,
                    "{name}.usage.{key}: {ours} vs {cost}"
                );
            }
        }
    }
    for runs in [&sdk, &ours] {
        let root = &runs["agent"];
        assert_eq!(root["id"], root["trace_id"]);
        assert!(root.get("parent_run_id").is_none_or(Value::is_null));
        for child in ["chat gpt-4o-mini", "get_weather"] {
            assert_eq!(runs[child]["parent_run_id"], root["id"]);
            assert_eq!(runs[child]["trace_id"], root["id"]);
        }
    }
    assert_eq!(
        ours["chat gpt-4o-mini"]["extra"]["metadata"]["ls_provider"],
        "openai"
    );
    assert_eq!(
        ours["chat gpt-4o-mini"]["extra"]["metadata"]["ls_model_name"],
        "gpt-4o-mini"
    );
    server.with(|s| {
        assert!(
            s.recorded.rejections.is_empty(),
            "{:?}",
            s.recorded.rejections
        )
    });
}

/// `2026-…T…(Z|+00:00)` as microseconds.
fn instant(value: &Value) -> String {
    let text = value.as_str().unwrap().replace("+00:00", "Z");
    let (seconds, fraction) = text
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((&text, "0"));
    format!("{seconds}.{fraction:0<6}")
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_server_errors_lose_nothing() {
    // 429s with Retry-After over /runs/batch, then 30% 500s over zstd multipart.
    let mut info = default_info();
    info["batch_ingest_config"]["use_multipart_endpoint"] = json!(false);
    let server = FakeLangSmith::start(info).await;
    server.with(|s| s.faults.too_many_requests = 3);
    let spool = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(&server.url(), spool.path(), "")).await;
    send_trees(&daemon, 0, 25).await;
    assert!(eventually(Duration::from_secs(30), || server.run_count() == 100).await);
    assert_complete(&server, 100);
    let statuses: Vec<u16> = server.with(|s| s.recorded.requests.iter().map(|r| r.1).collect());
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3);
    server.with(|s| assert!(s.recorded.requests.iter().all(|r| r.0 == "/runs/batch")));

    let mut info = default_info();
    info["instance_flags"]["zstd_compression_enabled"] = json!(true);
    let server = FakeLangSmith::start(info).await;
    server.with(|s| s.faults.server_error_ratio = 0.3);
    let spool = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(&server.url(), spool.path(), "")).await;
    send_trees(&daemon, 100, 50).await;
    assert!(eventually(Duration::from_secs(60), || server.run_count() == 200).await);
    assert_complete(&server, 200);
    server.with(|s| {
        assert!(s.recorded.requests.iter().any(|r| r.1 == 500));
        assert!(
            s.recorded
                .requests
                .iter()
                .all(|r| r.2.as_deref() == Some("zstd"))
        );
        assert!(
            s.recorded.rejections.is_empty(),
            "{:?}",
            s.recorded.rejections
        );
    });
    let (code, body) = status(&daemon).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["runs_sent"], 200);
    assert_eq!(body["reachable"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minute_of_downtime_is_spooled_and_replayed_in_full() {
    let mut server = FakeLangSmith::start(default_info()).await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(&server.url(), spool.path(), "")
        .replace("max_elapsed_time: 0s", "max_elapsed_time: 2s");
    let daemon = Daemon::start(&config).await;
    server.go_down();
    send_trees(&daemon, 0, 50).await;
    wait_for_spooled_runs(&daemon, 200).await;
    let (code, body) = status(&daemon).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reachable"], false);
    assert_eq!(body["spool"]["runs"], 200);
    tokio::time::sleep(Duration::from_secs(60)).await;
    server.come_back().await;
    assert!(
        eventually(Duration::from_secs(30), || server.run_count() == 200).await,
        "{}",
        daemon.log()
    );
    assert_complete(&server, 200);
    let (code, body) = status(&daemon).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spool"]["runs"], 0);
}

/// Waits until the spool holds `runs` runs, by the daemon's own gauge.
async fn wait_for_spooled_runs(daemon: &Daemon, runs: u32) {
    let series = "lookout_langsmith_spool_runs{exporter=\"langsmith\"}";
    let spooled = eventually(Duration::from_secs(20), || {
        metric_value(&futures_block(daemon.metrics()), series) == Some(f64::from(runs))
    })
    .await;
    assert!(spooled, "{}", daemon.log());
}

fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spool_survives_a_restart() {
    let mut server = FakeLangSmith::start(default_info()).await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(&server.url(), spool.path(), "")
        .replace("max_elapsed_time: 0s", "max_elapsed_time: 1s");
    server.go_down();
    let mut daemon = Daemon::start(&config).await;
    send_trees(&daemon, 0, 30).await;
    wait_for_spooled_runs(&daemon, 120).await;
    assert!(daemon.terminate().await.success());
    let files = std::fs::read_dir(spool.path()).unwrap().count();
    assert!(files > 0);
    assert_eq!(server.run_count(), 0);

    server.come_back().await;
    let daemon = Daemon::start(&config).await;
    assert!(
        eventually(Duration::from_secs(30), || server.run_count() == 120).await,
        "{}",
        daemon.log()
    );
    assert_complete(&server, 120);
    assert!(
        daemon
            .log()
            .contains("replaying runs spooled before the last stop")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_one_clear_error_and_no_spinning() {
    let server = FakeLangSmith::start(default_info()).await;
    server.with(|s| s.faults.api_key = Some("the-right-key".into()));
    let spool = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(&server.url(), spool.path(), "")).await;
    for first in [0, 10, 20] {
        send_trees(&daemon, first, 10).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            let metrics = futures_block(daemon.metrics());
            metric_value(
                &metrics,
                "lookout_langsmith_auth_failures_total{exporter=\"langsmith\"}",
            )
            .is_some()
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the API key"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("exporters.langsmith.api_key"),
        "{}",
        lines[0]
    );
    assert!(!log.contains("test-key"), "the key must never be logged");
    let requests = server.with(|s| s.recorded.requests.len());
    assert!(requests <= 2, "{requests} requests: the exporter spins");
    let (code, body) = status(&daemon).await;
    assert_eq!(code, 503);
    assert_eq!(body["authorized"], false);
    assert_eq!(body["spool"]["runs"], 120);
    let ids: HashSet<String> = server.runs().into_keys().collect();
    assert!(ids.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_mode_forwards_to_the_otel_endpoint_with_key_and_project() {
    let server = FakeLangSmith::start(default_info()).await;
    let config = format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
exporters:
  langsmith:
    mode: otlp
    endpoint: {}
    api_key: test-key
    project: forwarded
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [langsmith]
  telemetry:
    metrics:
      endpoint: {{telemetry}}
",
        server.url()
    );
    let daemon = Daemon::start(&config).await;
    send_trees(&daemon, 0, 10).await;
    let forwarded = || server.with(|s| s.recorded.otel_spans.iter().map(|r| r.0).sum::<usize>());
    assert!(
        eventually(Duration::from_secs(10), || forwarded() == 40).await,
        "{}",
        daemon.log()
    );
    server.with(|s| {
        for (_, key, project) in &s.recorded.otel_spans {
            assert_eq!(key.as_deref(), Some("test-key"));
            assert_eq!(project.as_deref(), Some("forwarded"));
        }
    });
    assert_eq!(server.run_count(), 0);
}
