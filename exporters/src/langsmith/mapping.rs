//! Span → run: name, type, times, error, tags, project, inputs and
//! outputs, metadata and usage. Ids and the dotted order are the trace
//! window's business.

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::run::{Draft, GivenIds};
use crate::attributes::{find, hex, json_of, non_empty_string as string, object};
use crate::messages::{self, DESCRIBING_KEYS};
use lookout_pipelines::genai::{Kind, is_content_key};

/// Why a span cannot become a run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unmappable {
    #[error("the span's trace id is not 16 bytes")]
    TraceId,
    #[error("the span's span id is not 8 bytes")]
    SpanId,
}

/// What a span is mapped with besides itself.
pub struct Context<'a> {
    pub resource: &'a [KeyValue],
    pub scope_name: &'a str,
    pub default_project: &'a str,
}

/// Resource attributes that say which project a span belongs to.
const PROJECT_KEYS: [&str; 2] = ["langsmith.trace.session_name", "langsmith.project"];

/// Resource attributes worth repeating on every run.
const RESOURCE_METADATA: [&str; 4] = [
    "service.name",
    "service.version",
    "deployment.environment.name",
    "deployment.environment",
];

pub fn draft(span: &Span, context: &Context<'_>) -> Result<Draft, Unmappable> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| Unmappable::TraceId)?;
    let span_id: [u8; 8] = span
        .span_id
        .as_slice()
        .try_into()
        .map_err(|_| Unmappable::SpanId)?;
    let parent_span_id = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
        .ok()
        .filter(|id| *id != [0; 8]);
    let attributes = &span.attributes;
    let run_type = run_type(attributes);
    let io = messages::read(span, run_type);
    let extra = extra(span, context, run_type);
    Ok(Draft {
        trace_id,
        span_id,
        parent_span_id,
        start_unix_nano: span.start_time_unix_nano,
        given: given_ids(attributes),
        name: string(attributes, "langsmith.trace.name")
            .map(str::to_string)
            .unwrap_or_else(|| non_empty_name(&span.name)),
        run_type,
        end_unix_nano: span.end_time_unix_nano,
        session_name: project(attributes, context),
        tags: tags(attributes),
        inputs: raw(&io.inputs.unwrap_or_else(|| json!({}))),
        outputs: io.outputs.as_ref().map(raw),
        extra: raw(&extra),
        error: error(span),
        events: events(span),
    })
}

fn non_empty_name(name: &str) -> String {
    if name.is_empty() {
        "span".to_string()
    } else {
        name.to_string()
    }
}

/// LangSmith's run types, from the first convention that says.
fn run_type(attributes: &[KeyValue]) -> &'static str {
    const RUN_TYPES: [&str; 7] = [
        "llm",
        "chain",
        "tool",
        "retriever",
        "embedding",
        "prompt",
        "parser",
    ];
    if let Some(kind) = string(attributes, "langsmith.span.kind")
        && let Some(run_type) = RUN_TYPES.iter().find(|t| kind.eq_ignore_ascii_case(t))
    {
        return run_type;
    }
    let by_kind = |kind: &str| {
        Some(match Kind::parse(kind)? {
            Kind::Llm | Kind::Chat => "llm",
            Kind::Embeddings => "embedding",
            Kind::Tool => "tool",
            Kind::Retriever => "retriever",
            Kind::Agent | Kind::Chain => "chain",
        })
    };
    [
        "lookout.genai.kind",
        "gen_ai.operation.name",
        "openinference.span.kind",
        "traceloop.span.kind",
        "llm.request.type",
    ]
    .iter()
    .find_map(|key| string(attributes, key).and_then(by_kind))
    .unwrap_or("chain")
}

/// The span's `langsmith.trace.session_name`, else the resource's, else
/// the exporter's `project`.
fn project(attributes: &[KeyValue], context: &Context<'_>) -> String {
    string(attributes, "langsmith.trace.session_name")
        .or_else(|| {
            PROJECT_KEYS
                .iter()
                .find_map(|key| string(context.resource, key))
        })
        .unwrap_or(context.default_project)
        .to_string()
}

