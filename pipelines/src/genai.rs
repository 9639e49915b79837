//! Attribute names of the LLM conventions that more than one component
//! needs to know.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// The attributes that carry prompt and completion content, in every
/// convention the `genai` processor reads. The `pii` processor's
/// `metadata_only` drops them; the `langsmith` exporter turns them into
/// run inputs and outputs rather than metadata. A trailing `*` matches
/// any suffix.
pub const CONTENT_KEYS: &[&str] = &[
    // OTel GenAI, current and deprecated.
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.prompt",
    "gen_ai.prompt.*",
    "gen_ai.completion",
    "gen_ai.completion.*",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.event.content",
    // OpenLLMetry.
    "llm.prompts",
    "llm.prompts.*",
    "llm.completions",
    "llm.completions.*",
    "traceloop.entity.input",
    "traceloop.entity.output",
    // OpenInference.
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.input_messages.*",
    "llm.output_messages",
    "llm.output_messages.*",
    "llm.prompt_template.variables",
    // LangSmith.
    "langsmith.inputs",
    "langsmith.outputs",
];

/// Whether `key` is one of `CONTENT_KEYS`, a trailing `*` matching any
/// suffix.
pub fn is_content_key(key: &str) -> bool {
    CONTENT_KEYS
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == *pattern,
        })
}

/// The token counts the `genai` processor writes, with the label the
/// metrics give each. Input and output come first.
pub const TOKEN_TYPES: [(&str, &str); 5] = [
    ("gen_ai.usage.input_tokens", "input"),
    ("gen_ai.usage.output_tokens", "output"),
    ("gen_ai.usage.cache_read.input_tokens", "cache_read"),
    ("gen_ai.usage.cache_creation.input_tokens", "cache_write"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning"),
];

/// The lengths of the keys `SpanFields` reads.
const FIELD_KEY_LENGTHS: [usize; 9] = [17, 18, 20, 21, 22, 25, 26, 36, 40];

/// The normalised attributes that the metric-minded components read (the
/// `prometheus` exporter, the `threshold` connector), found in one pass
/// over a span's attributes rather than one search each.
#[derive(Default)]
pub struct SpanFields<'a> {
    pub kind: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub request_model: Option<&'a str>,
    pub response_model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub cost: Option<f64>,
    pub trace_cost: Option<f64>,
    pub tokens: [Option<f64>; 5],
}

impl<'a> SpanFields<'a> {
    pub fn of(attributes: &'a [KeyValue]) -> SpanFields<'a> {
        let mut fields = SpanFields::default();
        for attribute in attributes {
            // Exporters read spans long after the processors did, so each
            // key's bytes are a cache miss; the length is in the attribute
            // itself, and rules out most keys unread.
            let key = attribute.key.as_str();
            if !FIELD_KEY_LENGTHS.contains(&key.len()) {
                continue;
            }
            let Some(value) = attribute.value.as_ref().and_then(|v| v.value.as_ref()) else {
                continue;
            };
            let text = || match value {
                AnyValue::StringValue(s) => Some(s.as_str()),
                _ => None,
            };
            match key {
                "lookout.genai.kind" => fields.kind = text(),
                "gen_ai.operation.name" => fields.operation = text(),
                "gen_ai.agent.name" => fields.agent = text(),
                "gen_ai.request.model" => fields.request_model = text(),
                "gen_ai.response.model" => fields.response_model = text(),
                "gen_ai.provider.name" => fields.provider = text(),
                "gen_ai.workflow.name" => fields.workflow = text(),
                "gen_ai.usage.cost" => fields.cost = amount(value),
                "lookout.trace.cost_usd" => fields.trace_cost = amount(value),
                key => {
                    if let Some(slot) = TOKEN_TYPES.iter().position(|(name, _)| *name == key) {
                        fields.tokens[slot] = amount(value);
                    }
                }
            }
        }
        fields
    }

    /// An LLM, chat or embeddings call: what is priced and counted as a
    /// request.
    pub fn is_model_call(&self) -> bool {
        match self.kind {
            Some(kind) => matches!(kind, "llm" | "chat" | "embeddings"),
            None => matches!(
                self.operation,
                Some("chat" | "text_completion" | "generate_content" | "embeddings")
            ),
        }
    }

    pub fn is_agent(&self) -> bool {
        self.kind == Some("agent") || self.operation == Some("invoke_agent")
    }

    /// The response model, else the requested one.
    pub fn model(&self) -> Option<&'a str> {
        self.response_model.or(self.request_model)
    }

