//! The `cost` processor: puts a price on every LLM call, TTS request and
//! paid API call, and rolls the costs of a trace up onto its root span.
//!
//! ```yaml
//! processors:
//!   cost:
//!     builtin_prices: true        # the table in processors/prices/builtin.yaml
//!     prices_file: ./prices.yaml  # optional; same format; reloaded when it changes
//!     reload_interval: 30s        # how often prices_file is checked
//!     models:                     # inline entries; they win over the file and the built-ins
//!       - {model: my-finetune, provider: openai, input: 3.75, output: 15}
//!     match_patterns:             # tried after every other way of matching
//!       - {pattern: "^ft:gpt-4o-mini", model: gpt-4o-mini}
//!     reported_cost: prefer       # prefer | ignore: the instrumentation's own cost
//!     tts:                        # cost per character of speech synthesis
//!       - {span_name: "^tts", usd_per_character: 0.000015, characters_attribute: tts.characters}
//!     api_calls:                  # flat cost per call of a tool or external API
//!       - {tool: web_search, usd_per_call: 0.01}
//!     trace_rollup:
//!       enabled: true
//!       grace_period: 2s          # a root waits this long for late children; 0s: finish on the root at once
//!       timeout: 60s              # a trace without a root is forgotten after this
//!       max_traces: 20000         # open traces; the oldest finish early beyond it
//!       max_spans: 500000         # span records over all open traces
//!     unknown_model_log_interval: 60s
//! ```
//!
//! It reads the current OTel GenAI names, so put the `genai` processor
//! before it. On each LLM span (one with token counts that is not an agent,
//! chain, tool or retriever span) it writes `gen_ai.usage.cost` (USD),
//! `lookout.cost.{input,output,cache_read,cache_write,reasoning}_usd`,
//! `lookout.cost.price_model` (the table entry used) and
//! `lookout.cost.status`: `computed`; `reported` when the instrumentation
//! already sent a cost (`gen_ai.usage.cost`, OpenInference's
//! `llm.cost.total`); or `unknown_model`, which also counts in
//! `lookout_cost_unknown_model_spans_total` and is logged at most once per
//! interval. An unknown model is never priced at $0.
//!
//! A reported cost of 0 on a call that used tokens is read as "the
//! instrumentation could not price it" (OpenLIT writes 0 for models
//! missing from its table), and the cost is computed instead.
//!
//! TTS and API rules write `lookout.cost.tts_usd` or `lookout.cost.api_usd`
//! and `gen_ai.usage.cost`. Every priced span gets `lookout.cost.type`
//! (`llm`, `tts`, `api`). See `rollup` for the trace roll-up.

mod matching;
mod prices;
mod rollup;
mod rules;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lookout_pipelines::component::parse_config;
use lookout_pipelines::{BuildError, ComponentId, Payload, Processor, ProcessorFactory, Signal};
use metrics::{Counter, counter};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, status::StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use crate::attributes::{amount, count, push_attribute, set_attribute, text, value_of};
use crate::genai::conventions::Kind;
pub use matching::{Pattern, find_price};
pub use prices::{BUILTIN, Breakdown, Price, PriceEntry, PriceFile, PriceTable, Usage};
pub use rollup::{AgentTotals, Contribution, RollupConfig};
use rules::{CallRule, Rules, TtsRule};

