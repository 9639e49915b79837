//! Reading OTLP attributes, shared by the exporters.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::Value as Json;

/// The value of the first attribute named `key`, if it has one.
pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// The string value of the attribute named `key`, empty ones included.
pub fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A non-empty string attribute: an empty name, model or message says
/// nothing a record should carry.
pub fn non_empty_string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    string(attributes, key).filter(|text| !text.is_empty())
}

/// Lower-case hex, as OTLP/JSON writes trace and span ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// Attributes as a JSON object.
pub fn object(attributes: &[KeyValue]) -> Json {
    object_of(attributes, |_| true)
}

/// The attributes whose key `keep` accepts, as a JSON object.
pub fn object_of(attributes: &[KeyValue], keep: impl Fn(&str) -> bool) -> Json {
    Json::Object(
        attributes
            .iter()
            .filter(|attribute| keep(&attribute.key))
            .filter_map(|attribute| {
                let value = attribute.value.as_ref()?.value.as_ref()?;
                Some((attribute.key.clone(), json_of(value)))
            })
            .collect(),
    )
}

/// An attribute value as JSON; bytes become hex.
pub fn json_of(value: &Value) -> Json {
    match value {
        Value::StringValue(text) => Json::String(text.clone()),
        Value::BoolValue(flag) => Json::Bool(*flag),
        Value::IntValue(n) => Json::from(*n),
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::ArrayValue(array) => Json::Array(array.values.iter().map(any_json).collect()),
        Value::KvlistValue(list) => object(&list.values),
        Value::BytesValue(bytes) => Json::String(hex(bytes)),
        _ => Json::Null,
    }
}

fn any_json(value: &AnyValue) -> Json {
    value.value.as_ref().map_or(Json::Null, json_of)
}
