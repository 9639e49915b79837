//! Done-when 5: an upstream that answers 503 twice and then 200 receives
//! everything exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use lookout_pipelines::{Signal, codec};

use crate::harness::{Daemon, eventually, spans, traces_body};

#[derive(Default)]
struct Upstream {
    requests: usize,
    span_counts: HashMap<Vec<u8>, usize>,
}

async fn flaky(State(upstream): State<Arc<Mutex<Upstream>>>, body: Bytes) -> StatusCode {
    let mut upstream = upstream.lock().unwrap();
    upstream.requests += 1;
    if upstream.requests <= 2 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let payload = codec::decode_protobuf(Signal::Traces, &body).expect("a protobuf request");
    let lookout_pipelines::Payload::Traces(resources) = payload else {
        unreachable!()
    };
    for span in resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        *upstream
            .span_counts
            .entry(span.span_id.clone())
            .or_default() += 1;
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_503s_are_retried_and_everything_arrives_once() {
    let upstream = Arc::new(Mutex::new(Upstream::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/v1/traces", post(flaky))
        .with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = format!(
        "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {{http}}
processors:
  batch:
    send_batch_size: 1000
    timeout: 20ms
exporters:
  otlp/upstream:
    endpoint: http://127.0.0.1:{port}
    protocol: http/protobuf
    compression: none
    sending_queue:
      num_consumers: 1
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 200ms
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/upstream]
  telemetry:
    metrics:
      endpoint: {{telemetry}}
"
    );
    let mut daemon = Daemon::start(&config).await;
    for batch in 0..5 {
        let response = daemon.post_traces(traces_body(spans(batch, 20, 10))).await;
        assert!(response.status().is_success());
    }
    let arrived = eventually(Duration::from_secs(10), || {
        upstream.lock().unwrap().span_counts.len() == 100
    })
    .await;
    assert!(daemon.terminate().await.success());
    let upstream = upstream.lock().unwrap();
    assert!(
        arrived,
        "{} of 100 spans arrived",
        upstream.span_counts.len()
    );
    assert!(upstream.requests >= 3, "two 503s, then success");
    assert!(
        upstream.span_counts.values().all(|&n| n == 1),
        "no span twice"
    );
    assert!(daemon.log().contains("export failed; will retry"));
}