pub fn factory() -> ProcessorFactory {
    ProcessorFactory {
        kind: "cost",
        signals: &[Signal::Traces],
        build: |id: &ComponentId, raw, _signal| {
            let config: CostConfig = parse_config(raw)?;
            Ok(Box::new(CostProcessor::new(&id.to_string(), config)?))
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedCost {
    /// Keep a cost the instrumentation sent.
    #[default]
    Prefer,
    /// Always compute from the table.
    Ignore,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub pattern: String,
    pub model: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    pub builtin_prices: bool,
    pub prices_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    pub models: Vec<PriceEntry>,
    pub match_patterns: Vec<PatternConfig>,
    pub reported_cost: ReportedCost,
    pub tts: Vec<TtsRule>,
    pub api_calls: Vec<CallRule>,
    pub trace_rollup: RollupConfig,
    #[serde(with = "humantime_serde")]
    pub unknown_model_log_interval: Duration,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            builtin_prices: true,
            prices_file: None,
            reload_interval: Duration::from_secs(30),
            models: Vec::new(),
            match_patterns: Vec::new(),
            reported_cost: ReportedCost::Prefer,
            tts: Vec::new(),
            api_calls: Vec::new(),
            trace_rollup: RollupConfig::default(),
            unknown_model_log_interval: Duration::from_secs(60),
        }
    }
}

/// The prices file as last read.
struct WatchedFile {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
}

fn file_stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The most model IDs whose match is remembered; the memo starts over
/// beyond it, so a stream of odd IDs cannot grow it without bound.
const RESOLVED_CAPACITY: usize = 4096;

pub struct CostProcessor {
    name: String,
    config: CostConfig,
    table: PriceTable,
    patterns: Vec<Pattern>,
    rules: Rules,
    resolved: HashMap<Box<str>, Option<Arc<Price>>>,
    /// Agent names, shared by the roll-up records that carry them.
    agent_names: HashMap<Box<str>, Arc<str>>,
    file: Option<WatchedFile>,
    next_reload: Option<Instant>,
    unknown: UnknownModels,
    rollup: rollup::Rollup,
    reloads_ok: Counter,
    reloads_failed: Counter,
}

struct UnknownModels {
    spans: Counter,
    interval: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl UnknownModels {
    fn seen(&mut self, processor: &str, model: &str, now: Instant) {
        self.spans.increment(1);
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < self.interval)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            processor,
            model,
            suppressed = self.suppressed,
            "no price for this model: spans get lookout.cost.status=unknown_model; add it under the cost processor's `models`"
        );
        self.last_log = Some(now);
        self.suppressed = 0;
    }
}

impl CostProcessor {
    pub fn new(name: &str, config: CostConfig) -> Result<CostProcessor, BuildError> {
        let file = config.prices_file.clone().map(|path| WatchedFile {
            stamp: file_stamp(&path),
            path,
        });
        let file_entries = match &file {
            Some(file) => read_prices_file(&file.path)
                .map_err(|message| BuildError::at(&["prices_file"], message))?,
            None => Vec::new(),
        };
        let table = build_table(&config, file_entries)
            .map_err(|message| BuildError::at(&["models"], message))?;
        let patterns = compile_patterns(&config.match_patterns, &table)?;
        let rules = Rules::compile(&config.tts, &config.api_calls)?;
        if config.trace_rollup.max_traces == 0 || config.trace_rollup.max_spans == 0 {
            return Err(BuildError::at(
                &["trace_rollup"],
                "max_traces and max_spans must be at least 1",
            ));
        }
        let result = |r: &'static str| counter!("lookout_cost_price_reloads_total", "processor" => name.to_string(), "result" => r);
        Ok(CostProcessor {
            name: name.to_string(),
            table,
            patterns,
            rules,
            resolved: HashMap::new(),
            agent_names: HashMap::new(),
            next_reload: file
                .as_ref()
                .map(|_| Instant::now() + config.reload_interval),
            file,
            unknown: UnknownModels {
                spans: counter!("lookout_cost_unknown_model_spans_total", "processor" => name.to_string()),
                interval: config.unknown_model_log_interval,
                last_log: None,
                suppressed: 0,
            },
            rollup: rollup::Rollup::new(config.trace_rollup.clone(), name),
            reloads_ok: result("ok"),
            reloads_failed: result("error"),
            config,
        })
    }

    /// The price of `model`, remembered per ID.
    pub fn price_of(&mut self, model: &str) -> Option<Arc<Price>> {
        if let Some(found) = self.resolved.get(model) {
            return found.clone();
        }
        let found = find_price(&self.table, &self.patterns, model);
        if self.resolved.len() >= RESOLVED_CAPACITY {
            self.resolved.clear();
        }
        self.resolved.insert(model.into(), found.clone());
        found
    }

