//! The `threshold` connector: ends a traces (and metrics) pipeline,
//! evaluates alert rules over the spans (or, for rules with `source:
//! metrics`, the OTel GenAI client metrics; see `points`), and starts an `alerts` pipeline whose exporters
//! (`slack`, `email`, `webhook`, `postgres`, `sqlite`, `debug`) deliver
//! the notifications.
//!
//! ```yaml
//! connectors:
//!   threshold:
//!     evaluation_interval: 15s   # rules are checked this often
//!     group_wait: 30s            # a new alert waits this long before its first notification
//!     repeat_interval: 4h        # a still-firing alert is re-sent this often
//!     escalation_timeout: 300s   # a warning firing this long goes to the critical route (0s: never)
//!     daily_budget_usd: 200      # turns on the `daily_budget` rule (80% / 100%)
//!     time_zone: Europe/Paris    # where the budget's day starts
//!     api_quota_per_minute: 500  # turns on the `api_quota` rule (80% / 95%)
//!     runbook_url: https://runbooks.example.com/{rule}
//!     routes:                    # optional: exporter ids per severity
//!       critical: [slack/oncall, email/oncall]
//!       warning: [slack/monitoring]
//!     rules:                     # added to the defaults; the same name replaces one
//!       - name: qualifier_errors
//!         source: spans          # or metrics: the OTel GenAI client metrics (see `points`)
//!         metric: error_rate     # error_rate, latency_avg, latency_p95, cost_per_hour,
//!                                # cost_per_call, tokens_per_hour, daily_budget_used,
//!                                # cost_spike, api_quota_used, request_count
//!         spans: agent           # all, agent, llm, tool, root (each metric has a default)
//!         filters: {agent: qualifier}
//!         group_by: [model]      # agent, model, provider, service, operation
//!         window: 5m
//!         comparison: ">"
//!         warning: 0.05
//!         critical: 0.15
//!         min_samples: 20
//!         for: 1m
//! service:
//!   pipelines:
//!     traces:
//!       receivers: [otlp]
//!       processors: [genai, cost, batch]
//!       exporters: [threshold]
//!     alerts:
//!       receivers: [threshold]
//!       exporters: [slack, email]
//! ```
//!
//! Put it after `genai` and `cost`: it reads the normalised attributes.
//! The default rules are in `config::default_rules`.
//!
//! Spans are aggregated as they arrive, on the exporter helper's queue
//! consumers, never in the pipeline's own path: each rule keeps, per
//! group, a ring of slot aggregates (counts, sums, a quantile sketch), so
//! that an evaluation merges a dozen slots and rescans nothing.
//! Samples are timed by arrival, not by span timestamps, so a client's
//! clock skew or a replay does not distort the windows.

mod config;
mod lifecycle;
mod points;
mod rule;
mod sample;
mod sketch;
mod window;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use lookout_pipelines::alert::{Alert, AlertSeverity, AlertStatus};
use lookout_pipelines::component::{ReceiverContext, ServeFuture, parse_config};
use lookout_pipelines::{
    BuildError, ComponentId, Connector, ConnectorContext, ConnectorFactory, Consumer, ExportError,
    Exporter, Payload, Receiver, Refused, Signal,
};
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use config::{MetricKind, RuleConfig, ThresholdConfig, default_rules};
use lifecycle::Timing;
use points::Deltas;
use rule::{Now, Rule};
use sample::{SpanView, string_attribute};

pub fn factory() -> ConnectorFactory {
    ConnectorFactory {
        kind: "threshold",
        consumes: &[Signal::Traces, Signal::Metrics],
        emits: &[Signal::Alerts],
        build: |id: &ComponentId, raw, context: &ConnectorContext| {
            let config: ThresholdConfig = parse_config(raw)?;
            check_routes(&config, &context.downstream_exporters)?;
            let evaluator = Evaluator::new(&id.to_string(), &config, Clock::starting_now())?;
            let shared = Arc::new(Mutex::new(evaluator));
            Ok(Connector {
                exporter: Box::new(SpanIntake {
                    evaluator: shared.clone(),
                }),
                receiver: Box::new(AlertSource {
                    evaluator: shared,
                    interval: config.evaluation_interval,
                }),
            })
        },
    }
}

