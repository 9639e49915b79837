//! Run inputs and outputs from prompts and completions in whatever
//! convention they arrived: OTel GenAI (message attributes, the details
//! event, the deprecated per-message events), OpenLLMetry (indexed
//! `gen_ai.prompt.N.*`, `traceloop.entity.*`), OpenInference (indexed
//! `llm.*_messages`, `input.value`), OpenLIT (`gen_ai.content.*` events)
//! and LangSmith's own OTel mapping (`gen_ai.prompt` as JSON).
//!
//! Chat messages come out as OpenAI-style `{"messages": [{"role",
//! "content", "tool_calls"}]}`, which LangSmith renders as a chat; other
//! values as the JSON object they were, or `{"input": …}` /
//! `{"output": …}` around text.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value, json};

use crate::attributes::{find, json_of, non_empty_string as string};

/// A span's run inputs and outputs, when it has any.
#[derive(Debug, Default, PartialEq)]
pub struct Io {
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
}

/// Attributes read here that are not content themselves but describe it.
pub const DESCRIBING_KEYS: [&str; 2] = ["input.mime_type", "output.mime_type"];

const INPUT_EVENTS: [(&str, &str); 4] = [
    ("gen_ai.system.message", "system"),
    ("gen_ai.user.message", "user"),
    ("gen_ai.assistant.message", "assistant"),
    ("gen_ai.tool.message", "tool"),
];
const DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";
const CHOICE_EVENT: &str = "gen_ai.choice";
const OPENLIT_PROMPT_EVENT: &str = "gen_ai.content.prompt";
const OPENLIT_COMPLETION_EVENT: &str = "gen_ai.content.completion";

/// Events whose content became inputs or outputs.
pub fn is_content_event(name: &str) -> bool {
    INPUT_EVENTS.iter().any(|(event, _)| *event == name)
        || [
            DETAILS_EVENT,
            CHOICE_EVENT,
            OPENLIT_PROMPT_EVENT,
            OPENLIT_COMPLETION_EVENT,
        ]
        .contains(&name)
}

pub fn read(span: &Span, run_type: &str) -> Io {
    let chat = run_type == "llm";
    Io {
        inputs: inputs(span, chat),
        outputs: outputs(span, chat),
    }
}

fn inputs(span: &Span, chat: bool) -> Option<Value> {
    let attributes = &span.attributes;
    if let Some(messages) = string(attributes, "gen_ai.input.messages") {
        let mut list = system_instructions(attributes);
        list.extend(otel_messages(messages, "user"));
        return Some(chat_messages(list));
    }
    if let Some(list) = indexed_messages(attributes, "gen_ai.prompt.")
        .or_else(|| indexed_messages(attributes, "llm.input_messages."))
        .or_else(|| details_event(span, "gen_ai.input.messages", "user"))
        .or_else(|| per_message_events(span))
    {
        return Some(chat_messages(list));
    }
    if let Some(text) = event_attribute(span, OPENLIT_PROMPT_EVENT, "gen_ai.prompt")
        .or_else(|| string(attributes, "gen_ai.prompt"))
    {
        return Some(text_or_object(text, chat, "user", "input"));
    }
    if let Some(value) = string(attributes, "input.value") {
        return Some(text_or_object(value, false, "user", "input"));
    }
    if let Some(value) = string(attributes, "traceloop.entity.input") {
        return Some(unwrap_langchain(value, "inputs", "input"));
    }
    ["gen_ai.tool.call.arguments", "langsmith.inputs"]
        .iter()
        .find_map(|key| string(attributes, key))
        .map(|value| text_or_object(value, false, "user", "input"))
}

fn outputs(span: &Span, chat: bool) -> Option<Value> {
    let attributes = &span.attributes;
    if let Some(messages) = string(attributes, "gen_ai.output.messages") {
        return Some(chat_messages(otel_messages(messages, "assistant")));
    }
    if let Some(list) = indexed_messages(attributes, "gen_ai.completion.")
        .or_else(|| indexed_messages(attributes, "llm.output_messages."))
        .or_else(|| details_event(span, "gen_ai.output.messages", "assistant"))
        .or_else(|| choice_events(span))
    {
        return Some(chat_messages(list));
    }
    if let Some(text) = event_attribute(span, OPENLIT_COMPLETION_EVENT, "gen_ai.completion")
        .or_else(|| string(attributes, "gen_ai.completion"))
    {
        return Some(text_or_object(text, chat, "assistant", "output"));
    }
    if let Some(value) = string(attributes, "output.value") {
        return Some(text_or_object(value, false, "assistant", "output"));
    }
    if let Some(value) = string(attributes, "traceloop.entity.output") {
        return Some(unwrap_langchain(value, "outputs", "output"));
    }
    ["gen_ai.tool.call.result", "langsmith.outputs"]
        .iter()
        .find_map(|key| string(attributes, key))
        .map(|value| text_or_object(value, false, "assistant", "output"))
}

