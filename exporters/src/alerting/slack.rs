//! The `slack` exporter: one Block Kit message per alert, posted to an
//! incoming webhook.
//!
//! ```yaml
//! exporters:
//!   slack/oncall:
//!     webhook_url: ${env:ALERT_SLACK_WEBHOOK}   # a secret: never logged
//!     severities: [critical]                    # default: both
//!     send_resolved: true                       # default
//! ```
//!
//! The message is a header (the status, severity, class and rule), a
//! section with the summary and the facts as mrkdwn fields, and a context
//! line with example trace ids and the runbook. Text is escaped (`&`, `<`,
//! `>`) and cut to Block Kit's limits. A 429 is retried after Slack's
//! Retry-After; a 4xx other than 429 is not retried.

use async_trait::async_trait;
use lookout_pipelines::alert::{Alert, AlertStatus};
use lookout_pipelines::component::parse_config;
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Routing, clip, endpoint_url, facts, http_client, post_json};

/// Block Kit's limits.
const HEADER_MAX: usize = 150;
const SECTION_TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_MAX: usize = 10;
const FALLBACK_MAX: usize = 3000;

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "slack",
        signals: &[Signal::Alerts],
        build: |id: &ComponentId, raw, helper: &ExporterHelperConfig| {
            let (routing, own) = Routing::split_from(raw)?;
            let config: SlackConfig = parse_config(own)?;
            Ok(Box::new(SlackExporter::new(id, config, routing, helper)?))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub webhook_url: String,
}

pub struct SlackExporter {
    id: String,
    url: reqwest::Url,
    routing: Routing,
    client: reqwest::Client,
}

impl SlackExporter {
    pub fn new(
        id: &ComponentId,
        config: SlackConfig,
        routing: Routing,
        helper: &ExporterHelperConfig,
    ) -> Result<SlackExporter, BuildError> {
        let url = endpoint_url("webhook_url", &config.webhook_url)?;
        let client = http_client(helper.timeout, http::HeaderMap::new())?;
        Ok(SlackExporter {
            id: id.to_string(),
            url,
            routing,
            client,
        })
    }
}

#[async_trait]
impl Exporter for SlackExporter {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let Payload::Alerts(alerts) = payload else {
            return Ok(());
        };
        // One message per alert. A retry after a partial failure re-sends
        // the ones already posted: Slack offers no idempotency key.
        for alert in self.routing.select(&self.id, alerts) {
            post_json(&self.client, &self.url, &message(alert)).await?;
        }
        Ok(())
    }
}

/// Slack's mrkdwn escaping: these three only.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Block Kit message for one alert.
pub fn message(alert: &Alert) -> Json {
    let emoji = match alert.status {
        AlertStatus::Resolved => ":white_check_mark:",
        AlertStatus::Firing => match alert.severity {
            lookout_pipelines::alert::AlertSeverity::Critical => ":rotating_light:",
            lookout_pipelines::alert::AlertSeverity::Warning => ":warning:",
        },
    };
    let title = alert.title();
    let fields: Vec<Json> = facts(alert)
        .into_iter()
        .take(FIELDS_MAX)
        .map(|(name, value)| {
            json!({"type": "mrkdwn", "text": clip(&format!("*{name}*\n{}", escape(&value)), FIELD_MAX)})
        })
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&title, HEADER_MAX), "emoji": true}}),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(&format!("{emoji} {}", escape(&alert.summary)), SECTION_TEXT_MAX)},
            "fields": fields,
        }),
    ];
    let mut context = Vec::new();
    if !alert.example_trace_ids.is_empty() {
        let ids: Vec<String> = alert
            .example_trace_ids
            .iter()
            .map(|id| format!("`{}`", escape(id)))
            .collect();
        context.push(json!({"type": "mrkdwn", "text": clip(&format!("Example traces: {}", ids.join(", ")), SECTION_TEXT_MAX)}));
    }
    if let Some(url) = &alert.runbook_url {
        // A link's URL cannot hold `|` or `>`; such a URL is shown as text.
        let link = if url.contains(['|', '>', '<']) {
            format!("Runbook: {}", escape(url))
        } else {
            format!("<{url}|Runbook>")
        };
        context.push(json!({"type": "mrkdwn", "text": clip(&link, SECTION_TEXT_MAX)}));
    }
    context.push(
        json!({"type": "mrkdwn", "text": format!("fingerprint `{}`", escape(&alert.fingerprint))}),
    );
    blocks.push(json!({"type": "context", "elements": context}));
    json!({
        "text": clip(&format!("{title}: {}", alert.summary), FALLBACK_MAX),
        "blocks": blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_message_is_block_kit_within_its_limits() {
        let mut alert = Alert::example();
        alert.summary = format!("<b>&{}", "x".repeat(5000));
        alert.runbook_url = Some("https://runbooks.example.com/agent_error_rate".into());
        let message = message(&alert);
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        let section = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;b&gt;&amp;"));
        assert!(section.chars().count() <= SECTION_TEXT_MAX);
        assert!(blocks[1]["fields"].as_array().unwrap().len() <= FIELDS_MAX);
        let context = blocks[2]["elements"].as_array().unwrap();
        assert!(
            context[0]["text"]
                .as_str()
                .unwrap()
                .contains("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            context[1]["text"],
            "<https://runbooks.example.com/agent_error_rate|Runbook>"
        );
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .starts_with("[FIRING] critical P2")
        );
    }

    #[tokio::test]
    async fn a_429_is_retried_after_slacks_retry_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "7")],
                            "rate_limited",
                        )
                    } else {
                        (StatusCode::OK, [("retry-after", "0")], "ok")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let id = ComponentId::parse("slack").unwrap();
        let config = SlackConfig {
            webhook_url: format!("http://{addr}/hook"),
        };
        let routing = Routing::split_from(serde_yaml::Value::Null).unwrap().0;
        let exporter =
            SlackExporter::new(&id, config, routing, &ExporterHelperConfig::default()).unwrap();
        let payload = Payload::Alerts(vec![Alert::example()]);
        let err = exporter.export(&payload).await.unwrap_err();
        assert_eq!(
            err,
            ExportError::Transient {
                reason: "server answered 429 Too Many Requests: rate_limited".into(),
                retry_after: Some(std::time::Duration::from_secs(7)),
            }
        );
        exporter.export(&payload).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_bad_url_is_reported_without_echoing_it() {
        let id = ComponentId::parse("slack").unwrap();
        let routing = Routing::split_from(serde_yaml::Value::Null).unwrap().0;
        let config = SlackConfig {
            webhook_url: "hooks.slack.com/services/T000/B000/SECRET".into(),
        };
        let err = SlackExporter::new(&id, config, routing, &ExporterHelperConfig::default())
            .err()
            .unwrap();
        assert!(!err.message.contains("SECRET"));
        assert_eq!(err.path, vec!["webhook_url"]);
    }
}
