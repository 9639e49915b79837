//! The trace roll-up: totals of a trace written on its root span.
//!
//! Only the root span is held back. Every other span passes on at once
//! and leaves a small record here (its parent, agent, cost and tokens), so
//! memory per open trace is a few dozen bytes a span rather than the span.
//! The root waits `grace_period` after it arrives for late children, as a
//! tail sampler waits for its decision; a trace whose root never comes is
//! forgotten after `timeout`. When `max_traces` or `max_spans` is reached
//! the oldest traces are finished early and counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use metrics::{Counter, Gauge, counter, gauge};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::attributes::set_attribute;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    pub enabled: bool,
    /// How long a root waits, after it arrives, for late children.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// How long a trace without a root is kept.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_traces: usize,
    /// Span records over all open traces.
    pub max_spans: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            enabled: true,
            grace_period: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            max_traces: 20_000,
            max_spans: 500_000,
        }
    }
}

/// What one span adds to its trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_call: bool,
    pub error: bool,
    /// The agent this span is, or runs for.
    pub agent: Option<String>,
    /// Whether the span is the agent's own invocation (its duration counts).
    pub is_agent: bool,
    pub duration_ns: u64,
}

/// One span's place in its trace and what it added.
pub struct Record {
    pub span_id: SpanId,
    pub parent: SpanId,
    pub contribution: Contribution,
}

struct HeldRoot {
    resource: ResourceSpans,
}

struct OpenTrace {
    records: Vec<Record>,
    root: Option<HeldRoot>,
    created: Instant,
    root_due: Option<Instant>,
}

impl OpenTrace {
    fn due(&self, timeout: Duration) -> Instant {
        self.root_due.unwrap_or(self.created + timeout)
    }
}

/// Per-agent totals, as written in `lookout.trace.agents`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTotals {
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: u64,
    pub duration_ms: f64,
}

/// Totals of one trace.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TraceTotals {
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: u64,
    pub errors: u64,
    pub agents: BTreeMap<String, AgentTotals>,
}

struct RollupMetrics {
    finished: Counter,
    flushed_early: Counter,
    without_root: Counter,
    late_spans: Counter,
    open_traces: Gauge,
}

pub struct Rollup {
    config: RollupConfig,
    traces: HashMap<TraceId, OpenTrace>,
    /// Trace IDs in creation order, for finishing the oldest first.
    order: VecDeque<TraceId>,
    /// When each trace is due; stale entries are skipped when popped.
    due: BinaryHeap<Reverse<(Instant, TraceId)>>,
    records: usize,
    /// Traces whose root went out lately, to count late children rather
    /// than open a new trace for them.
    finished_recently: HashMap<TraceId, Instant>,
    metrics: RollupMetrics,
}

