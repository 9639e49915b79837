//! The unit of data that flows through a pipeline.
//!
//! A payload is the body of one OTLP export request, kept in the generated
//! protobuf types so that receivers and exporters never convert between
//! models. Every stage of one pipeline carries payloads of a single signal.

use std::fmt;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric::Data};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// The three OTLP signals, and the alerts that connectors emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
    Alerts,
}

impl Signal {
    pub const ALL: [Signal; 4] = [
        Signal::Traces,
        Signal::Metrics,
        Signal::Logs,
        Signal::Alerts,
    ];
    /// What OTLP carries, and so what OTLP receivers and exporters take.
    pub const OTLP: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Alerts => "alerts",
        }
    }

    /// The item a counter of this signal counts, as the collector names it
    /// (`accepted_spans`, `accepted_metric_points`, `accepted_log_records`).
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
            Signal::Alerts => "alerts",
        }
    }

    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.as_str() == text)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of one export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(Vec<ResourceSpans>),
    Metrics(Vec<ResourceMetrics>),
    Logs(Vec<ResourceLogs>),
    /// Notifications, one per alert group.
    Alerts(Vec<Alert>),
}

impl Payload {
    pub fn empty(signal: Signal) -> Payload {
        match signal {
            Signal::Traces => Payload::Traces(Vec::new()),
            Signal::Metrics => Payload::Metrics(Vec::new()),
            Signal::Logs => Payload::Logs(Vec::new()),
            Signal::Alerts => Payload::Alerts(Vec::new()),
        }
    }

    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
            Payload::Alerts(_) => Signal::Alerts,
        }
    }

    /// Spans, metric data points or log records: what the counters count.
    pub fn item_count(&self) -> usize {
        match self {
            Payload::Traces(resources) => resources
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Payload::Metrics(resources) => resources
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| data_point_count(m.data.as_ref()))
                .sum(),
            Payload::Logs(resources) => resources
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
            Payload::Alerts(alerts) => alerts.len(),
        }
    }

    /// The size of the payload encoded as an OTLP protobuf request: a cheap,
    /// honest proxy for the memory it holds.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Traces(r) => r.iter().map(|x| length_delimited(x.encoded_len())).sum(),
            Payload::Metrics(r) => r.iter().map(|x| length_delimited(x.encoded_len())).sum(),
            Payload::Logs(r) => r.iter().map(|x| length_delimited(x.encoded_len())).sum(),
            Payload::Alerts(alerts) => alerts.iter().map(Alert::approximate_size).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Traces(r) => r.is_empty(),
            Payload::Metrics(r) => r.is_empty(),
            Payload::Logs(r) => r.is_empty(),
            Payload::Alerts(alerts) => alerts.is_empty(),
        }
    }

    /// Appends `other` to `self`. Returns `other` back when the signals differ.
    pub fn append(&mut self, other: Payload) -> Result<(), Payload> {
        match (self, other) {
            (Payload::Traces(a), Payload::Traces(b)) => a.extend(b),
            (Payload::Metrics(a), Payload::Metrics(b)) => a.extend(b),
            (Payload::Logs(a), Payload::Logs(b)) => a.extend(b),
            (Payload::Alerts(a), Payload::Alerts(b)) => a.extend(b),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// Encodes the payload as the protobuf `Export*ServiceRequest` of its
    /// signal. Each request has one field, the repeated resources at tag 1,
    /// so encoding them in place avoids copying the payload into a request.
    /// Alerts have no OTLP form; they encode as a JSON array.
    pub fn encode_request(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        match self {
            Payload::Traces(r) => r.iter().for_each(|x| encode_message(x, &mut buf)),
            Payload::Metrics(r) => r.iter().for_each(|x| encode_message(x, &mut buf)),
            Payload::Logs(r) => r.iter().for_each(|x| encode_message(x, &mut buf)),
            Payload::Alerts(alerts) => {
                // Serializing plain data to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, alerts);
            }
        }
        buf
    }
}

fn encode_message<M: Message>(message: &M, buf: &mut Vec<u8>) {
    prost::encoding::message::encode(1, message, buf);
}

fn length_delimited(len: usize) -> usize {
    len + prost::encoding::encoded_len_varint(len as u64) + 1
}

fn data_point_count(data: Option<&Data>) -> usize {
    match data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    fn traces(spans: usize) -> Payload {
        Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); spans],
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        let mut payload = traces(3);
        payload.append(traces(2)).unwrap();
        assert_eq!(payload.item_count(), 5);
    }

    #[test]
    fn append_refuses_another_signal() {
        let mut payload = traces(1);
        assert!(payload.append(Payload::Logs(vec![])).is_err());
    }

    #[test]
    fn encodes_as_the_export_request() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let payload = traces(4);
        let encoded = payload.encode_request();
        assert_eq!(payload.encoded_len(), encoded.len());
        let Payload::Traces(resource_spans) = &payload else {
            unreachable!()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: resource_spans.clone(),
        };
        assert_eq!(encoded, request.encode_to_vec());
    }
}