fn chat_messages(list: Vec<Value>) -> Value {
    json!({ "messages": list })
}

/// A JSON object stays as it is. Text becomes one chat message for a
/// chat run, else `{"<field>": text}`; other JSON goes under `field`.
fn text_or_object(text: &str, chat: bool, role: &str, field: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(other) if !chat => json!({ field: other }),
        _ if chat => chat_messages(vec![json!({"role": role, "content": text})]),
        _ => json!({ field: text }),
    }
}

/// OpenLLMetry's LangChain spans wrap values as `{"inputs": {...},
/// "tags": [...], ...}`; the inner value is the run's.
fn unwrap_langchain(text: &str, key: &str, field: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut object)) => match object.remove(key) {
            Some(Value::Object(inner)) => Value::Object(inner),
            Some(other) => json!({ field: other }),
            None => Value::Object(object),
        },
        Ok(other) => json!({ field: other }),
        Err(_) => json!({ field: text }),
    }
}

fn system_instructions(attributes: &[KeyValue]) -> Vec<Value> {
    let Some(text) = string(attributes, "gen_ai.system_instructions") else {
        return Vec::new();
    };
    let content = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(parts)) => parts_text(&parts).unwrap_or_else(|| text.to_string()),
        _ => text.to_string(),
    };
    vec![json!({"role": "system", "content": content})]
}

/// `gen_ai.input.messages` / `gen_ai.output.messages`: a JSON array of
/// `{role, parts: [...], finish_reason?}`; text that is not JSON is one
/// message with `default_role`.
fn otel_messages(text: &str, default_role: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(messages)) => messages.into_iter().map(otel_message).collect(),
        Ok(Value::Object(message)) => vec![otel_message(Value::Object(message))],
        _ => vec![json!({"role": default_role, "content": text})],
    }
}

/// One OTel message (`role` + `parts`) as an OpenAI-style message.
fn otel_message(message: Value) -> Value {
    let Value::Object(mut message) = message else {
        return json!({"role": "user", "content": message});
    };
    let Some(Value::Array(parts)) = message.remove("parts") else {
        return Value::Object(message);
    };
    let mut out = Map::new();
    let role = message.remove("role").unwrap_or_else(|| "user".into());
    out.insert("role".into(), role);
    let mut tool_calls = Vec::new();
    for part in &parts {
        match part.get("type").and_then(Value::as_str) {
            Some("tool_call") => tool_calls.push(json!({
                "id": part.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": part.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": as_text(part.get("arguments")),
                },
            })),
            Some("tool_call_response") => {
                out.insert("role".into(), "tool".into());
                if let Some(id) = part.get("id") {
                    out.insert("tool_call_id".into(), id.clone());
                }
                out.insert("content".into(), as_text(part.get("response")).into());
            }
            _ => {}
        }
    }
    if !out.contains_key("content") {
        let content = parts_text(&parts).map_or(Value::Array(parts), Value::String);
        out.insert("content".into(), content);
    }
    if !tool_calls.is_empty() {
        out.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if let Some(reason) = message.remove("finish_reason") {
        out.insert("finish_reason".into(), reason);
    }
    Value::Object(out)
}

/// The text of a parts list when every part is text.
fn parts_text(parts: &[Value]) -> Option<String> {
    parts
        .iter()
        .map(|part| match part.get("type").and_then(Value::as_str) {
            Some("text") => part.get("content").and_then(Value::as_str),
            _ => None,
        })
        .collect::<Option<Vec<&str>>>()
        .map(|texts| texts.concat())
}

fn as_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `<prefix>N.<path>` attributes as a list of messages: OpenLLMetry's
/// `gen_ai.prompt.0.role` and OpenInference's
/// `llm.input_messages.0.message.role`, tool calls included.
fn indexed_messages(attributes: &[KeyValue], prefix: &str) -> Option<Vec<Value>> {
    let mut tree = Map::new();
    for attribute in attributes {
        let Some(path) = attribute.key.strip_prefix(prefix) else {
            continue;
        };
        let Some(value) = attribute.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        insert_path(&mut tree, path, json_of(value));
    }
    if tree.is_empty() {
        return None;
    }
    let messages = match arrays(Value::Object(tree)) {
        Value::Array(list) => list,
        _ => return None,
    };
    Some(messages.into_iter().map(indexed_message).collect())
}

