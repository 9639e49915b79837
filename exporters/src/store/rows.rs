//! Spans → the rows of the monitoring tables. Pure mapping, shared by
//! both backends: what a row holds never depends on where it is written.
//!
//! It reads the names the `genai` and `cost` processors write
//! (`lookout.genai.kind`, `gen_ai.agent.name`, `gen_ai.usage.*`,
//! `gen_ai.usage.cost`, `lookout.cost.type`), with the raw conventions'
//! kind attributes as a fallback, so put those processors first.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::json;

use lookout_pipelines::genai::{Kind, is_content_key};

use crate::attributes::{find, hex, non_empty_string, object, object_of};
use crate::messages;

/// Costs travel as whole units of 1e-10 USD, the scale of the cost
/// columns, so that PostgreSQL sums them exactly.
pub const COST_UNITS_PER_USD: f64 = 1e10;

/// Column widths of the design documents' schema; longer text is cut at a
/// character boundary rather than failing the whole batch.
const ID_WIDTH: usize = 255;
const WORKFLOW_NAME_WIDTH: usize = 100;
const AGENT_TYPE_WIDTH: usize = 50;
const PROVIDER_WIDTH: usize = 100;
const MODEL_WIDTH: usize = 255;
const SERVICE_WIDTH: usize = 255;
const KIND_WIDTH: usize = 20;
/// The largest cost a NUMERIC(20,10) column holds, less a margin.
const MAX_USD: f64 = 1e9;
/// DECIMAL(15,6) holds values below 1e9.
const MAX_METRIC: f64 = 999_999_999.0;

/// Where the call id comes from when the config does not say: the design
/// documents' own name first, then the session conventions.
pub const DEFAULT_CALL_ID_ATTRIBUTES: [&str; 7] = [
    "call_id",
    "call.id",
    "gen_ai.conversation.id",
    "session.id",
    "langsmith.metadata.call_id",
    "langsmith.metadata.session_id",
    "langsmith.metadata.thread_id",
];

/// One payload's rows.
#[derive(Debug, Default)]
pub struct Batch {
    pub spans: Vec<SpanRow>,
    /// Spans without a valid trace or span id, which no row can key.
    pub skipped: usize,
}

/// A span, with everything the other tables are derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: Option<String>,
    pub service_name: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub duration_ms: f64,
    pub status_code: &'static str,
    pub status_message: Option<String>,
    pub cost_units: Option<i64>,
    pub attributes: String,
    pub events: Option<String>,
    pub call_id: Option<String>,
    pub workflow_name: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub agent: Option<AgentRow>,
    pub cost: Option<CostRow>,
    pub metrics: Vec<MetricRow>,
}

impl SpanRow {
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    pub fn is_error(&self) -> bool {
        self.status_code == "error"
    }
}

/// An `agent_executions` row: one per agent or model-call span.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub agent_type: String,
    pub kind: String,
    pub execution_time_ms: i32,
    pub success: bool,
    pub input_data: Option<String>,
    pub output_data: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub error_message: Option<String>,
}

/// A `cost_details` row: one per span that carries a cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    pub cost_type: String,
    pub usage_units: Option<i32>,
    pub usage_unit: Option<&'static str>,
    pub unit_cost: Option<f64>,
    pub agent_type: Option<String>,
    pub model: Option<String>,
}

/// A `performance_metrics` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub metric_type: &'static str,
    pub value: f64,
    pub metadata: String,
}

/// A `workflow_traces` row as one batch sees its trace; the backends merge
/// it into the stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub trace_id: String,
    pub call_id: String,
    pub workflow_name: String,
    pub start_ns: i64,
    pub end_ns: i64,
    /// `completed` or `error` once the root span is in, `running` before.
    pub status: &'static str,
    pub cost_units: i64,
    pub root_span_id: Option<String>,
    pub service_name: Option<String>,
    pub span_count: i32,
    pub error_count: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// What the mapping needs from the exporter's config.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub call_id_attributes: Vec<String>,
}

