//! What the notification exporters (`slack`, `email`, `webhook`) share:
//! routing by severity, and how an HTTP answer becomes an export outcome.

pub mod email;
pub mod slack;
pub mod webhook;

use lookout_pipelines::alert::{Alert, AlertSeverity, AlertStatus};
use lookout_pipelines::component::{parse_config, split_keys};
use lookout_pipelines::{BuildError, ExportError};
use serde::Deserialize;
use serde_yaml::Value;

use crate::otlp::http::retry_after;

/// The keys every notification exporter takes, flattened into its config:
///
/// ```yaml
/// severities: [critical]   # the routes it serves (default: both)
/// send_resolved: true      # also say when an alert is over (default: true)
/// ```
///
/// Unlike Alertmanager, whose Slack and email receivers default to
/// `send_resolved: false`, every channel here hears the resolution by
/// default: operators asked to hear when it is over, on the same channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default = "both_severities")]
    pub severities: Vec<AlertSeverity>,
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

fn both_severities() -> Vec<AlertSeverity> {
    vec![AlertSeverity::Warning, AlertSeverity::Critical]
}

fn yes() -> bool {
    true
}

const ROUTING_KEYS: [&str; 2] = ["severities", "send_resolved"];

impl Routing {
    /// Takes the routing keys out of an exporter's raw config, as the
    /// exporter helper takes its own, and returns the rest.
    pub fn split_from(raw: Value) -> Result<(Routing, Value), BuildError> {
        let (routing, own) = split_keys(raw, &ROUTING_KEYS)?;
        let routing: Routing = parse_config(routing)?;
        if routing.severities.is_empty() {
            return Err(BuildError::at(
                &["severities"],
                "list at least one of warning, critical",
            ));
        }
        Ok((routing, own))
    }

    /// The alerts of a payload that this exporter delivers.
    pub fn select<'a>(&self, exporter: &str, alerts: &'a [Alert]) -> Vec<&'a Alert> {
        alerts
            .iter()
            .filter(|alert| alert.status == AlertStatus::Firing || self.send_resolved)
            .filter(|alert| alert.is_routed_to(exporter, &self.severities))
            .collect()
    }
}

/// Parses an endpoint of a notification exporter. The URL may hold a
/// secret (Slack's does), so the error never echoes it.
pub fn endpoint_url(key: &str, text: &str) -> Result<reqwest::Url, BuildError> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| BuildError::at(&[key], "not an http(s) URL"))
}

/// The HTTP client of a notification exporter: the helper's timeout per
/// attempt, and headers marked sensitive.
pub fn http_client(
    timeout: std::time::Duration,
    headers: http::HeaderMap,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()
        .map_err(|err| BuildError::new(format!("cannot build an HTTP client: {err}")))
}

/// POSTs a JSON body. A 2xx is delivered; 429, 5xx and timeouts are
/// retried (honouring Retry-After); anything else will not get better.
pub async fn post_json(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &serde_json::Value,
) -> Result<(), ExportError> {
    let sent = client
        .post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let response = sent.map_err(|err| {
        // reqwest's error names the URL, which for Slack is the secret.
        ExportError::transient(format!("request failed: {}", err.without_url()))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let reason = format!("server answered {status}: {}", clip(body.trim(), 200));
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(ExportError::Transient {
            reason,
            retry_after,
        })
    } else {
        Err(ExportError::permanent(reason))
    }
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// One line per fact of an alert, shared by the email and Slack layouts.
pub fn facts(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Status", alert.status.as_str().to_string()),
        ("Severity", alert.severity.as_str().to_string()),
        (
            "Incident class",
            format!(
                "{} ({})",
                alert.incident_class.as_str(),
                alert.incident_class.response_time()
            ),
        ),
        ("Rule", alert.rule.clone()),
        (
            "Observed",
            format!(
                "{} {} {}",
                alert.observed, alert.comparison, alert.threshold
            ),
        ),
        ("Window", alert.window.clone()),
    ];
    if !alert.group_labels.is_empty() {
        facts.push(("Group", alert.group_text()));
    }
    facts.push((
        "Started",
        alert
            .starts_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    ));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_follows_severities_receivers_and_send_resolved() {
        let routing = |yaml: &str| -> Routing { serde_yaml::from_str(yaml).unwrap() };
        let mut alert = Alert::example();
        let alerts = std::slice::from_ref(&alert);
        assert_eq!(routing("{}").select("slack", alerts).len(), 1);
        assert!(
            routing("severities: [warning]")
                .select("slack", alerts)
                .is_empty()
        );
        alert.status = AlertStatus::Resolved;
        let alerts = std::slice::from_ref(&alert);
        assert!(
            routing("send_resolved: false")
                .select("slack", alerts)
                .is_empty()
        );
        alert.receivers = vec!["email".into()];
        let alerts = std::slice::from_ref(&alert);
        assert!(routing("{}").select("slack", alerts).is_empty());
        assert_eq!(routing("{}").select("email", alerts).len(), 1);
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 6), "héllo…");
    }
}
