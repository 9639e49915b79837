//! The `pii` processor on arbitrary text: as a span name, an attribute, a
//! JSON document inside an attribute, an event, a status message and a
//! log body. It must never panic, must keep valid JSON valid, and must
//! leave a span with nothing detectable exactly as it was.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use lookout_processors::pii::detect::Detector;
use lookout_processors::pii::{PiiConfig, PiiProcessor};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

fn string(text: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(text.to_string())),
    })
}

fn attribute(key: &str, text: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: string(text),
        ..Default::default()
    }
}

thread_local! {
    // Built once: compiling the detectors per input would be most of the
    // fuzzer's time.
    static PROCESSOR: RefCell<PiiProcessor> =
        RefCell::new(PiiProcessor::new(PiiConfig::default()).expect("the default config builds"));
    static DETECTOR: Detector = Detector::all();
}

/// A JSON object or array: a bare number or string is plain text, and is
/// redacted as such.
fn is_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let as_json = serde_json::json!({ "role": "user", "content": text }).to_string();
    let span = Span {
        name: text.to_string(),
        attributes: vec![attribute("text", text), attribute("json", &as_json)],
        events: vec![Event {
            name: "event".into(),
            attributes: vec![attribute("text", text)],
            ..Default::default()
        }],
        status: Some(Status {
            message: text.to_string(),
            code: 2,
        }),
        ..Default::default()
    };
    let mut traces = vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let before = traces.clone();
    PROCESSOR.with_borrow_mut(|processor| processor.sanitize_traces(&mut traces));

    let span = &traces[0].scope_spans[0].spans[0];
    let json = span.attributes.iter().find(|a| a.key == "json");
    if let Some(Value::StringValue(json)) = json.and_then(|a| a.value.as_ref()?.value.as_ref()) {
        assert!(is_json(json), "JSON stayed JSON");
    }
    if is_json(text) {
        if let Some(Value::StringValue(out)) = span
            .attributes
            .iter()
            .find(|a| a.key == "text")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
        {
            assert!(is_json(out), "a JSON attribute stayed JSON");
        }
    }
    let nothing_detectable =
        DETECTOR.with(|detector| detector.detect(text).is_empty() && detector.detect(&as_json).is_empty());
    if nothing_detectable {
        assert_eq!(traces, before, "nothing detectable, nothing changed");
    }

    let mut logs = vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                body: string(text),
                attributes: vec![attribute("text", text)],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }];
    PROCESSOR.with_borrow_mut(|processor| processor.sanitize_logs(&mut logs));
});