impl Mapping {
    pub fn batch(&self, resources: &[ResourceSpans]) -> Batch {
        let mut batch = Batch::default();
        for resource in resources {
            let resource_attributes = resource
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            let service_name = non_empty_string(resource_attributes, "service.name")
                .map(|name| clip(name, SERVICE_WIDTH));
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                match self.span(span, resource_attributes, service_name.as_ref()) {
                    Some(row) => batch.spans.push(row),
                    None => batch.skipped += 1,
                }
            }
        }
        batch
    }

    fn span(
        &self,
        span: &Span,
        resource: &[KeyValue],
        service_name: Option<&String>,
    ) -> Option<SpanRow> {
        let trace_id = valid_id(&span.trace_id, 16)?;
        let span_id = valid_id(&span.span_id, 8)?;
        let attributes = &span.attributes[..];
        let start_ns = nanos(span.start_time_unix_nano);
        let end_ns = nanos(span.end_time_unix_nano).max(start_ns);
        let duration_ms = (end_ns - start_ns) as f64 / 1e6;
        let (status_code, status_message) = status(span);
        let kind = kind(attributes);
        let cost_units = amount(attributes, "gen_ai.usage.cost").map(cost_units);
        let input_tokens = count(attributes, "gen_ai.usage.input_tokens");
        let output_tokens = count(attributes, "gen_ai.usage.output_tokens");
        let parent_span_id = valid_id(&span.parent_span_id, 8);
        let workflow_name = non_empty_string(attributes, "gen_ai.workflow.name")
            .or_else(|| parent_span_id.is_none().then_some(span.name.as_str()))
            .filter(|name| !name.is_empty())
            .map(|name| clip(name, WORKFLOW_NAME_WIDTH));
        let call_id = self
            .call_id_attributes
            .iter()
            .find_map(|key| {
                non_empty_string(attributes, key).or_else(|| non_empty_string(resource, key))
            })
            .map(|id| clip(id, ID_WIDTH));

        let model = model(attributes);
        let error = (status_code == "error").then(|| status_message.clone());
        let agent = kind
            .filter(|k| is_agent_or_model_call(k))
            .map(|k| agent_row(span, k, duration_ms, error, model.clone()));
        let tokens = input_tokens.unwrap_or(0) + output_tokens.unwrap_or(0);
        let cost = cost_units
            .map(|units| cost_row(attributes, kind, units, tokens, agent.as_ref(), model));
        let mut row = SpanRow {
            trace_id,
            span_id,
            parent_span_id,
            name: clean(&span.name),
            kind: kind.map(|k| clip(k, KIND_WIDTH)),
            service_name: service_name.cloned(),
            start_ns,
            end_ns,
            duration_ms,
            status_code,
            status_message,
            cost_units,
            attributes: json_text(&stored_attributes(attributes, agent.as_ref())),
            events: events(span),
            call_id,
            workflow_name,
            input_tokens,
            output_tokens,
            agent,
            cost,
            metrics: Vec::new(),
        };
        // One row per workflow. An agent execution's latency and tokens
        // are columns of its `agent_executions` row; repeating them here
        // cost a quarter of the store's write throughput (BENCHMARKS.md).
        if row.is_root() {
            let metadata = json_text(&json!({
                "workflow_name": row.workflow_name,
                "service_name": row.service_name,
                "success": !row.is_error(),
            }));
            row.metrics.push(MetricRow {
                metric_type: "workflow_latency_ms",
                value: duration_ms.min(MAX_METRIC),
                metadata,
            });
        }
        Some(row)
    }
}