/// Every exporter that `routes` names must be in a pipeline this
/// connector starts: a typo would otherwise deliver nothing, silently.
fn check_routes(config: &ThresholdConfig, downstream: &[ComponentId]) -> Result<(), BuildError> {
    for (severity, exporters) in &config.routes {
        for exporter in exporters {
            if !downstream.iter().any(|id| id.to_string() == *exporter) {
                return Err(BuildError::at(
                    &["routes", severity.as_str()],
                    format!("`{exporter}` is not an exporter of a pipeline this connector starts"),
                ));
            }
        }
    }
    Ok(())
}

/// Turns tokio's clock (which tests pause) into wall time and days in the
/// configured zone.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    start_wall: jiff::Timestamp,
}

impl Clock {
    pub fn starting_now() -> Clock {
        Clock::starting_at(jiff::Timestamp::now())
    }

    pub fn starting_at(wall: jiff::Timestamp) -> Clock {
        Clock {
            start: Instant::now(),
            start_wall: wall,
        }
    }

    fn wall(&self, now: Instant) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(now.duration_since(self.start))
            .unwrap_or(jiff::SignedDuration::MAX);
        self.start_wall
            .checked_add(elapsed)
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

/// Every rule of one connector, and what they share.
pub struct Evaluator {
    rules: Vec<Rule>,
    timing: Timing,
    clock: Clock,
    /// The date the connector started on, in `time_zone`: day 0.
    start_day: jiff::civil::Date,
    time_zone: TimeZone,
    routes: Vec<(AlertSeverity, Vec<String>)>,
    connector: String,
    deltas: Deltas,
    dropped_series: metrics::Counter,
}

impl Evaluator {
    pub fn new(
        connector: &str,
        config: &ThresholdConfig,
        clock: Clock,
    ) -> Result<Evaluator, BuildError> {
        config.check()?;
        let time_zone = TimeZone::get(&config.time_zone)
            .map_err(|err| BuildError::at(&["time_zone"], err.to_string()))?;
        let rules = config
            .effective_rules()
            .into_iter()
            .map(|rule| {
                Rule::new(
                    rule,
                    config.runbook_url.as_deref(),
                    config.daily_budget_usd,
                    config.max_groups_per_rule,
                    config.example_traces,
                    connector,
                )
            })
            .collect();
        let started = u64::try_from(clock.start_wall.as_nanosecond()).unwrap_or(0);
        Ok(Evaluator {
            rules,
            timing: Timing {
                group_wait: config.group_wait,
                repeat_interval: config.repeat_interval,
                escalation_timeout: config.escalation_timeout,
            },
            start_day: clock.start_wall.to_zoned(time_zone.clone()).date(),
            clock,
            time_zone,
            routes: config.routes.clone().into_iter().collect(),
            connector: connector.to_string(),
            deltas: Deltas::new(config.max_groups_per_rule * 10, started),
            dropped_series: metrics::counter!(
                "lookout_threshold_dropped_metric_points_total",
                "connector" => connector.to_string(),
            ),
        })
    }

    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    fn now(&self, instant: Instant) -> Now {
        let wall = self.clock.wall(instant);
        let today = wall.to_zoned(self.time_zone.clone()).date();
        let day = self
            .start_day
            .until(today)
            .map_or(0, |span| span.get_days().max(0) as u64);
        Now {
            instant,
            elapsed: instant.duration_since(self.clock.start),
            wall: OffsetDateTime::from_unix_timestamp_nanos(wall.as_nanosecond())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            day,
        }
    }

    /// Aggregates a payload's spans into every rule.
    pub fn ingest(&mut self, resources: &[ResourceSpans], instant: Instant) {
        let now = self.now(instant);
        let slots: Vec<u64> = self.rules.iter().map(|r| r.slot(&now)).collect();
        for resource in resources {
            let service = service_name(resource);
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                let view = SpanView::of(span, service);
                for (rule, slot) in self.rules.iter_mut().zip(&slots) {
                    rule.add(&view, *slot, now.day);
                }
            }
        }
    }

    /// Aggregates a payload's GenAI client metrics into the rules that
    /// read metrics.
    pub fn ingest_metrics(&mut self, resources: &[ResourceMetrics], instant: Instant) {
        let now = self.now(instant);
        let (points, dropped) = self.deltas.views(resources);
        self.dropped_series.increment(dropped as u64);
        for rule in &mut self.rules {
            let slot = rule.slot(&now);
            for point in &points {
                rule.add_point(point, slot, now.day);
            }
        }
    }