    /// Prices one span in place and says what it adds to its trace.
    pub fn price_span(&mut self, span: &mut Span, now: Instant) -> Contribution {
        let read = SpanRead::of(&span.attributes);
        let kind = read.kind(&span.attributes);
        let mut contribution = Contribution {
            error: span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32),
            is_agent: kind == Some(Kind::Agent),
            agent: read
                .text(&span.attributes, read.agent)
                .map(|name| intern(&mut self.agent_names, name)),
            duration_ns: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
            ..Default::default()
        };
        if contribution.is_agent && contribution.agent.is_none() {
            contribution.agent = Some(intern(&mut self.agent_names, &span.name));
        }
        let usage = read.usage(&span.attributes);
        let is_llm = usage.is_some()
            && !matches!(
                kind,
                Some(Kind::Agent | Kind::Chain | Kind::Tool | Kind::Retriever)
            );
        if let Some(usage) = usage.filter(|_| is_llm) {
            contribution.llm_call = true;
            contribution.input_tokens = usage.input;
            contribution.output_tokens = usage.output;
        }
        // A span priced upstream (an agent in front of this gateway) keeps
        // its cost; it is only counted.
        contribution.cost_usd = if read.already_priced.is_some() {
            read.amount(&span.attributes, read.cost)
        } else if let Some(usage) = usage.filter(|_| is_llm) {
            self.price_llm(span, &read, &usage, now)
        } else {
            self.rules.price(span, read.tool)
        }
        .unwrap_or(0.0);
        contribution
    }

    fn price_llm(
        &mut self,
        span: &mut Span,
        read: &SpanRead,
        usage: &Usage,
        now: Instant,
    ) -> Option<f64> {
        let attributes = &mut span.attributes;
        let reported = [read.cost, read.openinference_total]
            .into_iter()
            .find_map(|at| read.amount(attributes, at));
        let used_tokens = usage.input > 0 || usage.output > 0;
        if self.config.reported_cost == ReportedCost::Prefer
            && let Some(reported) = reported.filter(|cost| *cost > 0.0 || !used_tokens)
        {
            set_attribute(
                attributes,
                read.cost,
                "gen_ai.usage.cost",
                Value::DoubleValue(reported),
            );
            set_status(attributes, !read.has_cost_keys, "llm", "reported");
            return Some(reported);
        }
        let price = {
            let model = read.model(attributes).unwrap_or_default();
            let price = self.price_of(model);
            if price.is_none() {
                self.unknown.seen(&self.name, model, now);
            }
            price
        };
        // A span the cost processor has not seen has none of its keys, so
        // they are appended without looking for them first.
        let fresh = !read.has_cost_keys;
        let Some(price) = price else {
            set_status(attributes, fresh, "llm", "unknown_model");
            return None;
        };
        if fresh {
            // One growth of the attribute list rather than several.
            attributes.reserve(9);
        }
        let breakdown = price.cost(usage);
        let total = breakdown.total();
        set_attribute(
            attributes,
            read.cost,
            "gen_ai.usage.cost",
            Value::DoubleValue(total),
        );
        let parts = [
            ("lookout.cost.input_usd", breakdown.input),
            ("lookout.cost.output_usd", breakdown.output),
            ("lookout.cost.cache_read_usd", breakdown.cache_read),
            ("lookout.cost.cache_write_usd", breakdown.cache_write),
            ("lookout.cost.reasoning_usd", breakdown.reasoning),
        ];
        for (key, usd) in parts {
            put(attributes, fresh, key, Value::DoubleValue(usd));
        }
        let price_model = Value::StringValue(price.model.clone());
        put(attributes, fresh, "lookout.cost.price_model", price_model);
        set_status(attributes, fresh, "llm", "computed");
        Some(total)
    }

    fn reload_if_changed(&mut self) {
        let Some(file) = &mut self.file else { return };
        let stamp = file_stamp(&file.path);
        if stamp == file.stamp {
            return;
        }
        file.stamp = stamp;
        let path = file.path.clone();
        let rebuilt =
            read_prices_file(&path).and_then(|entries| build_table(&self.config, entries));
        match rebuilt {
            Ok(table) => {
                let models = table.id_count();
                self.table = table;
                self.resolved.clear();
                self.reloads_ok.increment(1);
                tracing::info!(processor = %self.name, path = %path.display(), models, "reloaded the price table");
            }
            Err(error) => {
                self.reloads_failed.increment(1);
                tracing::warn!(processor = %self.name, path = %path.display(), %error, "kept the previous price table: the prices file is invalid");
            }
        }
    }

    /// Prices every span and records it in its trace, then deals with the
    /// roots once the whole payload is recorded, so that children sent
    /// beside their root are never late.
    fn process_spans(
        &mut self,
        resources: &mut Vec<ResourceSpans>,
        released: &mut Vec<ResourceSpans>,
    ) {
        let now = Instant::now();
        let mut roots = Vec::new();
        for (resource_index, resource) in resources.iter_mut().enumerate() {
            for (scope_index, scope) in resource.scope_spans.iter_mut().enumerate() {
                for (span_index, span) in scope.spans.iter_mut().enumerate() {
                    let contribution = self.price_span(span, now);
                    let Some(trace) = self.rollup_trace(span) else {
                        continue;
                    };
                    if span.parent_span_id.is_empty() {
                        let at = (resource_index, scope_index, span_index);
                        roots.push((at, trace, contribution));
                        continue;
                    }
                    let (id, parent) = (rollup::span_id(span), rollup::parent_id(span));
                    self.rollup
                        .record(trace, id, parent, contribution, now, released);
                }
            }
        }
        if roots.is_empty() {
            return;
        }
        if self.rollup.holds_roots() {
            self.hold_roots(resources, roots, now, released);
        } else {
            for ((r, s, i), trace, contribution) in roots {
                let root = &mut resources[r].scope_spans[s].spans[i];
                self.rollup.finish_now(trace, root, contribution, now);
            }
        }
    }

    /// Moves the roots out of the payload, each into a copy of its
    /// resource and scope, to wait for their grace period.
    fn hold_roots(
        &mut self,
        resources: &mut Vec<ResourceSpans>,
        roots: Vec<((usize, usize, usize), rollup::TraceId, Contribution)>,
        now: Instant,
        released: &mut Vec<ResourceSpans>,
    ) {
        // Backwards, so that removing a span leaves the earlier positions
        // valid.
        let mut held = Vec::with_capacity(roots.len());
        for ((r, s, i), trace, contribution) in roots.into_iter().rev() {
            let resource = &mut resources[r];
            let span = resource.scope_spans[s].spans.remove(i);
            held.push((
                rollup::wrap(resource, &resource.scope_spans[s], span),
                trace,
                contribution,
            ));
        }
        for (wrapped, trace, contribution) in held.into_iter().rev() {
            self.rollup
                .hold_root(trace, wrapped, contribution, now, released);
        }
        for resource in resources.iter_mut() {
            resource.scope_spans.retain(|scope| !scope.spans.is_empty());
        }
        resources.retain(|resource| !resource.scope_spans.is_empty());
    }

    fn rollup_trace(&self, span: &Span) -> Option<rollup::TraceId> {
        if !self.rollup.enabled() {
            return None;
        }
        rollup_trace_id(span)
    }
}

