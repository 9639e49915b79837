//! Reading and writing span attributes, shared by the processors.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// Sets `key` to `value`: at `known` if the caller found it, else wherever
/// it is, else at the end.
pub fn set_attribute(
    attributes: &mut Vec<KeyValue>,
    known: Option<usize>,
    key: &str,
    value: Value,
) {
    match known.or_else(|| attributes.iter().position(|a| a.key == key)) {
        Some(index) => attributes[index].value = Some(AnyValue { value: Some(value) }),
        None => push_attribute(attributes, key, value),
    }
}

/// Appends `key` = `value`, for a caller that knows the key is absent.
pub fn push_attribute(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    attributes.push(KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    });
}

/// The value of an attribute, if it has one.
pub fn value_of(attribute: &KeyValue) -> Option<&Value> {
    attribute.value.as_ref()?.value.as_ref()
}

/// A non-empty string value.
pub fn text(value: &Value) -> Option<&str> {
    match value {
        Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A token count: ints, doubles from some SDKs, strings from JSON-minded
/// ones; never negative.
pub fn count(value: &Value) -> Option<i64> {
    match value {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.is_finite() => Some(d.round() as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

/// A finite, non-negative amount, such as a cost in USD.
pub fn amount(value: &Value) -> Option<f64> {
    match value {
        Value::DoubleValue(d) => Some(*d),
        Value::IntValue(i) => Some(*i as f64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
}
