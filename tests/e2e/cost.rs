//! The `cost` processor behind `genai`, fed by real instrumentations of
//! the real `openai` SDK: every LLM span leaves with its cost, to 1e-9 USD
//! of what the provider's published prices give.

use std::process::Command;
use std::time::Duration;

use lookout_pipelines::Payload;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::fake_openai;
use crate::harness::{Daemon, eventually, python, python_script, read_file_output};

pub const COST_PIPELINE: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
processors:
  genai:
  cost:
    trace_rollup:
      grace_period: 300ms
  batch:
    timeout: 50ms
exporters:
  file:
    path: {dir}/out.jsonl
service:
  telemetry:
    metrics:
      endpoint: {telemetry}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, cost, batch]
      exporters: [file]
";

pub fn all_spans(payloads: &[Payload]) -> Vec<Span> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Traces(resources) => Some(resources),
            _ => None,
        })
        .flatten()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

pub fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

pub fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn double(span: &Span, key: &str) -> Option<f64> {
    match attribute(span, key)? {
        Value::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

/// The cost of one call of the fake server's, by hand from the published
/// per-million prices (input, cached input, output; reasoning is billed
/// as output by OpenAI).
fn expected_cost(model: &str) -> f64 {
    let (_, prompt, cached, completion, _reasoning) = fake_openai::usage_of(model);
    let (input, cached_input, output) = match model {
        "o4-mini" => (1.10, 0.275, 4.40),
        _ => (0.15, 0.075, 0.60),
    };
    ((prompt - cached) as f64 * input + cached as f64 * cached_input + completion as f64 * output)
        / 1e6
}

async fn costs_of(instrumentation: &str) {
    let openai = fake_openai::start().await;
    let daemon = Daemon::start(COST_PIPELINE).await;
    let status = Command::new(python())
        .arg(python_script("openai_instrumented.py"))
        .args([instrumentation, &openai, &format!("http://{}", daemon.http)])
        .status()
        .expect("run the instrumented client");
    assert!(status.success(), "{instrumentation} client failed");
    let out = daemon.path("out.jsonl");
    let llm_spans = || {
        all_spans(&read_file_output(&out))
            .into_iter()
            .filter(|s| text(s, "lookout.cost.type") == Some("llm"))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), || llm_spans().len() >= 2).await;
    let spans = llm_spans();
    assert_eq!(
        spans.len(),
        2,
        "{instrumentation}: LLM spans {:#?}\n{}",
        all_spans(&read_file_output(&out)),
        daemon.log()
    );
    for model in ["gpt-4o-mini", "o4-mini"] {
        let span = spans
            .iter()
            .find(|s| {
                let response = text(s, "gen_ai.response.model");
                let answered = response.or_else(|| text(s, "gen_ai.request.model"));
                answered.is_some_and(|m| m.starts_with(model))
            })
            .unwrap_or_else(|| panic!("{instrumentation}: no {model} span in {spans:#?}"));
        let context = format!("{instrumentation} {model}: {:#?}", span.attributes);
        assert_eq!(
            text(span, "lookout.cost.status"),
            Some("computed"),
            "{context}"
        );
        let cost = double(span, "gen_ai.usage.cost").expect("a cost");
        let expected = expected_cost(model);
        assert!(
            (cost - expected).abs() < 1e-9,
            "{context}\ncost {cost} != {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openllmetry_spans_are_priced() {
    costs_of("openllmetry").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openinference_spans_are_priced() {
    costs_of("openinference").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openlit_spans_are_priced() {
    costs_of("openlit").await;
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// A two-agent LangGraph graph traced by OpenInference: the root span of
/// the trace leaves with the totals and a per-agent breakdown.
#[tokio::test(flavor = "multi_thread")]
async fn a_langgraph_trace_is_rolled_up_per_agent() {
    let daemon = Daemon::start(COST_PIPELINE).await;
    let status = Command::new(python())
        .arg(python_script("langgraph_agents.py"))
        .arg(format!("http://{}", daemon.http))
        .status()
        .expect("run the LangGraph graph");
    assert!(status.success(), "the LangGraph graph failed");
    let out = daemon.path("out.jsonl");
    let root = || {
        all_spans(&read_file_output(&out))
            .into_iter()
            .find(|s| s.parent_span_id.is_empty())
    };
    eventually(Duration::from_secs(10), || root().is_some()).await;
    let root = root().unwrap_or_else(|| panic!("no root span\n{}", daemon.log()));
    let context = format!("{:#?}", root.attributes);
    // researcher: gpt-4o-mini, 1000 in / 200 out; writer: 2 × gpt-4o, 500 in / 100 out.
    let researcher = (1000.0 * 0.15 + 200.0 * 0.60) / 1e6;
    let writer = 2.0 * (500.0 * 2.50 + 100.0 * 10.00) / 1e6;
    let total = double(&root, "lookout.trace.cost_usd").expect(&context);
    assert!(
        (total - (researcher + writer)).abs() < 1e-9,
        "{total}\n{context}"
    );
    assert_eq!(
        int(&root, "lookout.trace.input_tokens"),
        Some(2000),
        "{context}"
    );
    assert_eq!(
        int(&root, "lookout.trace.output_tokens"),
        Some(400),
        "{context}"
    );
    assert_eq!(int(&root, "lookout.trace.llm_calls"), Some(3), "{context}");
    assert_eq!(int(&root, "lookout.trace.errors"), Some(0), "{context}");
    let agents: serde_json::Value =
        serde_json::from_str(text(&root, "lookout.trace.agents").expect(&context)).expect("JSON");
    let agent = |name: &str, key: &str| agents[name][key].as_f64().unwrap_or(f64::NAN);
    assert!(
        (agent("researcher", "cost_usd") - researcher).abs() < 1e-9,
        "{agents}"
    );
    assert!(
        (agent("writer", "cost_usd") - writer).abs() < 1e-9,
        "{agents}"
    );
    assert_eq!(agent("researcher", "input_tokens"), 1000.0, "{agents}");
    assert_eq!(agent("writer", "output_tokens"), 200.0, "{agents}");
    assert_eq!(agent("writer", "llm_calls"), 2.0, "{agents}");
    assert!(agent("writer", "duration_ms") > 0.0, "{agents}");
    assert_eq!(agents.as_object().map(|o| o.len()), Some(2), "{agents}");
}
