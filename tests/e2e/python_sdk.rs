//! Done-when 1: the OpenTelemetry Python SDK sends a trace tree through the
//! daemon over HTTP and over gRPC, and the file exporter holds each span
//! exactly once, every field equal to what the SDK sent.

use std::collections::HashMap;

use lookout_pipelines::Payload;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;

use crate::harness::{Daemon, FILE_PIPELINE, python_script, read_file_output, run_python};

/// A span with the resource and scope it was sent under.
#[derive(Debug, PartialEq)]
struct Placed {
    resource: Option<Resource>,
    resource_schema_url: String,
    scope: Option<InstrumentationScope>,
    scope_schema_url: String,
    span: Span,
}

fn by_span_id(resources: &[ResourceSpans]) -> Vec<(Vec<u8>, Placed)> {
    let mut placed = Vec::new();
    for resource in resources {
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                placed.push((
                    span.span_id.clone(),
                    Placed {
                        resource: resource.resource.clone(),
                        resource_schema_url: resource.schema_url.clone(),
                        scope: scope.scope.clone(),
                        scope_schema_url: scope.schema_url.clone(),
                        span: span.clone(),
                    },
                ));
            }
        }
    }
    placed
}

async fn round_trip(protocol: &str) {
    let mut daemon = Daemon::start(FILE_PIPELINE).await;
    let endpoint = match protocol {
        "http" => format!("http://{}", daemon.http),
        _ => format!("http://{}", daemon.grpc),
    };
    let sent_path = daemon.path("sent.pb");
    let sent = sent_path.display().to_string();
    run_python(
        "send_trace_tree.py",
        &[
            "--protocol",
            protocol,
            "--endpoint",
            &endpoint,
            "--sent",
            &sent,
        ],
    );
    assert!(daemon.terminate().await.success(), "{}", daemon.log());

    let sent = ExportTraceServiceRequest::decode(&std::fs::read(&sent_path).unwrap()[..]).unwrap();
    let sent = by_span_id(&sent.resource_spans);
    assert_eq!(
        sent.len(),
        4,
        "the tree has a workflow, an agent, an LLM call and a tool"
    );

    let mut received: HashMap<Vec<u8>, Vec<Placed>> = HashMap::new();
    for payload in read_file_output(&daemon.path("out.jsonl")) {
        if let Payload::Traces(resources) = payload {
            for (id, placed) in by_span_id(&resources) {
                received.entry(id).or_default().push(placed);
            }
        }
    }
    assert_eq!(received.len(), sent.len(), "every span, and nothing else");
    for (id, expected) in sent {
        let copies = &received[&id];
        assert_eq!(copies.len(), 1, "span {id:02x?} must arrive exactly once");
        assert_eq!(copies[0], expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_http() {
    round_trip("http").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_grpc() {
    round_trip("grpc").await;
}

#[test]
fn the_tree_carries_every_value_type() {
    // Guards the test itself: the script must keep exercising arrays,
    // kvlists and bytes, or the comparison above proves less.
    let script = std::fs::read_to_string(python_script("send_trace_tree.py")).unwrap();
    for needle in [
        "bytes",
        "_array",
        "kvlist",
        "add_event",
        "links=",
        "set_status",
        "Resource.create",
    ] {
        assert!(
            script.contains(needle),
            "send_trace_tree.py no longer uses {needle}"
        );
    }
}
