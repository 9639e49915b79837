//! Every attribute convention's name for each field of the normalised view,
//! from `shared/reference/llm-observability.md` §2. For each field the
//! aliases are ranked: rank 0 is the current OTel GenAI name, which is also
//! where the normalised value is written back; higher ranks are read only
//! when no better-ranked alias is present.

/// A field of the normalised view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Provider,
    RequestModel,
    ResponseModel,
    Operation,
    InputTokens,
    OutputTokens,
    CacheReadTokens,
    CacheWriteTokens,
    ReasoningTokens,
    Agent,
    Tool,
    Conversation,
    Workflow,
    /// `traceloop.entity.name`: an agent or a tool, depending on the kind.
    TraceloopEntity,
    /// The LangGraph node a span runs in: LangSmith's
    /// `langsmith.metadata.langgraph_node`, or inside OpenInference's
    /// `metadata` JSON.
    LanggraphNode,
}

pub const FIELDS: usize = 15;

impl Field {
    /// The current OTel GenAI name, where the normalised value goes.
    pub fn canonical(self) -> Option<&'static str> {
        Some(match self {
            Field::Provider => "gen_ai.provider.name",
            Field::RequestModel => "gen_ai.request.model",
            Field::ResponseModel => "gen_ai.response.model",
            Field::Operation => "gen_ai.operation.name",
            Field::InputTokens => "gen_ai.usage.input_tokens",
            Field::OutputTokens => "gen_ai.usage.output_tokens",
            Field::CacheReadTokens => "gen_ai.usage.cache_read.input_tokens",
            Field::CacheWriteTokens => "gen_ai.usage.cache_creation.input_tokens",
            Field::ReasoningTokens => "gen_ai.usage.reasoning.output_tokens",
            Field::Agent => "gen_ai.agent.name",
            Field::Tool => "gen_ai.tool.name",
            Field::Conversation => "gen_ai.conversation.id",
            Field::Workflow => "gen_ai.workflow.name",
            Field::TraceloopEntity | Field::LanggraphNode => return None,
        })
    }
}

/// Ranks of the deprecated, cache-exclusive OpenLLMetry cache counters:
/// input tokens reported beside them did not include the cache.
pub const EXCLUSIVE_CACHE_RANK: u8 = 1;

/// The field a key names and its rank, if it names one.
pub fn classify(key: &str) -> Option<(Field, u8)> {
    use Field::*;
    Some(match key {
        "gen_ai.provider.name" => (Provider, 0),
        "gen_ai.system" => (Provider, 1),
        "llm.provider" => (Provider, 2),
        "llm.system" => (Provider, 3),
        "ls_provider" | "langsmith.metadata.ls_provider" => (Provider, 4),

        "gen_ai.request.model" => (RequestModel, 0),
        "llm.request.model_name" => (RequestModel, 1),
        "llm.model_name" => (RequestModel, 2),
        "ls_model_name" | "langsmith.metadata.ls_model_name" => (RequestModel, 3),
        "gen_ai.response.model" => (ResponseModel, 0),
        "llm.response.model_name" => (ResponseModel, 1),

        "gen_ai.operation.name" => (Operation, 0),
        "llm.request.type" => (Operation, 1),
        "traceloop.span.kind" => (Operation, 2),
        "openinference.span.kind" => (Operation, 3),
        "langsmith.span.kind" => (Operation, 4),

        "gen_ai.usage.input_tokens" => (InputTokens, 0),
        "gen_ai.usage.prompt_tokens" => (InputTokens, 1),
        "llm.token_count.prompt" => (InputTokens, 2),
        "gen_ai.usage.output_tokens" => (OutputTokens, 0),
        "gen_ai.usage.completion_tokens" => (OutputTokens, 1),
        "llm.token_count.completion" => (OutputTokens, 2),
        "gen_ai.usage.cache_read.input_tokens" => (CacheReadTokens, 0),
        "gen_ai.usage.cache_read_input_tokens" => (CacheReadTokens, EXCLUSIVE_CACHE_RANK),
        "llm.token_count.prompt_details.cache_read" => (CacheReadTokens, 2),
        "gen_ai.usage.prompt_tokens_details.cached_tokens" => (CacheReadTokens, 3),
        "gen_ai.usage.cache_creation.input_tokens" => (CacheWriteTokens, 0),
        "gen_ai.usage.cache_creation_input_tokens" => (CacheWriteTokens, EXCLUSIVE_CACHE_RANK),
        "llm.token_count.prompt_details.cache_write" => (CacheWriteTokens, 2),
        "gen_ai.usage.cache_creation_tokens" => (CacheWriteTokens, 3),
        "gen_ai.usage.reasoning.output_tokens" => (ReasoningTokens, 0),
        "gen_ai.usage.reasoning_tokens" => (ReasoningTokens, 1),
        "llm.usage.reasoning_tokens" => (ReasoningTokens, 2),
        "llm.token_count.completion_details.reasoning" => (ReasoningTokens, 3),

        "gen_ai.agent.name" => (Agent, 0),
        "agent.name" => (Agent, 1),
        "gen_ai.tool.name" => (Tool, 0),
        "tool.name" => (Tool, 1),
        "traceloop.entity.name" => (TraceloopEntity, 0),
        "langsmith.metadata.langgraph_node" => (LanggraphNode, 0),
        "metadata" => (LanggraphNode, 1),
        "gen_ai.conversation.id" => (Conversation, 0),
        "session.id" => (Conversation, 1),
        "langsmith.trace.session_id" => (Conversation, 2),
        "gen_ai.workflow.name" => (Workflow, 0),
        "traceloop.workflow.name" => (Workflow, 1),
        _ => return None,
    })
}

/// What a span is, in one vocabulary; shared with the exporters.
pub use lookout_pipelines::genai::Kind;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_name_of_every_field_is_its_rank_zero_alias() {
        for field in [
            Field::Provider,
            Field::RequestModel,
            Field::ResponseModel,
            Field::Operation,
            Field::InputTokens,
            Field::OutputTokens,
            Field::CacheReadTokens,
            Field::CacheWriteTokens,
            Field::ReasoningTokens,
            Field::Agent,
            Field::Tool,
            Field::Conversation,
            Field::Workflow,
        ] {
            let canonical = field.canonical().unwrap();
            assert_eq!(classify(canonical), Some((field, 0)), "{canonical}");
        }
    }

    #[test]
    fn kinds_of_every_convention_are_read() {
        assert_eq!(Kind::parse("LLM"), Some(Kind::Llm));
        assert_eq!(Kind::parse("RETRIEVER"), Some(Kind::Retriever));
        assert_eq!(Kind::parse("workflow"), Some(Kind::Chain));
        assert_eq!(Kind::parse("invoke_agent"), Some(Kind::Agent));
        assert_eq!(Kind::parse("embedding"), Some(Kind::Embeddings));
        assert_eq!(Kind::parse("something else"), None);
    }
}
