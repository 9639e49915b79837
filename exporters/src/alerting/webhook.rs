//! The `webhook` exporter: each alert POSTed as Alertmanager's webhook
//! payload (version 4), so that receivers written for Alertmanager
//! (PagerDuty and Opsgenie bridges, chat relays) take it unchanged.
//!
//! ```yaml
//! exporters:
//!   webhook:
//!     url: https://bridge.example.com/alertmanager
//!     headers: {Authorization: "Bearer ${env:BRIDGE_TOKEN}"}
//!     external_url: https://lookout.example.com   # the payload's externalURL
//!     severities: [warning, critical]
//!     send_resolved: true
//! ```
//!
//! The group is the alert's rule and group labels, so each payload holds
//! one alert; `groupKey` is built as Alertmanager builds it for a root
//! route (`{}:{label="value", ...}`), and `endsAt` of a firing alert is
//! Alertmanager's zero time.

use std::collections::BTreeMap;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use lookout_pipelines::alert::{Alert, AlertStatus};
use lookout_pipelines::component::parse_config;
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use time::format_description::well_known::Rfc3339;

use super::{Routing, endpoint_url, http_client, post_json};

/// Alertmanager's `endsAt` while an alert fires: Go's zero time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "webhook",
        signals: &[Signal::Alerts],
        build: |id: &ComponentId, raw, helper: &ExporterHelperConfig| {
            let (routing, own) = Routing::split_from(raw)?;
            let config: WebhookConfig = parse_config(own)?;
            Ok(Box::new(WebhookExporter::new(id, config, routing, helper)?))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub external_url: String,
}

pub struct WebhookExporter {
    id: String,
    url: reqwest::Url,
    external_url: String,
    routing: Routing,
    client: reqwest::Client,
}

impl WebhookExporter {
    pub fn new(
        id: &ComponentId,
        config: WebhookConfig,
        routing: Routing,
        helper: &ExporterHelperConfig,
    ) -> Result<WebhookExporter, BuildError> {
        let url = endpoint_url("url", &config.url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|err| BuildError::at(&["headers", name], err.to_string()))?;
            // The value may be a token: report it without echoing it.
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|_| BuildError::at(&["headers", name], "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let client = http_client(helper.timeout, headers)?;
        Ok(WebhookExporter {
            id: id.to_string(),
            url,
            external_url: config.external_url,
            routing,
            client,
        })
    }
}

#[async_trait]
impl Exporter for WebhookExporter {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let Payload::Alerts(alerts) = payload else {
            return Ok(());
        };
        for alert in self.routing.select(&self.id, alerts) {
            let body = alertmanager_payload(alert, &self.id, &self.external_url);
            post_json(&self.client, &self.url, &body).await?;
        }
        Ok(())
    }
}

fn rfc3339(time: time::OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| ZERO_TIME.to_string())
}

/// `{}:{agent="qualifier", alertname="agent_error_rate"}`.
fn group_key(group_labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = group_labels
        .iter()
        .map(|(k, v)| format!("{k}={}", Json::String(v.clone())))
        .collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

/// Alertmanager's webhook body (`notify/webhook.Message`) for one alert.
pub fn alertmanager_payload(alert: &Alert, receiver: &str, external_url: &str) -> Json {
    let labels = alert.labels();
    let mut group_labels = alert.group_labels.clone();
    group_labels.insert("alertname".into(), alert.rule.clone());
    let mut annotations = BTreeMap::from([
        ("summary".to_string(), alert.summary.clone()),
        ("description".to_string(), alert.title()),
        ("observed_value".to_string(), alert.observed.to_string()),
        ("threshold".to_string(), alert.threshold.to_string()),
        (
            "reason".to_string(),
            json!(alert.reason).as_str().unwrap_or_default().to_string(),
        ),
    ]);
    if let Some(url) = &alert.runbook_url {
        annotations.insert("runbook_url".into(), url.clone());
    }
    if !alert.example_trace_ids.is_empty() {
        annotations.insert(
            "example_trace_ids".into(),
            alert.example_trace_ids.join(","),
        );
    }
    let status = alert.status.as_str();
    let ends_at = match (alert.status, alert.ends_at) {
        (AlertStatus::Resolved, Some(ends_at)) => rfc3339(ends_at),
        _ => ZERO_TIME.to_string(),
    };
    json!({
        "version": "4",
        "groupKey": group_key(&group_labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(alert.starts_at),
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": alert.fingerprint,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_alertmanagers_shape() {
        let body =
            alertmanager_payload(&Alert::example(), "webhook", "https://lookout.example.com");
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(
            body["groupKey"],
            r#"{}:{agent="qualifier", alertname="agent_error_rate"}"#
        );
        assert_eq!(body["commonLabels"]["severity"], "critical");
        assert_eq!(body["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(body["alerts"][0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(body["commonAnnotations"]["reason"], "firing");
        assert_eq!(body["truncatedAlerts"], 0);
    }

    #[test]
    fn a_header_value_is_never_echoed() {
        let config: WebhookConfig = serde_yaml::from_str(
            "url: http://127.0.0.1:1/hook\nheaders: {Authorization: \"Bearer sec\\nret\"}",
        )
        .unwrap();
        let routing = Routing::split_from(serde_yaml::Value::Null).unwrap().0;
        let id = ComponentId::parse("webhook").unwrap();
        let err = WebhookExporter::new(&id, config, routing, &ExporterHelperConfig::default())
            .err()
            .unwrap();
        assert!(!err.message.contains("sec"));
    }
}
