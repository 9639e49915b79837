//! The `genai` processor in a running daemon: spans in OpenInference's and
//! OpenLLMetry's conventions come out with the current OTel GenAI names.

use lookout_pipelines::Payload;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::harness::{Daemon, FILE_PIPELINE, read_file_output, traces_body};

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span(id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: "llm call".into(),
        attributes,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_any_convention_leave_in_the_otel_one() {
    let config = FILE_PIPELINE
        .replace("processors:\n  batch:", "processors:\n  genai:\n  batch:")
        .replace(
            "    traces:\n      receivers: [otlp]\n      processors: [batch]",
            "    traces:\n      receivers: [otlp]\n      processors: [genai, batch]",
        );
    let mut daemon = Daemon::start(&config).await;
    let openinference = span(
        1,
        vec![
            attribute("openinference.span.kind", Value::StringValue("LLM".into())),
            attribute("llm.provider", Value::StringValue("openai".into())),
            attribute("llm.model_name", Value::StringValue("gpt-4o-mini".into())),
            attribute("llm.token_count.prompt", Value::IntValue(900)),
            attribute("llm.token_count.completion", Value::IntValue(40)),
        ],
    );
    let openllmetry = span(
        2,
        vec![
            attribute("gen_ai.system", Value::StringValue("Anthropic".into())),
            attribute("gen_ai.usage.prompt_tokens", Value::IntValue(100)),
            attribute("gen_ai.usage.cache_read_input_tokens", Value::IntValue(500)),
        ],
    );
    let body = traces_body(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![openinference, openllmetry],
            ..Default::default()
        }],
        ..Default::default()
    }]);
    assert!(daemon.post_traces(body).await.status().is_success());
    assert!(daemon.terminate().await.success());

    let output = read_file_output(&daemon.path("out.jsonl"));
    let spans: Vec<Span> = output
        .into_iter()
        .filter_map(|p| match p {
            Payload::Traces(r) => Some(r),
            _ => None,
        })
        .flatten()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let value = |id: u8, key: &str| {
        spans
            .iter()
            .find(|s| s.span_id == vec![id; 8])
            .and_then(|s| s.attributes.iter().find(|a| a.key == key))
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        value(1, "gen_ai.provider.name"),
        Some(Value::StringValue("openai".into()))
    );
    assert_eq!(
        value(1, "gen_ai.request.model"),
        Some(Value::StringValue("gpt-4o-mini".into()))
    );
    assert_eq!(
        value(1, "gen_ai.usage.input_tokens"),
        Some(Value::IntValue(900))
    );
    assert_eq!(
        value(1, "lookout.genai.kind"),
        Some(Value::StringValue("llm".into()))
    );
    assert_eq!(
        value(2, "gen_ai.provider.name"),
        Some(Value::StringValue("anthropic".into()))
    );
    assert_eq!(
        value(2, "gen_ai.usage.input_tokens"),
        Some(Value::IntValue(600))
    );
    assert_eq!(
        value(2, "gen_ai.usage.cache_read.input_tokens"),
        Some(Value::IntValue(500))
    );
}
