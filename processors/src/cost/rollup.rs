//! The trace roll-up: totals of a trace written on its root span.
//!
//! Only the root span is held back. Every other span passes on at once
//! and leaves a small record here (its parent, agent, cost and tokens), so
//! memory per open trace is a few dozen bytes a span rather than the span.
//! The root waits `grace_period` after it arrives for late children, as a
//! tail sampler waits for its decision; a trace whose root never comes is
//! forgotten after `timeout`. When `max_traces` or `max_spans` is reached
//! the oldest traces are finished early and counted.
//!
//! With `grace_period: 0s` nothing is held: the root is finished where it
//! stands, after the rest of its payload is recorded. That suits a node
//! agent whose applications export whole traces root last; spans that
//! come after their root are counted in
//! `lookout_cost_rollup_late_spans_total`, which says when a grace period
//! is needed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
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
    /// The agent this span is, or runs for (interned: many spans share it).
    pub agent: Option<Arc<str>>,
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

/// Open traces and when each is due.
///
/// Both deadlines are a constant after an event that comes in time order
/// (a trace's creation, its root's arrival), so two FIFO queues hold them
/// and no heap is needed. Entries of traces finished another way are
/// skipped when they reach the front, and `order` is compacted when stale
/// entries pile up, so memory follows the open traces, not the rate.
pub struct Rollup {
    config: RollupConfig,
    traces: HashMap<TraceId, OpenTrace>,
    /// Trace IDs in creation order: the timeout, and finishing the oldest
    /// first when over a limit.
    order: VecDeque<TraceId>,
    /// Roots in arrival order, with when each is due.
    roots_due: VecDeque<(Instant, TraceId)>,
    records: usize,
    /// Traces whose root went out lately, so that their late children are
    /// counted rather than opening a trace that can never finish. At most
    /// `max_traces` of them, for at most `timeout`.
    finished_recently: HashSet<TraceId>,
    finished_order: VecDeque<(Instant, TraceId)>,
    metrics: RollupMetrics,
}

