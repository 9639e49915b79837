//! LLM, agent and workflow metrics from spans, read under the OTel GenAI
//! names the `genai` processor writes, and the roll-up the `cost`
//! processor writes on root spans.

use std::collections::HashMap;
use std::time::Instant;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, status::StatusCode};

use lookout_pipelines::genai::{SpanFields, TOKEN_TYPES};

use super::registry::{Kind, Labels, MetricInfo, Registry, Update, Value};
use crate::attributes::string;

const REQUEST_SECONDS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
const EXECUTION_SECONDS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
const WORKFLOW_USD: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The labels of the LLM call metrics, borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CallKey<'a> {
    agent: &'a str,
    model: &'a str,
    operation: &'a str,
    provider: &'a str,
    service: &'a str,
    status: &'static str,
}

impl CallKey<'_> {
    fn labels(&self) -> Labels {
        labels(&[
            ("agent", self.agent),
            ("model", self.model),
            ("operation", self.operation),
            ("provider", self.provider),
            ("service", self.service),
            ("status", self.status),
        ])
    }
}

/// Observations bucketed before they reach the registry.
#[derive(Debug, Clone)]
struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn into_value(self) -> Value {
        Value::Histogram {
            bounds: self.bounds.to_vec(),
            counts: self.counts,
            sum: self.sum,
        }
    }
}

struct CallTotals {
    requests: f64,
    tokens: [Option<f64>; 5],
    cost: Option<f64>,
    durations: Buckets,
}

/// One payload's metrics, summed per label set first: a batch of
/// thousands of spans has a handful of label sets, so the registry (and
/// its owned label strings) is touched once per set, not once per span.
#[derive(Default)]
struct PayloadTotals<'a> {
    calls: HashMap<CallKey<'a>, CallTotals>,
    agents: HashMap<(&'a str, &'a str), Buckets>,
    workflows: HashMap<(&'a str, &'a str), (Buckets, Buckets)>,
}

pub fn record(registry: &mut Registry, resources: &[ResourceSpans], now: Instant) {
    let mut totals = PayloadTotals::default();
    for resource in resources {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"))
            .unwrap_or_default();
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            totals.add(span, service);
        }
    }
    totals.apply(registry, now);
}

impl<'a> PayloadTotals<'a> {
    fn add(&mut self, span: &'a Span, service: &'a str) {
        let fields = SpanFields::of(&span.attributes);
        let operation = fields.operation.unwrap_or_default();
        let seconds = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e9;
        let is_llm = fields.is_model_call();
        let is_agent = fields.is_agent();
        let agent = fields.agent.unwrap_or_default();
        if is_llm {
            let failed = span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32);
            let key = CallKey {
                agent,
                model: fields
                    .response_model
                    .or(fields.request_model)
                    .unwrap_or_default(),
                operation,
                provider: fields.provider.unwrap_or_default(),
                service,
                status: if failed { "error" } else { "ok" },
            };
            let call = self.calls.entry(key).or_insert_with(|| CallTotals {
                requests: 0.0,
                tokens: [None; 5],
                cost: None,
                durations: Buckets::new(REQUEST_SECONDS),
            });
            call.requests += 1.0;
            for (total, tokens) in call.tokens.iter_mut().zip(fields.tokens) {
                if let Some(tokens) = tokens {
                    *total = Some(total.unwrap_or(0.0) + tokens);
                }
            }
            if let Some(cost) = fields.cost {
                call.cost = Some(call.cost.unwrap_or(0.0) + cost);
            }
            call.durations.observe(seconds);
        }
        if is_agent {
            let name = if agent.is_empty() {
                span.name.as_str()
            } else {
                agent
            };
            self.agents
                .entry((name, service))
                .or_insert_with(|| Buckets::new(EXECUTION_SECONDS))
                .observe(seconds);
        }
        if span.parent_span_id.is_empty()
            && let Some(cost) = fields.trace_cost
        {
            let workflow = fields.workflow.unwrap_or(&span.name);
            let (durations, costs) = self
                .workflows
                .entry((service, workflow))
                .or_insert_with(|| (Buckets::new(EXECUTION_SECONDS), Buckets::new(WORKFLOW_USD)));
            durations.observe(seconds);
            costs.observe(cost);
        }
    }

    fn apply(self, registry: &mut Registry, now: Instant) {
        for (key, call) in self.calls {
            let labels = key.labels();
            add(
                registry,
                "lookout_llm_requests_total",
                "LLM calls.",
                labels.clone(),
                call.requests,
                now,
            );
            for (tokens, (_, token_type)) in call.tokens.into_iter().zip(TOKEN_TYPES) {
                let Some(tokens) = tokens else { continue };
                let mut with_type = labels.clone();
                with_type.push(("type".into(), token_type.into()));
                add(
                    registry,
                    "lookout_llm_tokens_total",
                    "Tokens of LLM calls, by type; input includes cache reads and writes, output includes reasoning.",
                    with_type,
                    tokens,
                    now,
                );
            }
            if let Some(cost) = call.cost {
                add(
                    registry,
                    "lookout_llm_cost_usd_total",
                    "Cost of LLM calls in USD.",
                    labels.clone(),
                    cost,
                    now,
                );
            }
            histogram(
                registry,
                "lookout_llm_request_duration_seconds",
                "Duration of LLM calls.",
                labels,
                call.durations,
                now,
            );
        }
        for ((agent, service), durations) in self.agents {
            let labels = labels(&[("agent", agent), ("service", service)]);
            histogram(
                registry,
                "lookout_agent_execution_duration_seconds",
                "Duration of agent invocations.",
                labels,
                durations,
                now,
            );
        }
        for ((service, workflow), (durations, costs)) in self.workflows {
            let labels = labels(&[("service", service), ("workflow", workflow)]);
            histogram(
                registry,
                "lookout_workflow_duration_seconds",
                "Duration of traces (root spans) that carry a cost roll-up.",
                labels.clone(),
                durations,
                now,
            );
            histogram(
                registry,
                "lookout_workflow_cost_usd",
                "Cost of traces in USD, from the cost processor's roll-up.",
                labels,
                costs,
                now,
            );
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    // Callers pass names in sorted order; `type` sorts after them all.
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn add(registry: &mut Registry, name: &str, help: &str, labels: Labels, amount: f64, now: Instant) {
    let metric = MetricInfo {
        name,
        help,
        kind: Kind::Counter,
        expires: false,
    };
    let _ = registry.update(metric, labels, Update::Add(Value::Number(amount)), now);
}

fn histogram(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: Labels,
    buckets: Buckets,
    now: Instant,
) {
    let metric = MetricInfo {
        name,
        help,
        kind: Kind::Histogram,
        expires: false,
    };
    let _ = registry.update(metric, labels, Update::Add(buckets.into_value()), now);
}
