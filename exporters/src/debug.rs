//! The `debug` exporter: a log line per batch, for seeing that data flows.
//!
//! ```yaml
//! exporters:
//!   debug:
//!     verbosity: basic   # basic: one line per batch; detailed: also one line per span or record
//! ```
//!
//! It never logs attribute values or bodies: those carry prompts. Alerts
//! are logged one line each, at `warn` while firing.

use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::{ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal};
use serde::Deserialize;

use lookout_pipelines::alert::{Alert, AlertStatus};

use crate::attributes::hex;

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "debug",
        signals: &Signal::ALL,
        build: |id: &ComponentId, raw, _helper| {
            let config: DebugConfig = parse_config(raw)?;
            Ok(Box::new(DebugExporter {
                id: id.to_string(),
                config,
            }))
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Detailed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
}

pub struct DebugExporter {
    id: String,
    config: DebugConfig,
}

#[async_trait]
impl Exporter for DebugExporter {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let resources = match payload {
            Payload::Traces(r) => r.len(),
            Payload::Metrics(r) => r.len(),
            Payload::Logs(r) => r.len(),
            Payload::Alerts(alerts) => {
                alerts.iter().for_each(|alert| log_alert(&self.id, alert));
                return Ok(());
            }
        };
        tracing::info!(
            exporter = %self.id,
            signal = %payload.signal(),
            resources,
            items = payload.item_count(),
            "batch received"
        );
        if self.config.verbosity == Verbosity::Detailed {
            log_items(&self.id, payload);
        }
        Ok(())
    }
}

fn log_alert(exporter: &str, alert: &Alert) {
    let group = alert.group_text();
    match alert.status {
        AlertStatus::Firing => tracing::warn!(
            exporter,
            rule = %alert.rule,
            severity = %alert.severity,
            routes = ?alert.routes,
            incident_class = alert.incident_class.as_str(),
            group = %group,
            fingerprint = %alert.fingerprint,
            summary = %alert.summary,
            "alert firing"
        ),
        AlertStatus::Resolved => tracing::info!(
            exporter,
            rule = %alert.rule,
            group = %group,
            fingerprint = %alert.fingerprint,
            summary = %alert.summary,
            "alert resolved"
        ),
    }
}

fn log_items(exporter: &str, payload: &Payload) {
    match payload {
        Payload::Traces(resources) => {
            for span in resources
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                tracing::info!(
                    exporter,
                    name = %span.name,
                    trace_id = %hex(&span.trace_id),
                    span_id = %hex(&span.span_id),
                    duration_ns = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                    attributes = span.attributes.len(),
                    "span"
                );
            }
        }
        Payload::Metrics(resources) => {
            for metric in resources
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
            {
                tracing::info!(exporter, name = %metric.name, unit = %metric.unit, "metric");
            }
        }
        Payload::Logs(resources) => {
            for record in resources
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                tracing::info!(
                    exporter,
                    severity = %record.severity_text,
                    trace_id = %hex(&record.trace_id),
                    attributes = record.attributes.len(),
                    "log record"
                );
            }
        }
        Payload::Alerts(_) => {}
    }
}
