//! The `email` exporter: one message per alert over SMTP (lettre), plain
//! text and HTML.
//!
//! ```yaml
//! exporters:
//!   email/oncall:
//!     host: smtp.example.com
//!     port: 587                 # default: 587 starttls, 465 tls, 25 none
//!     security: starttls        # starttls, tls or none
//!     username: ${env:ALERT_SMTP_USERNAME}
//!     password: ${env:ALERT_SMTP_PASSWORD}
//!     from: lookout@example.com
//!     to: ${env:ALERT_EMAIL_RECIPIENTS}   # comma-separated, or a YAML list
//!     subject_prefix: "[lookout]"
//!     severities: [critical]
//! ```
//!
//! An SMTP 5xx (a refused recipient, say) is permanent; a 4xx, a refused
//! connection or a timeout is retried by the exporter helper.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use lookout_pipelines::alert::Alert;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use serde::Deserialize;

use super::{Routing, facts};

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "email",
        signals: &[Signal::Alerts],
        build: |id: &ComponentId, raw, helper: &ExporterHelperConfig| {
            let (routing, own) = Routing::split_from(raw)?;
            let config: EmailConfig = parse_config(own)?;
            Ok(Box::new(EmailExporter::new(
                id,
                config,
                routing,
                helper.timeout,
            )?))
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on a trusted network.
    None,
}

/// `to: a@x, b@y` as ALERT_EMAIL_RECIPIENTS has it, or a YAML list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Recipients {
    Text(String),
    List(Vec<String>),
}

impl Recipients {
    fn addresses(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            Recipients::Text(text) => text.split(',').collect(),
            Recipients::List(list) => list.iter().map(String::as_str).collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub from: String,
    pub to: Recipients,
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
}

fn default_prefix() -> String {
    "[lookout]".into()
}

pub struct EmailExporter {
    id: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
    routing: Routing,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl EmailExporter {
    pub fn new(
        id: &ComponentId,
        config: EmailConfig,
        routing: Routing,
        timeout: Duration,
    ) -> Result<EmailExporter, BuildError> {
        let mailbox = |key: &str, text: &str| {
            text.parse::<Mailbox>()
                .map_err(|err| BuildError::at(&[key], format!("`{text}` is not an address: {err}")))
        };
        let from = mailbox("from", &config.from)?;
        let to = config
            .to
            .addresses()
            .iter()
            .map(|address| mailbox("to", address))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(BuildError::at(&["to"], "needs at least one recipient"));
        }
        let host = config.host.as_str();
        let builder = match config.security {
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            Security::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|err| BuildError::at(&["host"], format!("cannot use `{host}`: {err}")))?;
        let port = config.port.unwrap_or(match config.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        });
        let mut builder = builder.port(port).timeout(Some(timeout));
        match (config.username, config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user, password));
            }
            (None, None) => {}
            _ => {
                return Err(BuildError::at(
                    &["username"],
                    "set both username and password, or neither",
                ));
            }
        }
        Ok(EmailExporter {
            id: id.to_string(),
            from,
            to,
            subject_prefix: config.subject_prefix,
            routing,
            transport: builder.build(),
        })
    }

    fn message(&self, alert: &Alert) -> Result<Message, ExportError> {
        let mut builder = Message::builder().from(self.from.clone()).subject(
            format!("{} {}", self.subject_prefix, alert.title())
                .trim()
                .to_string(),
        );
        for recipient in &self.to {
            builder = builder.to(recipient.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                plain_body(alert),
                html_body(alert),
            ))
            .map_err(|err| ExportError::permanent(format!("cannot build the message: {err}")))
    }
}

#[async_trait]
impl Exporter for EmailExporter {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let Payload::Alerts(alerts) = payload else {
            return Ok(());
        };
        for alert in self.routing.select(&self.id, alerts) {
            let message = self.message(alert)?;
            self.transport.send(message).await.map_err(|err| {
                let reason = format!("SMTP: {err}");
                if err.is_permanent() {
                    ExportError::permanent(reason)
                } else {
                    ExportError::transient(reason)
                }
            })?;
        }
        Ok(())
    }
}

pub fn plain_body(alert: &Alert) -> String {
    let mut body = format!("{}\n\n{}\n\n", alert.title(), alert.summary);
    for (name, value) in facts(alert) {
        body.push_str(&format!("{name}: {value}\n"));
    }
    if !alert.example_trace_ids.is_empty() {
        body.push_str(&format!(
            "Example traces: {}\n",
            alert.example_trace_ids.join(", ")
        ));
    }
    if let Some(url) = &alert.runbook_url {
        body.push_str(&format!("Runbook: {url}\n"));
    }
    body.push_str(&format!("Fingerprint: {}\n", alert.fingerprint));
    body
}

pub fn html_body(alert: &Alert) -> String {
    let mut rows = String::new();
    for (name, value) in facts(alert) {
        rows.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            html(name),
            html(&value)
        ));
    }
    if !alert.example_trace_ids.is_empty() {
        let ids: Vec<String> = alert
            .example_trace_ids
            .iter()
            .map(|id| format!("<code>{}</code>", html(id)))
            .collect();
        rows.push_str(&format!(
            "<tr><th align=\"left\">Example traces</th><td>{}</td></tr>",
            ids.join(", ")
        ));
    }
    if let Some(url) = &alert.runbook_url {
        rows.push_str(&format!(
            "<tr><th align=\"left\">Runbook</th><td><a href=\"{0}\">{0}</a></td></tr>",
            html(url)
        ));
    }
    format!(
        "<html><body><h2>{}</h2><p>{}</p><table>{rows}</table><p><small>fingerprint {}</small></p></body></html>",
        html(&alert.title()),
        html(&alert.summary),
        html(&alert.fingerprint)
    )
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<EmailExporter, BuildError> {
        let raw: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let (routing, own) = Routing::split_from(raw)?;
        let config: EmailConfig = parse_config(own)?;
        let id = ComponentId::parse("email").unwrap();
        EmailExporter::new(&id, config, routing, Duration::from_secs(5))
    }

    #[test]
    fn recipients_read_as_the_design_documents_write_them() {
        let exporter = config(
            "host: 127.0.0.1\nsecurity: none\nfrom: lookout@example.com\nto: dev-team@company.com, ops-team@company.com\n",
        )
        .unwrap();
        assert_eq!(exporter.to.len(), 2);
        let message = exporter.message(&Alert::example()).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Subject: [lookout] [FIRING] critical P2 agent_error_rate"));
        assert!(text.contains("text/plain"));
        assert!(text.contains("text/html"));
    }

    #[test]
    fn bad_settings_are_errors_at_their_key() {
        let err = config("host: h\nfrom: nobody\nto: a@b.c\n").err().unwrap();
        assert_eq!(err.path, vec!["from"]);
        let err = config("host: h\nfrom: a@b.c\nto: ' , '\n").err().unwrap();
        assert_eq!(err.path, vec!["to"]);
        let err = config("host: h\nfrom: a@b.c\nto: a@b.c\nusername: u\n")
            .err()
            .unwrap();
        assert_eq!(err.path, vec!["username"]);
        let err = config("host: h\nfrom: a@b.c\nto: a@b.c\nseverities: []\n")
            .err()
            .unwrap();
        assert_eq!(err.path, vec!["severities"]);
    }

    #[test]
    fn the_html_body_is_escaped() {
        let mut alert = Alert::example();
        alert.summary = "<script>x</script>".into();
        assert!(html_body(&alert).contains("&lt;script&gt;"));
        assert!(plain_body(&alert).contains("<script>x</script>"));
    }
}
