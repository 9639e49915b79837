//! OTLP request bodies to and from payloads: protobuf, and the OTLP/JSON
//! encoding (hex ids, lowerCamelCase fields, 64-bit integers as strings)
//! that the collector's file exporter writes and OTLP/HTTP accepts.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::payload::{Payload, Signal};

/// The JSON request bodies. The generated request types insist on their
/// one field, but an empty request (`{}`) is valid OTLP; and borrowing on
/// the way out avoids copying a payload to write it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Traces<R> {
    #[serde(default)]
    resource_spans: R,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metrics<R> {
    #[serde(default)]
    resource_metrics: R,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Logs<R> {
    #[serde(default)]
    resource_logs: R,
}

/// Decodes a protobuf `Export*ServiceRequest`.
pub fn decode_protobuf(signal: Signal, body: &[u8]) -> Result<Payload, prost::DecodeError> {
    Ok(match signal {
        Signal::Traces => Payload::Traces(ExportTraceServiceRequest::decode(body)?.resource_spans),
        Signal::Metrics => {
            Payload::Metrics(ExportMetricsServiceRequest::decode(body)?.resource_metrics)
        }
        Signal::Logs => Payload::Logs(ExportLogsServiceRequest::decode(body)?.resource_logs),
        // No receiver decodes alerts from protobuf; prost offers no other
        // way to make this error.
        #[allow(deprecated)]
        Signal::Alerts => {
            return Err(prost::DecodeError::new(
                "alerts have no protobuf form; they are JSON",
            ));
        }
    })
}

/// Decodes an OTLP/JSON `Export*ServiceRequest`.
pub fn decode_json(signal: Signal, body: &[u8]) -> serde_json::Result<Payload> {
    Ok(match signal {
        Signal::Traces => Payload::Traces(
            serde_json::from_slice::<Traces<Vec<ResourceSpans>>>(body)?.resource_spans,
        ),
        Signal::Metrics => Payload::Metrics(
            serde_json::from_slice::<Metrics<Vec<ResourceMetrics>>>(body)?.resource_metrics,
        ),
        Signal::Logs => {
            Payload::Logs(serde_json::from_slice::<Logs<Vec<ResourceLogs>>>(body)?.resource_logs)
        }
        Signal::Alerts => Payload::Alerts(serde_json::from_slice(body)?),
    })
}

/// Writes a payload as one OTLP/JSON `Export*ServiceRequest`, or alerts
/// as a JSON array.
pub fn encode_json(payload: &Payload, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match payload {
        Payload::Traces(r) => serde_json::to_writer(out, &Traces { resource_spans: r }),
        Payload::Metrics(r) => serde_json::to_writer(
            out,
            &Metrics {
                resource_metrics: r,
            },
        ),
        Payload::Logs(r) => serde_json::to_writer(out, &Logs { resource_logs: r }),
        Payload::Alerts(alerts) => serde_json::to_writer(out, alerts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    #[test]
    fn json_round_trips_with_hex_ids_and_string_times() {
        let span = Span {
            trace_id: vec![0x5b; 16],
            span_id: vec![0xee; 8],
            name: "llm".into(),
            start_time_unix_nano: 1_544_712_660_000_000_000,
            attributes: vec![KeyValue {
                key: "gen_ai.usage.input_tokens".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(42)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let payload = Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let mut json = Vec::new();
        encode_json(&payload, &mut json).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.starts_with(r#"{"resourceSpans":"#), "{text}");
        assert!(text.contains(r#""traceId":"5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b""#));
        assert!(text.contains(r#""startTimeUnixNano":"1544712660000000000""#));
        assert!(text.contains(r#""intValue":"42""#));
        assert_eq!(decode_json(Signal::Traces, &json).unwrap(), payload);
    }

    #[test]
    fn an_empty_json_request_is_valid() {
        assert!(decode_json(Signal::Logs, b"{}").unwrap().is_empty());
    }
}
