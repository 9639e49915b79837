//! The `genai` processor: reads every LLM attribute convention (OTel GenAI,
//! current and deprecated; OpenLLMetry; OpenInference; OpenLIT; LangSmith)
//! into one view of the span, and writes that view back under the current
//! OTel GenAI names, so that every later stage reads one convention.
//!
//! ```yaml
//! processors:
//!   genai:
//!     drop_original: false          # true: remove the attributes the view was read from
//!     cache_tokens_in_input: auto   # auto | included | excluded
//!     langgraph_nodes_as_agents: true
//! ```
//!
//! Written back: `gen_ai.provider.name` (lower case), `gen_ai.request.model`,
//! `gen_ai.response.model`, `gen_ai.operation.name` (when the span had none),
//! `gen_ai.usage.{input,output}_tokens`, `gen_ai.usage.cache_read.input_tokens`,
//! `gen_ai.usage.cache_creation.input_tokens`,
//! `gen_ai.usage.reasoning.output_tokens`, `gen_ai.agent.name`,
//! `gen_ai.tool.name`, `gen_ai.conversation.id`, `gen_ai.workflow.name`, and
//! `lookout.genai.kind` (llm, chat, embeddings, tool, agent, chain,
//! retriever).
//!
//! **Cached tokens.** The OTel spec counts cached tokens inside the input
//! tokens. OpenLLMetry's deprecated `gen_ai.usage.cache_{read,creation}_input_tokens`
//! came with input counts that left them out (Anthropic's native counting).
//! With `auto`, input tokens that arrived beside those names get the cache
//! counts added, and `lookout.genai.cache_added_to_input` is set;
//! `included` and `excluded` force either reading for every source.
//!
//! **LangGraph.** A multi-agent LangGraph graph runs each agent as a
//! node, and instrumentations trace a node as a chain span named after it
//! that carries `langgraph_node` in its metadata. With
//! `langgraph_nodes_as_agents` such a span becomes an agent
//! (`gen_ai.agent.name` = the node), so costs roll up per agent; the spans
//! inside the node keep their own kind.
//!
//! A span with none of these attributes is passed on untouched after one
//! scan of its attribute keys.

pub(crate) mod conventions;

use std::borrow::Cow;

use lookout_pipelines::component::parse_config;
use lookout_pipelines::{ComponentId, Payload, Processor, ProcessorFactory, Signal};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;

use crate::attributes::{count, set_attribute, text};
use conventions::{EXCLUSIVE_CACHE_RANK, FIELDS, Field, Kind, classify};

pub const KIND_ATTRIBUTE: &str = "lookout.genai.kind";
pub const CACHE_ADDED_ATTRIBUTE: &str = "lookout.genai.cache_added_to_input";

pub fn factory() -> ProcessorFactory {
    ProcessorFactory {
        kind: "genai",
        signals: &[Signal::Traces],
        build: |_id: &ComponentId, raw, _signal| {
            let config: GenAiConfig = parse_config(raw)?;
            Ok(Box::new(GenAiProcessor { config }))
        },
    }
}

/// Whether input token counts include cached tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheTokens {
    /// By source, as described above.
    #[default]
    Auto,
    Included,
    Excluded,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenAiConfig {
    pub drop_original: bool,
    pub cache_tokens_in_input: CacheTokens,
    pub langgraph_nodes_as_agents: bool,
}

impl Default for GenAiConfig {
    fn default() -> Self {
        GenAiConfig {
            drop_original: false,
            cache_tokens_in_input: CacheTokens::Auto,
            langgraph_nodes_as_agents: true,
        }
    }
}

pub struct GenAiProcessor {
    config: GenAiConfig,
}

impl GenAiProcessor {
    pub fn new(config: GenAiConfig) -> GenAiProcessor {
        GenAiProcessor { config }
    }

    pub fn normalise(&self, span: &mut Span) {
        let found = Found::scan(&span.attributes);
        if found.is_empty() {
            return;
        }
        let mut view = View::read(&span.attributes, &found, self.config.cache_tokens_in_input);
        if self.config.langgraph_nodes_as_agents
            && view.agent.is_none()
            && matches!(view.kind, Some(Kind::Chain) | None)
            && found.langgraph_node(&span.attributes) == Some(span.name.as_str())
        {
            view.kind = Some(Kind::Agent);
            view.agent = Some(&span.name);
        }
        let changes = view.changes(&span.attributes, &found);
        for (at, key, value) in changes {
            set_attribute(&mut span.attributes, at, key, value);
        }
        if self.config.drop_original {
            Found::drop_aliases(&mut span.attributes);
        }
    }
}

