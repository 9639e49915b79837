use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::registry::{Kind, Limits, MetricInfo, Registry, Update, Value};
use super::*;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn limits(max_series: usize) -> Limits {
    Limits {
        max_series_per_metric: max_series,
        max_metrics: 10,
        expiration: Duration::from_secs(60),
    }
}

fn service(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![s("service.name", name)],
        ..Default::default()
    })
}

fn llm_span(model: &str, agent: &str, cost: f64) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: format!("chat {model}"),
        start_time_unix_nano: 0,
        end_time_unix_nano: 1_500_000_000,
        attributes: vec![
            s("lookout.genai.kind", "chat"),
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.response.model", model),
            s("gen_ai.agent.name", agent),
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(100)),
            kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(20)),
            kv(
                "gen_ai.usage.cache_read.input_tokens",
                any_value::Value::IntValue(40),
            ),
            kv("gen_ai.usage.cost", any_value::Value::DoubleValue(cost)),
        ],
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: service("support-bot"),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

#[test]
fn llm_spans_become_requests_tokens_cost_and_durations() {
    let mut registry = Registry::new("prometheus", limits(100));
    let now = Instant::now();
    let mut root = Span {
        name: "support".into(),
        end_time_unix_nano: 3_000_000_000,
        ..Default::default()
    };
    root.attributes.push(kv(
        "lookout.trace.cost_usd",
        any_value::Value::DoubleValue(0.003),
    ));
    let mut agent = Span {
        name: "invoke_agent triage".into(),
        parent_span_id: vec![1; 8],
        end_time_unix_nano: 2_000_000_000,
        ..Default::default()
    };
    agent.attributes = vec![
        s("gen_ai.operation.name", "invoke_agent"),
        s("gen_ai.agent.name", "triage"),
    ];
    let spans = vec![
        llm_span("gpt-4o", "triage", 0.001),
        llm_span("gpt-4o", "triage", 0.002),
        agent,
        root,
    ];
    spans::record(&mut registry, &traces(spans), now);
    let text = registry.render(now);
    let labels = r#"agent="triage",model="gpt-4o",operation="chat",provider="openai",service="support-bot",status="ok""#;
    assert!(
        text.contains(&format!("lookout_llm_requests_total{{{labels}}} 2\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lookout_llm_tokens_total{{{labels},type=\"input\"}} 200\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lookout_llm_tokens_total{{{labels},type=\"cache_read\"}} 80\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("lookout_llm_cost_usd_total{{{labels}}} 0.003\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lookout_llm_request_duration_seconds_bucket{{{labels},le=\"2\"}} 2\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lookout_llm_request_duration_seconds_bucket{{{labels},le=\"1\"}} 0\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lookout_llm_request_duration_seconds_count{{{labels}}} 2\n"
        )),
        "{text}"
    );
    assert!(text.contains("lookout_agent_execution_duration_seconds_sum{agent=\"triage\",service=\"support-bot\"} 2\n"), "{text}");
    assert!(
        text.contains(
            "lookout_workflow_cost_usd_sum{service=\"support-bot\",workflow=\"support\"} 0.003\n"
        ),
        "{text}"
    );
    assert!(text.contains("lookout_workflow_duration_seconds_count{service=\"support-bot\",workflow=\"support\"} 1\n"), "{text}");
    assert!(
        text.contains("# TYPE lookout_llm_request_duration_seconds histogram\n"),
        "{text}"
    );
}

#[test]
fn label_sets_beyond_the_cap_go_to_other() {
    let mut registry = Registry::new("prometheus", limits(3));
    let now = Instant::now();
    for i in 0..10 {
        let labels = vec![("model".to_string(), format!("m{i}"))];
        registry
            .update(
                MetricInfo {
                    name: "x_total",
                    help: "x",
                    kind: Kind::Counter,
                    expires: false,
                },
                labels,
                Update::Add(Value::Number(1.0)),
                now,
            )
            .unwrap();
    }
    assert_eq!(registry.series_count("x_total"), 4);
    let text = registry.render(now);
    assert!(text.contains("x_total{model=\"other\"} 7\n"), "{text}");
    let conflict = registry.update(
        MetricInfo {
            name: "x_total",
            help: "x",
            kind: Kind::Gauge,
            expires: false,
        },
        Vec::new(),
        Update::Set(Value::Number(1.0)),
        now,
    );
    assert!(conflict.is_err());
}

#[test]
fn label_values_are_escaped() {
    let mut registry = Registry::new("prometheus", limits(3));
    let now = Instant::now();
    let labels = vec![("model".to_string(), "a\"b\\c\nd".to_string())];
    registry
        .update(
            MetricInfo {
                name: "x_total",
                help: "line\none",
                kind: Kind::Counter,
                expires: false,
            },
            labels,
            Update::Add(Value::Number(1.0)),
            now,
        )
        .unwrap();
    let text = registry.render(now);
    assert!(text.contains(r#"x_total{model="a\"b\\c\nd"} 1"#), "{text}");
    assert!(text.contains("# HELP x_total line\\none\n"), "{text}");
}

fn number_point(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn metrics_payload(metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
    vec![ResourceMetrics {
        resource: service("orchestrator"),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn dropped() -> otlp_metrics::Dropped {
    otlp_metrics::Dropped {
        unsupported: metrics::Counter::noop(),
        conflicting: metrics::Counter::noop(),
    }
}

#[test]
fn otlp_sums_gauges_and_histograms_are_converted() {
    let mut registry = Registry::new("prometheus", limits(100));
    let now = Instant::now();
    let cumulative = AggregationTemporality::Cumulative as i32;
    let delta = AggregationTemporality::Delta as i32;
    let metric = |name: &str, unit: &str, data: Data| Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    };
    let batch = |n: f64| {
        metrics_payload(vec![
            metric(
                "cache.hit_ratio",
                "1",
                Data::Gauge(Gauge {
                    data_points: vec![number_point(0.75, vec![s("cache", "prompt")])],
                }),
            ),
            metric(
                "agent.handoffs",
                "{handoff}",
                Data::Sum(Sum {
                    data_points: vec![number_point(10.0 * n, vec![])],
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
            ),
            metric(
                "queue.delta",
                "",
                Data::Sum(Sum {
                    data_points: vec![number_point(2.0, vec![])],
                    aggregation_temporality: delta,
                    is_monotonic: true,
                }),
            ),
            metric(
                "step.duration",
                "s",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![s("le", "attribute")],
                        explicit_bounds: vec![1.0, 5.0],
                        bucket_counts: vec![1, 2, 3],
                        count: 6,
                        sum: Some(20.0),
                        ..Default::default()
                    }],
                    aggregation_temporality: cumulative,
                }),
            ),
        ])
    };
    otlp_metrics::record(&mut registry, &batch(1.0), &dropped(), now);
    otlp_metrics::record(&mut registry, &batch(2.0), &dropped(), now);
    let text = registry.render(now);
    assert!(
        text.contains("cache_hit_ratio_ratio{cache=\"prompt\",service=\"orchestrator\"} 0.75\n")
            || text.contains("cache_hit_ratio{cache=\"prompt\",service=\"orchestrator\"} 0.75\n"),
        "{text}"
    );
    assert!(
        text.contains("agent_handoffs_total{service=\"orchestrator\"} 20\n"),
        "cumulative sums are set: {text}"
    );
    assert!(
        text.contains("queue_delta_total{service=\"orchestrator\"} 4\n"),
        "delta sums add up: {text}"
    );
    assert!(
        text.contains("step_duration_seconds_bucket{key_le=\"attribute\",service=\"orchestrator\",le=\"5\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("step_duration_seconds_bucket{key_le=\"attribute\",service=\"orchestrator\",le=\"+Inf\"} 6\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "step_duration_seconds_sum{key_le=\"attribute\",service=\"orchestrator\"} 20\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE agent_handoffs_total counter\n"),
        "{text}"
    );
    // Relayed series expire; Lookout's own do not.
    let later = now + Duration::from_secs(61);
    assert_eq!(registry.render(later), "");
}

#[test]
fn the_config_is_checked() {
    let bad = PrometheusConfig {
        endpoint: "nowhere".into(),
        ..Default::default()
    };
    let error = PrometheusExporter::new("prometheus", bad).err().unwrap();
    assert!(error.to_string().contains("not host:port"), "{error}");
}
