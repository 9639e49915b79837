//! The rules driven on a paused tokio clock: no test sleeps.

use std::time::Duration;

use lookout_pipelines::alert::{
    Alert, AlertSeverity, AlertStatus, IncidentClass, NotificationReason,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, status::StatusCode,
};
use tokio::time::{Instant, advance};

use super::*;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

/// A span under construction.
#[derive(Clone)]
struct SpanSpec {
    attributes: Vec<KeyValue>,
    failed: bool,
    duration_ms: u64,
    root: bool,
    trace: u8,
}

fn agent(name: &str) -> SpanSpec {
    SpanSpec {
        attributes: vec![
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.agent.name", name),
        ],
        failed: false,
        duration_ms: 100,
        root: false,
        trace: 1,
    }
}

fn llm_call(model: &str, cost: f64, tokens: f64) -> SpanSpec {
    SpanSpec {
        attributes: vec![
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", "openai"),
            string("gen_ai.request.model", model),
            double("gen_ai.usage.cost", cost),
            double("gen_ai.usage.input_tokens", tokens / 2.0),
            double("gen_ai.usage.output_tokens", tokens / 2.0),
        ],
        failed: false,
        duration_ms: 300,
        root: false,
        trace: 2,
    }
}

impl SpanSpec {
    fn failed(mut self) -> SpanSpec {
        self.failed = true;
        self
    }
    fn lasting(mut self, ms: u64) -> SpanSpec {
        self.duration_ms = ms;
        self
    }
    fn root_costing(mut self, usd: f64) -> SpanSpec {
        self.root = true;
        self.attributes.push(double("lookout.trace.cost_usd", usd));
        self
    }
    fn build(&self) -> Span {
        Span {
            trace_id: vec![self.trace; 16],
            span_id: vec![7; 8],
            parent_span_id: if self.root { vec![] } else { vec![9; 8] },
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + self.duration_ms * 1_000_000,
            attributes: self.attributes.clone(),
            status: self.failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }
}

fn payload(spans: impl IntoIterator<Item = SpanSpec>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string("service.name", "insighthub")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: spans.into_iter().map(|s| s.build()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn repeat(spec: SpanSpec, n: usize) -> Vec<SpanSpec> {
    vec![spec; n]
}

fn config(yaml: &str) -> ThresholdConfig {
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    parse_config(raw).unwrap()
}

/// Only the rules given, no group_wait, no escalation unless set.
fn evaluator(rules_yaml: &str, extra: &str) -> Evaluator {
    let escalation = if extra.contains("escalation_timeout") {
        ""
    } else {
        "escalation_timeout: 0s\n"
    };
    let yaml =
        format!("default_rules: false\ngroup_wait: 0s\n{escalation}{extra}\nrules:\n{rules_yaml}");
    Evaluator::new(
        "threshold",
        &config(&yaml),
        Clock::starting_at("2026-11-21T12:00:00Z".parse().unwrap()),
    )
    .unwrap()
}

fn firing(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .collect()
}

const ERROR_RATE: &str = "
  - name: agent_error_rate
    metric: error_rate
    group_by: [agent]
    window: 5m
    warning: 0.05
    critical: 0.15
    min_samples: 20
";

#[tokio::test(start_paused = true)]
async fn error_rate_fires_per_agent_and_only_for_the_failing_one() {
    let mut evaluator = evaluator(ERROR_RATE, "");
    let mut spans = repeat(agent("qualifier"), 40);
    spans.extend(repeat(agent("qualifier").failed(), 10));
    spans.extend(repeat(agent("closer"), 50));
    evaluator.ingest(&payload(spans), Instant::now());
    let alerts = evaluator.evaluate(Instant::now());
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.severity, AlertSeverity::Critical);
    assert_eq!(alert.group_labels["agent"], "qualifier");
    assert_eq!(alert.incident_class, IncidentClass::P2);
    assert!((alert.observed - 0.2).abs() < 1e-9);
    assert_eq!(alert.threshold, 0.15);
    assert_eq!(
        alert.example_trace_ids,
        vec!["01010101010101010101010101010101"]
    );
    assert!(alert.summary.contains("20.0%"), "{}", alert.summary);
    // Still firing: nothing new before repeat_interval.
    advance(Duration::from_secs(60)).await;
    assert!(evaluator.evaluate(Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn min_samples_holds_back_a_small_window() {
    let mut evaluator = evaluator(ERROR_RATE, "");
    let mut spans = repeat(agent("qualifier"), 15);
    spans.extend(repeat(agent("qualifier").failed(), 4));
    evaluator.ingest(&payload(spans), Instant::now());
    assert!(evaluator.evaluate(Instant::now()).is_empty());
    evaluator.ingest(&payload([agent("qualifier")]), Instant::now());
    assert_eq!(evaluator.evaluate(Instant::now()).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn resolves_once_after_the_window_clears_and_repeats_on_schedule() {
    let mut evaluator = evaluator(ERROR_RATE, "repeat_interval: 10m");
    let failing = || {
        let mut spans = repeat(agent("qualifier"), 16);
        spans.extend(repeat(agent("qualifier").failed(), 4));
        payload(spans)
    };
    evaluator.ingest(&failing(), Instant::now());
    assert_eq!(firing(&evaluator.evaluate(Instant::now())).len(), 1);
    // Keep failing for 12 minutes: one repeat at 10 minutes, no more.
    let mut sent = Vec::new();
    for _ in 0..24 {
        advance(Duration::from_secs(30)).await;
        evaluator.ingest(&failing(), Instant::now());
        sent.extend(evaluator.evaluate(Instant::now()));
    }
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].reason, NotificationReason::Repeat);
    // Errors stop; healthy traffic continues. Once the failures leave the
    // window, exactly one resolved notification.
    let mut sent = Vec::new();
    for _ in 0..12 {
        advance(Duration::from_secs(30)).await;
        evaluator.ingest(&payload(repeat(agent("qualifier"), 20)), Instant::now());
        sent.extend(evaluator.evaluate(Instant::now()));
    }
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].status, AlertStatus::Resolved);
    assert!(sent[0].ends_at.is_some());
    assert_eq!(sent[0].routes, vec![AlertSeverity::Critical]);
}

#[tokio::test(start_paused = true)]
async fn for_delays_firing_and_group_wait_delays_the_first_notification() {
    let rules = "
  - name: slow_agents
    metric: latency_avg
    group_by: [agent]
    window: 1m
    warning: 500
    for: 2m
";
    let mut evaluator = evaluator(rules, "");
    evaluator.timing.group_wait = Duration::from_secs(30);
    let mut sent = Vec::new();
    let mut elapsed = Duration::ZERO;
    while sent.is_empty() && elapsed < Duration::from_secs(600) {
        evaluator.ingest(&payload([agent("planner").lasting(800)]), Instant::now());
        sent.extend(evaluator.evaluate(Instant::now()));
        advance(Duration::from_secs(10)).await;
        elapsed += Duration::from_secs(10);
    }
    // Pending for 2 minutes, then 30 s of group_wait.
    assert_eq!(elapsed, Duration::from_secs(160));
    assert_eq!(sent[0].severity, AlertSeverity::Warning);
    // An alert that clears within group_wait sends nothing at all.
    let mut evaluator = evaluator_with_wait(rules, Duration::from_secs(30));
    for _ in 0..13 {
        evaluator.ingest(&payload([agent("planner").lasting(800)]), Instant::now());
        assert!(evaluator.evaluate(Instant::now()).is_empty());
        advance(Duration::from_secs(10)).await;
    }
    // Pending 2 minutes, firing 10 s; then fast again.
    for _ in 0..20 {
        evaluator.ingest(
            &payload(repeat(agent("planner").lasting(10), 50)),
            Instant::now(),
        );
        assert!(evaluator.evaluate(Instant::now()).is_empty());
        advance(Duration::from_secs(10)).await;
    }
}

fn evaluator_with_wait(rules: &str, wait: Duration) -> Evaluator {
    let mut evaluator = evaluator(rules, "");
    evaluator.timing.group_wait = wait;
    evaluator
}

#[tokio::test(start_paused = true)]
async fn a_warning_left_firing_escalates_to_the_critical_route_once() {
    let rules = "
  - name: agent_error_rate
    metric: error_rate
    group_by: [agent]
    window: 5m
    warning: 0.05
    critical: 0.15
";
    let mut evaluator = evaluator(
        rules,
        "escalation_timeout: 300s\nroutes:\n  critical: [slack/oncall]\n  warning: [slack/monitoring]",
    );
    let warning_level = || {
        let mut spans = repeat(agent("qualifier"), 18);
        spans.extend(repeat(agent("qualifier").failed(), 2));
        payload(spans)
    };
    let mut sent = Vec::new();
    for _ in 0..25 {
        evaluator.ingest(&warning_level(), Instant::now());
        sent.extend(evaluator.evaluate(Instant::now()));
        advance(Duration::from_secs(15)).await;
    }
    let reasons: Vec<_> = sent
        .iter()
        .map(|a| (a.reason, a.routes.clone(), a.receivers.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                NotificationReason::Firing,
                vec![AlertSeverity::Warning],
                vec!["slack/monitoring".to_string()]
            ),
            (
                NotificationReason::Escalation,
                vec![AlertSeverity::Critical],
                vec!["slack/oncall".to_string()]
            ),
        ]
    );
    assert_eq!(sent[1].severity, AlertSeverity::Warning);
    // The resolution reaches both routes.
    advance(Duration::from_secs(600)).await;
    let resolved = evaluator.evaluate(Instant::now());
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        resolved[0].routes,
        vec![AlertSeverity::Warning, AlertSeverity::Critical]
    );
    assert_eq!(
        resolved[0].receivers,
        vec!["slack/monitoring", "slack/oncall"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_raised_severity_is_sent_at_once() {
    let mut evaluator = evaluator(
        ERROR_RATE
            .replace("min_samples: 20", "min_samples: 1")
            .as_str(),
        "",
    );
    let mut spans = repeat(agent("qualifier"), 90);
    spans.extend(repeat(agent("qualifier").failed(), 10));
    evaluator.ingest(&payload(spans), Instant::now());
    assert_eq!(
        evaluator.evaluate(Instant::now())[0].severity,
        AlertSeverity::Warning
    );
    advance(Duration::from_secs(15)).await;
    evaluator.ingest(
        &payload(repeat(agent("qualifier").failed(), 30)),
        Instant::now(),
    );
    let raised = evaluator.evaluate(Instant::now());
    assert_eq!(raised[0].reason, NotificationReason::SeverityRaised);
    assert_eq!(raised[0].severity, AlertSeverity::Critical);
    // 40 of 130 failed: over 25%, a P1.
    assert_eq!(raised[0].incident_class, IncidentClass::P1);
}

/// One notification's severity and observed value for a rule fed once.
fn fire_once(rules: &str, extra: &str, spans: Vec<SpanSpec>) -> Vec<(AlertSeverity, f64)> {
    let mut evaluator = evaluator(rules, extra);
    evaluator.ingest(&payload(spans), Instant::now());
    evaluator
        .evaluate(Instant::now())
        .iter()
        .map(|a| (a.severity, (a.observed * 1000.0).round() / 1000.0))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn each_metric_measures_what_it_says() {
    let latency =
        "  - {name: p95, metric: latency_p95, window: 5m, warning: 500, critical: 1000}\n";
    let mut spans = repeat(agent("a").lasting(100), 90);
    spans.extend(repeat(agent("a").lasting(1500), 10));
    let fired = fire_once(latency, "", spans);
    assert_eq!(fired[0].0, AlertSeverity::Critical);
    assert!((fired[0].1 - 1500.0).abs() < 15.0, "{fired:?}");

    let avg = "  - {name: avg, metric: latency_avg, window: 5m, warning: 500}\n";
    assert!(fire_once(avg, "", repeat(agent("a").lasting(400), 10)).is_empty());

    // $3 in a 10-minute window is $18 an hour.
    let cost = "  - {name: c, metric: cost_per_hour, window: 10m, warning: 10, critical: 25}\n";
    assert_eq!(
        fire_once(cost, "", repeat(llm_call("gpt-4o", 0.3, 100.0), 10)),
        vec![(AlertSeverity::Warning, 18.0)]
    );

    let tokens =
        "  - {name: t, metric: tokens_per_hour, window: 1h, warning: 100000, critical: 500000}\n";
    assert_eq!(
        fire_once(tokens, "", repeat(llm_call("gpt-4o", 0.0, 6000.0), 100)),
        vec![(AlertSeverity::Critical, 600_000.0)]
    );

    let per_call = "  - {name: call, metric: cost_per_call, window: 5m, warning: 0.10}\n";
    let calls = vec![
        agent("workflow").root_costing(0.02),
        agent("workflow").root_costing(0.12),
        llm_call("gpt-4o", 0.5, 10.0), // not a root: not a call
    ];
    assert_eq!(
        fire_once(per_call, "", calls),
        vec![(AlertSeverity::Warning, 0.12)]
    );

    let quota = "  - {name: q, metric: api_quota_used, window: 1m, quota: 100, warning: 0.8, critical: 0.95, group_by: [provider]}\n";
    assert_eq!(
        fire_once(quota, "", repeat(llm_call("gpt-4o", 0.0, 1.0), 90)),
        vec![(AlertSeverity::Warning, 0.9)]
    );

    let count =
        "  - {name: n, metric: request_count, window: 1m, warning: 5, filters: {model: gpt-4o}}\n";
    let mut spans = repeat(llm_call("gpt-4o", 0.0, 1.0), 6);
    spans.extend(repeat(llm_call("gpt-4o-mini", 0.0, 1.0), 50));
    assert_eq!(
        fire_once(count, "", spans),
        vec![(AlertSeverity::Warning, 6.0)]
    );

    let below = "  - {name: idle, metric: request_count, window: 1m, comparison: '<', warning: 10, critical: 2}\n";
    assert_eq!(
        fire_once(below, "", repeat(llm_call("gpt-4o", 0.0, 1.0), 5)),
        vec![(AlertSeverity::Warning, 5.0)]
    );
}

#[tokio::test(start_paused = true)]
async fn cost_spike_compares_the_window_to_its_baseline() {
    let rules =
        "  - {name: spike, metric: cost_spike, window: 1m, warning: 2.0, baseline_windows: 6}\n";
    let mut evaluator = evaluator(rules, "");
    let mut sent = Vec::new();
    // Six minutes at $1 a minute build the baseline: no alert.
    for _ in 0..72 {
        evaluator.ingest(
            &payload(repeat(llm_call("gpt-4o", 0.1, 1.0), 2)),
            Instant::now(),
        );
        sent.extend(evaluator.evaluate(Instant::now()));
        advance(Duration::from_secs(5)).await;
    }
    assert!(sent.is_empty(), "{sent:#?}");
    // Then $3 a minute.
    for _ in 0..12 {
        evaluator.ingest(
            &payload(repeat(llm_call("gpt-4o", 0.1, 1.0), 6)),
            Instant::now(),
        );
        sent.extend(evaluator.evaluate(Instant::now()));
        advance(Duration::from_secs(5)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].observed > 2.0, "{}", sent[0].observed);
    assert!(sent[0].summary.contains("x the baseline"));
}

#[tokio::test(start_paused = true)]
async fn the_daily_budget_resets_at_midnight_in_its_time_zone() {
    let yaml =
        "default_rules: true\ngroup_wait: 0s\ndaily_budget_usd: 10\ntime_zone: America/New_York\n";
    // 23:50 in New York.
    let clock = Clock::starting_at("2026-11-22T04:50:00Z".parse().unwrap());
    let mut evaluator = Evaluator::new("threshold", &config(yaml), clock).unwrap();
    assert!(evaluator.rule_names().contains(&"daily_budget"));
    evaluator.ingest(
        &payload(repeat(llm_call("gpt-4o", 0.5, 1.0), 17)),
        Instant::now(),
    );
    let sent = evaluator.evaluate(Instant::now());
    let budget: Vec<_> = sent.iter().filter(|a| a.rule == "daily_budget").collect();
    assert_eq!(budget.len(), 1);
    assert_eq!(budget[0].severity, AlertSeverity::Warning);
    assert!((budget[0].observed - 0.85).abs() < 1e-9);
    // Past midnight the day's spend starts again from zero.
    advance(Duration::from_secs(11 * 60)).await;
    evaluator.ingest(
        &payload(repeat(llm_call("gpt-4o", 0.5, 1.0), 2)),
        Instant::now(),
    );
    let sent = evaluator.evaluate(Instant::now());
    let budget: Vec<_> = sent.iter().filter(|a| a.rule == "daily_budget").collect();
    assert_eq!(budget.len(), 1);
    assert_eq!(budget[0].status, AlertStatus::Resolved);
}

#[test]
fn the_default_rules_are_the_design_documents_values() {
    let rules = default_rules(&ThresholdConfig::default());
    let levels = |name: &str| {
        let rule = rules.iter().find(|r| r.name == name).unwrap();
        (rule.warning, rule.critical)
    };
    assert_eq!(levels("agent_error_rate"), (Some(0.05), Some(0.15)));
    assert_eq!(levels("agent_latency"), (Some(500.0), Some(1000.0)));
    assert_eq!(levels("workflow_latency"), (Some(2000.0), None));
    assert_eq!(levels("cost_per_hour"), (Some(10.0), Some(25.0)));
    assert_eq!(
        levels("tokens_per_hour"),
        (Some(100_000.0), Some(500_000.0))
    );
    assert_eq!(levels("cost_per_call"), (Some(0.10), None));
    assert_eq!(levels("cost_spike"), (Some(2.0), None));
    assert!(
        rules
            .iter()
            .all(|r| r.name != "daily_budget" && r.name != "api_quota")
    );
    let configured = ThresholdConfig {
        daily_budget_usd: Some(50.0),
        api_quota_per_minute: Some(500.0),
        ..ThresholdConfig::default()
    };
    let rules = default_rules(&configured);
    let budget = rules.iter().find(|r| r.name == "daily_budget").unwrap();
    assert_eq!((budget.warning, budget.critical), (Some(0.8), Some(1.0)));
    let quota = rules.iter().find(|r| r.name == "api_quota").unwrap();
    assert_eq!((quota.warning, quota.critical), (Some(0.80), Some(0.95)));
}

#[test]
fn bad_rules_are_config_errors_at_their_key() {
    let check = |yaml: &str| {
        let raw: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        match parse_config::<ThresholdConfig>(raw) {
            Ok(config) => Evaluator::new("t", &config, Clock::starting_now()).err(),
            Err(err) => Some(err),
        }
        .map(|err| (err.path.join("."), err.message))
    };
    let (path, message) =
        check("rules:\n  - {name: x, metric: error_rate, warning: 0.2, critical: 0.1}\n").unwrap();
    assert_eq!(path, "rules.[0].critical");
    assert!(message.contains("beyond warning"), "{message}");
    let (path, _) = check("rules:\n  - {name: x, metric: errors, warning: 1}\n").unwrap();
    assert!(path.starts_with("rules"), "{path}");
    let (path, _) = check("time_zone: Mars/Olympus\n").unwrap();
    assert_eq!(path, "time_zone");
    let (path, _) = check("rules:\n  - {name: q, metric: api_quota_used, warning: 0.8}\n").unwrap();
    assert_eq!(path, "rules.[0].quota");
    assert!(
        check("rules:\n  - {name: x, metric: error_rate, warning: 0.1, colour: red}\n").is_some()
    );
    assert!(check("{}").is_none());
    // ALERT_ESCALATION_TIMEOUT is in seconds.
    let raw: serde_yaml::Value = serde_yaml::from_str("escalation_timeout: 300").unwrap();
    let config: ThresholdConfig = parse_config(raw).unwrap();
    assert_eq!(config.escalation_timeout, Duration::from_secs(300));
}

mod metrics_input {
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, metric::Data,
    };

    use super::*;

    /// One histogram point of `name`, cumulative unless `delta`.
    fn point(
        name: &str,
        attributes: Vec<KeyValue>,
        count: u64,
        sum: f64,
        buckets: (Vec<f64>, Vec<u64>),
        delta: bool,
    ) -> Vec<ResourceMetrics> {
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        };
        vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string("service.name", "insighthub")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            attributes,
                            start_time_unix_nano: 1,
                            count,
                            sum: Some(sum),
                            explicit_bounds: buckets.0,
                            bucket_counts: buckets.1,
                            ..Default::default()
                        }],
                        aggregation_temporality: temporality as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn model(name: &str) -> Vec<KeyValue> {
        vec![
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.request.model", name),
        ]
    }

    fn failed(name: &str) -> Vec<KeyValue> {
        let mut attributes = model(name);
        attributes.push(string("error.type", "timeout"));
        attributes
    }

    const DURATION: &str = "gen_ai.client.operation.duration";

    #[tokio::test(start_paused = true)]
    async fn cumulative_duration_points_count_calls_errors_and_latency() {
        let rules = "
  - {name: errors, metric: error_rate, source: metrics, group_by: [model], window: 1m, warning: 0.05, critical: 0.15}
  - {name: p95, metric: latency_p95, source: metrics, window: 1m, warning: 500}
  - {name: spans_only, metric: error_rate, window: 1m, warning: 0.01}
";
        let mut evaluator = evaluator(rules, "");
        let none = (vec![], vec![]);
        let buckets = |counts: Vec<u64>| (vec![0.1, 0.5, 1.0], counts);
        // First points: the calls before Lookout saw the series, not counted.
        evaluator.ingest_metrics(
            &point(
                DURATION,
                model("gpt-4o"),
                1000,
                100.0,
                buckets(vec![1000, 0, 0, 0]),
                false,
            ),
            Instant::now(),
        );
        evaluator.ingest_metrics(
            &point(DURATION, failed("gpt-4o"), 50, 5.0, none.clone(), false),
            Instant::now(),
        );
        assert!(evaluator.evaluate(Instant::now()).is_empty());
        // Then 80 more calls, 20 more failures: 20% of 100.
        advance(Duration::from_secs(10)).await;
        evaluator.ingest_metrics(
            &point(
                DURATION,
                model("gpt-4o"),
                1080,
                150.0,
                buckets(vec![1000, 10, 70, 0]),
                false,
            ),
            Instant::now(),
        );
        evaluator.ingest_metrics(
            &point(DURATION, failed("gpt-4o"), 70, 6.0, none, false),
            Instant::now(),
        );
        let alerts = evaluator.evaluate(Instant::now());
        let errors = alerts.iter().find(|a| a.rule == "errors").unwrap();
        assert_eq!(errors.severity, AlertSeverity::Critical);
        assert!((errors.observed - 0.2).abs() < 1e-9, "{}", errors.observed);
        assert_eq!(errors.group_labels["model"], "gpt-4o");
        assert!(errors.example_trace_ids.is_empty());
        // 70 of the 80 new successful calls took 0.5-1 s: p95 at 750 ms.
        let p95 = alerts.iter().find(|a| a.rule == "p95").unwrap();
        assert!((p95.observed - 750.0).abs() < 10.0, "{}", p95.observed);
        // A spans rule ignores metrics.
        assert!(alerts.iter().all(|a| a.rule != "spans_only"));
        // A restarted process (lower count) counts from zero again.
        advance(Duration::from_secs(10)).await;
        evaluator.ingest_metrics(
            &point(
                DURATION,
                model("gpt-4o"),
                5,
                1.0,
                buckets(vec![5, 0, 0, 0]),
                false,
            ),
            Instant::now(),
        );
        let summary = evaluator.rules[0].summary_for_test(&evaluator.now(Instant::now()));
        assert_eq!(summary, 105);
    }

    #[tokio::test(start_paused = true)]
    async fn delta_token_usage_points_feed_tokens_per_hour() {
        let rules = "  - {name: tokens, metric: tokens_per_hour, source: metrics, window: 1h, warning: 100000}\n";
        let mut evaluator = evaluator(rules, "");
        let input = vec![
            string("gen_ai.token.type", "input"),
            string("gen_ai.request.model", "gpt-4o"),
        ];
        evaluator.ingest_metrics(
            &point(
                "gen_ai.client.token.usage",
                input,
                40,
                150_000.0,
                (vec![], vec![]),
                true,
            ),
            Instant::now(),
        );
        let alerts = evaluator.evaluate(Instant::now());
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].observed, 150_000.0);
    }