fn insert_path(tree: &mut Map<String, Value>, path: &str, value: Value) {
    let mut node = tree;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            node.insert(segment.to_string(), value);
            return;
        }
        let child = node
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            // `a.b` and `a.b.c` both present: the longer path loses.
            return;
        }
        let Value::Object(map) = child else { return };
        node = map;
    }
}

/// Objects whose keys are all indexes become arrays, in index order.
fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if indexed {
                let ordered: BTreeMap<usize, Value> = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, arrays(v))))
                    .collect();
                Value::Array(ordered.into_values().collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

/// One indexed message as an OpenAI-style message: OpenInference's
/// `message` and `tool_call` wrappers removed, tool calls in OpenAI form.
fn indexed_message(message: Value) -> Value {
    let mut message = match message {
        Value::Object(mut object) => match object.remove("message") {
            Some(Value::Object(inner)) => inner,
            _ => object,
        },
        other => return json!({"role": "user", "content": other}),
    };
    if let Some(Value::Array(calls)) = message.remove("tool_calls") {
        let calls = calls.into_iter().map(openai_tool_call).collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(message)
}

fn openai_tool_call(call: Value) -> Value {
    let call = match call {
        Value::Object(mut object) => match object.remove("tool_call") {
            Some(Value::Object(inner)) => inner,
            _ => object,
        },
        other => return other,
    };
    if call.contains_key("function") {
        return Value::Object(call);
    }
    json!({
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": call.get("name").cloned().unwrap_or(Value::Null),
            "arguments": as_text(call.get("arguments")),
        },
    })
}

fn details_event(span: &Span, key: &str, role: &str) -> Option<Vec<Value>> {
    event_attribute(span, DETAILS_EVENT, key).map(|text| otel_messages(text, role))
}

fn event_attribute<'a>(span: &'a Span, event: &str, key: &str) -> Option<&'a str> {
    span.events
        .iter()
        .filter(|e| e.name == event)
        .find_map(|e| string(&e.attributes, key))
}

/// The deprecated `gen_ai.{system,user,assistant,tool}.message` events.
fn per_message_events(span: &Span) -> Option<Vec<Value>> {
    let list: Vec<Value> = span
        .events
        .iter()
        .filter_map(|event| {
            let (_, role) = INPUT_EVENTS.iter().find(|(name, _)| *name == event.name)?;
            let role = string(&event.attributes, "role").unwrap_or(role);
            Some(json!({"role": role, "content": event_content(&event.attributes)}))
        })
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The deprecated `gen_ai.choice` events: `message` holds the message,
/// or `content` its text.
fn choice_events(span: &Span) -> Option<Vec<Value>> {
    let list: Vec<Value> = span
        .events
        .iter()
        .filter(|event| event.name == CHOICE_EVENT)
        .map(|event| {
            let mut message = match find(&event.attributes, "message").map(json_of) {
                Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => object,
                    _ => Map::from_iter([("content".to_string(), Value::String(text))]),
                },
                Some(Value::Object(object)) => object,
                _ => Map::from_iter([("content".to_string(), event_content(&event.attributes))]),
            };
            message.entry("role").or_insert_with(|| "assistant".into());
            if let Some(reason) = string(&event.attributes, "finish_reason") {
                message.insert("finish_reason".into(), reason.into());
            }
            Value::Object(message)
        })
        .collect();
    (!list.is_empty()).then_some(list)
}

