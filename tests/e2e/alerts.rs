//! The `threshold` connector end to end: agents instrumented with the
//! OpenTelemetry Python SDK fail, and the alerts reach a Slack stand-in
//! (Block Kit checked), a real SMTP server (aiosmtpd, read back from its
//! maildir), an Alertmanager-format webhook receiver and SQLite's
//! `alert_history`: once when they fire, once on escalation, once when
//! they resolve, and never for the healthy agent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::alert_receivers::AlertReceivers;
use crate::harness::{Daemon, eventually, free_port, python, run_python};

const CONFIG: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
processors:
  genai:
  batch:
    timeout: 50ms
connectors:
  threshold:
    evaluation_interval: 250ms
    group_wait: 1s
    repeat_interval: 1h
    escalation_timeout: 2s
    runbook_url: https://runbooks.example.com/{rule}
    rules:
      # The default rule, on a window short enough for a test.
      - name: agent_error_rate
        metric: error_rate
        group_by: [agent]
        window: 3s
        warning: 0.05
        critical: 0.15
        min_samples: 20
exporters:
  slack/critical:
    webhook_url: http://RECEIVERS/services/T000/B000/critical
    severities: [critical]
  slack/warning:
    webhook_url: http://RECEIVERS/services/T000/B000/warning
    severities: [warning]
  email:
    host: 127.0.0.1
    port: SMTP_PORT
    security: none
    from: lookout@example.com
    to: dev-team@company.com,ops-team@company.com
    severities: [critical]
  webhook:
    url: http://RECEIVERS/alertmanager
  sqlite:
    path: {dir}/lookout.db
service:
  telemetry:
    metrics:
      endpoint: {telemetry}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, batch]
      exporters: [threshold]
    alerts:
      receivers: [threshold]
      exporters: [slack/critical, slack/warning, email, webhook, sqlite]
";