fn rollup_trace_id(span: &Span) -> Option<rollup::TraceId> {
    span.trace_id.as_slice().try_into().ok()
}

/// The shared copy of `name`; the set starts over beyond
/// `RESOLVED_CAPACITY` names, so odd names cannot grow it without bound.
fn intern(names: &mut HashMap<Box<str>, Arc<str>>, name: &str) -> Arc<str> {
    if let Some(shared) = names.get(name) {
        return Arc::clone(shared);
    }
    if names.len() >= RESOLVED_CAPACITY {
        names.clear();
    }
    let shared: Arc<str> = Arc::from(name);
    names.insert(name.into(), Arc::clone(&shared));
    shared
}

pub(super) fn set_status(
    attributes: &mut Vec<KeyValue>,
    fresh: bool,
    cost_type: &str,
    status: &str,
) {
    let cost_type = Value::StringValue(cost_type.into());
    put(attributes, fresh, "lookout.cost.type", cost_type);
    put(
        attributes,
        fresh,
        "lookout.cost.status",
        Value::StringValue(status.into()),
    );
}

/// Appends when the key is known to be absent, else sets it in place.
fn put(attributes: &mut Vec<KeyValue>, fresh: bool, key: &str, value: Value) {
    if fresh {
        push_attribute(attributes, key, value);
    } else {
        set_attribute(attributes, None, key, value);
    }
}

fn read_prices_file(path: &PathBuf) -> Result<Vec<PriceEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    PriceFile::parse(&text)
        .map(PriceFile::entries)
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Built-ins, then the file, then inline entries: the later wins.
fn build_table(config: &CostConfig, file_entries: Vec<PriceEntry>) -> Result<PriceTable, String> {
    let builtin = if config.builtin_prices {
        PriceFile::parse(BUILTIN)
            .map_err(|error| format!("the built-in price table is invalid: {error}"))?
            .entries()
    } else {
        Vec::new()
    };
    PriceTable::build(
        builtin
            .into_iter()
            .chain(file_entries)
            .chain(config.models.iter().cloned()),
    )
}

fn compile_patterns(
    configs: &[PatternConfig],
    table: &PriceTable,
) -> Result<Vec<Pattern>, BuildError> {
    configs
        .iter()
        .enumerate()
        .map(|(i, config)| {
            let index = i.to_string();
            let at = |field: &str, message: String| {
                BuildError::at(&["match_patterns", &index, field], message)
            };
            let regex = regex::RegexBuilder::new(&config.pattern)
                .case_insensitive(true)
                .build()
                .map_err(|error| at("pattern", error.to_string()))?;
            if !table.contains(&config.model.to_ascii_lowercase()) {
                return Err(at(
                    "model",
                    format!("{} is not in the price table", config.model),
                ));
            }
            Ok(Pattern {
                regex,
                model: config.model.clone(),
            })
        })
        .collect()
}

