//! What the rules read from a span, found once per span whatever the
//! number of rules.

use lookout_pipelines::genai::SpanFields;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};

use super::config::{Label, SpanSelector};

/// Label values, indexed by `Label as usize`.
pub type Labels<'a> = [Option<&'a str>; Label::COUNT];

/// One span as the rules see it, borrowed from the payload.
pub struct SpanView<'a> {
    pub labels: Labels<'a>,
    pub is_agent: bool,
    pub is_model_call: bool,
    pub is_tool: bool,
    pub is_root: bool,
    pub failed: bool,
    pub duration_ms: f64,
    pub cost: Option<f64>,
    /// The whole trace's cost, written by the `cost` processor on roots.
    pub trace_cost: Option<f64>,
    pub tokens: Option<f64>,
    /// Borrowed, and copied only for the few samples an alert names.
    pub trace_id: &'a [u8],
}

impl<'a> SpanView<'a> {
    pub fn of(span: &'a Span, service: Option<&'a str>) -> SpanView<'a> {
        let fields = SpanFields::of(&span.attributes);
        let mut labels = [None; Label::COUNT];
        labels[Label::Agent as usize] = fields.agent.filter(|a| !a.is_empty());
        labels[Label::Model as usize] = fields.model().filter(|m| !m.is_empty());
        labels[Label::Provider as usize] = fields.provider.filter(|p| !p.is_empty());
        labels[Label::Service as usize] = service.filter(|s| !s.is_empty());
        labels[Label::Operation as usize] = fields.operation.filter(|o| !o.is_empty());
        SpanView {
            labels,
            is_agent: fields.is_agent(),
            is_model_call: fields.is_model_call(),
            is_tool: fields.kind == Some("tool") || fields.operation == Some("execute_tool"),
            is_root: span.parent_span_id.is_empty(),
            failed: span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32),
            duration_ms: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano) as f64
                / 1e6,
            cost: fields.cost,
            trace_cost: fields.trace_cost,
            tokens: fields.total_tokens(),
            trace_id: &span.trace_id,
        }
    }

    pub fn is(&self, selector: SpanSelector) -> bool {
        match selector {
            SpanSelector::All => true,
            SpanSelector::Agent => self.is_agent,
            SpanSelector::Llm => self.is_model_call,
            SpanSelector::Tool => self.is_tool,
            SpanSelector::Root => self.is_root,
        }
    }
}

/// A non-empty string attribute.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    let value = attributes.iter().find(|kv| kv.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}