/// `langsmith.span.tags`: an array, or a comma-separated string.
fn tags(attributes: &[KeyValue]) -> Vec<String> {
    match find(attributes, "langsmith.span.tags") {
        Some(any_value::Value::StringValue(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_string)
            .collect(),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .filter_map(|value| match &value.value {
                Some(any_value::Value::StringValue(tag)) => Some(tag.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn given_ids(attributes: &[KeyValue]) -> GivenIds {
    let uuid = |key| string(attributes, key).and_then(|text| Uuid::parse_str(text).ok());
    GivenIds {
        trace_id: uuid("langsmith.trace.id"),
        run_id: uuid("langsmith.span.id"),
        parent_run_id: uuid("langsmith.span.parent_id"),
        dotted_order: string(attributes, "langsmith.span.dotted_order").map(str::to_string),
    }
}

/// A failed span's error: its status message, else its exception event
/// as `Type: message`.
fn error(span: &Span) -> Option<String> {
    let status = span.status.as_ref()?;
    if status.code != StatusCode::Error as i32 {
        return None;
    }
    if !status.message.is_empty() {
        return Some(status.message.clone());
    }
    let exception = span.events.iter().find(|event| event.name == "exception");
    let described = exception.and_then(|event| {
        let kind = string(&event.attributes, "exception.type");
        let message = string(&event.attributes, "exception.message");
        match (kind, message) {
            (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
            (Some(text), None) | (None, Some(text)) => Some(text.to_string()),
            (None, None) => None,
        }
    });
    Some(described.unwrap_or_else(|| "error".to_string()))
}

/// Span events other than the GenAI content ones (which became inputs and
/// outputs), in the SDK's `{name, time, kwargs}` shape.
fn events(span: &Span) -> Option<Box<RawValue>> {
    let events: Vec<Value> = span
        .events
        .iter()
        .filter(|event| !messages::is_content_event(&event.name))
        .map(|event| {
            json!({
                "name": event.name,
                "time": super::run::rfc3339_micros(event.time_unix_nano),
                "kwargs": object(&event.attributes),
            })
        })
        .collect();
    (!events.is_empty()).then(|| raw(&Value::Array(events)))
}

/// `extra.metadata`: LangSmith's `ls_*` keys, `usage_metadata`, the
/// span's other attributes, `langsmith.metadata.*` unprefixed, and a few
/// resource attributes.
fn extra(span: &Span, context: &Context<'_>, run_type: &str) -> Value {
    let attributes = &span.attributes;
    let mut metadata = Map::new();
    for key in RESOURCE_METADATA {
        if let Some(value) = find(context.resource, key) {
            metadata.insert(key.to_string(), json_of(value));
        }
    }
    for attribute in attributes {
        let key = attribute.key.as_str();
        let Some(value) = attribute.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        if let Some(name) = key.strip_prefix("langsmith.metadata.") {
            metadata.insert(name.to_string(), json_of(value));
        } else if !(is_content_key(key)
            || key.starts_with("langsmith.span.")
            || key.starts_with("langsmith.trace.")
            || DESCRIBING_KEYS.contains(&key))
        {
            metadata.insert(key.to_string(), json_of(value));
        }
    }
    if let Some(provider) = ["gen_ai.provider.name", "gen_ai.system"]
        .iter()
        .find_map(|key| string(attributes, key))
    {
        metadata.insert("ls_provider".into(), provider.into());
    }
    if let Some(model) = ["gen_ai.response.model", "gen_ai.request.model"]
        .iter()
        .find_map(|key| string(attributes, key))
    {
        metadata.insert("ls_model_name".into(), model.into());
    }
    if run_type == "llm" {
        metadata.insert("ls_model_type".into(), "chat".into());
    }
    if let Some(usage) = usage_metadata(attributes) {
        metadata.insert("usage_metadata".into(), usage);
    }
    metadata.insert("otel_trace_id".into(), hex(&span.trace_id).into());
    metadata.insert("otel_span_id".into(), hex(&span.span_id).into());
    let mut extra = json!({ "metadata": metadata });
    if !context.scope_name.is_empty() {
        extra["runtime"] = json!({ "library": context.scope_name });
    }
    extra
}

/// LangSmith's `UsageMetadata` from the normalised `gen_ai.usage.*`
/// counts and the `cost` processor's `lookout.cost.*` amounts.
fn usage_metadata(attributes: &[KeyValue]) -> Option<Value> {
    let tokens = |key| find(attributes, key).and_then(count);
    let usd = |key| find(attributes, key).and_then(amount);
    let input = tokens("gen_ai.usage.input_tokens");
    let output = tokens("gen_ai.usage.output_tokens");
    let cache_read = tokens("gen_ai.usage.cache_read.input_tokens");
    let cache_creation = tokens("gen_ai.usage.cache_creation.input_tokens");
    let reasoning = tokens("gen_ai.usage.reasoning.output_tokens");
    let total_cost = usd("gen_ai.usage.cost");
    if input.is_none() && output.is_none() && total_cost.is_none() {
        return None;
    }
    let mut usage = Map::new();
    let total = tokens("gen_ai.usage.total_tokens")
        .or_else(|| Some(input.unwrap_or(0) + output.unwrap_or(0)));
    insert(&mut usage, "input_tokens", input);
    insert(&mut usage, "output_tokens", output);
    insert(&mut usage, "total_tokens", total);
    let input_details = details(&[
        ("cache_read", cache_read),
        ("cache_creation", cache_creation),
    ]);
    insert(&mut usage, "input_token_details", input_details);
    insert(
        &mut usage,
        "output_token_details",
        details(&[("reasoning", reasoning)]),
    );

    let input_usd = usd("lookout.cost.input_usd");
    let cache_read_usd = usd("lookout.cost.cache_read_usd");
    let cache_write_usd = usd("lookout.cost.cache_write_usd");
    let output_usd = usd("lookout.cost.output_usd");
    let reasoning_usd = usd("lookout.cost.reasoning_usd");
    let sum = |parts: &[Option<f64>]| {
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum::<f64>())
    };
    insert(
        &mut usage,
        "input_cost",
        sum(&[input_usd, cache_read_usd, cache_write_usd]),
    );
    insert(&mut usage, "output_cost", sum(&[output_usd, reasoning_usd]));
    insert(&mut usage, "total_cost", total_cost);
    let input_cost_details = details(&[
        ("cache_read", cache_read_usd),
        ("cache_creation", cache_write_usd),
    ]);
    insert(&mut usage, "input_cost_details", input_cost_details);
    let output_cost_details = details(&[("reasoning", reasoning_usd)]);
    insert(&mut usage, "output_cost_details", output_cost_details);
    Some(Value::Object(usage))
}

fn insert<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_string(), value.into());
    }
}

fn details<T: Into<Value> + Copy>(parts: &[(&str, Option<T>)]) -> Option<Value> {
    let map: Map<String, Value> = parts
        .iter()
        .filter_map(|(key, value)| Some((key.to_string(), (*value)?.into())))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

pub(super) fn raw(value: &Value) -> Box<RawValue> {
    // A serde_json::Value always encodes.
    serde_json::value::to_raw_value(value)
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}

fn count(value: &any_value::Value) -> Option<i64> {
    match value {
        any_value::Value::IntValue(n) => Some(*n),
        any_value::Value::DoubleValue(d) if d.is_finite() => Some(d.round() as i64),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

fn amount(value: &any_value::Value) -> Option<f64> {
    match value {
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::IntValue(n) => Some(*n as f64),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        attribute(key, any_value::Value::StringValue(value.into()))
    }

    fn int(key: &str, value: i64) -> KeyValue {
        attribute(key, any_value::Value::IntValue(value))
    }

    fn context() -> Context<'static> {
        Context {
            resource: &[],
            scope_name: "",
            default_project: "default",
        }
    }

    fn span(attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "chat gpt-4o".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes,
            ..Default::default()
        }
    }

    fn metadata(draft: &Draft) -> Value {
        let extra: Value = serde_json::from_str(draft.extra.get()).unwrap();
        extra["metadata"].clone()
    }

    #[test]
    fn an_llm_span_gets_type_usage_costs_and_ls_keys() {
        let span = span(vec![
            text("lookout.genai.kind", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", "gpt-4o"),
            int("gen_ai.usage.input_tokens", 100),
            int("gen_ai.usage.output_tokens", 20),
            int("gen_ai.usage.cache_read.input_tokens", 40),
            attribute("gen_ai.usage.cost", any_value::Value::DoubleValue(0.5)),
            attribute("lookout.cost.input_usd", any_value::Value::DoubleValue(0.1)),
            attribute(
                "lookout.cost.cache_read_usd",
                any_value::Value::DoubleValue(0.05),
            ),
            attribute(
                "lookout.cost.output_usd",
                any_value::Value::DoubleValue(0.35),
            ),
            text("app.user_tier", "gold"),
        ]);
        let draft = draft(&span, &context()).unwrap();
        assert_eq!(draft.run_type, "llm");
        let metadata = metadata(&draft);
        assert_eq!(metadata["ls_provider"], "openai");
        assert_eq!(metadata["ls_model_name"], "gpt-4o");
        assert_eq!(metadata["app.user_tier"], "gold");
        let usage = &metadata["usage_metadata"];
        assert_eq!(usage["input_tokens"], 100);
        assert_eq!(usage["total_tokens"], 120);
        assert_eq!(usage["input_token_details"]["cache_read"], 40);
        assert_eq!(usage["total_cost"], 0.5);
        assert!((usage["input_cost"].as_f64().unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(usage["input_cost_details"]["cache_read"], 0.05);
        assert_eq!(usage["output_cost"], 0.35);
    }

    #[test]
    fn langsmith_attributes_set_name_type_project_tags_and_ids() {
        let span = span(vec![
            text("langsmith.trace.name", "Retriever"),
            text("langsmith.span.kind", "retriever"),
            text("langsmith.trace.session_name", "proj-b"),
            text("langsmith.span.tags", "a, b"),
            text("langsmith.metadata.user_id", "u1"),
            text("langsmith.span.id", "0192f6a2-1c3b-7d4e-8f5a-6b7c8d9e0f1a"),
        ]);
        let draft = draft(&span, &context()).unwrap();
        assert_eq!(draft.name, "Retriever");
        assert_eq!(draft.run_type, "retriever");
        assert_eq!(draft.session_name, "proj-b");
        assert_eq!(draft.tags, ["a", "b"]);
        assert_eq!(metadata(&draft)["user_id"], "u1");
        assert!(metadata(&draft).get("langsmith.span.kind").is_none());
        assert!(draft.given.run_id.is_some());
    }

    #[test]
    fn the_resource_can_name_the_project() {
        let resource = [text("langsmith.project", "from-resource")];
        let context = Context {
            resource: &resource,
            scope_name: "",
            default_project: "default",
        };
        assert_eq!(
            draft(&span(vec![]), &context).unwrap().session_name,
            "from-resource"
        );
        assert_eq!(
            draft(&span(vec![]), &self::context()).unwrap().session_name,
            "default"
        );
    }

    #[test]
    fn errors_come_from_the_status_or_the_exception() {
        let mut failed = span(vec![]);
        failed.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        failed
            .events
            .push(opentelemetry_proto::tonic::trace::v1::span::Event {
                name: "exception".into(),
                attributes: vec![
                    text("exception.type", "ValueError"),
                    text("exception.message", "boom"),
                ],
                ..Default::default()
            });
        let draft = draft(&failed, &context()).unwrap();
        assert_eq!(draft.error.as_deref(), Some("ValueError: boom"));
        let events: Value = serde_json::from_str(draft.events.unwrap().get()).unwrap();
        assert_eq!(events[0]["name"], "exception");
        assert_eq!(events[0]["kwargs"]["exception.type"], "ValueError");
    }

    #[test]
    fn bad_ids_are_refused_and_a_zero_parent_is_a_root() {
        let mut bad = span(vec![]);
        bad.trace_id = vec![1; 3];
        assert_eq!(draft(&bad, &context()).unwrap_err(), Unmappable::TraceId);
        let mut root = span(vec![]);
        root.parent_span_id = vec![0; 8];
        assert_eq!(draft(&root, &context()).unwrap().parent_span_id, None);
    }
}