impl Processor for GenAiProcessor {
    fn process(&mut self, mut payload: Payload, out: &mut Vec<Payload>) {
        if let Payload::Traces(resources) = &mut payload {
            let spans = resources
                .iter_mut()
                .flat_map(|r| r.scope_spans.iter_mut())
                .flat_map(|s| s.spans.iter_mut());
            for span in spans {
                self.normalise(span);
            }
        }
        out.push(payload);
    }
}

/// Where each field was found: the best-ranked alias, and the canonical
/// attribute if the span already has one.
struct Found {
    best: [Option<(usize, u8)>; FIELDS],
    canonical: [Option<usize>; FIELDS],
}

impl Found {
    fn scan(attributes: &[KeyValue]) -> Found {
        let mut found = Found {
            best: [None; FIELDS],
            canonical: [None; FIELDS],
        };
        for (index, attribute) in attributes.iter().enumerate() {
            let Some((field, rank)) = classify(&attribute.key) else {
                continue;
            };
            let slot = &mut found.best[field as usize];
            if slot.is_none_or(|(_, best)| rank < best) {
                *slot = Some((index, rank));
            }
            if rank == 0 && field.canonical().is_some() {
                found.canonical[field as usize] = Some(index);
            }
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.best.iter().all(Option::is_none)
    }

    fn value<'a>(&self, attributes: &'a [KeyValue], field: Field) -> Option<(&'a Value, u8)> {
        let (index, rank) = self.best[field as usize]?;
        let value = attributes[index].value.as_ref()?.value.as_ref()?;
        Some((value, rank))
    }

    /// Removes every alias the view reads from, keeping the OTel names
    /// and the metadata, which carries more than the view reads.
    fn drop_aliases(attributes: &mut Vec<KeyValue>) {
        attributes.retain(|attribute| {
            classify(&attribute.key).is_none_or(|(field, rank)| {
                (rank == 0 && field.canonical().is_some()) || field == Field::LanggraphNode
            })
        });
    }

    /// The LangGraph node of the span, from whichever convention has it.
    fn langgraph_node<'a>(&self, attributes: &'a [KeyValue]) -> Option<&'a str> {
        match self.value(attributes, Field::LanggraphNode)? {
            (Value::StringValue(node), 0) => Some(node),
            // OpenInference's metadata is JSON; only spans that mention a
            // node pay for parsing it.
            (Value::StringValue(json), _) if json.contains("\"langgraph_node\"") => {
                let (_, after) = json.split_once("\"langgraph_node\"")?;
                let value = after
                    .trim_start()
                    .strip_prefix(':')?
                    .trim_start()
                    .strip_prefix('"')?;
                let end = value.find('"')?;
                // Node names with escapes are not worth a JSON parser here.
                Some(&value[..end]).filter(|node| !node.contains('\\'))
            }
            _ => None,
        }
    }
}

/// The normalised view of one span, borrowing from its attributes.
#[derive(Debug, Default, PartialEq)]
struct View<'a> {
    provider: Option<&'a str>,
    request_model: Option<&'a str>,
    response_model: Option<&'a str>,
    kind: Option<Kind>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cache_read_tokens: Option<i64>,
    cache_write_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    agent: Option<&'a str>,
    tool: Option<&'a str>,
    conversation: Option<&'a str>,
    workflow: Option<&'a str>,
    cache_added_to_input: bool,
}

/// A value the view wants under an OTel name, not yet built.
enum Wanted<'a> {
    Text(Cow<'a, str>),
    Count(i64),
}

impl Wanted<'_> {
    fn matches(&self, current: Option<&Value>) -> bool {
        match (self, current) {
            (Wanted::Text(wanted), Some(Value::StringValue(current))) => wanted == current,
            (Wanted::Count(wanted), Some(Value::IntValue(current))) => wanted == current,
            _ => false,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Wanted::Text(text) => Value::StringValue(text.into_owned()),
            Wanted::Count(count) => Value::IntValue(count),
        }
    }
}

