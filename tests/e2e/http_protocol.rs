//! Done-when 2 and 3: JSON and gzip bodies are accepted; malformed,
//! oversized and mistyped requests get 400, 413 and 415 with a one-line
//! reason, and the daemon keeps serving. Also the gRPC size limit.

use std::io::Write;

use lookout_pipelines::{Payload, Signal, codec};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use reqwest::StatusCode;

use crate::harness::{Daemon, FILE_PIPELINE, read_file_output, spans, traces_body};

const SMALL_LIMITS: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
        max_request_body_size: 100000
      grpc:
        endpoint: {grpc}
        max_recv_msg_size_mib: 1
exporters:
  file:
    path: {dir}/out.jsonl
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
  telemetry:
    metrics:
      endpoint: {telemetry}
";

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

const JSON_LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-client"}}]},
 "scopeLogs":[{"scope":{"name":"e2e"},"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":9,
 "severityText":"INFO","body":{"kvlistValue":{"values":[{"key":"event","value":{"stringValue":"agent started"}},
 {"key":"attempt","value":{"intValue":"2"}}]}},"attributes":[{"key":"ratio","value":{"doubleValue":0.5}},
 {"key":"flags","value":{"arrayValue":{"values":[{"boolValue":true},{"intValue":7}]}}}],
 "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}"#;

const JSON_METRICS: &str = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"cache.hit_ratio","unit":"1",
 "gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asDouble":0.75}]}},{"name":"llm.requests","sum":{
 "aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"12"}]}}]}]}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn json_and_gzip_bodies_of_every_signal_are_accepted() {
    let mut daemon = Daemon::start(FILE_PIPELINE).await;
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>| {
        let mut request = client
            .post(daemon.http_url(path))
            .header("Content-Type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        request.body(body).send()
    };
    let protobuf_traces = traces_body(spans(1, 3, 50));
    let json_traces = {
        let mut out = Vec::new();
        codec::encode_json(&Payload::Traces(spans(2, 2, 50)), &mut out).unwrap();
        out
    };
    let cases = [
        (
            "/v1/traces",
            "application/x-protobuf",
            Some("gzip"),
            gzip(&protobuf_traces),
        ),
        ("/v1/traces", "application/json", None, json_traces.clone()),
        (
            "/v1/logs",
            "application/json; charset=utf-8",
            None,
            JSON_LOGS.as_bytes().to_vec(),
        ),
        (
            "/v1/metrics",
            "application/json",
            Some("gzip"),
            gzip(JSON_METRICS.as_bytes()),
        ),
    ];
    for (path, content_type, encoding, body) in cases {
        let response = post(path, content_type, encoding, body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{path} {content_type} {encoding:?}"
        );
        let answered = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with(&answered),
            "answers in the request's encoding"
        );
    }
    assert!(daemon.terminate().await.success());

    let output = read_file_output(&daemon.path("out.jsonl"));
    let count = |signal: Signal| -> usize {
        output
            .iter()
            .filter(|p| p.signal() == signal)
            .map(Payload::item_count)
            .sum()
    };
    assert_eq!(count(Signal::Traces), 5);
    assert_eq!(count(Signal::Logs), 1);
    assert_eq!(count(Signal::Metrics), 2);
    let logs = output.iter().find(|p| p.signal() == Signal::Logs).unwrap();
    assert_eq!(
        logs,
        &codec::decode_json(Signal::Logs, JSON_LOGS.as_bytes()).unwrap()
    );
    let Payload::Traces(sent) = codec::decode_json(Signal::Traces, &json_traces).unwrap() else {
        unreachable!()
    };
    let received: Vec<_> = output
        .iter()
        .filter_map(|p| match p {
            Payload::Traces(r) => Some(r),
            _ => None,
        })
        .flatten()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    for span in sent
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        assert!(
            received.contains(&span),
            "the JSON-sent span arrives unchanged"
        );
    }
}

async fn status_message(response: reqwest::Response) -> String {
    let body = response.bytes().await.unwrap();
    let status = tonic_types::Status::decode(&body[..]).expect("a google.rpc.Status body");
    status.message
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    let mut daemon = Daemon::start(SMALL_LIMITS).await;
    let client = reqwest::Client::new();
    let url = daemon.http_url("/v1/traces");
    let send = |content_type: &'static str, encoding: Option<&'static str>, body: Vec<u8>| {
        let mut request = client.post(&url).header("Content-Type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        request.body(body).send()
    };

    let malformed = send(
        "application/x-protobuf",
        None,
        vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 1],
    )
    .await
    .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let message = status_message(malformed).await;
    assert!(
        message.starts_with("malformed protobuf") && !message.contains('\n'),
        "{message}"
    );

    let bad_json = send("application/json", None, b"{\"resourceSpans\": [{".to_vec())
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(&bad_json.bytes().await.unwrap()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );

    let oversized = send(
        "application/x-protobuf",
        None,
        traces_body(spans(1, 20, 10_000)),
    )
    .await
    .unwrap();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(oversized.headers()["connection"], "close");
    assert!(
        status_message(oversized)
            .await
            .contains("limit of 100000 bytes")
    );

    // Small on the wire, large once inflated: refused after decompression.
    let bomb = gzip(&traces_body(spans(1, 50, 10_000)));
    assert!(bomb.len() < 100_000);
    let bomb = send("application/x-protobuf", Some("gzip"), bomb)
        .await
        .unwrap();
    assert_eq!(bomb.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let not_gzip = send("application/x-protobuf", Some("gzip"), b"plain".to_vec())
        .await
        .unwrap();
    assert_eq!(not_gzip.status(), StatusCode::BAD_REQUEST);

    let wrong_type = send("text/plain", None, b"hello".to_vec()).await.unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let wrong_encoding = send("application/x-protobuf", Some("br"), b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(wrong_encoding.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let not_routed = client
        .post(daemon.http_url("/v1/logs"))
        .header("Content-Type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(
        not_routed.status(),
        StatusCode::NOT_FOUND,
        "no logs pipeline"
    );

    let good = send("application/x-protobuf", None, traces_body(spans(9, 2, 10)))
        .await
        .unwrap();
    assert_eq!(
        good.status(),
        StatusCode::OK,
        "still serving after bad requests"
    );

    let mut grpc = TraceServiceClient::connect(format!("http://{}", daemon.grpc))
        .await
        .unwrap();
    let too_big = ExportTraceServiceRequest {
        resource_spans: spans(3, 200, 10_000),
    };
    let status = grpc.export(too_big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let fine = ExportTraceServiceRequest {
        resource_spans: spans(4, 2, 10),
    };
    grpc.export(fine).await.expect("gRPC still serving");

    assert!(daemon.terminate().await.success());
    let output = read_file_output(&daemon.path("out.jsonl"));
    assert_eq!(output.iter().map(Payload::item_count).sum::<usize>(), 4);
}