    #[test]
    fn cost_rules_cannot_read_metrics() {
        let raw: serde_yaml::Value = serde_yaml::from_str(
            "rules:\n  - {name: c, metric: cost_per_hour, source: metrics, warning: 1}\n",
        )
        .unwrap();
        let config: ThresholdConfig = parse_config(raw).unwrap();
        let err = Evaluator::new("t", &config, Clock::starting_now())
            .err()
            .unwrap();
        assert_eq!(err.path, vec!["rules", "[0]", "source"]);
    }
}

#[test]
fn routes_must_name_exporters_of_the_alerts_pipelines() {
    let raw = || -> serde_yaml::Value {
        serde_yaml::from_str("routes:\n  critical: [slack/oncall]\n  warning: [slack/monitoring]\n")
            .unwrap()
    };
    let id = ComponentId::parse("threshold").unwrap();
    let downstream = |ids: &[&str]| lookout_pipelines::ConnectorContext {
        downstream_exporters: ids.iter().map(|i| ComponentId::parse(i).unwrap()).collect(),
    };
    let err = (factory().build)(&id, raw(), &downstream(&["slack/oncall", "debug"]))
        .err()
        .unwrap();
    assert_eq!(err.path, vec!["routes", "warning"]);
    assert!(
        err.message.contains("`slack/monitoring`"),
        "{}",
        err.message
    );
    assert!(
        (factory().build)(
            &id,
            raw(),
            &downstream(&["slack/oncall", "slack/monitoring"])
        )
        .is_ok()
    );
}
