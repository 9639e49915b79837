//! Stand-ins for the services alerts go to that the tests cannot reach:
//! Slack incoming webhooks (any path under `/services/`) and an
//! Alertmanager webhook receiver (`/alertmanager`). Each checks the
//! documented format strictly, answers 400 with the reason when it does
//! not hold, and records what it took.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Default)]
pub struct Received {
    /// `(webhook path, message)` of every Slack message taken.
    pub slack: Vec<(String, Value)>,
    pub alertmanager: Vec<Value>,
    pub rejections: Vec<String>,
}

pub struct AlertReceivers {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Received>>,
}

impl AlertReceivers {
    pub async fn start() -> AlertReceivers {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/services/{*path}", post(slack))
            .route("/alertmanager", post(alertmanager))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        AlertReceivers { addr, received }
    }

    pub fn slack_messages(&self, path: &str) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received
            .slack
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

type Shared = State<Arc<Mutex<Received>>>;

async fn slack(
    State(received): Shared,
    Path(path): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let outcome = serde_json::from_slice::<Value>(&body)
        .map_err(|err| format!("invalid_payload: {err}"))
        .and_then(|message| check_block_kit(&message).map(|()| message));
    let mut received = received.lock().unwrap();
    match outcome {
        Ok(message) => {
            received.slack.push((path, message));
            (StatusCode::OK, "ok".into())
        }
        Err(reason) => {
            received.rejections.push(reason.clone());
            (StatusCode::BAD_REQUEST, reason)
        }
    }
}

async fn alertmanager(State(received): Shared, body: Bytes) -> (StatusCode, String) {
    let outcome = serde_json::from_slice::<Value>(&body)
        .map_err(|err| format!("not JSON: {err}"))
        .and_then(|message| check_alertmanager_v4(&message).map(|()| message));
    let mut received = received.lock().unwrap();
    match outcome {
        Ok(message) => {
            received.alertmanager.push(message);
            (StatusCode::OK, String::new())
        }
        Err(reason) => {
            received.rejections.push(reason.clone());
            (StatusCode::BAD_REQUEST, reason)
        }
    }
}

fn text_of<'a>(object: &'a Value, what: &str, max: usize) -> Result<&'a str, String> {
    let text = object["text"]
        .as_str()
        .ok_or_else(|| format!("invalid_blocks: {what} has no text"))?;
    if text.is_empty() || text.chars().count() > max {
        return Err(format!(
            "invalid_blocks: {what} text must be 1 to {max} characters"
        ));
    }
    Ok(text)
}

/// Slack's mrkdwn: `&`, `<` and `>` only as entities, links and mentions.
fn check_escaped(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>']) {
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix('&') {
            if !["amp;", "lt;", "gt;"].iter().any(|e| after.starts_with(e)) {
                return Err(format!("invalid_blocks: unescaped & in {text:?}"));
            }
            rest = after;
        } else if tail.starts_with('<') {
            let close = tail.find('>').ok_or("invalid_blocks: unclosed <")?;
            let inner = &tail[1..close];
            if !(inner.starts_with("http")
                || inner.starts_with("mailto:")
                || inner.starts_with('!')
                || inner.starts_with('@')
                || inner.starts_with('#'))
            {
                return Err(format!("invalid_blocks: unescaped < in {text:?}"));
            }
            rest = &tail[close + 1..];
        } else {
            return Err(format!("invalid_blocks: unescaped > in {text:?}"));
        }
    }
    Ok(())
}

fn check_block_kit(message: &Value) -> Result<(), String> {
    text_of(message, "the fallback", 40_000)?;
    let blocks = message["blocks"]
        .as_array()
        .ok_or("invalid_blocks: no blocks")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err("invalid_blocks: 1 to 50 blocks".into());
    }
    for block in blocks {
        match block["type"].as_str() {
            Some("header") => {
                if block["text"]["type"] != "plain_text" {
                    return Err("invalid_blocks: a header takes plain_text".into());
                }
                text_of(&block["text"], "header", 150)?;
            }
            Some("section") => {
                if block["text"]["type"] != "mrkdwn" {
                    return Err("invalid_blocks: expected mrkdwn section text".into());
                }
                check_escaped(text_of(&block["text"], "section", 3000)?)?;
                let fields = block["fields"].as_array().map_or(&[][..], |f| f.as_slice());
                if fields.len() > 10 {
                    return Err("invalid_blocks: more than 10 fields".into());
                }
                for field in fields {
                    check_escaped(text_of(field, "field", 2000)?)?;
                }
            }
            Some("context") => {
                let elements = block["elements"]
                    .as_array()
                    .ok_or("invalid_blocks: context without elements")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err("invalid_blocks: 1 to 10 context elements".into());
                }
                for element in elements {
                    check_escaped(text_of(element, "context element", 3000)?)?;
                }
            }
            other => return Err(format!("invalid_blocks: unexpected block {other:?}")),
        }
    }
    Ok(())
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

fn string_map(value: &Value, what: &str) -> Result<(), String> {
    let map = value
        .as_object()
        .ok_or(format!("{what} is not an object"))?;
    if map.values().all(Value::is_string) {
        Ok(())
    } else {
        Err(format!("{what} has a value that is not a string"))
    }
}

fn rfc3339(value: &Value, what: &str) -> Result<OffsetDateTime, String> {
    let text = value.as_str().ok_or(format!("{what} is not a string"))?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|err| format!("{what} {text:?}: {err}"))
}

/// Alertmanager's `notify/webhook.Message`, version 4: exactly its keys,
/// with its types.
fn check_alertmanager_v4(message: &Value) -> Result<(), String> {
    let expected = [
        "alerts",
        "commonAnnotations",
        "commonLabels",
        "externalURL",
        "groupKey",
        "groupLabels",
        "receiver",
        "status",
        "truncatedAlerts",
        "version",
    ];
    if keys(message) != expected {
        return Err(format!("keys {:?}", keys(message)));
    }
    if message["version"] != "4" {
        return Err("version is not \"4\"".into());
    }
    let status = message["status"].as_str().unwrap_or_default();
    if !matches!(status, "firing" | "resolved") {
        return Err(format!("status {status:?}"));
    }
    for key in ["groupKey", "receiver", "externalURL"] {
        if !message[key].is_string() {
            return Err(format!("{key} is not a string"));
        }
    }
    if !message["truncatedAlerts"].is_u64() {
        return Err("truncatedAlerts is not a count".into());
    }
    for key in ["groupLabels", "commonLabels", "commonAnnotations"] {
        string_map(&message[key], key)?;
    }
    let alerts = message["alerts"].as_array().ok_or("alerts is not a list")?;
    if alerts.is_empty() {
        return Err("no alerts".into());
    }
    for alert in alerts {
        let expected = [
            "annotations",
            "endsAt",
            "fingerprint",
            "generatorURL",
            "labels",
            "startsAt",
            "status",
        ];
        if keys(alert) != expected {
            return Err(format!("alert keys {:?}", keys(alert)));
        }
        string_map(&alert["labels"], "labels")?;
        string_map(&alert["annotations"], "annotations")?;
        if alert["labels"]["alertname"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err("an alert without alertname".into());
        }
        let starts = rfc3339(&alert["startsAt"], "startsAt")?;
        let ends = rfc3339(&alert["endsAt"], "endsAt")?;
        match alert["status"].as_str() {
            Some("firing") if ends.year() == 1 => {}
            Some("resolved") if ends >= starts => {}
            other => return Err(format!("alert status {other:?} with endsAt {ends}")),
        }
    }
    Ok(())
}
