//! The `otlp` exporter in an agent → gateway set-up: one daemon forwards
//! traces, metrics and logs over gRPC to another, which writes them.

use lookout_pipelines::{Payload, Signal, codec};

use crate::harness::{Daemon, FILE_PIPELINE, read_file_output, spans, traces_body};

const LOGS: &str = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","body":{"stringValue":"agent started"}}]}]}]}"#;
const METRICS: &str = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"llm.requests","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"3"}]}}]}]}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_forwards_every_signal_to_a_gateway_over_grpc() {
    let mut gateway = Daemon::start(FILE_PIPELINE).await;
    let agent_config = format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
exporters:
  otlp/gateway:
    endpoint: http://{}
    retry_on_failure:
      initial_interval: 100ms
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/gateway]
    metrics:
      receivers: [otlp]
      exporters: [otlp/gateway]
    logs:
      receivers: [otlp]
      exporters: [otlp/gateway]
  telemetry:
    metrics:
      endpoint: {{telemetry}}
",
        gateway.grpc
    );
    let mut agent = Daemon::start(&agent_config).await;
    let client = reqwest::Client::new();
    let sent_traces = spans(5, 10, 100);
    let requests = [
        (
            "/v1/traces",
            "application/x-protobuf",
            traces_body(sent_traces.clone()),
        ),
        ("/v1/logs", "application/json", LOGS.as_bytes().to_vec()),
        (
            "/v1/metrics",
            "application/json",
            METRICS.as_bytes().to_vec(),
        ),
    ];
    for (path, content_type, body) in requests {
        let response = client
            .post(agent.http_url(path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    assert!(agent.terminate().await.success(), "{}", agent.log());
    assert!(gateway.terminate().await.success());

    let received = read_file_output(&gateway.path("out.jsonl"));
    let find = |signal: Signal| {
        received
            .iter()
            .find(|p| p.signal() == signal)
            .cloned()
            .unwrap_or_else(|| panic!("no {signal} reached the gateway"))
    };
    assert_eq!(find(Signal::Traces), Payload::Traces(sent_traces));
    assert_eq!(
        find(Signal::Logs),
        codec::decode_json(Signal::Logs, LOGS.as_bytes()).unwrap()
    );
    assert_eq!(
        find(Signal::Metrics),
        codec::decode_json(Signal::Metrics, METRICS.as_bytes()).unwrap()
    );
}
