//! OTLP metrics from applications, converted to Prometheus series the way
//! the collector's `prometheus` exporter does: monotonic sums become
//! counters named `…_total`, gauges and non-monotonic sums gauges,
//! histograms and summaries themselves; a unit adds a suffix (`s` →
//! `_seconds`). Data point attributes become labels, with `service` from
//! the resource. Exponential histograms are not converted, and counted.

use std::time::Instant;

use metrics::Counter;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, metric::Data,
    number_data_point,
};

use super::registry::{Kind, Labels, MetricInfo, Registry, Update, Value, label_name, metric_name};

pub struct Dropped {
    pub unsupported: Counter,
    pub conflicting: Counter,
}

pub fn record(
    registry: &mut Registry,
    resources: &[ResourceMetrics],
    dropped: &Dropped,
    now: Instant,
) {
    for resource in resources {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
            record_metric(registry, metric, &service, dropped, now);
        }
    }
}

fn record_metric(
    registry: &mut Registry,
    metric: &Metric,
    service: &str,
    dropped: &Dropped,
    now: Instant,
) {
    let Some(data) = &metric.data else { return };
    let base = with_unit(&metric_name(&metric.name), &metric.unit);
    let help = if metric.description.is_empty() {
        metric.name.as_str()
    } else {
        metric.description.as_str()
    };
    let mut put = |name: &str, kind: Kind, attributes: &[KeyValue], update: Update| {
        let labels = labels(attributes, service);
        if registry
            .update(
                MetricInfo {
                    name,
                    help,
                    kind,
                    expires: true,
                },
                labels,
                update,
                now,
            )
            .is_err()
        {
            dropped.conflicting.increment(1);
        }
    };
    let cumulative = |temporality: i32| temporality != AggregationTemporality::Delta as i32;
    match data {
        Data::Gauge(gauge) => {
            for point in &gauge.data_points {
                put(
                    &base,
                    Kind::Gauge,
                    &point.attributes,
                    Update::Set(Value::Number(value(point))),
                );
            }
        }
        Data::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic {
                // A count of things is not a ratio, whatever its unit says.
                let unit = if metric.unit == "1" {
                    ""
                } else {
                    metric.unit.as_str()
                };
                (
                    total_name(&with_unit(&metric_name(&metric.name), unit)),
                    Kind::Counter,
                )
            } else {
                (base.clone(), Kind::Gauge)
            };
            for point in &sum.data_points {
                let number = Value::Number(value(point));
                let update = if cumulative(sum.aggregation_temporality) {
                    Update::Set(number)
                } else {
                    Update::Add(number)
                };
                put(&name, kind, &point.attributes, update);
            }
        }
        Data::Histogram(histogram) => {
            for point in &histogram.data_points {
                // A point whose counts do not fit its bounds is malformed.
                if point.bucket_counts.len() != point.explicit_bounds.len() + 1 {
                    dropped.unsupported.increment(1);
                    continue;
                }
                let value = Value::Histogram {
                    bounds: point.explicit_bounds.clone(),
                    counts: point.bucket_counts.clone(),
                    sum: point.sum.unwrap_or(0.0),
                };
                let update = if cumulative(histogram.aggregation_temporality) {
                    Update::Set(value)
                } else {
                    Update::Add(value)
                };
                put(&base, Kind::Histogram, &point.attributes, update);
            }
        }
        Data::Summary(summary) => {
            for point in &summary.data_points {
                let value = Value::Summary {
                    quantiles: point
                        .quantile_values
                        .iter()
                        .map(|q| (q.quantile, q.value))
                        .collect(),
                    count: point.count,
                    sum: point.sum,
                };
                put(&base, Kind::Summary, &point.attributes, Update::Set(value));
            }
        }
        Data::ExponentialHistogram(histogram) => {
            dropped
                .unsupported
                .increment(histogram.data_points.len() as u64);
        }
    }
}

fn value(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn labels(attributes: &[KeyValue], service: &str) -> Labels {
    let mut labels: Labels = attributes
        .iter()
        .map(|a| {
            (
                attribute_label(&a.key),
                a.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect();
    if !service.is_empty() && !labels.iter().any(|(name, _)| name == "service") {
        labels.push(("service".into(), service.into()));
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// A label name for an attribute. `le` and `quantile` belong to the
/// histogram and summary samples, and `__` names to Prometheus: an
/// attribute by such a name would make the whole page unreadable.
fn attribute_label(key: &str) -> String {
    let name = label_name(key);
    if name == "le" || name == "quantile" || name.starts_with("__") {
        format!("key_{name}")
    } else {
        name
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn total_name(name: &str) -> String {
    if name.ends_with("_total") {
        name.to_string()
    } else {
        format!("{name}_total")
    }
}

/// The collector's unit suffixes for the common units; `{…}` annotations
/// and unknown units add nothing.
fn with_unit(name: &str, unit: &str) -> String {
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "1" => "ratio",
        _ => return name.to_string(),
    };
    if name.ends_with(suffix) {
        name.to_string()
    } else {
        format!("{name}_{suffix}")
    }
}
