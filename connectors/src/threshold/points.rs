//! The OTel GenAI client metrics as rule input: each data point of
//! `gen_ai.client.operation.duration` (seconds) is that many model calls,
//! failed when it has `error.type`; each of `gen_ai.client.token.usage`
//! is that many tokens. Cumulative points (the SDKs' default) become the
//! increase since the series' previous point, delta points are taken as
//! they are. A series' first cumulative point counts whole when the series
//! started after the connector did (as the collector's cumulativetodelta
//! processor does with `initial_value: auto`); one that started before is
//! only a baseline, since its calls were made before Lookout was there.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, ResourceMetrics,
};

use super::config::Label;
use super::sample::{Labels, string_attribute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Duration,
    TokenUsage,
}

impl Family {
    fn of(name: &str) -> Option<Family> {
        match name {
            "gen_ai.client.operation.duration" => Some(Family::Duration),
            "gen_ai.client.token.usage" => Some(Family::TokenUsage),
            _ => None,
        }
    }
}

/// One data point's increase, as the rules see it.
pub struct PointView<'a> {
    pub family: Family,
    pub labels: Labels<'a>,
    pub failed: bool,
    pub count: u64,
    /// Seconds or tokens.
    pub sum: f64,
    pub max: Option<f64>,
    pub bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
}

/// The last cumulative point of each series.
struct Last {
    start: u64,
    count: u64,
    sum: f64,
    bucket_counts: Vec<u64>,
}

/// Cumulative-to-delta state, bounded: beyond `max_series` new series
/// are dropped (and counted by the caller).
pub struct Deltas {
    last: HashMap<u64, Last>,
    max_series: usize,
    /// When the connector started, in Unix nanoseconds.
    started: u64,
}

impl Deltas {
    pub fn new(max_series: usize, started: u64) -> Deltas {
        Deltas {
            last: HashMap::new(),
            max_series,
            started,
        }
    }

    /// Every usable point of a payload, with its resource's service name.
    pub fn views<'a>(&mut self, resources: &'a [ResourceMetrics]) -> (Vec<PointView<'a>>, usize) {
        let mut views = Vec::new();
        let mut dropped = 0;
        for resource in resources {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"));
            for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let Some((family, points, temporality)) = histogram(metric) else {
                    continue;
                };
                let cumulative = temporality == AggregationTemporality::Cumulative as i32;
                for point in points {
                    match self.view(family, point, service, cumulative, &metric.name) {
                        Ok(Some(view)) => views.push(view),
                        Ok(None) => {}
                        Err(()) => dropped += 1,
                    }
                }
            }
        }
        (views, dropped)
    }

    fn view<'a>(
        &mut self,
        family: Family,
        point: &'a HistogramDataPoint,
        service: Option<&'a str>,
        cumulative: bool,
        name: &str,
    ) -> Result<Option<PointView<'a>>, ()> {
        let attributes = &point.attributes[..];
        let mut labels: Labels<'a> = [None; Label::COUNT];
        labels[Label::Agent as usize] = string_attribute(attributes, "gen_ai.agent.name");
        labels[Label::Model as usize] = string_attribute(attributes, "gen_ai.response.model")
            .or_else(|| string_attribute(attributes, "gen_ai.request.model"));
        labels[Label::Provider as usize] = string_attribute(attributes, "gen_ai.provider.name")
            .or_else(|| string_attribute(attributes, "gen_ai.system"));
        labels[Label::Service as usize] = service;
        labels[Label::Operation as usize] = string_attribute(attributes, "gen_ai.operation.name");
        let failed = attributes.iter().any(|kv| kv.key == "error.type");
        let sum = point
            .sum
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        let (count, sum, bucket_counts) = if cumulative {
            let key = series_key(name, service, attributes);
            match self.increase(key, point, sum)? {
                Some(increase) => increase,
                None => return Ok(None),
            }
        } else {
            (point.count, sum, point.bucket_counts.clone())
        };
        if count == 0 {
            return Ok(None);
        }
        Ok(Some(PointView {
            family,
            labels,
            failed,
            count,
            sum,
            max: if cumulative { None } else { point.max },
            bounds: point.explicit_bounds.clone(),
            bucket_counts,
        }))
    }

    /// The increase since the series' last point. For its first point: all
    /// of it if the series started after the connector, else `None`. A
    /// lower count or a new start time is a restart: the point is all new.
    fn increase(
        &mut self,
        key: u64,
        point: &HistogramDataPoint,
        sum: f64,
    ) -> Result<Option<(u64, f64, Vec<u64>)>, ()> {
        let current = Last {
            start: point.start_time_unix_nano,
            count: point.count,
            sum,
            bucket_counts: point.bucket_counts.clone(),
        };
        let Some(last) = self.last.get_mut(&key) else {
            if self.last.len() >= self.max_series {
                return Err(());
            }
            let whole = (current.start >= self.started)
                .then(|| (current.count, current.sum, current.bucket_counts.clone()));
            self.last.insert(key, current);
            return Ok(whole);
        };
        let restarted = current.start != last.start
            || current.count < last.count
            || current.bucket_counts.len() != last.bucket_counts.len();
        let increase = if restarted {
            (current.count, current.sum, current.bucket_counts.clone())
        } else {
            let buckets = current
                .bucket_counts
                .iter()
                .zip(&last.bucket_counts)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect();
            (
                current.count - last.count,
                (current.sum - last.sum).max(0.0),
                buckets,
            )
        };
        *last = current;
        Ok(Some(increase))
    }
}

fn histogram(metric: &Metric) -> Option<(Family, &[HistogramDataPoint], i32)> {
    let family = Family::of(&metric.name)?;
    match &metric.data {
        Some(Data::Histogram(h)) => Some((family, &h.data_points, h.aggregation_temporality)),
        _ => None,
    }
}

/// A series: the metric, the service and the point's attributes, in the
/// order the SDK sends them (stable for one SDK).
fn series_key(name: &str, service: Option<&str>, attributes: &[KeyValue]) -> u64 {
    let mut hash = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(name, &mut hash);
    std::hash::Hash::hash(&service, &mut hash);
    for kv in attributes {
        std::hash::Hash::hash(&kv.key, &mut hash);
        std::hash::Hash::hash(&format!("{:?}", kv.value), &mut hash);
    }
    std::hash::Hasher::finish(&hash)
}
