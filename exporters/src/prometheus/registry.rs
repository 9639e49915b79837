//! The product metrics held for scraping, rendered in the Prometheus text
//! format.
//!
//! Written by hand rather than on the `metrics` crate: OTLP histograms
//! arrive already bucketed and cumulative sums arrive as totals, which a
//! recorder of observations cannot take; and the cardinality cap needs
//! to see a series before it exists.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::{Duration, Instant};

use metrics::{Counter, counter};

/// Sorted `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    /// Bucket bounds, per-bucket (not cumulative) counts with one more
    /// than the bounds for +Inf, sum.
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        count: u64,
        sum: f64,
    },
}

struct Series {
    value: Value,
    updated: Instant,
}

struct Family {
    help: String,
    kind: Kind,
    /// Series not updated for `Limits::expiration` are dropped (metrics
    /// relayed from applications; Lookout's own never expire).
    expires: bool,
    series: HashMap<Labels, Series>,
    overflow: Counter,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_series_per_metric: usize,
    pub max_metrics: usize,
    pub expiration: Duration,
}

/// Why an update was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The name exists with another type.
    TypeConflict,
    TooManyMetrics,
}

pub struct Registry {
    exporter: String,
    limits: Limits,
    families: BTreeMap<String, Family>,
}

/// The family a sample belongs to, created on first use.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: Kind,
    /// Relayed from applications: series expire when not updated.
    pub expires: bool,
}

/// How an update changes a series.
pub enum Update {
    /// Adds to a counter or gauge, or adds a histogram's counts and sum.
    Add(Value),
    /// Replaces the value: cumulative OTLP data.
    Set(Value),
}

impl Registry {
    pub fn new(exporter: &str, limits: Limits) -> Registry {
        Registry {
            exporter: exporter.to_string(),
            limits,
            families: BTreeMap::new(),
        }
    }

    pub fn update(
        &mut self,
        metric: MetricInfo,
        labels: Labels,
        update: Update,
        now: Instant,
    ) -> Result<(), Refused> {
        let MetricInfo {
            name,
            help,
            kind,
            expires,
        } = metric;
        if !self.families.contains_key(name) && self.families.len() >= self.limits.max_metrics {
            return Err(Refused::TooManyMetrics);
        }
        let exporter = &self.exporter;
        let family = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                help: help.to_string(),
                kind,
                expires,
                series: HashMap::new(),
                overflow: counter!(
                    "lookout_prometheus_series_overflow_total",
                    "exporter" => exporter.clone(),
                    "metric" => name.to_string()
                ),
            });
        if family.kind != kind {
            return Err(Refused::TypeConflict);
        }
        let labels = if family.series.contains_key(&labels)
            || family.series.len() < self.limits.max_series_per_metric
        {
            labels
        } else {
            family.overflow.increment(1);
            labels
                .into_iter()
                .map(|(name, _)| (name, "other".to_string()))
                .collect()
        };
        match family.series.get_mut(&labels) {
            Some(series) => {
                series.value = apply(&series.value, update);
                series.updated = now;
            }
            None => {
                let value = match update {
                    Update::Add(value) | Update::Set(value) => value,
                };
                family.series.insert(
                    labels,
                    Series {
                        value,
                        updated: now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Drops expired series, then renders everything.
    pub fn render(&mut self, now: Instant) -> String {
        let expiration = self.limits.expiration;
        for family in self.families.values_mut().filter(|f| f.expires) {
            family
                .series
                .retain(|_, series| now.duration_since(series.updated) < expiration);
        }
        self.families.retain(|_, family| !family.series.is_empty());
        let mut text = String::new();
        for (name, family) in &self.families {
            render_family(&mut text, name, family);
        }
        text
    }

    #[cfg(test)]
    pub fn series_count(&self, name: &str) -> usize {
        self.families.get(name).map_or(0, |f| f.series.len())
    }
}

fn apply(current: &Value, update: Update) -> Value {
    match update {
        Update::Set(value) => value,
        Update::Add(delta) => match (current, delta) {
            (Value::Number(a), Value::Number(b)) => Value::Number(a + b),
            (
                Value::Histogram {
                    bounds,
                    counts,
                    sum,
                },
                Value::Histogram {
                    bounds: new_bounds,
                    counts: new_counts,
                    sum: new_sum,
                },
            ) if *bounds == new_bounds && counts.len() == new_counts.len() => Value::Histogram {
                bounds: new_bounds,
                counts: counts.iter().zip(&new_counts).map(|(a, b)| a + b).collect(),
                sum: sum + new_sum,
            },
            // Bounds changed: the newest data wins rather than mixing.
            (_, delta) => delta,
        },
    }
}

fn render_family(text: &mut String, name: &str, family: &Family) {
    let _ = writeln!(text, "# HELP {name} {}", escape_help(&family.help));
    let _ = writeln!(text, "# TYPE {name} {}", family.kind.as_str());
    let mut series: Vec<_> = family.series.iter().collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    for (labels, series) in series {
        match &series.value {
            Value::Number(value) => sample(text, name, "", labels, None, *value),
            Value::Histogram {
                bounds,
                counts,
                sum,
            } => {
                let mut cumulative = 0;
                for (i, count) in counts.iter().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
                    sample(
                        text,
                        name,
                        "_bucket",
                        labels,
                        Some(("le", &le)),
                        cumulative as f64,
                    );
                }
                sample(text, name, "_sum", labels, None, *sum);
                sample(text, name, "_count", labels, None, cumulative as f64);
            }
            Value::Summary {
                quantiles,
                count,
                sum,
            } => {
                for (quantile, value) in quantiles {
                    let q = number(*quantile);
                    sample(text, name, "", labels, Some(("quantile", &q)), *value);
                }
                sample(text, name, "_sum", labels, None, *sum);
                sample(text, name, "_count", labels, None, *count as f64);
            }
        }
    }
}

fn sample(
    text: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    text.push_str(name);
    text.push_str(suffix);
    let pairs = labels
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra);
    let mut first = true;
    for (label, label_value) in pairs {
        text.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(text, "{label}=\"{}\"", escape_label(label_value));
    }
    if !first {
        text.push('}');
    }
    let _ = writeln!(text, " {}", number(value));
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, others become `_`.
pub fn metric_name(raw: &str) -> String {
    sanitize(raw, true)
}

/// A valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(raw: &str) -> String {
    sanitize(raw, false)
}

fn sanitize(raw: &str, colons: bool) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}
