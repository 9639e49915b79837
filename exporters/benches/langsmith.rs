//! The `langsmith` exporter end to end against a local HTTP server that
//! answers like LangSmith: spans in through `Exporter::export`, runs out
//! over `/runs/multipart` or `/runs/batch`. Reports runs per second and,
//! once per transport, the request bytes per run.
//!
//! `cargo bench -p lookout-exporters --bench langsmith`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lookout_exporters::langsmith::{LangSmithConfig, LangSmithExporter};
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{ComponentId, Exporter, Payload};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const TRACES_PER_PAYLOAD: u64 = 50;
const SPANS_PER_TRACE: u64 = 4;

#[derive(Default)]
struct Received {
    runs: AtomicUsize,
    bytes: AtomicUsize,
}

async fn ingest(State(received): State<Arc<Received>>, body: Bytes) -> StatusCode {
    let runs = body
        .windows(14)
        .filter(|w| w == b"\"dotted_order\"")
        .count();
    received.bytes.fetch_add(body.len(), Ordering::Relaxed);
    received.runs.fetch_add(runs, Ordering::Relaxed);
    StatusCode::ACCEPTED
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Agent traces as an instrumented app sends them: children first, a
/// ~600-byte prompt on each LLM call.
fn payload(round: u64) -> Payload {
    let prompt = format!(
        r#"[{{"role":"user","parts":[{{"type":"text","content":"{}"}}]}}]"#,
        "Summarise the quarterly report for the board. ".repeat(12)
    );
    let mut spans = Vec::new();
    for t in 0..TRACES_PER_PAYLOAD {
        let trace = round * TRACES_PER_PAYLOAD + t + 1;
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&trace.to_be_bytes());
        let id = |n: u64| (trace * 8 + n).to_be_bytes().to_vec();
        for n in (1..=SPANS_PER_TRACE).rev() {
            let llm = n > 1;
            let mut attributes = vec![text(
                "gen_ai.operation.name",
                if llm { "chat" } else { "invoke_agent" },
            )];
            if llm {
                attributes.push(text("gen_ai.request.model", "gpt-4o-mini"));
                attributes.push(text("gen_ai.input.messages", &prompt));
            }
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: id(n),
                parent_span_id: if llm { id(1) } else { Vec::new() },
                name: if llm { "chat gpt-4o-mini" } else { "agent" }.into(),
                start_time_unix_nano: 1_790_000_000_000_000_000 + trace * 1_000 + n,
                end_time_unix_nano: 1_790_000_000_500_000_000 + trace * 1_000,
                attributes,
                ..Default::default()
            });
        }
    }
    Payload::Traces(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("langsmith_export");
    group.throughput(Throughput::Elements(TRACES_PER_PAYLOAD * SPANS_PER_TRACE));
    group.sample_size(20);
    for multipart in [true, false] {
        let received = Arc::new(Received::default());
        let info =
            serde_json::json!({"batch_ingest_config": {"use_multipart_endpoint": multipart}});
        let app = Router::new()
            .route(
                "/info",
                get(move || async move { axum::Json(info.clone()) }),
            )
            .route("/runs/multipart", post(ingest))
            .route("/runs/batch", post(ingest))
            .with_state(received.clone());
        let exporter = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            let config = LangSmithConfig {
                endpoint: Some(endpoint),
                api_key: Some("bench".into()),
                rate_limit: 0.0,
                flush_interval: Duration::from_millis(20),
                spool: lookout_exporters::langsmith::SpoolConfig {
                    enabled: false,
                    ..Default::default()
                },
                ..Default::default()
            };
            let id = ComponentId::parse("langsmith").expect("id");
            let exporter =
                LangSmithExporter::new(&id, config, &ExporterHelperConfig::default(), &|_| None)
                    .expect("exporter");
            exporter.start().await.expect("start");
            exporter
        });
        let name = if multipart { "multipart" } else { "batch" };
        let mut round = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let target = received.runs.load(Ordering::Relaxed)
                        + (iterations * TRACES_PER_PAYLOAD * SPANS_PER_TRACE) as usize;
                    let payloads: Vec<Payload> = (0..iterations)
                        .map(|_| {
                            round += 1;
                            payload(round)
                        })
                        .collect();
                    let start = Instant::now();
                    for payload in &payloads {
                        exporter.export(payload).await.expect("export");
                    }
                    while received.runs.load(Ordering::Relaxed) < target {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    start.elapsed()
                })
            })
        });
        let runs = received.runs.load(Ordering::Relaxed).max(1);
        println!(
            "langsmith_export/{name}: {} bytes per run on the wire",
            received.bytes.load(Ordering::Relaxed) / runs
        );
        runtime.block_on(async { exporter.shutdown().await.expect("shutdown") });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
