//! Attribute names of the LLM conventions that more than one component
//! needs to know.

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

#[cfg(test)]
mod tests {
    use super::is_content_key;

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