/// One attribute to set: where it is, if it exists, its key and its value.
type Change = (Option<usize>, &'static str, Value);

impl<'a> View<'a> {
    fn read(attributes: &'a [KeyValue], found: &Found, cache_tokens: CacheTokens) -> View<'a> {
        let text_of = |field| found.value(attributes, field).and_then(|(v, _)| text(v));
        let count_of = |field| found.value(attributes, field).and_then(|(v, _)| count(v));
        let mut view = View {
            provider: text_of(Field::Provider),
            request_model: text_of(Field::RequestModel),
            response_model: text_of(Field::ResponseModel),
            kind: text_of(Field::Operation).and_then(Kind::parse),
            input_tokens: count_of(Field::InputTokens),
            output_tokens: count_of(Field::OutputTokens),
            cache_read_tokens: count_of(Field::CacheReadTokens),
            cache_write_tokens: count_of(Field::CacheWriteTokens),
            reasoning_tokens: count_of(Field::ReasoningTokens),
            agent: text_of(Field::Agent),
            tool: text_of(Field::Tool),
            conversation: text_of(Field::Conversation),
            workflow: text_of(Field::Workflow),
            cache_added_to_input: false,
        };
        if let Some(entity) = text_of(Field::TraceloopEntity) {
            match view.kind {
                Some(Kind::Agent) => view.agent = view.agent.or(Some(entity)),
                Some(Kind::Tool) => view.tool = view.tool.or(Some(entity)),
                _ => {}
            }
        }
        if view.kind.is_none() && (view.input_tokens.is_some() || view.request_model.is_some()) {
            view.kind = Some(Kind::Llm);
        }
        let exclusive_source = [Field::CacheReadTokens, Field::CacheWriteTokens]
            .iter()
            .any(|&f| {
                found
                    .value(attributes, f)
                    .is_some_and(|(_, rank)| rank == EXCLUSIVE_CACHE_RANK)
            });
        let excludes_cache = match cache_tokens {
            CacheTokens::Auto => exclusive_source,
            CacheTokens::Included => false,
            CacheTokens::Excluded => true,
        };
        let cached = view.cache_read_tokens.unwrap_or(0) + view.cache_write_tokens.unwrap_or(0);
        if excludes_cache
            && cached > 0
            && let Some(input) = view.input_tokens.as_mut()
        {
            *input += cached;
            view.cache_added_to_input = true;
        }
        view
    }

    /// The attributes to set so that the span carries this view under the
    /// OTel names. Values already there as they should be are left alone,
    /// so a span that follows the spec costs no allocation.
    fn changes(&self, attributes: &[KeyValue], found: &Found) -> Vec<Change> {
        let mut changes = Vec::new();
        // Compares before building a value, so a span that already carries
        // the view under the OTel names costs no allocation.
        let mut set = |field: Field, wanted: Wanted| {
            let Some(key) = field.canonical() else { return };
            let at = found.canonical[field as usize];
            let current = at.and_then(|i| attributes[i].value.as_ref()?.value.as_ref());
            if !wanted.matches(current) {
                changes.push((at, key, wanted.into_value()));
            }
        };
        let provider = self.provider.map(|p| {
            if p.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(p.to_ascii_lowercase())
            } else {
                Cow::Borrowed(p)
            }
        });
        let texts = [
            (Field::Provider, provider),
            (Field::RequestModel, self.request_model.map(Cow::Borrowed)),
            (Field::ResponseModel, self.response_model.map(Cow::Borrowed)),
            (Field::Agent, self.agent.map(Cow::Borrowed)),
            (Field::Tool, self.tool.map(Cow::Borrowed)),
            (Field::Conversation, self.conversation.map(Cow::Borrowed)),
            (Field::Workflow, self.workflow.map(Cow::Borrowed)),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                set(field, Wanted::Text(value));
            }
        }
        let counts = [
            (Field::InputTokens, self.input_tokens),
            (Field::OutputTokens, self.output_tokens),
            (Field::CacheReadTokens, self.cache_read_tokens),
            (Field::CacheWriteTokens, self.cache_write_tokens),
            (Field::ReasoningTokens, self.reasoning_tokens),
        ];
        for (field, value) in counts {
            if let Some(value) = value {
                set(field, Wanted::Count(value));
            }
        }
        if let Some(kind) = self.kind {
            // A span's own operation name is more precise than the kind.
            if found.canonical[Field::Operation as usize].is_none() {
                set(
                    Field::Operation,
                    Wanted::Text(Cow::Borrowed(kind.otel_operation())),
                );
            }
            changes.push((
                None,
                KIND_ATTRIBUTE,
                Value::StringValue(kind.as_str().into()),
            ));
        }
        if self.cache_added_to_input {
            changes.push((None, CACHE_ADDED_ATTRIBUTE, Value::BoolValue(true)));
        }
        changes
    }
}

#[cfg(test)]
mod tests;