/// Folds a batch's new spans into one row per trace, ordered by trace id
/// so that concurrent writers lock trace rows in the same order.
pub fn traces<'a>(spans: impl IntoIterator<Item = &'a SpanRow>) -> Vec<TraceRow> {
    let mut traces: BTreeMap<&str, TraceRow> = BTreeMap::new();
    for span in spans {
        let trace = traces
            .entry(span.trace_id.as_str())
            .or_insert_with(|| TraceRow {
                trace_id: span.trace_id.clone(),
                call_id: span.trace_id.clone(),
                workflow_name: String::new(),
                start_ns: span.start_ns,
                end_ns: span.end_ns,
                status: "running",
                cost_units: 0,
                root_span_id: None,
                service_name: None,
                span_count: 0,
                error_count: 0,
                input_tokens: 0,
                output_tokens: 0,
            });
        trace.start_ns = trace.start_ns.min(span.start_ns);
        trace.end_ns = trace.end_ns.max(span.end_ns);
        trace.cost_units += span.cost_units.unwrap_or(0);
        trace.span_count += 1;
        trace.error_count += i32::from(span.is_error());
        trace.input_tokens += span.input_tokens.unwrap_or(0);
        trace.output_tokens += span.output_tokens.unwrap_or(0);
        if trace.service_name.is_none() {
            trace.service_name.clone_from(&span.service_name);
        }
        if let Some(call_id) = &span.call_id
            && trace.call_id == trace.trace_id
        {
            trace.call_id.clone_from(call_id);
        }
        if span.is_root() {
            trace.root_span_id = Some(span.span_id.clone());
            trace.status = if span.is_error() {
                "error"
            } else {
                "completed"
            };
            if let Some(name) = &span.workflow_name {
                trace.workflow_name.clone_from(name);
            }
        } else if trace.root_span_id.is_none()
            && trace.workflow_name.is_empty()
            && let Some(name) = &span.workflow_name
        {
            trace.workflow_name.clone_from(name);
        }
    }
    traces
        .into_values()
        .map(|mut trace| {
            if trace.workflow_name.is_empty() {
                trace.workflow_name = trace
                    .service_name
                    .as_deref()
                    .map_or_else(|| "unknown".to_string(), |s| clip(s, WORKFLOW_NAME_WIDTH));
            }
            trace
        })
        .collect()
}

/// The span's attributes as JSON. Prompts and completions that became
/// the agent execution's `input_data` / `output_data` are not stored twice:
/// they are the bulk of an LLM span.
fn stored_attributes(attributes: &[KeyValue], agent: Option<&AgentRow>) -> serde_json::Value {
    let moved = agent.is_some_and(|a| a.input_data.is_some() || a.output_data.is_some());
    if moved {
        object_of(attributes, |key| !is_content_key(key))
    } else {
        object(attributes)
    }
}

/// Model calls and agents get an `agent_executions` row; tools, chains and
/// retrievers are kept in `spans` only.
fn is_agent_or_model_call(kind: &str) -> bool {
    matches!(kind, "agent" | "llm" | "chat" | "embeddings")
}

/// `error` is `Some` for a failed span, with its status message if any.
fn agent_row(
    span: &Span,
    kind: &str,
    duration_ms: f64,
    error: Option<Option<String>>,
    model: Option<String>,
) -> AgentRow {
    let attributes = &span.attributes[..];
    let agent_type = if kind == "agent" {
        non_empty_string(attributes, "gen_ai.agent.name")
            .or_else(|| non_empty_string(attributes, "agent.name"))
            .unwrap_or(&span.name)
    } else {
        // A model call inside an agent names that agent when its
        // instrumentation says so (LangChain's metadata does); else "llm".
        non_empty_string(attributes, "gen_ai.agent.name")
            .or_else(|| non_empty_string(attributes, "langsmith.metadata.langgraph_node"))
            .unwrap_or("llm")
    };
    let io = messages::read(span, if kind == "agent" { "chain" } else { "llm" });
    AgentRow {
        agent_type: clip(agent_type, AGENT_TYPE_WIDTH),
        kind: kind.to_string(),
        execution_time_ms: duration_ms.round().min(f64::from(i32::MAX)) as i32,
        success: error.is_none(),
        input_data: io.inputs.as_ref().map(json_text),
        output_data: io.outputs.as_ref().map(json_text),
        provider: non_empty_string(attributes, "gen_ai.provider.name")
            .or_else(|| non_empty_string(attributes, "gen_ai.system"))
            .map(|p| clip(p, PROVIDER_WIDTH)),
        model,
        error_message: error.flatten(),
    }
}

fn model(attributes: &[KeyValue]) -> Option<String> {
    non_empty_string(attributes, "gen_ai.response.model")
        .or_else(|| non_empty_string(attributes, "gen_ai.request.model"))
        .map(|m| clip(m, MODEL_WIDTH))
}

