//! The alerts signal: what a connector such as `threshold` emits and what
//! the notification exporters (`slack`, `email`, `webhook`, the stores)
//! deliver.
//!
//! One [`Alert`] is one notification about one alert group: a rule and the
//! values of its `group_by` labels, identified by a fingerprint, as an
//! Alertmanager group with a single alert. The connector owns the
//! lifecycle (pending, firing, repeats, escalation, resolution); exporters
//! only format, route and send.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    Warning,
    Critical,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }
}

impl fmt::Display for AlertSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// The operational procedures' incident classes: P1 critical (immediate),
/// P2 high (30 minutes), P3 medium (2 hours), P4 low (next business day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IncidentClass {
    P1,
    P2,
    P3,
    P4,
}

impl IncidentClass {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentClass::P1 => "P1",
            IncidentClass::P2 => "P2",
            IncidentClass::P3 => "P3",
            IncidentClass::P4 => "P4",
        }
    }

    /// How soon the procedures expect a response.
    pub fn response_time(self) -> &'static str {
        match self {
            IncidentClass::P1 => "immediate (5 minutes)",
            IncidentClass::P2 => "within 30 minutes",
            IncidentClass::P3 => "within 2 hours",
            IncidentClass::P4 => "next business day",
        }
    }
}

/// Why this notification is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationReason {
    /// The group started firing (after `group_wait`).
    Firing,
    /// Its severity went up while firing.
    SeverityRaised,
    /// Still firing after `repeat_interval`.
    Repeat,
    /// A warning still firing after `escalation_timeout`: sent to the
    /// critical route.
    Escalation,
    Resolved,
}

/// One notification about one alert group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub status: AlertStatus,
    pub reason: NotificationReason,
    /// The rule's name: Alertmanager's `alertname`.
    pub rule: String,
    /// The rule's metric, such as `error_rate`.
    pub metric: String,
    pub severity: AlertSeverity,
    /// The severities whose channels get this notification: `[critical]`
    /// for an escalated warning; for a resolution, every route that heard
    /// the alert fire.
    pub routes: Vec<AlertSeverity>,
    pub incident_class: IncidentClass,
    /// The `group_by` labels and their values for this group.
    pub group_labels: BTreeMap<String, String>,
    /// One line with the observed value and the threshold.
    pub summary: String,
    pub observed: f64,
    pub threshold: f64,
    /// `observed` and `threshold` as people read them: `19.8%`, `1250 ms`,
    /// `$12.40/h`.
    pub observed_text: String,
    pub threshold_text: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    /// The window the value was measured over, as text (`5m`).
    pub window: String,
    pub runbook_url: Option<String>,
    /// A few traces that contributed to the value, newest last.
    pub example_trace_ids: Vec<String>,
    /// Rule name and group labels, hashed: stable across restarts.
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    /// Set once resolved.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// When set, only these exporters deliver it (the connector's `routes`);
    /// when empty, every exporter whose severities match does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
}

impl Alert {
    /// Alertmanager's labels: `alertname`, `severity`, `metric`,
    /// `incident_class` and the group labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.group_labels.clone();
        labels.insert("alertname".into(), self.rule.clone());
        labels.insert("severity".into(), self.severity.as_str().into());
        labels.insert("metric".into(), self.metric.clone());
        labels.insert("incident_class".into(), self.incident_class.as_str().into());
        labels
    }

    /// The group labels as `agent=qualifier, model=gpt-4o`, or empty.
    pub fn group_text(&self) -> String {
        self.group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A short title: `[FIRING] critical P2 error_rate (agent=qualifier)`.
    pub fn title(&self) -> String {
        let status = match self.status {
            AlertStatus::Firing if self.reason == NotificationReason::Escalation => "ESCALATED",
            AlertStatus::Firing => "FIRING",
            AlertStatus::Resolved => "RESOLVED",
        };
        let group = self.group_text();
        let group = if group.is_empty() {
            String::new()
        } else {
            format!(" ({group})")
        };
        format!(
            "[{status}] {} {} {}{group}",
            self.severity,
            self.incident_class.as_str(),
            self.rule
        )
    }

    /// Whether an exporter that serves `severities` delivers this alert.
    /// `receivers`, when set by the connector's `routes`, decides instead.
    pub fn is_routed_to(&self, exporter: &str, severities: &[AlertSeverity]) -> bool {
        if self.receivers.is_empty() {
            self.routes.iter().any(|route| severities.contains(route))
        } else {
            self.receivers.iter().any(|receiver| receiver == exporter)
        }
    }

    /// A rough size for queue accounting; alerts are few and small.
    pub fn approximate_size(&self) -> usize {
        256 + self.summary.len()
            + self.rule.len()
            + self
                .example_trace_ids
                .iter()
                .map(String::len)
                .sum::<usize>()
            + self
                .group_labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl Alert {
    /// A firing critical alert, for tests and docs.
    #[doc(hidden)]
    pub fn example() -> Alert {
        Alert {
            status: AlertStatus::Firing,
            reason: NotificationReason::Firing,
            rule: "agent_error_rate".into(),
            metric: "error_rate".into(),
            severity: AlertSeverity::Critical,
            routes: vec![AlertSeverity::Critical],
            incident_class: IncidentClass::P2,
            group_labels: BTreeMap::from([("agent".into(), "qualifier".into())]),
            summary: "error_rate is 20.00% (> 15.00%) over 5m".into(),
            observed: 0.2,
            threshold: 0.15,
            observed_text: "20.0%".into(),
            threshold_text: "15.0%".into(),
            comparison: ">".into(),
            window: "5m".into(),
            runbook_url: None,
            example_trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
            fingerprint: "1f2e3d4c5b6a7980".into(),
            starts_at: OffsetDateTime::UNIX_EPOCH,
            ends_at: None,
            receivers: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hold_the_rule_severity_and_group() {
        let labels = Alert::example().labels();
        assert_eq!(labels["alertname"], "agent_error_rate");
        assert_eq!(labels["severity"], "critical");
        assert_eq!(labels["agent"], "qualifier");
        assert_eq!(
            Alert::example().title(),
            "[FIRING] critical P2 agent_error_rate (agent=qualifier)"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let alert = Alert::example();
        let text = serde_json::to_string(&alert).unwrap();
        assert_eq!(serde_json::from_str::<Alert>(&text).unwrap(), alert);
    }
}