fn event_content(attributes: &[KeyValue]) -> Value {
    match find(attributes, "content") {
        Some(any_value::Value::StringValue(text)) => Value::String(text.clone()),
        Some(other) => json_of(other),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::span::Event;

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn span(attributes: Vec<KeyValue>) -> Span {
        Span {
            attributes,
            ..Default::default()
        }
    }

    fn messages(value: &Option<Value>) -> Vec<(String, String)> {
        value.as_ref().unwrap()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_string(),
                    m["content"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn pair(role: &str, content: &str) -> (String, String) {
        (role.to_string(), content.to_string())
    }

    #[test]
    fn otel_messages_with_parts_and_system_instructions() {
        let io = read(
            &span(vec![
                text(
                    "gen_ai.system_instructions",
                    r#"[{"type":"text","content":"Be brief."}]"#,
                ),
                text(
                    "gen_ai.input.messages",
                    r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#,
                ),
                text(
                    "gen_ai.output.messages",
                    r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"search","arguments":{"q":"x"}}],"finish_reason":"tool_calls"}]"#,
                ),
            ]),
            "llm",
        );
        assert_eq!(
            messages(&io.inputs),
            [pair("system", "Be brief."), pair("user", "Hi")]
        );
        let output = &io.outputs.unwrap()["messages"][0];
        assert_eq!(output["tool_calls"][0]["function"]["name"], "search");
        assert_eq!(
            output["tool_calls"][0]["function"]["arguments"],
            r#"{"q":"x"}"#
        );
        assert_eq!(output["finish_reason"], "tool_calls");
    }

    #[test]
    fn openllmetry_indexed_prompts_in_index_order() {
        let io = read(
            &span(vec![
                text("gen_ai.prompt.1.role", "user"),
                text("gen_ai.prompt.1.content", "second"),
                text("gen_ai.prompt.0.role", "system"),
                text("gen_ai.prompt.0.content", "first"),
                text("gen_ai.prompt.10.role", "user"),
                text("gen_ai.prompt.10.content", "eleventh"),
                text("gen_ai.completion.0.role", "assistant"),
                text("gen_ai.completion.0.content", "done"),
                text("gen_ai.completion.0.tool_calls.0.name", "lookup"),
                text("gen_ai.completion.0.tool_calls.0.arguments", "{}"),
            ]),
            "llm",
        );
        assert_eq!(
            messages(&io.inputs),
            [
                pair("system", "first"),
                pair("user", "second"),
                pair("user", "eleventh")
            ]
        );
        let output = &io.outputs.unwrap()["messages"][0];
        assert_eq!(output["tool_calls"][0]["function"]["name"], "lookup");
    }

    #[test]
    fn openinference_messages_and_values() {
        let io = read(
            &span(vec![
                text("llm.input_messages.0.message.role", "user"),
                text("llm.input_messages.0.message.content", "Hello"),
                text("llm.output_messages.0.message.role", "assistant"),
                text("llm.output_messages.0.message.content", "Hey"),
                text(
                    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
                    "f",
                ),
            ]),
            "llm",
        );
        assert_eq!(messages(&io.inputs), [pair("user", "Hello")]);
        let output = &io.outputs.unwrap()["messages"][0];
        assert_eq!(output["content"], "Hey");
        assert_eq!(output["tool_calls"][0]["function"]["name"], "f");

        let chain = read(
            &span(vec![
                text("input.value", r#"{"question":"why?"}"#),
                text("output.value", "because"),
            ]),
            "chain",
        );
        assert_eq!(chain.inputs.unwrap(), json!({"question": "why?"}));
        assert_eq!(chain.outputs.unwrap(), json!({"output": "because"}));
    }

    #[test]
    fn traceloop_entities_unwrap_langchain_values() {
        let io = read(
            &span(vec![
                text(
                    "traceloop.entity.input",
                    r#"{"inputs":{"topic":"cats"},"tags":[],"metadata":{}}"#,
                ),
                text("traceloop.entity.output", r#"{"outputs":"meow"}"#),
            ]),
            "chain",
        );
        assert_eq!(io.inputs.unwrap(), json!({"topic": "cats"}));
        assert_eq!(io.outputs.unwrap(), json!({"output": "meow"}));
    }

    #[test]
    fn events_of_openlit_and_the_deprecated_semconv() {
        let mut openlit = span(vec![]);
        openlit.events = vec![
            Event {
                name: "gen_ai.content.prompt".into(),
                attributes: vec![text("gen_ai.prompt", "user: hi")],
                ..Default::default()
            },
            Event {
                name: "gen_ai.content.completion".into(),
                attributes: vec![text("gen_ai.completion", "hello")],
                ..Default::default()
            },
        ];
        let io = read(&openlit, "llm");
        assert_eq!(messages(&io.inputs), [pair("user", "user: hi")]);
        assert_eq!(messages(&io.outputs), [pair("assistant", "hello")]);

        let mut deprecated = span(vec![]);
        deprecated.events = vec![
            Event {
                name: "gen_ai.user.message".into(),
                attributes: vec![text("content", "question")],
                ..Default::default()
            },
            Event {
                name: "gen_ai.choice".into(),
                attributes: vec![
                    text("message", r#"{"content":"answer"}"#),
                    text("finish_reason", "stop"),
                ],
                ..Default::default()
            },
        ];
        let io = read(&deprecated, "llm");
        assert_eq!(messages(&io.inputs), [pair("user", "question")]);
        assert_eq!(messages(&io.outputs), [pair("assistant", "answer")]);
        assert!(is_content_event("gen_ai.choice"));
        assert!(!is_content_event("exception"));
    }

    #[test]
    fn tool_arguments_and_results() {
        let io = read(
            &span(vec![
                text("gen_ai.tool.call.arguments", r#"{"city":"Paris"}"#),
                text("gen_ai.tool.call.result", "18C"),
            ]),
            "tool",
        );
        assert_eq!(io.inputs.unwrap(), json!({"city": "Paris"}));
        assert_eq!(io.outputs.unwrap(), json!({"output": "18C"}));
        assert_eq!(read(&span(vec![]), "chain"), Io::default());
    }
}