    /// Evaluates every rule and returns the notifications due now.
    pub fn evaluate(&mut self, instant: Instant) -> Vec<Alert> {
        let now = self.now(instant);
        let mut alerts = Vec::new();
        for rule in &mut self.rules {
            alerts.extend(rule.evaluate(&now, &self.timing));
            metrics::gauge!(
                "lookout_threshold_firing_alerts",
                "connector" => self.connector.clone(),
                "rule" => rule.name.clone(),
            )
            .set(rule.firing_count() as f64);
        }
        for alert in &mut alerts {
            alert.receivers = self.receivers_of(alert);
            metrics::counter!(
                "lookout_threshold_notifications_total",
                "connector" => self.connector.clone(),
                "rule" => alert.rule.clone(),
                "severity" => alert.severity.as_str(),
                "status" => alert.status.as_str(),
            )
            .increment(1);
            log_notification(alert);
        }
        alerts
    }

    /// The exporters that `routes` names for the alert's routes.
    fn receivers_of(&self, alert: &Alert) -> Vec<String> {
        let mut receivers: Vec<String> = self
            .routes
            .iter()
            .filter(|(severity, _)| alert.routes.contains(severity))
            .flat_map(|(_, exporters)| exporters.iter().cloned())
            .collect();
        receivers.sort();
        receivers.dedup();
        receivers
    }
}

fn service_name(resource: &ResourceSpans) -> Option<&str> {
    string_attribute(&resource.resource.as_ref()?.attributes, "service.name")
}

fn log_notification(alert: &Alert) {
    let group = alert.group_text();
    match alert.status {
        AlertStatus::Firing => tracing::warn!(
            rule = %alert.rule,
            severity = %alert.severity,
            group = %group,
            reason = ?alert.reason,
            summary = %alert.summary,
            "alert firing"
        ),
        AlertStatus::Resolved => {
            tracing::info!(rule = %alert.rule, group = %group, "alert resolved")
        }
    }
}

/// The exporter end: aggregates spans. It never fails, so the exporter
/// helper never retries it. The lock is tokio's: the helper's consumers
/// that wait for it yield their worker thread instead of sleeping on it.
struct SpanIntake {
    evaluator: Arc<Mutex<Evaluator>>,
}

#[async_trait]
impl Exporter for SpanIntake {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let mut evaluator = self.evaluator.lock().await;
        match payload {
            Payload::Traces(resources) => evaluator.ingest(resources, Instant::now()),
            Payload::Metrics(resources) => evaluator.ingest_metrics(resources, Instant::now()),
            Payload::Logs(_) | Payload::Alerts(_) => {}
        }
        Ok(())
    }
}

/// The receiver end: evaluates on a timer and pushes notifications into
/// the alerts pipelines.
struct AlertSource {
    evaluator: Arc<Mutex<Evaluator>>,
    interval: Duration,
}

#[async_trait]
impl Receiver for AlertSource {
    async fn start(self: Box<Self>, ctx: ReceiverContext) -> anyhow::Result<ServeFuture> {
        let Some(consumer) = ctx.consumers.get(Signal::Alerts).cloned() else {
            anyhow::bail!("connector {} starts no alerts pipeline", ctx.id);
        };
        ctx.health.ok();
        Ok(Box::pin(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut outbox = Vec::new();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = ctx.shutdown.cancelled() => break,
                }
                outbox.extend(self.evaluator.lock().await.evaluate(Instant::now()));
                deliver(&consumer, &mut outbox, &ctx.id);
            }
            deliver(&consumer, &mut outbox, &ctx.id);
            Ok(())
        }))
    }
}

/// Hands the notifications to the alerts pipelines; when they are full,
/// keeps them for the next tick rather than lose them.
fn deliver(consumer: &Consumer, outbox: &mut Vec<Alert>, connector: &ComponentId) {
    if outbox.is_empty() {
        return;
    }
    let alerts = std::mem::take(outbox);
    match consumer.try_send(Payload::Alerts(alerts.clone())) {
        Ok(()) => {}
        Err(Refused::Full) => {
            tracing::warn!(connector = %connector, alerts = alerts.len(), "alerts pipeline full; retrying at the next evaluation");
            *outbox = alerts;
        }
        Err(Refused::Closed) => {
            tracing::error!(connector = %connector, alerts = alerts.len(), "alerts pipeline closed; notifications dropped");
        }
    }
}