/// The cost processor's `lookout.cost.type` names the component; a span
/// priced by its instrumentation alone is a model call's (`llm`) or, for
/// anything else, an API call's.
fn cost_row(
    attributes: &[KeyValue],
    kind: Option<&str>,
    units: i64,
    tokens: i64,
    agent: Option<&AgentRow>,
    model: Option<String>,
) -> CostRow {
    let model_call = kind.is_some_and(|k| is_agent_or_model_call(k) && k != "agent");
    let cost_type = non_empty_string(attributes, "lookout.cost.type").unwrap_or(if model_call {
        "llm"
    } else {
        "api"
    });
    let (usage_units, usage_unit) = match cost_type {
        "llm" => (Some(tokens), Some("tokens")),
        "api" => (Some(1), Some("calls")),
        _ => (None, None),
    };
    let usage_units = usage_units
        .filter(|n| *n > 0)
        .map(|n| n.min(i64::from(i32::MAX)) as i32);
    let usd = units as f64 / COST_UNITS_PER_USD;
    CostRow {
        cost_type: clip(cost_type, AGENT_TYPE_WIDTH),
        usage_units,
        usage_unit: usage_units.and(usage_unit),
        unit_cost: usage_units.map(|n| usd / f64::from(n)),
        agent_type: agent.map(|a| a.agent_type.clone()),
        model,
    }
}

/// The span's kind: the `genai` processor's `lookout.genai.kind`, else
/// what the raw conventions say.
fn kind(attributes: &[KeyValue]) -> Option<&'static str> {
    [
        "lookout.genai.kind",
        "gen_ai.operation.name",
        "openinference.span.kind",
        "traceloop.span.kind",
    ]
    .iter()
    .find_map(|key| non_empty_string(attributes, key).and_then(Kind::parse))
    .map(Kind::as_str)
}

fn status(span: &Span) -> (&'static str, Option<String>) {
    let Some(status) = &span.status else {
        return ("unset", None);
    };
    let code = match StatusCode::try_from(status.code) {
        Ok(StatusCode::Ok) => "ok",
        Ok(StatusCode::Error) => "error",
        _ => "unset",
    };
    let message = (!status.message.is_empty()).then(|| clean(&status.message));
    (code, message)
}

fn events(span: &Span) -> Option<String> {
    if span.events.is_empty() {
        return None;
    }
    let events: Vec<serde_json::Value> = span
        .events
        .iter()
        .map(|event| {
            json!({
                "name": event.name,
                "time_unix_nano": event.time_unix_nano,
                "attributes": object(&event.attributes),
            })
        })
        .collect();
    Some(json_text(&serde_json::Value::Array(events)))
}

