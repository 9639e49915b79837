//! Done-when 4: an exporter whose server never answers fills its queue; the
//! receivers then refuse with 429 + Retry-After and RESOURCE_EXHAUSTED +
//! RetryInfo, memory stays bounded, and a second exporter in the same
//! pipeline receives every accepted span.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use reqwest::StatusCode;
use tokio::net::TcpListener;
use tonic_types::StatusExt;

use crate::harness::{
    Daemon, eventually, metric_value, read_file_output, span_id_counts, spans, traces_body,
};

/// Accepts connections and never reads or answers.
async fn black_hole_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

fn config(stuck_port: u16, when_full: &str) -> String {
    format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
      grpc:
        endpoint: {{grpc}}
processors:
  batch:
    send_batch_size: 100
    timeout: 20ms
exporters:
  otlp/stuck:
    endpoint: http://127.0.0.1:{stuck_port}
    protocol: http/protobuf
    timeout: 2s
    sending_queue:
      queue_size: 1000
      num_consumers: 2
      when_full: {when_full}
    retry_on_failure:
      initial_interval: 1s
      max_elapsed_time: 0s
  file:
    path: {{dir}}/out.jsonl
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/stuck, file]
  telemetry:
    metrics:
      endpoint: {{telemetry}}
  shutdown_timeout: 2s
"
    )
}

const REQUEST_SPANS: u64 = 100;
const PROMPT_BYTES: usize = 2_000;
const RSS_BOUND: u64 = 150 * 1024 * 1024;

fn ids(batch: u64) -> impl Iterator<Item = Vec<u8>> {
    spans(batch, REQUEST_SPANS, 0)
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| s.span_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_exporter_pushes_back_without_starving_its_sibling() {
    let (stuck_port, _server) = black_hole_server().await;
    let mut daemon = Daemon::start(&config(stuck_port, "block")).await;
    let client = reqwest::Client::new();
    let url = daemon.http_url("/v1/traces");

    let mut accepted: HashSet<Vec<u8>> = HashSet::new();
    let mut refused = 0;
    let mut offered_bytes = 0;
    let mut peak_rss = 0;
    // Offer about 300 MB, twice the memory bound, so that the bound means something.
    for batch in 0..1_500 {
        let body = traces_body(spans(batch, REQUEST_SPANS, PROMPT_BYTES));
        offered_bytes += body.len();
        let response = client
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => accepted.extend(ids(batch)),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(response.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
        if batch % 100 == 0 {
            peak_rss = peak_rss.max(daemon.rss_bytes());
        }
    }
    peak_rss = peak_rss.max(daemon.rss_bytes());
    assert!(
        refused > 1_000,
        "the full queue must push back: {refused} refusals"
    );
    assert!(!accepted.is_empty());
    assert!(offered_bytes > 2 * RSS_BOUND as usize);
    assert!(
        peak_rss < RSS_BOUND,
        "RSS {peak_rss} over the bound {RSS_BOUND}"
    );

    let mut grpc = TraceServiceClient::connect(format!("http://{}", daemon.grpc))
        .await
        .unwrap();
    let request = ExportTraceServiceRequest {
        resource_spans: spans(99_999, REQUEST_SPANS, 10),
    };
    let status = grpc.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo in the status details");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    let out = daemon.path("out.jsonl");
    let complete = eventually(Duration::from_secs(10), || {
        span_id_counts(&read_file_output(&out)).len() == accepted.len()
    })
    .await;
    let counts = span_id_counts(&read_file_output(&out));
    assert!(
        complete,
        "file has {} of {} accepted spans",
        counts.len(),
        accepted.len()
    );
    assert!(counts.values().all(|&n| n == 1), "each span exactly once");
    assert!(accepted.iter().all(|id| counts.contains_key(id)));

    let metrics = daemon.metrics().await;
    assert!(
        metrics
            .contains("lookout_receiver_refused_spans_total{receiver=\"otlp\",transport=\"http\"}")
    );

    // The stuck exporter cannot deliver by the deadline: that is reported.
    let status = daemon.terminate().await;
    assert_eq!(status.code(), Some(2), "an unclean shutdown exits 2");
    // What was queued, or what a consumer still held when the deadline
    // cut it off, depending on where the hard stop finds the data.
    let log = daemon.log();
    assert!(
        log.contains("queued data not delivered")
            || log.contains("dropping data that could not be sent"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_newest_never_pushes_back_and_counts_the_drops() {
    let (stuck_port, _server) = black_hole_server().await;
    let mut daemon = Daemon::start(&config(stuck_port, "drop_newest")).await;
    for batch in 0..100 {
        let response = daemon
            .post_traces(traces_body(spans(batch, REQUEST_SPANS, 100)))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let out = daemon.path("out.jsonl");
    assert!(
        eventually(Duration::from_secs(10), || {
            span_id_counts(&read_file_output(&out)).len() == 100 * REQUEST_SPANS as usize
        })
        .await
    );
    let metrics = daemon.metrics().await;
    let dropped = metric_value(
        &metrics,
        "lookout_exporter_enqueue_failed_spans_total{exporter=\"otlp/stuck\"}",
    )
    .expect("the enqueue_failed counter");
    assert!(dropped >= 8_000.0, "dropped {dropped}");
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_memory_limit_every_request_is_refused() {
    // Any process is over 1 MiB resident, so the limiter refuses from its
    // first sample on: what matters is that a refusal is a 429 and that
    // nothing gets in.
    let config = crate::harness::FILE_PIPELINE
        .replace("  telemetry:", "  memory_limit_mib: 1\n  telemetry:");
    let mut daemon = Daemon::start(&config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = daemon.post_traces(traces_body(spans(1, 10, 10))).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("lookout_memory_limit_exceeded 1"),
        "{metrics}"
    );
    assert!(daemon.terminate().await.success());
    assert!(read_file_output(&daemon.path("out.jsonl")).is_empty());
    assert!(daemon.log().contains("memory limit exceeded"));
}