impl Rollup {
    pub fn new(config: RollupConfig, processor: &str) -> Rollup {
        let make = |outcome: &'static str| counter!("lookout_cost_rollup_traces_total", "processor" => processor.to_string(), "outcome" => outcome);
        Rollup {
            config,
            traces: HashMap::new(),
            order: VecDeque::new(),
            roots_due: VecDeque::new(),
            records: 0,
            finished_recently: HashSet::new(),
            finished_order: VecDeque::new(),
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

    /// With no grace period a root is finished where it stands, in its
    /// payload, and nothing is held.
    pub fn holds_roots(&self) -> bool {
        !self.config.grace_period.is_zero()
    }

    /// Finishes a trace on its root at once (no grace period).
    pub fn finish_now(
        &mut self,
        trace: TraceId,
        root: &mut Span,
        contribution: Contribution,
        now: Instant,
    ) {
        let mut records = self
            .close(trace)
            .map(|open| open.records)
            .unwrap_or_default();
        records.push(Record {
            span_id: span_id(root),
            parent: SpanId::default(),
            contribution,
        });
        write_totals(root, &totals(&records));
        self.metrics.finished.increment(1);
        self.remember_finished(trace, now);
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.finished_recently.len()
    }

    fn remember_finished(&mut self, trace: TraceId, at: Instant) {
        if self.finished_recently.insert(trace) {
            self.finished_order.push_back((at, trace));
        }
        // Bounded here too, for a stream without deadlines in between.
        if self.finished_order.len() > self.config.max_traces
            && let Some((_, oldest)) = self.finished_order.pop_front()
        {
            self.finished_recently.remove(&oldest);
        }
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
        if self.finished_recently.contains(&trace) {
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
        let open = self.open(trace, now);
        open.records.push(Record {
            span_id,
            parent: SpanId::default(),
            contribution,
        });
        // A second root for one trace (a resent batch) replaces the first.
        let first_root = open.root.replace(HeldRoot { resource }).is_none();
        self.records += 1;
        if first_root {
            self.roots_due
                .push_back((now + self.config.grace_period, trace));
        }
        self.enforce_limits(out);
    }

    fn open(&mut self, trace: TraceId, now: Instant) -> &mut OpenTrace {
        let order = &mut self.order;
        self.traces.entry(trace).or_insert_with(|| {
            order.push_back(trace);
            OpenTrace {
                records: Vec::with_capacity(8),
                root: None,
                created: now,
            }
        })
    }

    fn enforce_limits(&mut self, out: &mut Vec<ResourceSpans>) {
        while self.traces.len() > self.config.max_traces || self.records > self.config.max_spans {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.traces.contains_key(&oldest) {
                self.metrics.flushed_early.increment(1);
                self.finish(oldest, out, None);
            }
        }
        if self.order.len() > 2 * self.traces.len() + 1024 {
            let traces = &self.traces;
            self.order.retain(|trace| traces.contains_key(trace));
        }
        self.metrics.open_traces.set(self.traces.len() as f64);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let root = self.roots_due.front().map(|(at, _)| *at);
        // A stale front entry is due at once, to be cleared; a front trace
        // with a held root is covered by `roots_due`.
        let timeout = self
            .order
            .front()
            .and_then(|trace| match self.traces.get(trace) {
                None => Some(Instant::now()),
                Some(open) if open.root.is_some() => None,
                Some(open) => Some(open.created + self.config.timeout),
            });
        root.into_iter().chain(timeout).min()
    }

    /// Finishes every trace whose root is due, and forgets every trace
    /// without a root that has timed out.
    pub fn on_deadline(&mut self, now: Instant, out: &mut Vec<ResourceSpans>) {
        while let Some(&(at, trace)) = self.roots_due.front() {
            if at > now {
                break;
            }
            self.roots_due.pop_front();
            if self.traces.contains_key(&trace) {
                self.metrics.finished.increment(1);
                self.finish(trace, out, Some(now));
            }
        }
        while let Some(&trace) = self.order.front() {
            match self.traces.get(&trace) {
                None => {}
                // A held root finishes on its own schedule, within the
                // grace period; it stays first in line for an early
                // finish, so the traces behind it wait for it.
                Some(open) if open.root.is_some() => break,
                Some(open) if open.created + self.config.timeout <= now => {
                    self.finish(trace, out, Some(now));
                }
                Some(_) => break,
            }
            self.order.pop_front();
        }
        while let Some(&(at, trace)) = self.finished_order.front() {
            let expired = now.duration_since(at) >= self.config.timeout;
            if !expired && self.finished_order.len() <= self.config.max_traces {
                break;
            }
            self.finished_order.pop_front();
            self.finished_recently.remove(&trace);
        }
        self.metrics.open_traces.set(self.traces.len() as f64);
    }

    /// Finishes every open trace: the input has closed.
    pub fn flush(&mut self, out: &mut Vec<ResourceSpans>) {
        let traces: Vec<TraceId> = self.order.drain(..).collect();
        for trace in traces {
            if self.traces.contains_key(&trace) {
                self.finish(trace, out, None);
            }
        }
        self.roots_due.clear();
        self.metrics.open_traces.set(0.0);
    }

    /// Writes the totals on the held root and releases it; a trace without
    /// a root is counted and forgotten. `remember_at` keeps the trace ID
    /// for late children.
    /// Takes a trace out of the open ones, keeping the record count.
    fn close(&mut self, trace: TraceId) -> Option<OpenTrace> {
        let open = self.traces.remove(&trace)?;
        self.records -= open.records.len();
        Some(open)
    }

    fn finish(
        &mut self,
        trace: TraceId,
        out: &mut Vec<ResourceSpans>,
        remember_at: Option<Instant>,
    ) {
        let Some(open) = self.close(trace) else {
            return;
        };
        let Some(mut held) = open.root else {
            self.metrics.without_root.increment(1);
            return;
        };
        if let Some(at) = remember_at {
            self.remember_finished(trace, at);
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
    // Most traces are small: a scan beats building a map for them.
    let index: Option<HashMap<SpanId, usize>> = (records.len() > 32).then(|| {
        records
            .iter()
            .enumerate()
            .map(|(i, record)| (record.span_id, i))
            .collect()
    });
    let find = |id: &SpanId| match &index {
        Some(index) => index.get(id).copied(),
        None => records.iter().position(|record| record.span_id == *id),
    };
    let agent_of = |start: usize| -> Option<&Arc<str>> {
        let mut at = start;
        // Bounded: a malformed trace may have a parent cycle.
        for _ in 0..256 {
            let record = &records[at];
            if let Some(agent) = &record.contribution.agent {
                return Some(agent);
            }
            at = find(&record.parent)?;
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
            let entry = totals.agents.entry(agent.to_string()).or_default();
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
