//! Realistic LLM traces, deterministic given a seed: a workflow root span,
//! agent spans under it, and LLM and tool calls under each agent, with
//! `gen_ai.*` attributes, token counts, prompt and completion messages, a
//! share of prompts that carry personal data, and a share of error spans.

use std::collections::VecDeque;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub spans_per_request: usize,
    /// Bytes of prompt text per LLM span; the completion is a third of it.
    pub prompt_bytes: usize,
    /// Share of prompts that carry an email, a phone number and a card.
    pub pii_ratio: f64,
    /// Share of spans that end in error.
    pub error_ratio: f64,
}

impl Default for WorkloadConfig {
    /// The benchmarks' workload: seed 1, 100 spans per request, 600-byte
    /// prompts, 5% PII, 3% errors.
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            spans_per_request: 100,
            prompt_bytes: 600,
            pii_ratio: 0.05,
            error_ratio: 0.03,
        }
    }
}

const WORDS: [&str; 32] = [
    "the",
    "lead",
    "budget",
    "asked",
    "about",
    "pricing",
    "for",
    "next",
    "quarter",
    "and",
    "wants",
    "a",
    "demo",
    "with",
    "their",
    "team",
    "please",
    "summarise",
    "call",
    "notes",
    "schedule",
    "follow",
    "up",
    "property",
    "listing",
    "near",
    "downtown",
    "offer",
    "mortgage",
    "rate",
    "agent",
    "qualified",
];

const AGENTS: [&str; 4] = ["qualifier", "scheduler", "summariser", "responder"];
const TOOLS: [&str; 3] = ["search_crm", "calendar_lookup", "send_email"];
const MODELS: [(&str, &str, &str); 3] = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    (
        "anthropic",
        "claude-3-5-sonnet",
        "claude-3-5-sonnet-20241022",
    ),
];

pub struct Generator {
    config: WorkloadConfig,
    rng: fastrand::Rng,
    pending: VecDeque<Span>,
    traces: u64,
    spans: u64,
    /// Start time of the next trace; advances so traces do not overlap.
    clock_ns: u64,
    pub pii_prompts: u64,
    pub error_spans: u64,
}