/// Where the attributes the cost processor reads are, found in one pass.
#[derive(Default)]
struct SpanRead {
    request_model: Option<usize>,
    response_model: Option<usize>,
    kind: Option<usize>,
    operation: Option<usize>,
    input: Option<usize>,
    output: Option<usize>,
    cache_read: Option<usize>,
    cache_write: Option<usize>,
    reasoning: Option<usize>,
    cost: Option<usize>,
    openinference_total: Option<usize>,
    agent: Option<usize>,
    tool: Option<usize>,
    already_priced: Option<usize>,
    /// Whether any `lookout.cost.*` key is present.
    has_cost_keys: bool,
}

impl SpanRead {
    fn of(attributes: &[KeyValue]) -> SpanRead {
        let mut read = SpanRead::default();
        for (index, attribute) in attributes.iter().enumerate() {
            let slot = match attribute.key.as_str() {
                "gen_ai.request.model" => &mut read.request_model,
                "gen_ai.response.model" => &mut read.response_model,
                crate::genai::KIND_ATTRIBUTE => &mut read.kind,
                "gen_ai.operation.name" => &mut read.operation,
                "gen_ai.usage.input_tokens" => &mut read.input,
                "gen_ai.usage.output_tokens" => &mut read.output,
                "gen_ai.usage.cache_read.input_tokens" => &mut read.cache_read,
                "gen_ai.usage.cache_creation.input_tokens" => &mut read.cache_write,
                "gen_ai.usage.reasoning.output_tokens" => &mut read.reasoning,
                "gen_ai.usage.cost" => &mut read.cost,
                "llm.cost.total" => &mut read.openinference_total,
                "gen_ai.agent.name" => &mut read.agent,
                "gen_ai.tool.name" => &mut read.tool,
                "lookout.cost.status" => &mut read.already_priced,
                key => {
                    read.has_cost_keys |= key.starts_with("lookout.cost.");
                    continue;
                }
            };
            *slot = Some(index);
        }
        read.has_cost_keys |= read.already_priced.is_some();
        read
    }

    fn value<'a>(&self, attributes: &'a [KeyValue], at: Option<usize>) -> Option<&'a Value> {
        value_of(attributes.get(at?)?)
    }

    fn text<'a>(&self, attributes: &'a [KeyValue], at: Option<usize>) -> Option<&'a str> {
        self.value(attributes, at).and_then(text)
    }

    fn count(&self, attributes: &[KeyValue], at: Option<usize>) -> Option<i64> {
        self.value(attributes, at).and_then(count)
    }

    fn amount(&self, attributes: &[KeyValue], at: Option<usize>) -> Option<f64> {
        self.value(attributes, at).and_then(amount)
    }

    /// The response model names what actually ran; the request model may
    /// be an alias.
    fn model<'a>(&self, attributes: &'a [KeyValue]) -> Option<&'a str> {
        self.text(attributes, self.response_model)
            .or_else(|| self.text(attributes, self.request_model))
    }

    fn kind(&self, attributes: &[KeyValue]) -> Option<Kind> {
        self.text(attributes, self.kind)
            .or_else(|| self.text(attributes, self.operation))
            .and_then(Kind::parse)
    }

    /// Token counts, if the span reports any.
    fn usage(&self, attributes: &[KeyValue]) -> Option<Usage> {
        let input = self.count(attributes, self.input);
        let output = self.count(attributes, self.output);
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(Usage {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cache_read: self.count(attributes, self.cache_read).unwrap_or(0),
            cache_write: self.count(attributes, self.cache_write).unwrap_or(0),
            reasoning: self.count(attributes, self.reasoning).unwrap_or(0),
        })
    }
}

impl Processor for CostProcessor {
    fn process(&mut self, mut payload: Payload, out: &mut Vec<Payload>) {
        let Payload::Traces(resources) = &mut payload else {
            out.push(payload);
            return;
        };
        let mut released = Vec::new();
        self.process_spans(resources, &mut released);
        if !resources.is_empty() {
            out.push(payload);
        }
        if !released.is_empty() {
            out.push(Payload::Traces(released));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.rollup.next_deadline(), self.next_reload]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_deadline(&mut self, now: Instant, out: &mut Vec<Payload>) {
        if self.next_reload.is_some_and(|at| at <= now) {
            self.reload_if_changed();
            self.next_reload = Some(now + self.config.reload_interval);
        }
        let mut released = Vec::new();
        self.rollup.on_deadline(now, &mut released);
        if !released.is_empty() {
            out.push(Payload::Traces(released));
        }
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        let mut released = Vec::new();
        self.rollup.flush(&mut released);
        if !released.is_empty() {
            out.push(Payload::Traces(released));
        }
    }
}

#[cfg(test)]
mod tests;