fn amount(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match find(attributes, key)? {
        Value::DoubleValue(d) => Some(*d),
        Value::IntValue(n) => Some(*n as f64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|usd| usd.is_finite() && *usd >= 0.0)
}

fn count(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match find(attributes, key)? {
        Value::IntValue(n) => Some(*n),
        Value::DoubleValue(d) if d.is_finite() => Some(d.round() as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

fn cost_units(usd: f64) -> i64 {
    (usd.min(MAX_USD) * COST_UNITS_PER_USD).round() as i64
}

fn valid_id(bytes: &[u8], width: usize) -> Option<String> {
    (bytes.len() == width && bytes.iter().any(|b| *b != 0)).then(|| hex(bytes))
}

/// OTLP times are u64 nanoseconds; the timestamp columns end long before
/// i64 nanoseconds do (year 2262).
fn nanos(unix_nano: u64) -> i64 {
    i64::try_from(unix_nano).unwrap_or(i64::MAX)
}

/// PostgreSQL text cannot hold NUL, which no real name needs.
fn clean(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text.to_string()
    }
}

fn clip(text: &str, width: usize) -> String {
    let text = clean(text);
    match text.char_indices().nth(width) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text,
    }
}

/// JSON text that PostgreSQL's JSONB accepts: it refuses `\u0000`, so
/// such a document is rebuilt without NUL characters.
pub fn json_text(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !text.contains("\\u0000") {
        return text;
    }
    without_nul(value.clone()).to_string()
}

fn without_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Json::String(s) => Json::String(s.replace('\0', "")),
        Json::Array(items) => Json::Array(items.into_iter().map(without_nul).collect()),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', ""), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        attribute(key, Value::StringValue(value.into()))
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("span {id}"),
            start_time_unix_nano: 1_000_000_000 + u64::from(id) * 1_000_000,
            end_time_unix_nano: 1_500_000_000 + u64::from(id) * 1_000_000,
            attributes,
            ..Default::default()
        }
    }

    fn llm_span(trace: u8, id: u8, parent: Option<u8>, usd: f64) -> Span {
        span(
            trace,
            id,
            parent,
            vec![
                text("lookout.genai.kind", "chat"),
                text("gen_ai.request.model", "gpt-4o"),
                attribute("gen_ai.usage.input_tokens", Value::IntValue(100)),
                attribute("gen_ai.usage.output_tokens", Value::IntValue(50)),
                attribute("gen_ai.usage.cost", Value::DoubleValue(usd)),
                text("lookout.cost.type", "llm"),
                text(
                    "gen_ai.input.messages",
                    r#"[{"role":"user","parts":[{"type":"text","content":"hi"}]}]"#,
                ),
            ],
        )
    }

    fn batch(spans: Vec<Span>) -> Batch {
        let mapping = Mapping {
            call_id_attributes: DEFAULT_CALL_ID_ATTRIBUTES.map(String::from).to_vec(),
        };
        mapping.batch(&[ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "orchestrator")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    #[test]
    fn a_model_call_becomes_an_agent_execution_and_a_cost() {
        let batch = batch(vec![llm_span(1, 2, Some(1), 0.00123)]);
        let row = &batch.spans[0];
        assert_eq!(row.trace_id, "01".repeat(16));
        assert_eq!(row.cost_units, Some(12_300_000));
        let agent = row.agent.as_ref().unwrap();
        assert_eq!(agent.agent_type, "llm");
        assert_eq!(agent.model.as_deref(), Some("gpt-4o"));
        assert_eq!(agent.execution_time_ms, 500);
        assert!(agent.input_data.as_deref().unwrap().contains("\"hi\""));
        let cost = row.cost.as_ref().unwrap();
        assert_eq!(cost.cost_type, "llm");
        assert_eq!(cost.usage_units, Some(150));
        assert!((cost.unit_cost.unwrap() - 0.00123 / 150.0).abs() < 1e-15);
        assert_eq!((row.input_tokens, row.output_tokens), (Some(100), Some(50)));
        // Its latency and tokens are the execution's columns, not metrics.
        assert!(row.metrics.is_empty());
    }

    #[test]
    fn tools_and_chains_are_kept_as_spans_only() {
        let batch = batch(vec![span(
            1,
            2,
            Some(1),
            vec![text("lookout.genai.kind", "tool")],
        )]);
        let row = &batch.spans[0];
        assert!(row.agent.is_none() && row.cost.is_none() && row.metrics.is_empty());
    }

    #[test]
    fn an_agent_span_is_named_by_its_agent() {
        let batch = batch(vec![span(
            1,
            2,
            Some(1),
            vec![
                text("lookout.genai.kind", "agent"),
                text("gen_ai.agent.name", "qualification"),
            ],
        )]);
        assert_eq!(
            batch.spans[0].agent.as_ref().unwrap().agent_type,
            "qualification"
        );
    }

    #[test]
    fn traces_sum_costs_and_take_name_and_status_from_the_root() {
        let mut root = span(1, 1, None, vec![text("session.id", "call-42")]);
        root.name = "qualify_lead".into();
        root.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        });
        let batch = batch(vec![
            llm_span(1, 2, Some(1), 0.25),
            llm_span(1, 3, Some(1), 0.5),
            root,
            llm_span(2, 4, Some(9), 0.125),
        ]);
        let traces = traces(&batch.spans);
        assert_eq!(traces.len(), 2);
        let first = &traces[0];
        assert_eq!(first.call_id, "call-42");
        assert_eq!(first.workflow_name, "qualify_lead");
        assert_eq!(first.status, "error");
        assert_eq!(first.cost_units, 7_500_000_000);
        assert_eq!((first.span_count, first.error_count), (3, 1));
        assert_eq!(first.start_ns, 1_001_000_000);
        let second = &traces[1];
        assert_eq!(second.status, "running");
        assert_eq!(second.call_id, second.trace_id, "no call id: the trace id");
        assert_eq!(
            second.workflow_name, "orchestrator",
            "no root yet: the service"
        );
    }

    #[test]
    fn invalid_ids_are_skipped_and_text_is_made_storable() {
        let mut no_trace = span(1, 2, None, vec![]);
        no_trace.trace_id = vec![0; 16];
        let mut odd = span(1, 3, None, vec![text("gen_ai.agent.name", "a\0b")]);
        odd.name = "x".repeat(300);
        let batch = batch(vec![no_trace, odd]);
        assert_eq!(batch.skipped, 1);
        let row = &batch.spans[0];
        assert_eq!(row.workflow_name.as_ref().unwrap().chars().count(), 100);
        assert!(!row.attributes.contains("\\u0000"));
    }
}