impl Generator {
    pub fn new(config: WorkloadConfig) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            pending: VecDeque::new(),
            traces: 0,
            spans: 0,
            clock_ns: 1_750_000_000_000_000_000,
            pii_prompts: 0,
            error_spans: 0,
        }
    }

    /// One export request of exactly `spans_per_request` spans. A trace
    /// may continue in the next request, as it does from real SDKs.
    pub fn request(&mut self) -> Vec<ResourceSpans> {
        while self.pending.len() < self.config.spans_per_request {
            self.trace();
        }
        let spans = self
            .pending
            .drain(..self.config.spans_per_request)
            .collect();
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "lead-qualifier"),
                    string("service.version", "2.4.1"),
                    string("deployment.environment.name", "prod"),
                    string("telemetry.sdk.language", "python"),
                    string("telemetry.sdk.name", "opentelemetry"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.openai".into(),
                    version: "0.40.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn next_span_id(&mut self) -> Vec<u8> {
        self.spans += 1;
        (self.spans ^ (self.config.seed << 40))
            .to_be_bytes()
            .to_vec()
    }

    fn trace(&mut self) {
        self.traces += 1;
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&self.config.seed.wrapping_add(1).to_be_bytes());
        trace_id[8..].copy_from_slice(&self.traces.to_be_bytes());
        let trace = Trace {
            id: trace_id.to_vec(),
            start: self.clock_ns,
            call_id: format!("call-{:08}", self.traces),
        };
        let root_id = self.next_span_id();
        let mut cursor = trace.start + 1_000_000;
        for _ in 0..self.rng.usize(2..=3) {
            let agent = AGENTS[self.rng.usize(..AGENTS.len())];
            cursor = self.agent(&trace, &root_id, agent, cursor) + 2_000_000;
        }
        let mut root = self.span(
            &trace,
            root_id,
            Vec::new(),
            "workflow lead_qualification",
            SpanKind::Server,
        );
        root.start_time_unix_nano = trace.start;
        root.end_time_unix_nano = cursor;
        root.attributes.extend([
            string("traceloop.workflow.name", "lead_qualification"),
            string("gen_ai.conversation.id", &trace.call_id),
        ]);
        self.pending.push_back(root);
        self.clock_ns = cursor + 10_000_000;
    }

    /// Returns when the agent ended.
    fn agent(&mut self, trace: &Trace, parent: &[u8], name: &str, start: u64) -> u64 {
        let agent_id = self.next_span_id();
        let mut cursor = start + 500_000;
        for _ in 0..self.rng.usize(1..=2) {
            cursor = self.llm_call(trace, &agent_id, name, cursor) + 300_000;
        }
        if self.rng.bool() {
            cursor = self.tool_call(trace, &agent_id, cursor) + 300_000;
        }
        let mut agent = self.span(
            trace,
            agent_id,
            parent.to_vec(),
            &format!("invoke_agent {name}"),
            SpanKind::Internal,
        );
        agent.start_time_unix_nano = start;
        agent.end_time_unix_nano = cursor;
        agent.attributes.extend([
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.agent.name", name),
            string("gen_ai.conversation.id", &trace.call_id),
        ]);
        self.pending.push_back(agent);
        cursor
    }

    fn llm_call(&mut self, trace: &Trace, parent: &[u8], agent: &str, start: u64) -> u64 {
        let (provider, request_model, response_model) = MODELS[self.rng.usize(..MODELS.len())];
        let prompt = self.prompt();
        let completion = self.text(self.config.prompt_bytes / 3);
        let input_tokens = (prompt.len() / 4) as i64 + 120;
        let output_tokens = (completion.len() / 4) as i64;
        let duration = 200_000_000 + self.rng.u64(..800_000_000);
        let id = self.next_span_id();
        let mut span = self.span(
            trace,
            id,
            parent.to_vec(),
            &format!("chat {request_model}"),
            SpanKind::Client,
        );
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = start + duration;
        span.attributes.extend([
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", provider),
            string("gen_ai.request.model", request_model),
            string("gen_ai.response.model", response_model),
            int("gen_ai.usage.input_tokens", input_tokens),
            int("gen_ai.usage.output_tokens", output_tokens),
            int("gen_ai.usage.cache_read.input_tokens", input_tokens / 4),
            double("gen_ai.request.temperature", 0.2),
            string("gen_ai.agent.name", agent),
            string("gen_ai.conversation.id", &trace.call_id),
            string("gen_ai.input.messages", &messages("user", &prompt)),
            string(
                "gen_ai.output.messages",
                &messages("assistant", &completion),
            ),
        ]);
        self.pending.push_back(span);
        start + duration
    }

    fn tool_call(&mut self, trace: &Trace, parent: &[u8], start: u64) -> u64 {
        let tool = TOOLS[self.rng.usize(..TOOLS.len())];
        let duration = 20_000_000 + self.rng.u64(..80_000_000);
        let id = self.next_span_id();
        let mut span = self.span(
            trace,
            id,
            parent.to_vec(),
            &format!("execute_tool {tool}"),
            SpanKind::Internal,
        );
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = start + duration;
        span.attributes.extend([
            string("gen_ai.operation.name", "execute_tool"),
            string("gen_ai.tool.name", tool),
        ]);
        self.pending.push_back(span);
        start + duration
    }

    fn span(
        &mut self,
        trace: &Trace,
        span_id: Vec<u8>,
        parent: Vec<u8>,
        name: &str,
        kind: SpanKind,
    ) -> Span {
        let mut span = Span {
            trace_id: trace.id.clone(),
            span_id,
            parent_span_id: parent,
            name: name.into(),
            kind: kind as i32,
            ..Default::default()
        };
        if self.rng.f64() < self.config.error_ratio {
            self.error_spans += 1;
            span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: "upstream call failed".into(),
            });
            span.events.push(Event {
                name: "exception".into(),
                attributes: vec![
                    string("exception.type", "TimeoutError"),
                    string("exception.message", "the provider did not answer in 30s"),
                ],
                ..Default::default()
            });
        }
        span
    }

    fn prompt(&mut self) -> String {
        let mut prompt = self.text(self.config.prompt_bytes);
        if self.rng.f64() < self.config.pii_ratio {
            self.pii_prompts += 1;
            let n = self.rng.u32(1000..9999);
            let pii = format!(
                " Reach me at jordan.lee{n}@example.com or +1 415 555 {n:04}; card 4111 1111 1111 1111."
            );
            prompt.truncate(prompt.len().saturating_sub(pii.len()));
            prompt.push_str(&pii);
        }
        prompt
    }

    fn text(&mut self, bytes: usize) -> String {
        let mut text = String::with_capacity(bytes + 16);
        while text.len() < bytes {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(WORDS[self.rng.usize(..WORDS.len())]);
        }
        text.truncate(bytes);
        text
    }
}

struct Trace {
    id: Vec<u8>,
    start: u64,
    call_id: String,
}

fn messages(role: &str, content: &str) -> String {
    serde_json::json!([{ "role": role, "parts": [{ "type": "text", "content": content }] }])
        .to_string()
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

fn double(key: &str, value: f64) -> KeyValue {
    attribute(key, Value::DoubleValue(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkloadConfig {
        WorkloadConfig {
            seed: 7,
            spans_per_request: 100,
            prompt_bytes: 600,
            pii_ratio: 0.05,
            error_ratio: 0.03,
        }
    }

    #[test]
    fn requests_hold_exactly_the_asked_spans_and_are_deterministic() {
        let mut a = Generator::new(config());
        let mut b = Generator::new(config());
        for _ in 0..5 {
            let request = a.request();
            let spans: usize = request
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(spans, 100);
            assert_eq!(request, b.request());
        }
    }

    #[test]
    fn pii_and_error_shares_are_near_their_targets() {
        let mut generator = Generator::new(config());
        let mut llm_spans = 0;
        for _ in 0..200 {
            for span in generator
                .request()
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                if span.name.starts_with("chat ") {
                    llm_spans += 1;
                }
            }
        }
        let pii = generator.pii_prompts as f64 / llm_spans as f64;
        let errors = generator.error_spans as f64 / 20_000.0;
        assert!((0.03..0.07).contains(&pii), "pii share {pii}");
        assert!((0.02..0.04).contains(&errors), "error share {errors}");
    }
}