    /// Input plus output tokens, when either is known.
    pub fn total_tokens(&self) -> Option<f64> {
        match (self.tokens[0], self.tokens[1]) {
            (None, None) => None,
            (input, output) => Some(input.unwrap_or(0.0) + output.unwrap_or(0.0)),
        }
    }
}

/// A non-negative, finite number.
pub fn amount(value: &AnyValue) -> Option<f64> {
    match value {
        AnyValue::IntValue(i) if *i >= 0 => Some(*i as f64),
        AnyValue::DoubleValue(d) if d.is_finite() && *d >= 0.0 => Some(*d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{FIELD_KEY_LENGTHS, TOKEN_TYPES, is_content_key};

    #[test]
    fn field_key_lengths_cover_every_key_read() {
        let keys = [
            "lookout.genai.kind",
            "gen_ai.operation.name",
            "gen_ai.agent.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.provider.name",
            "gen_ai.workflow.name",
            "gen_ai.usage.cost",
            "lookout.trace.cost_usd",
        ];
        for key in keys.iter().chain(TOKEN_TYPES.iter().map(|(key, _)| key)) {
            assert!(FIELD_KEY_LENGTHS.contains(&key.len()), "{key}");
        }
    }

    #[test]
    fn matches_names_and_families() {
        assert!(is_content_key("gen_ai.input.messages"));
        assert!(is_content_key("gen_ai.prompt.0.content"));
        assert!(is_content_key("llm.input_messages.1.message.role"));
        assert!(!is_content_key("gen_ai.request.model"));
        assert!(!is_content_key("gen_ai.usage.input_tokens"));
    }
}

/// What a span is, in one vocabulary: the values of `lookout.genai.kind`,
/// which the `genai` processor writes and the exporters read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Llm,
    Chat,
    Embeddings,
    Tool,
    Agent,
    Chain,
    Retriever,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Llm => "llm",
            Kind::Chat => "chat",
            Kind::Embeddings => "embeddings",
            Kind::Tool => "tool",
            Kind::Agent => "agent",
            Kind::Chain => "chain",
            Kind::Retriever => "retriever",
        }
    }

    /// The `gen_ai.operation.name` value for this kind.
    pub fn otel_operation(self) -> &'static str {
        match self {
            Kind::Llm => "text_completion",
            Kind::Chat => "chat",
            Kind::Embeddings => "embeddings",
            Kind::Tool => "execute_tool",
            Kind::Agent => "invoke_agent",
            Kind::Chain => "invoke_workflow",
            Kind::Retriever => "retrieval",
        }
    }

    /// Reads an operation or span-kind value of any convention.
    pub fn parse(value: &str) -> Option<Kind> {
        // Most values are lower case already (every OTel value, and the
        // kind genai writes): lower-case a copy only when needed, since
        // this runs on every span.
        let lowered;
        let value = if value.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = value.to_ascii_lowercase();
            lowered.as_str()
        } else {
            value
        };
        Some(match value {
            "chat" => Kind::Chat,
            "llm" | "text_completion" | "completion" | "generate_content" => Kind::Llm,
            "embeddings" | "embedding" => Kind::Embeddings,
            "execute_tool" | "tool" => Kind::Tool,
            "invoke_agent" | "create_agent" | "agent" => Kind::Agent,
            "invoke_workflow" | "workflow" | "task" | "chain" | "prompt" | "parser"
            | "guardrail" | "evaluator" => Kind::Chain,
            "retrieval" | "retriever" | "reranker" | "rerank" => Kind::Retriever,
            _ => return None,
        })
    }
}