/// aiosmtpd writing every message it takes into a maildir.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start() -> SmtpServer {
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // Python's Maildir creates its folders only for a new path.
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd (tests/python/requirements.txt) must be installed; run scripts/test");
        let up = eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(up, "aiosmtpd did not start on port {port}");
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    /// Every message delivered, as text.
    fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn headers(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn count(texts: &[String], needle: &str) -> usize {
    texts.iter().filter(|t| t.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_agents_alert_once_escalate_and_resolve_on_every_channel() {
    let receivers = AlertReceivers::start().await;
    let smtp = SmtpServer::start().await;
    let config = CONFIG
        .replace("RECEIVERS", &receivers.addr.to_string())
        .replace("SMTP_PORT", &smtp.port.to_string());
    let mut daemon = Daemon::start(&config).await;
    let endpoint = format!("http://{}", daemon.http);
    tokio::task::spawn_blocking(move || {
        run_python(
            "agent_errors.py",
            &["--endpoint", &endpoint, "--failing", "5", "--healthy", "5"],
        )
    })
    .await
    .unwrap();

    // Both failing agents resolve once their errors leave the 3 s window.
    let resolved = eventually(Duration::from_secs(15), || {
        count(
            &headers(&receivers.slack_messages("T000/B000/critical")),
            "[RESOLVED]",
        ) == 2
    })
    .await;
    let critical = headers(&receivers.slack_messages("T000/B000/critical"));
    assert!(resolved, "{critical:#?}\n{}", daemon.log());
    // Anything more would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let critical = headers(&receivers.slack_messages("T000/B000/critical"));
    let warning = headers(&receivers.slack_messages("T000/B000/warning"));
    assert!(
        receivers.received.lock().unwrap().rejections.is_empty(),
        "{:?}",
        receivers.received.lock().unwrap().rejections
    );

    // qualifier at 20%: one critical (P2) alert, then one resolution.
    assert_eq!(
        count(
            &critical,
            "[FIRING] critical P2 agent_error_rate (agent=qualifier)"
        ),
        1,
        "{critical:#?}"
    );
    assert_eq!(
        count(
            &critical,
            "[RESOLVED] critical P2 agent_error_rate (agent=qualifier)"
        ),
        1,
        "{critical:#?}"
    );
    // planner at 10%: a warning on the warning route, escalated to the
    // critical route after 2 s, and resolved on both.
    assert_eq!(
        count(
            &warning,
            "[FIRING] warning P3 agent_error_rate (agent=planner)"
        ),
        1,
        "{warning:#?}"
    );
    assert_eq!(
        count(
            &critical,
            "[ESCALATED] warning P3 agent_error_rate (agent=planner)"
        ),
        1,
        "{critical:#?}"
    );
    assert_eq!(count(&warning, "[RESOLVED]"), 1, "{warning:#?}");
    assert_eq!(critical.len(), 4, "{critical:#?}");
    assert_eq!(warning.len(), 2, "{warning:#?}");
    // closer never failed.
    assert_eq!(count(&critical, "closer") + count(&warning, "closer"), 0);
    let first = &receivers.slack_messages("T000/B000/critical")[0];
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains("(critical > 15.0%) over 3s"),
        "{first}"
    );
    let context = first["blocks"][2]["elements"].to_string();
    assert!(context.contains("Example traces"), "{context}");
    assert!(
        context.contains("https://runbooks.example.com/agent_error_rate|Runbook"),
        "{context}"
    );

    // Email: the critical route, both recipients, plain text and HTML.
    let mails = smtp.messages();
    let subjects: Vec<String> = mails
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject:"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        count(
            &subjects,
            "[FIRING] critical P2 agent_error_rate (agent=qualifier)"
        ),
        1,
        "{subjects:#?}"
    );
    assert_eq!(
        count(
            &subjects,
            "[RESOLVED] critical P2 agent_error_rate (agent=qualifier)"
        ),
        1,
        "{subjects:#?}"
    );
    assert_eq!(
        count(
            &subjects,
            "[ESCALATED] warning P3 agent_error_rate (agent=planner)"
        ),
        1,
        "{subjects:#?}"
    );
    assert_eq!(mails.len(), 4, "{subjects:#?}");
    assert!(
        mails
            .iter()
            .all(|m| m.contains("dev-team@company.com") && m.contains("ops-team@company.com"))
    );
    assert!(
        mails
            .iter()
            .all(|m| m.contains("text/plain") && m.contains("text/html"))
    );

    // The webhook: Alertmanager v4 payloads (checked by the receiver),
    // every notification of both routes.
    let payloads = receivers.received.lock().unwrap().alertmanager.clone();
    let statuses: Vec<(String, String)> = payloads
        .iter()
        .map(|p| {
            (
                p["commonLabels"]["agent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(payloads.len(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|(_, s)| s == "resolved").count(), 2);
    assert!(
        payloads[0]["groupKey"]
            .as_str()
            .unwrap()
            .starts_with("{}:{agent=")
    );

    // alert_history: one row per episode, resolved in place.
    let rows = sqlx_rows(&daemon.path("lookout.db")).await;
    daemon.terminate().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|(_, resolved_at)| resolved_at.is_some()),
        "{rows:?}"
    );
    assert!(rows.iter().any(|(severity, _)| severity == "critical"));
}

async fn sqlx_rows(path: &std::path::Path) -> Vec<(String, Option<String>)> {
    use sqlx::sqlite::SqliteConnectOptions;
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows =
        sqlx::query_as("SELECT severity, resolved_at FROM alert_history ORDER BY triggered_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

const METRICS_CONFIG: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
connectors:
  threshold:
    evaluation_interval: 200ms
    group_wait: 0s
    default_rules: false
    rules:
      - name: model_errors
        metric: error_rate
        source: metrics
        group_by: [model]
        window: 1m
        warning: 0.05
        critical: 0.15
        min_samples: 20
exporters:
  webhook:
    url: http://RECEIVERS/alertmanager
service:
  telemetry:
    metrics:
      endpoint: {telemetry}
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [threshold]
    alerts:
      receivers: [threshold]
      exporters: [webhook]
";

/// The GenAI client metrics, as the OpenTelemetry Python SDK exports them
/// (cumulative), alert like spans do.
#[tokio::test(flavor = "multi_thread")]
async fn genai_client_metrics_raise_an_alert() {
    let receivers = AlertReceivers::start().await;
    let config = METRICS_CONFIG.replace("RECEIVERS", &receivers.addr.to_string());
    let mut daemon = Daemon::start(&config).await;
    let endpoint = format!("http://{}", daemon.http);
    tokio::task::spawn_blocking(move || run_python("genai_metrics.py", &["--endpoint", &endpoint]))
        .await
        .unwrap();
    let fired = eventually(Duration::from_secs(10), || {
        !receivers.received.lock().unwrap().alertmanager.is_empty()
    })
    .await;
    assert!(fired, "{}", daemon.log());
    let payload = receivers.received.lock().unwrap().alertmanager[0].clone();
    daemon.terminate().await;
    assert_eq!(payload["commonLabels"]["model"], "gpt-4o", "{payload}");
    assert_eq!(payload["commonLabels"]["severity"], "critical", "{payload}");
    // 20 failures in 105 calls: the series started after the daemon, so
    // their first points count whole.
    let observed: f64 = payload["commonAnnotations"]["observed_value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!((observed - 20.0 / 105.0).abs() < 1e-9, "{payload}");
}
