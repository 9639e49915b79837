//! Decoding OTLP requests into payloads, and the checks both transports share.

use lookout_pipelines::{Payload, Signal, codec};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

pub fn decode_protobuf(signal: Signal, body: &[u8]) -> Result<Payload, String> {
    codec::decode_protobuf(signal, body)
        .map_err(|err| format!("malformed protobuf: {}", one_line(&err.to_string())))
}

pub fn decode_json(signal: Signal, body: &[u8]) -> Result<Payload, String> {
    codec::decode_json(signal, body)
        .map_err(|err| format!("malformed JSON: {}", one_line(&err.to_string())))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Items removed from a request, reported as an OTLP partial success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub count: usize,
    pub message: String,
}

/// Removes spans whose ids cannot identify them: a trace id that is not 16
/// bytes or is all zero, a span id that is not 8 bytes or is all zero, a
/// parent span id of the wrong length. Downstream stages key traces by
/// these ids, so such spans are refused here, where the client hears of it.
pub fn reject_invalid(payload: &mut Payload) -> Rejected {
    let Payload::Traces(resources) = payload else {
        return Rejected::default();
    };
    let mut count = 0;
    for scope in resources.iter_mut().flat_map(|r| r.scope_spans.iter_mut()) {
        let before = scope.spans.len();
        scope.spans.retain(|span| {
            valid_id(&span.trace_id, 16)
                && valid_id(&span.span_id, 8)
                && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8)
        });
        count += before - scope.spans.len();
    }
    if count == 0 {
        return Rejected::default();
    }
    Rejected {
        count,
        message: format!(
            "{count} span(s) rejected: trace_id must be 16 bytes and span_id 8 bytes, neither all zero"
        ),
    }
}

/// The OTLP responses, with a partial success only when something was
/// rejected.
impl Rejected {
    fn partial(self) -> Option<(i64, String)> {
        (self.count > 0).then_some((self.count as i64, self.message))
    }

    pub fn into_trace_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self.partial().map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
    }

    pub fn into_metrics_response(self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: self.partial().map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }
    }

    pub fn into_logs_response(self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: self.partial().map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }
    }
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
        Span {
            trace_id,
            span_id,
            ..Default::default()
        }
    }

    #[test]
    fn rejects_spans_with_unusable_ids_and_keeps_the_rest() {
        let mut payload = Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(vec![1; 16], vec![2; 8]),
                    span(vec![0; 16], vec![2; 8]),
                    span(vec![1; 15], vec![2; 8]),
                    span(vec![1; 16], vec![]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let rejected = reject_invalid(&mut payload);
        assert_eq!(rejected.count, 3);
        assert_eq!(payload.item_count(), 1);
    }

    #[test]
    fn accepts_an_empty_json_request() {
        assert_eq!(decode_json(Signal::Logs, b"{}").unwrap().item_count(), 0);
    }

    #[test]
    fn json_uses_hex_ids_and_string_integers() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"x","startTimeUnixNano":"1544712660000000000","kind":2}]}]}]}"#;
        let Payload::Traces(resources) = decode_json(Signal::Traces, body).unwrap() else {
            panic!("expected traces")
        };
        let span = &resources[0].scope_spans[0].spans[0];
        assert_eq!(
            span.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.kind, 2);
    }

    #[test]
    fn malformed_bodies_give_one_line_reasons() {
        let err = decode_protobuf(Signal::Traces, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.starts_with("malformed protobuf"));
        assert!(!err.contains('\n'));
        let err = decode_json(Signal::Traces, b"{\n\"resourceSpans\": 3}").unwrap_err();
        assert!(err.starts_with("malformed JSON") && !err.contains('\n'));
    }
}
