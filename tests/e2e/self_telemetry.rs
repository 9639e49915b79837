//! Done-when 8: `/metrics` passes `promtool check metrics`; health endpoints.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{Daemon, FILE_PIPELINE, spans, traces_body};

/// promtool comes from Debian's `prometheus` package, which scripts/test
/// installs.
fn promtool() -> String {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool is missing: run the tests with scripts/test, which installs Debian's prometheus package"
    );
    "promtool".into()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_what_flowed() {
    let mut daemon = Daemon::start(FILE_PIPELINE).await;
    let client = reqwest::Client::new();
    let response = daemon.post_traces(traces_body(spans(1, 7, 10))).await;
    assert!(response.status().is_success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let metrics_url = format!("http://{}/metrics", daemon.telemetry);
    let metrics = client
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "lookout_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"} 7",
        "lookout_exporter_sent_spans_total{exporter=\"file\"} 7",
        "lookout_processor_incoming_spans_total{processor=\"batch\",pipeline=\"traces\"} 7",
        "lookout_processor_outgoing_spans_total{processor=\"batch\",pipeline=\"traces\"} 7",
        "lookout_exporter_queue_capacity{exporter=\"file\"}",
        "lookout_exporter_queue_size{exporter=\"file\"}",
        "lookout_process_memory_rss_bytes",
        "lookout_process_cpu_seconds_total",
        "lookout_receiver_accepted_log_records_total",
        "lookout_receiver_accepted_metric_points_total",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );

    let live = client
        .get(format!("http://{}/health", daemon.telemetry))
        .send()
        .await
        .unwrap();
    assert!(live.status().is_success());
    let ready: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("http://{}/health/ready", daemon.telemetry))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["components"]["receiver/otlp"]["status"], "ok");
    assert_eq!(ready["components"]["exporter/file"]["status"], "ok");
    daemon.terminate().await;
}
