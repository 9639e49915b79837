//! LLM, agent and workflow metrics from spans, read under the OTel GenAI
//! names the `genai` processor writes, and the roll-up the `cost`
//! processor writes on root spans.

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, status::StatusCode};

use super::registry::{Kind, Labels, MetricInfo, Registry, Update, Value};

const REQUEST_SECONDS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
const EXECUTION_SECONDS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
const WORKFLOW_USD: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

const TOKEN_TYPES: [(&str, &str); 5] = [
    ("gen_ai.usage.input_tokens", "input"),
    ("gen_ai.usage.output_tokens", "output"),
    ("gen_ai.usage.cache_read.input_tokens", "cache_read"),
    ("gen_ai.usage.cache_creation.input_tokens", "cache_write"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning"),
];

pub fn record(registry: &mut Registry, resources: &[ResourceSpans], now: Instant) {
    for resource in resources {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"))
            .unwrap_or_default();
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            record_span(registry, span, service, now);
        }
    }
}

fn record_span(registry: &mut Registry, span: &Span, service: &str, now: Instant) {
    let attributes = &span.attributes;
    let kind = string(attributes, "lookout.genai.kind");
    let operation = string(attributes, "gen_ai.operation.name").unwrap_or_default();
    let seconds = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e9;
    let is_llm = match kind {
        Some(kind) => matches!(kind, "llm" | "chat" | "embeddings"),
        None => matches!(
            operation,
            "chat" | "text_completion" | "generate_content" | "embeddings"
        ),
    };
    let is_agent = kind == Some("agent") || operation == "invoke_agent";
    let agent = string(attributes, "gen_ai.agent.name").unwrap_or_default();
    if is_llm {
        let model = string(attributes, "gen_ai.response.model")
            .or_else(|| string(attributes, "gen_ai.request.model"))
            .unwrap_or_default();
        let failed = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        let labels = labels(&[
            ("agent", agent),
            ("model", model),
            ("operation", operation),
            (
                "provider",
                string(attributes, "gen_ai.provider.name").unwrap_or_default(),
            ),
            ("service", service),
            ("status", if failed { "error" } else { "ok" }),
        ]);
        add(
            registry,
            "lookout_llm_requests_total",
            "LLM calls.",
            labels.clone(),
            1.0,
            now,
        );
        for (key, token_type) in TOKEN_TYPES {
            if let Some(tokens) = number(attributes, key) {
                let mut with_type = labels.clone();
                with_type.push(("type".into(), token_type.into()));
                with_type.sort();
                add(
                    registry,
                    "lookout_llm_tokens_total",
                    "Tokens of LLM calls, by type; input includes cache reads and writes, output includes reasoning.",
                    with_type,
                    tokens,
                    now,
                );
            }
        }
        if let Some(cost) = number(attributes, "gen_ai.usage.cost") {
            add(
                registry,
                "lookout_llm_cost_usd_total",
                "Cost of LLM calls in USD.",
                labels.clone(),
                cost,
                now,
            );
        }
        observe(
            registry,
            "lookout_llm_request_duration_seconds",
            "Duration of LLM calls.",
            REQUEST_SECONDS,
            labels,
            seconds,
            now,
        );
    }
    if is_agent {
        let name = if agent.is_empty() {
            span.name.as_str()
        } else {
            agent
        };
        let labels = labels(&[("agent", name), ("service", service)]);
        observe(
            registry,
            "lookout_agent_execution_duration_seconds",
            "Duration of agent invocations.",
            EXECUTION_SECONDS,
            labels,
            seconds,
            now,
        );
    }
    if span.parent_span_id.is_empty()
        && let Some(cost) = number(attributes, "lookout.trace.cost_usd")
    {
        let workflow = string(attributes, "gen_ai.workflow.name").unwrap_or(&span.name);
        let labels = labels(&[("service", service), ("workflow", workflow)]);
        observe(
            registry,
            "lookout_workflow_duration_seconds",
            "Duration of traces (root spans) that carry a cost roll-up.",
            EXECUTION_SECONDS,
            labels.clone(),
            seconds,
            now,
        );
        observe(
            registry,
            "lookout_workflow_cost_usd",
            "Cost of traces in USD, from the cost processor's roll-up.",
            WORKFLOW_USD,
            labels,
            cost,
            now,
        );
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    // Callers pass names in sorted order.
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn add(registry: &mut Registry, name: &str, help: &str, labels: Labels, amount: f64, now: Instant) {
    let update = Update::Add(Value::Number(amount));
    let metric = MetricInfo {
        name,
        help,
        kind: Kind::Counter,
        expires: false,
    };
    let _ = registry.update(metric, labels, update, now);
}

fn observe(
    registry: &mut Registry,
    name: &str,
    help: &str,
    bounds: &[f64],
    labels: Labels,
    value: f64,
    now: Instant,
) {
    let mut counts = vec![0; bounds.len() + 1];
    let bucket = bounds
        .iter()
        .position(|bound| value <= *bound)
        .unwrap_or(bounds.len());
    counts[bucket] = 1;
    let histogram = Value::Histogram {
        bounds: bounds.to_vec(),
        counts,
        sum: value,
    };
    let _ = registry.update(
        MetricInfo {
            name,
            help,
            kind: Kind::Histogram,
            expires: false,
        },
        labels,
        Update::Add(histogram),
        now,
    );
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

fn number(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match find(attributes, key)? {
        AnyValue::IntValue(i) => Some(*i as f64),
        AnyValue::DoubleValue(d) if d.is_finite() && *d >= 0.0 => Some(*d),
        _ => None,
    }
}