impl Rollup {
    pub fn new(config: RollupConfig, processor: &str) -> Rollup {
        let make = |outcome: &'static str| counter!("lookout_cost_rollup_traces_total", "processor" => processor.to_string(), "outcome" => outcome);
        Rollup {
            config,
            traces: HashMap::new(),
            order: VecDeque::new(),
            due: BinaryHeap::new(),
            records: 0,
            finished_recently: HashMap::new(),
            metrics: RollupMetrics {
                finished: make("finished"),
                flushed_early: make("flushed_early"),
                without_root: make("timed_out_without_root"),
                late_spans: counter!("lookout_cost_rollup_late_spans_total", "processor" => processor.to_string()),
                open_traces: gauge!("lookout_cost_rollup_open_traces", "processor" => processor.to_string()),
            },
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Records a non-root span. Roots finished within the last timeout do
    /// not reopen: their late children are counted instead.
    pub fn record(
        &mut self,
        trace: TraceId,
        span: SpanId,
        parent: SpanId,
        contribution: Contribution,
        now: Instant,
        out: &mut Vec<ResourceSpans>,
    ) {
        if self.finished_recently.contains_key(&trace) {
            self.metrics.late_spans.increment(1);
            return;
        }
        self.open(trace, now).records.push(Record {
            span_id: span,
            parent,
            contribution,
        });
        self.records += 1;
        self.enforce_limits(out);
    }

    /// Holds a root span (in a copy of its resource and scope) until its
    /// trace is due.
    pub fn hold_root(
        &mut self,
        trace: TraceId,
        resource: ResourceSpans,
        contribution: Contribution,
        now: Instant,
        out: &mut Vec<ResourceSpans>,
    ) {
        let span_id = root_span(&resource).map(span_id).unwrap_or_default();
        let due = now + self.config.grace_period;
        let open = self.open(trace, now);
        open.records.push(Record {
            span_id,
            parent: SpanId::default(),
            contribution,
        });
        open.root = Some(HeldRoot { resource });
        open.root_due = Some(due);
        self.records += 1;
        self.due.push(Reverse((due, trace)));
        self.enforce_limits(out);
    }

    fn open(&mut self, trace: TraceId, now: Instant) -> &mut OpenTrace {
        if !self.traces.contains_key(&trace) {
            self.order.push_back(trace);
            self.due.push(Reverse((now + self.config.timeout, trace)));
        }
        self.traces.entry(trace).or_insert_with(|| OpenTrace {
            records: Vec::new(),
            root: None,
            created: now,
            root_due: None,
        })
    }

    fn enforce_limits(&mut self, out: &mut Vec<ResourceSpans>) {
        while self.traces.len() > self.config.max_traces || self.records > self.config.max_spans {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.traces.contains_key(&oldest) {
                self.metrics.flushed_early.increment(1);
                self.finish(oldest, out, false);
            }
        }
        self.metrics.open_traces.set(self.traces.len() as f64);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Finishes every trace that is due.
    pub fn on_deadline(&mut self, now: Instant, out: &mut Vec<ResourceSpans>) {
        while let Some(Reverse((at, trace))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let is_due = self
                .traces
                .get(&trace)
                .is_some_and(|open| open.due(self.config.timeout) <= now);
            if is_due {
                self.metrics.finished.increment(1);
                self.finish(trace, out, true);
            }
        }
        let keep_for = self.config.timeout;
        self.finished_recently
            .retain(|_, at| now.duration_since(*at) < keep_for);
        self.metrics.open_traces.set(self.traces.len() as f64);
    }

    /// Finishes every open trace: the input has closed.
    pub fn flush(&mut self, out: &mut Vec<ResourceSpans>) {
        let traces: Vec<TraceId> = self.order.drain(..).collect();
        for trace in traces {
            if self.traces.contains_key(&trace) {
                self.finish(trace, out, false);
            }
        }
        self.metrics.open_traces.set(0.0);
    }

    fn finish(&mut self, trace: TraceId, out: &mut Vec<ResourceSpans>, remember: bool) {
        let Some(open) = self.traces.remove(&trace) else {
            return;
        };
        self.records -= open.records.len();
        let Some(mut held) = open.root else {
            self.metrics.without_root.increment(1);
            return;
        };
        if remember {
            self.finished_recently.insert(trace, Instant::now());
        }
        let totals = totals(&open.records);
        if let Some(root) = held
            .resource
            .scope_spans
            .first_mut()
            .and_then(|scope| scope.spans.first_mut())
        {
            write_totals(root, &totals);
        }
        out.push(held.resource);
    }
}

fn root_span(resource: &ResourceSpans) -> Option<&Span> {
    resource.scope_spans.first()?.spans.first()
}

pub fn span_id(span: &Span) -> SpanId {
    span.span_id.as_slice().try_into().unwrap_or_default()
}

pub fn parent_id(span: &Span) -> SpanId {
    span.parent_span_id
        .as_slice()
        .try_into()
        .unwrap_or_default()
}

/// A copy of `resource` and `scope` around one span.
pub fn wrap(resource: &ResourceSpans, scope: &ScopeSpans, span: Span) -> ResourceSpans {
    ResourceSpans {
        resource: resource.resource.clone(),
        schema_url: resource.schema_url.clone(),
        scope_spans: vec![ScopeSpans {
            scope: scope.scope.clone(),
            schema_url: scope.schema_url.clone(),
            spans: vec![span],
        }],
    }
}

/// Adds up a trace's records; each LLM call is attributed to the nearest
/// agent among itself and its ancestors.
pub fn totals(records: &[Record]) -> TraceTotals {
    let index: HashMap<SpanId, usize> = records
        .iter()
        .enumerate()
        .map(|(i, record)| (record.span_id, i))
        .collect();
    let agent_of = |start: usize| -> Option<&str> {
        let mut at = start;
        // Bounded: a malformed trace may have a parent cycle.
        for _ in 0..256 {
            let record = &records[at];
            if let Some(agent) = &record.contribution.agent {
                return Some(agent);
            }
            at = *index.get(&record.parent)?;
        }
        None
    };
    let mut totals = TraceTotals::default();
    for (i, record) in records.iter().enumerate() {
        let c = &record.contribution;
        totals.cost_usd += c.cost_usd;
        totals.input_tokens += c.input_tokens;
        totals.output_tokens += c.output_tokens;
        totals.llm_calls += u64::from(c.llm_call);
        totals.errors += u64::from(c.error);
        if c.is_agent
            && let Some(agent) = &c.agent
        {
            let entry = totals.agents.entry(agent.clone()).or_default();
            entry.duration_ms += c.duration_ns as f64 / 1e6;
        }
        let spends = c.cost_usd > 0.0 || c.input_tokens > 0 || c.output_tokens > 0 || c.llm_call;
        if spends && let Some(agent) = agent_of(i) {
            let entry = totals.agents.entry(agent.to_string()).or_default();
            entry.cost_usd += c.cost_usd;
            entry.input_tokens += c.input_tokens;
            entry.output_tokens += c.output_tokens;
            entry.llm_calls += u64::from(c.llm_call);
        }
    }
    totals
}

fn write_totals(root: &mut Span, totals: &TraceTotals) {
    let attributes = &mut root.attributes;
    set_attribute(
        attributes,
        None,
        "lookout.trace.cost_usd",
        Value::DoubleValue(totals.cost_usd),
    );
    set_attribute(
        attributes,
        None,
        "lookout.trace.input_tokens",
        Value::IntValue(totals.input_tokens),
    );
    set_attribute(
        attributes,
        None,
        "lookout.trace.output_tokens",
        Value::IntValue(totals.output_tokens),
    );
    set_attribute(
        attributes,
        None,
        "lookout.trace.llm_calls",
        Value::IntValue(totals.llm_calls as i64),
    );
    set_attribute(
        attributes,
        None,
        "lookout.trace.errors",
        Value::IntValue(totals.errors as i64),
    );
    let agents = serde_json::to_string(&totals.agents).unwrap_or_default();
    set_attribute(
        attributes,
        None,
        "lookout.trace.agents",
        Value::StringValue(agents),
    );
}
